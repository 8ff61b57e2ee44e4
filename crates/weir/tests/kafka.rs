//! Stream jobs over Kafka, end to end with the real binary: a private broker (noida-db) per
//! project, events produced by confluent-kafka (Python), results read back by it with
//! `read_committed`; `kill -9` at random moments writes each result once.

#[allow(dead_code)]
#[path = "../../weir-log/tests/support/kafka.rs"]
mod broker;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use broker::{Broker, READ_COMMITTED};
use common::{Rng, minimal, query, text, weir, weir_command};

const JOB: &str = "{{ config(sink='topic', topic='revenue_out', checkpoint_interval='200ms', allowed_lateness='2 seconds') }}\n\
    select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
    from tumble({{ stream('orders') }}, ordered_at, interval '2 seconds')\n\
    group by country, window_start, window_end\n";

/// A project whose `orders` topic is on the broker: one line, `log: kafka`, moves it there
/// (the sink topic, not declared, goes where the job's input is).
fn project(broker: &Broker) -> tempfile::TempDir {
    let topics = "topics:\n  - name: orders\n    log: kafka\n    partitions: 3\n    key: country\n    \
        columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
        watermark: ordered_at - interval '1 second'\n";
    let weir_yml = format!("kafka:\n  bootstrap_servers: {}\n  timeout: 20s\n", broker.servers());
    let dir = minimal(&[("weir.yml", weir_yml.as_str()), ("streams/shop.yml", topics), ("streams/revenue.sql", JOB)]);
    // The topic made as declared before anyone produces (a broker makes a topic it does not
    // know with one partition).
    let o = weir(dir.path(), &["log", "describe", "orders"]);
    assert!(o.status.success() && text(&o).contains("3 partition(s)"), "{}", text(&o));
    dir
}

/// Produces `n` orders from `from` on with confluent-kafka, keyed by country (Java's
/// partitioner), 25 ms of event time apart, every 50th a little out of order.
fn produce(broker: &Broker, from: usize, n: usize) {
    broker.python(&format!(
        r#"
import os, json, datetime
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random", "linger.ms": 5}})
countries = ["DE", "FR", "NL", "IT", "ES"]
for i in range({from}, {from} + {n}):
    ms = 1796205600000 + i * 25 - (700 if i % 50 == 7 else 0)
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    c = countries[i % 5]
    p.produce("orders", key=c, value=json.dumps({{"order_id": i, "country": c, "amount": i % 17 + 0.5, "ordered_at": at}}))
    p.poll(0)
p.flush()
"#
    ));
}

/// The sink topic's records as `read_committed` consumers see them: (key, value) by
/// partition and offset.
fn results(broker: &Broker) -> Vec<(String, String)> {
    let out = broker.python(&format!("{READ_COMMITTED}\nread('revenue_out')\n"));
    out.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, _, key, value) = (f.next(), f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// Asserts that no record was written twice (an update of a window changes its figures).
fn assert_once(records: &[(String, String)], context: &str) {
    let mut seen = BTreeSet::new();
    for r in records {
        assert!(seen.insert(r), "{context}: written twice: {r:?}");
    }
}

/// The last result of each window when the job reads 6,000 orders in one uninterrupted run
/// in one process, on a broker of its own.
fn uninterrupted() -> BTreeMap<String, String> {
    let broker = Broker::start();
    let dir = project(&broker);
    produce(&broker, 0, 6_000);
    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("6000 read = "), "{}", text(&o));
    last(results(&broker))
}

/// Each window's last result.
fn last(records: Vec<(String, String)>) -> BTreeMap<String, String> {
    records.into_iter().collect()
}

#[test]
fn a_job_reads_and_writes_kafka_exactly_once_through_kill_9() {
    let expected = uninterrupted();
    assert!(expected.len() > 100, "{} windows", expected.len());

    // Killed with -9 at random moments, each time after more orders came.
    let broker = Broker::start();
    let killed = project(&broker);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    for round in 0..4 {
        produce(&broker, round * 1_500, 1_500);
        let mut child = weir_command(killed.path())
            .args(["stream", "run", "revenue"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + rng.below(1_200)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let o = weir(killed.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("6000 read = "), "seed {seed}: {}", text(&o));
    let got = results(&broker);
    assert_once(&got, &format!("seed {seed}"));
    assert_eq!(last(got), expected, "seed {seed}");

    // The job's consumer group holds its positions: no lag left.
    let o = weir(killed.path(), &["--log-format", "json", "log", "describe", "orders"]);
    assert!(o.status.success(), "{}", text(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let group = d["groups"].as_array().unwrap().iter().find(|g| g["group"] == "weir-stream.revenue").expect("the job's group");
    let lag: u64 = group["positions"].as_array().unwrap().iter().map(|p| p["lag"].as_u64().unwrap()).sum();
    assert_eq!((d["partitions"].as_array().unwrap().len(), lag), (3, 0), "{d}");
}

#[test]
fn log_commands_and_a_warehouse_sink_work_on_kafka_and_a_poison_message_is_kept() {
    log_commands_and_a_warehouse_sink(&Broker::start(), true);
}

/// The same on a second implementation of the protocol: nothing here needs transactions.
/// Its ListOffsets answers a partition's end as 1 whatever it holds, so the counts of
/// `weir log topics` are not checked there.
#[test]
fn log_commands_and_a_warehouse_sink_work_on_a_second_broker() {
    log_commands_and_a_warehouse_sink(&Broker::start_tansu(), false);
}

fn log_commands_and_a_warehouse_sink(broker: &Broker, offsets: bool) {
    let dir = project(broker);
    std::fs::write(dir.path().join("streams/revenue.sql"), JOB.replace("sink='topic', topic='revenue_out', ", "")).unwrap();
    // Weir produces; the topic is made on the broker with its declared partitions.
    let lines: String = (0..500)
        .map(|i| {
            format!(
                "{{\"order_id\": {i}, \"country\": \"{}\", \"amount\": 1.5, \"ordered_at\": \"2026-12-01T10:00:{:02}Z\"}}\n",
                ["DE", "FR", "NL", "IT", "ES"][i % 5],
                i / 10
            )
        })
        .collect();
    std::fs::write(dir.path().join("batch.jsonl"), lines).unwrap();
    let o = weir(dir.path(), &["log", "produce", "orders", "-f", "batch.jsonl"]);
    assert!(o.status.success() && text(&o).contains("Produced 500 events to 'orders'"), "{}", text(&o));
    // A message that is not an event, from another client.
    broker.python(
        r#"
import os
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random"})
p.produce("orders", key="DE", value=b"\xff not json")
p.flush()
"#,
    );
    let o = weir(dir.path(), &["log", "topics"]);
    let line = text(&o).lines().find(|l| l.contains(" orders ")).unwrap_or_default().to_string();
    assert!(line.contains("kafka") && line.contains(" 3 ") && (line.contains(" 501 ") || !offsets), "{}", text(&o));
    let o = weir(dir.path(), &["log", "consume", "orders", "--max", "3"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3, "{}", text(&o));

    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("501 read = 500 counted + 0 late + 1 rejected"), "{}", text(&o));
    // Ten orders a second, five countries: each closed 2-second window holds four of each.
    let rows = query(&dir.path().join("t.duckdb"), "select count(*), min(orders), max(orders) from revenue");
    assert!(rows[0][0].parse::<u32>().unwrap() >= 100 && rows[0][1] == "4" && rows[0][2] == "4", "{rows:?}");
    let rejected = query(&dir.path().join("t.duckdb"), "select topic, reason like '%JSON%' from _weir_rejected_events");
    assert_eq!(rejected, [["orders", "true"]]);
}

/// A load publishes a CSV file's rows to a Kafka topic (`to: topic`) in one transaction:
/// confluent-kafka's `read_committed` consumer reads each row once, keyed by the topic's key,
/// a second run publishes nothing, and the job reading the topic counts every order.
#[test]
fn a_load_publishes_a_files_rows_to_a_kafka_topic_once() {
    let broker = Broker::start();
    let dir = project(&broker);
    let mut csv = String::from("order_id,country,amount,ordered_at\n");
    let countries = ["DE", "FR", "NL", "IT", "ES"];
    for i in 0..600 {
        csv.push_str(&format!("{i},{},{}.5,2026-12-01T10:00:{:02}.000Z\n", countries[i % 5], i % 17, i % 60));
    }
    std::fs::write(dir.path().join("orders.csv"), csv).unwrap();
    std::fs::create_dir_all(dir.path().join("loads")).unwrap();
    std::fs::write(
        dir.path().join("loads/shop.yml"),
        "loads:\n  - name: orders_in\n    source: {kind: csv, path: orders.csv}\n    to: topic\n    topic: orders\n",
    )
    .unwrap();
    let o = weir(dir.path(), &["load"]);
    assert!(o.status.success() && text(&o).contains("600 events into topic 'orders'"), "{}", text(&o));
    let read = broker.python(&format!("{READ_COMMITTED}\nread('orders')\n"));
    let mut ids = BTreeSet::new();
    for line in read.lines() {
        let mut f = line.splitn(4, ' ');
        let (_, _, key, value) = (f.next(), f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let v: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
        assert_eq!(Some(key), v["country"].as_str(), "keyed by country: {line}");
        assert!(ids.insert(v["order_id"].as_i64().unwrap_or(-1)), "published twice: {line}");
    }
    assert_eq!(ids, (0..600).collect::<BTreeSet<i64>>());
    let o = weir(dir.path(), &["load"]);
    assert!(o.status.success() && text(&o).contains("up to date"), "{}", text(&o));
    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("600 read = "), "{}", text(&o));
}

#[test]
fn a_project_without_a_cluster_is_told_where_to_name_one() {
    let dir = minimal(&[
        ("streams/shop.yml", "topics:\n  - name: orders\n    log: kafka\n"),
        ("streams/all.sql", "select * from {{ stream('orders') }}\n"),
    ]);
    let o = weir(dir.path(), &["log", "consume", "orders"]);
    assert!(!o.status.success() && text(&o).contains("weir.yml has no `kafka:` section"), "{}", text(&o));
    std::fs::write(dir.path().join("streams/shop.yml"), "topics:\n  - name: orders\n    log: kafak\n").unwrap();
    let o = weir(dir.path(), &["log", "topics"]);
    assert!(
        !o.status.success() && text(&o).contains("streams/shop.yml:3:10") && text(&o).contains("not one of embedded, kafka"),
        "{}",
        text(&o)
    );
    assert!(Path::new(dir.path()).exists());
}

#[test]
fn a_running_job_waits_out_a_broker_restart_and_loses_nothing() {
    let mut broker = Broker::start();
    let dir = project(&broker);
    produce(&broker, 0, 3_000);
    let mut job = weir_command(dir.path())
        .args(["stream", "run", "revenue"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // The broker goes away under the running job (its reads and checkpoint commits fail
    // meanwhile) and comes back on the same port and data.
    broker.down();
    std::thread::sleep(Duration::from_secs(3));
    broker.up();
    produce(&broker, 3_000, 3_000);
    std::thread::sleep(Duration::from_secs(3));
    assert!(job.try_wait().unwrap().is_none(), "the job kept running");
    std::process::Command::new("kill").args(["-TERM", &job.id().to_string()]).status().unwrap();
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("6000 read = "), "{}", text(&o));
    let got = results(&broker);
    assert_once(&got, "after the restart");
    // Every window closed by the 6,000 orders is there: 2-second windows of 80 orders.
    let windows: BTreeMap<String, String> = got.into_iter().collect();
    let counted: i64 = windows.values().map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap()["orders"].as_i64().unwrap()).sum();
    assert!(windows.len() >= 70 * 5 && counted >= 5_600, "{} windows, {counted} orders", windows.len());
}

/// A worker of the `revenue` job, running until stopped.
fn worker(dir: &Path) -> std::process::Child {
    weir_command(dir)
        .args(["stream", "run", "revenue", "--worker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The events of `orders` the job's consumer group has committed past, over its three
/// partitions.
fn committed(dir: &Path) -> u64 {
    let o = weir(dir, &["--log-format", "json", "log", "describe", "orders"]);
    let Ok(d) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else { return 0 };
    let group = d["groups"].as_array().into_iter().flatten().find(|g| g["group"] == "weir-stream.revenue");
    group.and_then(|g| g["positions"].as_array()).into_iter().flatten().filter_map(|p| p["offset"].as_u64()).sum()
}

/// Waits until the job's group has committed past `n` events of `orders`.
fn all_committed(dir: &Path, n: u64) {
    let until = std::time::Instant::now() + Duration::from_secs(150);
    while committed(dir) != n {
        if std::time::Instant::now() > until {
            let status = text(&weir(dir, &["stream", "status", "revenue"]));
            panic!("the workers never committed {n} events: {}\n{status}", committed(dir));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stop(child: std::process::Child) {
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a worker stopped badly: {}", String::from_utf8_lossy(&out.stderr));
}

/// 6,000 orders produced in three rounds while two workers share the `revenue` job, a third
/// joins, the first stops and a fourth takes its place; `meanwhile` runs once every order is
/// committed, before the workers stop. (A worker leaves the group as it stops; neither test
/// broker deals a dead member's partitions again reliably, so none is killed with -9.)
fn joins_and_leaves(broker: &Broker, dir: &Path, meanwhile: impl FnOnce()) {
    produce(broker, 0, 2_000);
    let (a, b) = (worker(dir), worker(dir));
    std::thread::sleep(Duration::from_secs(4));
    produce(broker, 2_000, 2_000);
    let c = worker(dir);
    std::thread::sleep(Duration::from_secs(3));
    stop(a);
    produce(broker, 4_000, 2_000);
    let d = worker(dir);
    all_committed(dir, 6_000);
    meanwhile();
    for w in [b, c, d] {
        stop(w);
    }
}

/// Workers joining, a worker leaving, and rebalances with windows open, on the broker with
/// transactions; each partition moves with its window state.
#[test]
fn workers_share_a_job_through_joins_leaves_and_rebalances_mid_window() {
    let expected = uninterrupted();

    // Two workers share it; a third joins while windows are open; the first goes and
    // another takes its place; the partitions move with their window state each time.
    let broker = Broker::start();
    let dir = project(&broker);
    joins_and_leaves(&broker, dir.path(), || {
        let o = weir(dir.path(), &["stream", "status", "revenue"]);
        assert!(o.status.success() && text(&o).contains("workers: "), "{}", text(&o));
    });
    // Each partition's task keeps its own positions and counts beside the others'.
    let positions = query(
        &dir.path().join("t.duckdb"),
        "select \"partition\", \"offset\" from _weir_stream_positions where job = 'revenue' order by 1",
    );
    let offsets: u64 = positions.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!((positions.len(), offsets), (3, 6_000), "{positions:?}");

    let got = results(&broker);
    assert_once(&got, "workers");
    let got = last(got);
    // Every window of the run in one process, with the same figures. (A worker's watermark
    // is its partition's own, ahead of the least over all partitions: it may close a last
    // window or two that the run in one process still held open.)
    for (window, figures) in &expected {
        assert_eq!(got.get(window), Some(figures), "window {window}");
    }
    assert!(got.len() <= expected.len() + 10, "{} windows against {}", got.len(), expected.len());
}

/// Workers writing the warehouse: each partition's rows and positions go in one of its
/// transactions, under the task's claim on the partition, and the consumer group is told the
/// positions at checkpoints. Workers join and leave with windows open; every window's row is
/// there once, with the figures of all its orders.
#[test]
fn workers_share_a_job_that_writes_a_table_through_joins_and_leaves() {
    let broker = Broker::start();
    let dir = project(&broker);
    std::fs::write(dir.path().join("streams/revenue.sql"), JOB.replace("sink='topic', topic='revenue_out', ", "")).unwrap();
    joins_and_leaves(&broker, dir.path(), || {});
    let db = dir.path().join("t.duckdb");
    let positions = query(&db, "select \"partition\", \"offset\" from _weir_stream_positions where job = 'revenue' order by 1");
    let offsets: u64 = positions.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!((positions.len(), offsets), (3, 6_000), "{positions:?}");
    let owners = query(&db, "select count(*), count(distinct member) > 1 from _weir_stream_owners where job = 'revenue'");
    assert_eq!(owners, vec![vec!["3".to_string(), "true".to_string()]], "each partition claimed, by more than one worker");
    assert_every_window(&db, 6_000);
}

/// Asserts that the `revenue` table of `db` holds each window of the first `n` orders
/// `produce` makes once, with the figures of all its orders, and every window closed before
/// their last seconds.
fn assert_every_window(db: &Path, n: i64) {
    let mut expected: BTreeMap<(String, i64), (i64, f64)> = BTreeMap::new();
    let countries = ["DE", "FR", "NL", "IT", "ES"];
    for i in 0..n {
        let ms = 1_796_205_600_000 + i * 25 - if i % 50 == 7 { 700 } else { 0 };
        let e = expected.entry((countries[i as usize % 5].to_string(), ms.div_euclid(2_000) * 2_000)).or_default();
        e.0 += 1;
        e.1 += (i % 17) as f64 + 0.5;
    }
    let rows = query(
        db,
        "select country, epoch_ms(window_start), orders, revenue, count(*) over (partition by country, window_start) from revenue",
    );
    for r in &rows {
        assert_eq!(r[4], "1", "a window written twice: {r:?}");
        let want = expected.get(&(r[0].clone(), r[1].parse().unwrap()));
        assert_eq!(want.map(|(n, sum)| (n.to_string(), *sum)), Some((r[2].clone(), r[3].parse::<f64>().unwrap())), "{r:?}");
    }
    let closed = expected.keys().filter(|(_, start)| *start + 2_000 <= 1_796_205_600_000 + n * 25 - 3_000).count();
    assert!(rows.len() >= closed, "{} windows of {closed}", rows.len());
}

/// A job grouped by a column its topic is not keyed by runs in two stages through an internal
/// topic: every window has the figures of all its orders, as in one process, through workers
/// joining and leaving.
#[test]
fn workers_repartition_a_job_grouped_by_another_column_than_the_topics_key() {
    let broker = Broker::start();
    let dir = project(&broker);
    let topics = std::fs::read_to_string(dir.path().join("streams/shop.yml")).unwrap().replace("key: country", "key: order_id");
    std::fs::write(dir.path().join("streams/shop.yml"), topics).unwrap();
    std::fs::write(dir.path().join("streams/revenue.sql"), JOB.replace("sink='topic', topic='revenue_out', ", "")).unwrap();
    // Orders keyed by their id: each country's orders in every partition.
    broker.python(
        r#"
import os, json, datetime
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random"})
countries = ["DE", "FR", "NL", "IT", "ES"]
for i in range(0, 6000):
    ms = 1796205600000 + i * 25 - (700 if i % 50 == 7 else 0)
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    p.produce("orders", key=str(i), value=json.dumps({"order_id": i, "country": countries[i % 5], "amount": i % 17 + 0.5, "ordered_at": at}))
    p.poll(0)
p.flush()
"#,
    );
    let (a, b) = (worker(dir.path()), worker(dir.path()));
    std::thread::sleep(Duration::from_secs(4));
    let c = worker(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    stop(a);
    all_committed(dir.path(), 6_000);
    // The second stage has read all the first forwarded.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = weir(dir.path(), &["--log-format", "json", "stream", "status", "revenue"]);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if s["events"]["read"].as_u64() == Some(6_000) {
            let internal = s["positions"].as_array().into_iter().flatten().filter(|p| p["topic"] == "weir-stream.revenue-repartition");
            assert_eq!(internal.count(), 3, "{s}");
            break;
        }
        assert!(std::time::Instant::now() < until, "the second stage never read every order: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for w in [b, c] {
        stop(w);
    }
    let db = dir.path().join("t.duckdb");
    let read = query(&db, "select sum(events_read), sum(late), sum(rejected) from _weir_stream_positions where job = 'revenue'");
    assert_eq!(read, vec![vec!["6000".to_string(), "0".to_string(), "0".to_string()]], "every order read once, none late");
    assert_every_window(&db, 6_000);

    // Reset: the group goes back to the first order, and past what was forwarded before; one
    // worker, drained, reads every order once again.
    let o = weir(dir.path(), &["stream", "reset", "revenue"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = weir(dir.path(), &["stream", "run", "revenue", "--worker", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    let read = query(&db, "select sum(events_read), sum(late), sum(rejected) from _weir_stream_positions where job = 'revenue'");
    assert_eq!(read, vec![vec!["6000".to_string(), "0".to_string(), "0".to_string()]], "after the reset: {}", text(&o));
    assert_every_window(&db, 6_000);
}

#[test]
fn a_job_workers_cannot_share_is_refused_with_the_reason() {
    let dir = minimal(&[
        ("weir.yml", "kafka:\n  bootstrap_servers: 127.0.0.1:1\n"),
        (
            "streams/shop.yml",
            "topics:\n  - name: orders\n    log: kafka\n    partitions: 3\n    key: order_id\n    \
             columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
             watermark: ordered_at - interval '1 second'\n  - name: payments\n    log: kafka\n    key: order_id\n    \
             columns: {order_id: bigint, paid_at: timestamp}\n    watermark: paid_at - interval '1 second'\n",
        ),
        ("streams/revenue.sql", JOB),
    ]);
    // Grouped by an expression: the events cannot be repartitioned by it.
    std::fs::write(
        dir.path().join("streams/revenue.sql"),
        JOB.replace("select country", "select upper(country) as c").replace("group by country", "group by upper(country)"),
    )
    .unwrap();
    let o = weir(dir.path(), &["stream", "run", "revenue", "--worker"]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("groups by `upper(country)`, which is no column of the stream"), "{t}");
    // A join of two streams pairs events across both topics' partitions.
    std::fs::write(
        dir.path().join("streams/revenue.sql"),
        "select o.order_id, p.paid_at from {{ stream('orders') }} o join {{ stream('payments') }} p \
         on o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at + interval '2 seconds'\n",
    )
    .unwrap();
    let o = weir(dir.path(), &["stream", "run", "revenue", "--worker"]);
    assert!(!o.status.success() && text(&o).contains("a join of two streams"), "{}", text(&o));
}

/// Python for the tests' checks: `wait(topic, n, value_de, key_de)` reads a topic from its
/// start with `read_committed`, deserializing keys and values, until it holds `n` records
/// (90 s at most); a `None` deserializer leaves the bytes as they are.
const DESERIALIZED: &str = r#"
import os, time
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.serialization import SerializationContext, MessageField
def read(topic, value_de, key_de):
    c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "checker-" + topic, "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    md = c.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or not md.partitions:
        return []
    c.assign([TopicPartition(topic, q, 0) for q in md.partitions])
    out, ended = [], set()
    while len(ended) < len(md.partitions):
        msg = c.poll(10)
        if msg is None:
            break
        if msg.error():
            ended.add(msg.partition())
            continue
        de = lambda d, b, f: d(b, SerializationContext(topic, f)) if d else b
        out.append((de(key_de, msg.key(), MessageField.KEY), de(value_de, msg.value(), MessageField.VALUE)))
    c.close()
    return out
def wait(topic, n, value_de, key_de=None):
    until = time.time() + 90
    got = read(topic, value_de, key_de)
    while len(got) < n and time.time() < until:
        time.sleep(1)
        got = read(topic, value_de, key_de)
    return got
"#;

/// Avro both ways: Confluent's AvroSerializer writes the events (registering their schema
/// with `weir serve`'s registry), `weir serve` runs the job over the `format: avro` topic and
/// writes its results as Avro under the schema it registers for its sink topic, and
/// Confluent's AvroDeserializer reads them with `read_committed`. A change of the job's output
/// that readers of the topic could not follow then stops the job, naming the rule it breaks.
#[test]
fn avro_topics_are_read_and_written_through_the_schema_registry() {
    let broker = Broker::start();
    let topics = "topics:\n  - name: orders\n    log: kafka\n    partitions: 2\n    key: country\n    format: avro\n    \
        columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
        watermark: ordered_at - interval '1 second'\n  - name: totals\n    log: kafka\n    partitions: 2\n    format: avro\n";
    let job = "{{ config(sink='topic', topic='totals', checkpoint_interval='200ms') }}\n\
        select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
        from tumble({{ stream('orders') }}, ordered_at, interval '2 seconds')\n\
        group by country, window_start, window_end\n";
    let weir_yml = format!("kafka:\n  bootstrap_servers: {}\n  timeout: 20s\n", broker.servers());
    let dir = minimal(&[("weir.yml", weir_yml.as_str()), ("streams/shop.yml", topics), ("streams/totals.sql", job)]);
    let o = weir(dir.path(), &["log", "describe", "orders"]);
    assert!(o.status.success(), "{}", text(&o));

    let serve = common::Serve::start(dir.path(), &[]);
    let client = format!(
        "from confluent_kafka.schema_registry import SchemaRegistryClient\n\
         from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer\n\
         from confluent_kafka.serialization import SerializationContext, MessageField\n\
         client = SchemaRegistryClient({{'url': '{}/registry', 'basic.auth.user.info': 'weir:{}'}})\n",
        serve.base,
        common::TOKEN
    );
    // 300 orders 20 ms apart (three 2-second windows of 100), then one 20 s later that
    // closes them.
    let check = broker.python(&format!(
        r#"{client}{deserialized}
import datetime, json, os, time
from confluent_kafka import Consumer, Producer, TopicPartition
schema = json.dumps({{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {{"name": "order_id", "type": "long"}}, {{"name": "country", "type": "string"}}, {{"name": "amount", "type": "double"}},
    {{"name": "ordered_at", "type": {{"type": "long", "logicalType": "timestamp-millis"}}}}]}})
ser = AvroSerializer(client, schema)
p = Producer({{"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random"}})
ctx = SerializationContext("orders", MessageField.VALUE)
base = 1796205600000
expected = {{}}
for i in range(301):
    ms = base + i * 20 if i < 300 else base + 20000
    c = ["DE", "FR", "NL"][i % 3]
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    p.produce("orders", key=c, value=ser({{"order_id": i, "country": c, "amount": i % 7 + 0.5, "ordered_at": at}}, ctx))
    if i < 300:
        start = datetime.datetime.fromtimestamp((ms // 2000) * 2, datetime.timezone.utc)
        n, s = expected.get((c, start), (0, 0.0))
        expected[(c, start)] = (n + 1, s + i % 7 + 0.5)
p.flush()
got = [v for _, v in wait("totals", len(expected), AvroDeserializer(client))]
results = {{(r["country"], r["window_start"]): (r["orders"], r["revenue"]) for r in got}}
assert len(got) == len(expected) == 9, (len(got), got)
assert results == expected, (results, expected)
print("ok", len(got))
"#,
        deserialized = DESERIALIZED
    ));
    assert!(check.contains("ok 9"), "{check}");
    let subjects = weir(dir.path(), &["registry", "subjects"]);
    assert!(text(&subjects).contains("orders-value") && text(&subjects).contains("totals-value"), "{}", text(&subjects));
    serve.terminate();
    // `weir log consume` prints the messages decoded with their schemas.
    let o = weir(dir.path(), &["log", "consume", "totals", "--max", "1"]);
    let line: serde_json::Value = serde_json::from_str(text(&o).lines().next().unwrap_or("")).unwrap_or_default();
    assert!(line["value"]["orders"].is_i64() && line["value"]["window_start"].is_string(), "{}", text(&o));
    // JSON lines for `orders` are written under the schema of its declared columns, which
    // the subject (holding the Python producer's `shop.Order`) refuses: nothing is produced.
    let o = weir_command(dir.path())
        .args(["log", "produce", "orders"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"{\"order_id\": 1, \"country\": \"DE\", \"amount\": 1.5, \"ordered_at\": \"2026-12-01 10:00:00\"}\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!o.status.success() && text(&o).contains("orders-value"), "{}", text(&o));

    // `revenue` now a count (a long): readers of `totals` could not read the doubles already
    // written with it.
    let changed = job.replace("sum(amount) as revenue", "count(amount) as revenue");
    std::fs::write(dir.path().join("streams/totals.sql"), changed).unwrap();
    let o = weir(dir.path(), &["stream", "run", "totals", "--drain"]);
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(said.contains("do not fit topic 'totals'") && said.contains("\"totals-value\"") && said.contains("/fields/revenue"), "{said}");
}

/// JSON Schema and Protobuf both ways, crossed: Confluent's `JSONSerializer` writes orders
/// to a `json_schema` topic and its `ProtobufSerializer` (a message type with a
/// `google.protobuf.Timestamp`, built at run time) the same orders to a `protobuf` topic;
/// `weir serve` runs a job over each, the first writing Protobuf, the second JSON Schema; and
/// Confluent's deserializers read both jobs' windows, keys and values, with `read_committed`.
#[test]
fn json_schema_and_protobuf_topics_are_read_and_written_with_confluents_serializers() {
    let broker = Broker::start();
    let columns = "columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
        watermark: ordered_at - interval '1 second'\n";
    let topics = format!(
        "topics:\n  - name: orders_j\n    log: kafka\n    format: json_schema\n    {columns}  - name: orders_p\n    log: kafka\n    \
         format: protobuf\n    {columns}  - name: totals_p\n    log: kafka\n    format: protobuf\n  - name: totals_j\n    log: kafka\n    \
         format: json_schema\n    subject_strategy: topic_record\n"
    );
    let job = |from: &str, to: &str| {
        format!(
            "{{{{ config(sink='topic', topic='{to}', checkpoint_interval='200ms') }}}}\n\
             select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
             from tumble({{{{ stream('{from}') }}}}, ordered_at, interval '2 seconds')\n\
             group by country, window_start, window_end\n"
        )
    };
    let (to_proto, to_json) = (job("orders_j", "totals_p"), job("orders_p", "totals_j"));
    let weir_yml = format!("kafka:\n  bootstrap_servers: {}\n  timeout: 20s\n", broker.servers());
    let dir = minimal(&[
        ("weir.yml", weir_yml.as_str()),
        ("streams/shop.yml", topics.as_str()),
        ("streams/to_proto.sql", to_proto.as_str()),
        ("streams/to_json.sql", to_json.as_str()),
    ]);
    for t in ["orders_j", "orders_p"] {
        let o = weir(dir.path(), &["log", "describe", t]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let serve = common::Serve::start(dir.path(), &[]);
    let check = broker.python(&format!(
        r#"{deserialized}
import datetime, json, os, time, base64
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer, JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer, ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
client = SchemaRegistryClient({{'url': '{base}/registry', 'basic.auth.user.info': 'weir:{token}'}})

order_schema = json.dumps({{"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {{"order_id": {{"type": "integer"}}, "country": {{"type": "string"}}, "amount": {{"type": "number"}},
                    "ordered_at": {{"type": "string", "format": "date-time"}}}}, "required": ["order_id", "country"]}})
to_json = JSONSerializer(order_schema, client)

pool = descriptor_pool.DescriptorPool()
pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
fdp = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3",
                                         dependency=["google/protobuf/timestamp.proto"])
m = fdp.message_type.add(name="Order")
m.field.add(name="order_id", number=1, type=3, label=1)
m.field.add(name="country", number=2, type=9, label=1)
m.field.add(name="amount", number=3, type=1, label=1)
m.field.add(name="ordered_at", number=4, type=11, label=1, type_name=".google.protobuf.Timestamp")
pool.Add(fdp)
Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
to_proto = ProtobufSerializer(Order, client, {{"use.deprecated.format": False}})

p = Producer({{"bootstrap.servers": os.environ["BOOTSTRAP"]}})
base = 1796205600000
expected = {{}}
for i in range(301):
    ms = base + i * 20 if i < 300 else base + 20000
    c = ["DE", "FR", "NL"][i % 3]
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    amount = i % 7 + 0.5
    p.produce("orders_j", value=to_json({{"order_id": i, "country": c, "amount": amount,
        "ordered_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}}, SerializationContext("orders_j", MessageField.VALUE)))
    o = Order(order_id=i, country=c, amount=amount)
    o.ordered_at.FromMilliseconds(ms)
    p.produce("orders_p", value=to_proto(o, SerializationContext("orders_p", MessageField.VALUE)))
    if i < 300:
        start = datetime.datetime.fromtimestamp((ms // 2000) * 2, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        n, s = expected.get((c, start), (0, 0.0))
        expected[(c, start)] = (n + 1, s + amount)
p.flush()

def message_class(topic, suffix):
    # Weir's schema, as Confluent's deserializers take it: built from the registered file.
    latest = client.get_latest_version(topic + "-" + suffix)
    raw = client.get_schema(latest.schema_id, fmt="serialized")
    f = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(raw.schema_str))
    f.name = topic + "-" + suffix + ".proto"
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("weir." + f.message_type[0].name))

# Protobuf written by Weir: values and keys of its registered messages.
while True:
    try:
        Totals, TotalsKey = message_class("totals_p", "value"), message_class("totals_p", "key")
        break
    except Exception:
        time.sleep(0.5)
got = wait("totals_p", len(expected), ProtobufDeserializer(Totals, {{"use.deprecated.format": False}}, client),
           ProtobufDeserializer(TotalsKey, {{"use.deprecated.format": False}}, client))
proto = {{(v.country, v.window_start.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")): (v.orders, v.revenue) for _, v in got}}
assert len(got) == 9 and proto == expected, (len(got), proto, expected)
assert all(k.country == v.country and k.window_start == v.window_start for k, v in got), got[:2]

# JSON Schema written by Weir, its writer schema fetched by id and validated against.
de = JSONDeserializer(None, schema_registry_client=client)
got = wait("totals_j", len(expected), de, de)
js = {{(v["country"], v["window_start"]): (v["orders"], v["revenue"]) for _, v in got}}
assert len(got) == 9 and js == expected, (len(got), js, expected)
assert all(k == {{"country": v["country"], "window_start": v["window_start"]}} for k, v in got), got[:2]
print("ok", len(got))
"#,
        deserialized = DESERIALIZED,
        base = serve.base,
        token = common::TOKEN
    ));
    assert!(check.contains("ok 9"), "{check}");
    serve.terminate();
    let subjects = text(&weir(dir.path(), &["registry", "subjects"]));
    for s in ["orders_j-value", "orders_p-value", "totals_p-value", "totals_p-key", "totals_j-weir.totals_j", "totals_j-weir.totals_j_key"]
    {
        assert!(subjects.contains(s), "{s}: {subjects}");
    }
}
