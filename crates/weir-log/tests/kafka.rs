//! The Kafka backend against a real Kafka-protocol broker (noida-db, started per test on a
//! free loopback port), with confluent-kafka (Python) as the client on the other side.

mod support;

use std::time::Duration;

use support::kafka::{Broker, READ_COMMITTED};
use weir_log::{Commit, KafkaConfig, KafkaLog, Log, LogError, Output, Positions, Record, TopicSpec, partition_for};

fn connect(broker: &Broker) -> KafkaLog {
    let mut config = KafkaConfig::new(broker.servers());
    config.timeout = Duration::from_secs(20);
    KafkaLog::connect(config).unwrap()
}

/// A record stamped now (a broker deletes records older than its retention, 7 days).
fn record(key: &str, value: &str) -> Record {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    Record { key: Some(key.as_bytes().to_vec()), value: value.as_bytes().to_vec(), timestamp: now, headers: vec![] }
}

/// Records of a partition from `offset` on, polled for until some come (a read gives what
/// the consumer has fetched so far, or nothing).
fn read(log: &KafkaLog, topic: &str, partition: u32, offset: u64, max: usize) -> Vec<weir_log::StoredRecord> {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let records = log.read(topic, partition, offset, max).unwrap();
        if !records.is_empty() || std::time::Instant::now() > until {
            return records;
        }
    }
}

/// Every record of every partition, as `(partition, key, value)`.
fn everything(log: &KafkaLog, topic: &str) -> Vec<(u32, String, String)> {
    let info = log.describe(topic).unwrap();
    let mut out = vec![];
    for p in &info.partitions {
        let mut at = p.start;
        while at < p.end {
            let records = read(log, topic, p.partition, at, 1000);
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for r in records {
                let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"-")).into_owned();
                out.push((p.partition, key, String::from_utf8_lossy(&r.value).into_owned()));
            }
        }
    }
    out
}

#[test]
fn records_cross_between_weir_and_a_client_written_by_others() {
    records_cross(&Broker::start(), true);
}

/// The same on a second implementation of the protocol, which keeps no topic settings and
/// misreports partitions' ends.
#[test]
fn records_cross_on_a_second_broker() {
    records_cross(&Broker::start_tansu(), false);
}

/// `settings`: whether the broker keeps topic settings and reports partitions' ends.
fn records_cross(broker: &Broker, settings: bool) {
    let log = connect(broker);
    let info = log
        .create_topic(&TopicSpec { retention: weir_log::Retention { ms: Some(86_400_000), bytes: None }, ..TopicSpec::new("events", 3) })
        .unwrap();
    assert_eq!(info.partitions.len(), 3);
    if settings {
        assert_eq!(info.spec.retention.ms, Some(86_400_000), "the topic is made with its retention");
    }
    // Made again with the same partitions: nothing changes; with others: refused.
    assert_eq!(log.create_topic(&TopicSpec::new("events", 3)).unwrap().partitions.len(), 3);
    let e = log.create_topic(&TopicSpec::new("events", 5)).unwrap_err().to_string();
    assert!(e.contains("has 3 partition(s)") && e.contains("not 5"), "{e}");

    // Weir appends; the other client reads each key in the partition Kafka's own clients
    // (murmur2) put it in.
    // Every other one with headers, which the other client sees as Kafka headers.
    let records: Vec<Record> = (0..60)
        .map(|i| Record {
            headers: if i % 2 == 0 { vec![("w".to_string(), format!("{i}").into_bytes())] } else { vec![] },
            ..record(&format!("k{i}"), &format!("{{\"n\":{i}}}"))
        })
        .collect();
    let placed = log.append("events", None, &records).unwrap();
    assert_eq!(placed.len(), 60);
    for (i, (p, _)) in placed.iter().enumerate() {
        assert_eq!(*p, partition_for(format!("k{i}").as_bytes(), 3), "record {i}");
    }
    let seen = broker.python(&format!("{READ_COMMITTED}\nread('events')\n"));
    assert_eq!(seen.lines().count(), 60, "{seen}");
    for line in seen.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0].parse::<u32>().unwrap(), partition_for(f[2].as_bytes(), 3), "{line}");
    }
    let headers = broker.python(
        r#"
import os
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "headers", "enable.partition.eof": True})
c.assign([TopicPartition("events", q, 0) for q in range(3)])
ended = set()
while len(ended) < 3:
    m = c.poll(10)
    if m is None:
        break
    if m.error():
        ended.add(m.partition())
        continue
    for k, v in m.headers() or []:
        print(m.key().decode(), k, v.decode())
"#,
    );
    let mut seen_headers: Vec<&str> = headers.lines().collect();
    seen_headers.sort();
    let mut expected: Vec<String> = (0..60).step_by(2).map(|i| format!("k{i} w {i}")).collect();
    expected.sort();
    assert_eq!(seen_headers, expected, "Weir's headers as Kafka headers");

    // The other client produces (with Java's partitioner); Weir reads every record.
    broker.python(
        r#"
import os
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random"})
for i in range(60, 100):
    p.produce("events", key=f"k{i}", value='{"n":%d}' % i, headers=[("trace", f"t{i}".encode()), ("hop", b"1")])
p.flush()
"#,
    );
    let all = everything(&log, "events");
    assert_eq!(all.len(), 100);
    for (p, key, _) in &all {
        assert_eq!(*p, partition_for(key.as_bytes(), 3), "{key}");
    }
    let mut ns: Vec<i64> =
        all.iter().map(|(_, _, v)| serde_json::from_str::<serde_json::Value>(v).unwrap()["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, (0..100).collect::<Vec<_>>());
    // Their headers too, in order, on every read path.
    for p in 0..3 {
        for r in read(&log, "events", p, 0, 1_000) {
            let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
            let i: usize = key[1..].parse().unwrap();
            let expected = match i {
                60.. => vec![("trace".to_string(), format!("t{i}").into_bytes()), ("hop".to_string(), b"1".to_vec())],
                _ if i.is_multiple_of(2) => vec![("w".to_string(), format!("{i}").into_bytes())],
                _ => vec![],
            };
            assert_eq!(r.headers, expected, "{key}");
        }
    }

    // Reads go on from any offset, backwards too.
    let p0 = log.describe("events").unwrap().partitions[0];
    assert!(p0.end >= 4, "{p0:?}");
    // A read gives what is there without being asked again: it waits for the fetch when the
    // partition's stable end says records are there. (tansu answers every partition's end as
    // 1: there, reads are polled.)
    let read_now =
        |offset: u64, max: usize| if settings { log.read("events", 0, offset, max).unwrap() } else { read(&log, "events", 0, offset, max) };
    let from_2 = read_now(2, 2);
    assert_eq!(from_2.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3]);
    let from_0 = read_now(0, 1);
    assert_eq!(from_0.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0]);
    assert_eq!(read_now(1, 1)[0].offset, 1);
    if settings {
        assert!(log.read("events", 0, p0.end, 10).unwrap().is_empty(), "nothing past the end");
    }
    let e = log.describe("nope").unwrap_err();
    assert!(matches!(e, LogError::UnknownTopic(_)), "{e}");
    assert!(log.topics().unwrap().iter().any(|t| t.spec.name == "events"));
}

#[test]
fn a_commit_is_one_transaction_with_the_group_positions_and_marks() {
    let broker = Broker::start();
    let log = connect(&broker);
    log.create_topic(&TopicSpec::new("in", 2)).unwrap();
    log.create_topic(&TopicSpec::new("out", 2)).unwrap();
    log.append("in", None, &(0..10).map(|i| record(&format!("k{i}"), "x")).collect::<Vec<_>>()).unwrap();
    log.claim("job").unwrap();
    let mut positions = Positions::new();
    positions.insert(("in".into(), 0), 3);
    positions.insert(("in".into(), 1), 4);
    // Not a topic: a committer's own mark, kept with the offsets.
    positions.insert(("_weir_checkpoint".into(), 0), 7);
    let commit = Commit {
        outputs: vec![Output { topic: "out".into(), partition: None, records: vec![record("a", "1"), record("b", "2")] }],
        positions: positions.clone(),
    };
    log.commit("job", &commit).unwrap();
    assert_eq!(log.positions("job").unwrap(), positions);
    assert!(log.groups().unwrap().contains(&"job".to_string()));
    let seen = broker.python(&format!("{READ_COMMITTED}\nread('out')\n"));
    let mut values: Vec<&str> = seen.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    values.sort();
    assert_eq!(values, vec!["1", "2"], "{seen}");

    // Positions of no topic cannot ride alone.
    let mut alone = Positions::new();
    alone.insert(("_weir_checkpoint".into(), 0), 8);
    let e = log.commit("job", &Commit { outputs: vec![], positions: alone }).unwrap_err().to_string();
    assert!(e.contains("_weir_checkpoint"), "{e}");
    assert_eq!(log.positions("job").unwrap(), positions, "a refused commit changes nothing");
}

#[test]
fn a_claim_aborts_what_a_killed_holder_left_open_and_fences_a_live_one() {
    let broker = Broker::start();
    let log = connect(&broker);
    log.create_topic(&TopicSpec::new("in", 1)).unwrap();
    log.create_topic(&TopicSpec::new("out", 1)).unwrap();
    log.append("in", None, &[record("k", "x"), record("k", "y")]).unwrap();
    log.claim("job").unwrap();
    let mut first = Positions::new();
    first.insert(("in".into(), 0), 1);
    log.commit(
        "job",
        &Commit {
            outputs: vec![Output { topic: "out".into(), partition: None, records: vec![record("k", "first")] }],
            positions: first.clone(),
        },
    )
    .unwrap();

    // A holder of the group's transactional id is killed in the middle of a transaction
    // (its records sent, its offsets too, never committed).
    broker.python(
        r#"
import os
from confluent_kafka import Producer, Consumer, TopicPartition
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "transactional.id": "weir.job"})
p.init_transactions(10)
p.begin_transaction()
p.produce("out", key="k", value="half")
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "job"})
p.send_offsets_to_transaction([TopicPartition("in", 0, 2)], c.consumer_group_metadata(), 10)
p.flush(10)
os._exit(0)
"#,
    );
    // The old holder here was fenced by it; a new one claims the group: the open
    // transaction is aborted, so neither its record nor its offsets count.
    let e = log.commit("job", &Commit { outputs: vec![], positions: first.clone() }).unwrap_err();
    assert!(matches!(e, LogError::Fenced { .. }), "{e}");
    let again = connect(&broker);
    again.claim("job").unwrap();
    assert_eq!(again.positions("job").unwrap(), first);
    // Aborted, not merely left open: a record appended after it is visible to
    // read_committed consumers (an open transaction would hold them all back).
    again.append("out", None, &[record("k", "after")]).unwrap();
    let seen = broker.python(&format!("{READ_COMMITTED}\nread('out')\n"));
    assert_eq!(seen.lines().map(|l| l.rsplit(' ').next().unwrap()).collect::<Vec<_>>(), vec!["first", "after"], "{seen}");

    // The fenced holder may not commit again, even once its producer would start anew.
    let e = log.commit("job", &Commit { outputs: vec![], positions: first.clone() }).unwrap_err().to_string();
    assert!(e.contains("took over group 'job'"), "{e}");
    let mut second = Positions::new();
    second.insert(("in".into(), 0), 2);
    again
        .commit(
            "job",
            &Commit {
                outputs: vec![Output { topic: "out".into(), partition: None, records: vec![record("k", "second")] }],
                positions: second.clone(),
            },
        )
        .unwrap();
    assert_eq!(again.positions("job").unwrap(), second);
}

#[test]
fn a_broker_restarted_under_a_writer_is_waited_out() {
    let mut broker = Broker::start();
    let log = connect(&broker);
    log.create_topic(&TopicSpec::new("events", 1)).unwrap();
    log.append("events", None, &[record("a", "1")]).unwrap();
    assert_eq!(read(&log, "events", 0, 0, 10).len(), 1);
    broker.down();
    let port = broker.port;
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        broker.up();
        broker
    });
    // Appended while the broker is down: delivered once it is back.
    log.append("events", None, &[record("b", "2")]).unwrap();
    let broker = restart.join().unwrap();
    assert_eq!(broker.port, port);
    let mut values: Vec<Vec<u8>> = vec![];
    while values.len() < 2 {
        let got = read(&log, "events", 0, values.len() as u64, 10);
        assert!(
            !got.is_empty(),
            "record {} never came; the broker has: {}",
            values.len(),
            broker.python(&format!("{READ_COMMITTED}\nread('events')\n"))
        );
        values.extend(got.into_iter().map(|r| r.value));
    }
    assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec()]);
}

/// What `member` owns of `group` once the group has settled on `want` partitions for it,
/// asking until it has (the others are asked meanwhile, so that they stay alive).
fn owned_until(logs: &[&KafkaLog], group: &str, want: &[usize]) -> Vec<Vec<(String, u32)>> {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<Option<Vec<(String, u32)>>> = logs.iter().map(|l| l.owned(group).unwrap()).collect();
        let counts: Vec<usize> = owned.iter().map(|o| o.as_ref().map_or(usize::MAX, Vec::len)).collect();
        if counts == want {
            return owned.into_iter().map(Option::unwrap_or_default).collect();
        }
        assert!(std::time::Instant::now() < until, "the group never dealt {want:?}: {owned:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workers_share_a_groups_partitions_and_one_that_missed_a_rebalance_cannot_commit() {
    let broker = Broker::start();
    // The first worker is dropped from the group when it stops asking for 6 s.
    let mut config = KafkaConfig::new(broker.servers());
    config.timeout = Duration::from_secs(20);
    for k in ["max.poll.interval.ms", "session.timeout.ms"] {
        config.properties.insert(k.into(), "6000".into());
    }
    let (a, b) = (KafkaLog::connect(config).unwrap(), connect(&broker));
    a.create_topic(&TopicSpec::new("in", 4)).unwrap();
    a.create_topic(&TopicSpec::new("out", 1)).unwrap();
    a.append("in", None, &(0..20).map(|i| record(&format!("k{i}"), "x")).collect::<Vec<_>>()).unwrap();
    let topics = ["in".to_string()];

    a.join_group("job", &topics, "a").unwrap();
    let alone = owned_until(&[&a], "job", &[4]);
    assert_eq!(alone[0], (0..4).map(|p| ("in".to_string(), p)).collect::<Vec<_>>());

    // A second worker: two partitions each, none owned twice.
    b.join_group("job", &topics, "b").unwrap();
    let shared = owned_until(&[&a, &b], "job", &[2, 2]);
    let mut all: Vec<(String, u32)> = shared.concat();
    all.sort();
    assert_eq!(all, (0..4).map(|p| ("in".to_string(), p)).collect::<Vec<_>>());

    // Each commits for what it owns, each under its own producer.
    for (log, mine) in [(&a, &shared[0]), (&b, &shared[1])] {
        let positions: Positions = mine.iter().map(|(t, p)| ((t.clone(), *p), 1)).collect();
        let commit = Commit { outputs: vec![Output { topic: "out".into(), partition: None, records: vec![record("k", "1")] }], positions };
        log.commit("job", &commit).unwrap();
    }
    assert_eq!(a.positions("job").unwrap().values().copied().collect::<Vec<_>>(), vec![1, 1, 1, 1]);

    // The second leaves: the first is dealt everything again.
    drop(b);
    owned_until(&[&a], "job", &[4]);
    let everything: Positions = (0..4).map(|p| (("in".to_string(), p), 2)).collect();
    a.commit("job", &Commit { outputs: vec![], positions: everything.clone() }).unwrap();
    assert_eq!(a.positions("job").unwrap(), everything);

    // A third joins while the first has stopped asking (a worker paused, or cut off): the
    // group goes on without it, and its next commit, made as the member it was, is refused.
    let c = connect(&broker);
    c.join_group("job", &topics, "c").unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while c.owned("job").unwrap().is_none_or(|o| o.len() < 4) {
        assert!(std::time::Instant::now() < until, "the third worker was never dealt partitions");
        std::thread::sleep(Duration::from_millis(100));
    }
    let later: Positions = (0..4).map(|p| (("in".to_string(), p), 3)).collect();
    let e = a.commit("job", &Commit { outputs: vec![], positions: later }).unwrap_err();
    assert!(matches!(e, LogError::Rebalanced { .. }), "{e}");
    assert_eq!(c.positions("job").unwrap(), everything, "the refused commit moved nothing");
}
