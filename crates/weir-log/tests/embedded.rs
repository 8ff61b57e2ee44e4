//! The embedded log on disk: keyed appends, reading back after reopening, several handles on
//! one folder, and atomic commits that survive `kill -9` at any moment exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_log::{Commit, EmbeddedLog, Log, Output, Positions, Record, Retention, TopicSpec, partition_for};

fn rec(key: &str, value: &str, ts: i64) -> Record {
    Record { key: Some(key.as_bytes().to_vec()), value: value.as_bytes().to_vec(), timestamp: ts, headers: vec![] }
}

#[test]
fn headers_are_kept_by_appends_and_commits_and_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    log.create_topic(&TopicSpec::new("t", 1)).unwrap();
    let with =
        |i: i64| Record { headers: vec![("trace".into(), format!("t{i}").into_bytes()), ("trace".into(), vec![])], ..rec("k", "v", i) };
    log.append("t", None, &[with(1), rec("k", "plain", 2)]).unwrap();
    let commit =
        Commit { outputs: vec![Output { topic: "t".into(), partition: None, records: vec![with(3)] }], positions: Positions::new() };
    log.commit("g", &commit).unwrap();
    drop(log);
    let log = EmbeddedLog::open(dir.path()).unwrap();
    let stored = log.read("t", 0, 0, 10).unwrap();
    let headers: Vec<_> = stored.iter().map(|r| r.headers.clone()).collect();
    assert_eq!(headers, vec![with(1).headers, vec![], with(3).headers]);
    let records = log.read_records("t", 0, 0, 10).unwrap();
    assert_eq!(records.iter().map(|r| r.headers()).collect::<Vec<_>>(), headers, "read in one buffer too");
}

#[test]
fn keyed_records_keep_their_partition_and_order_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    log.create_topic(&TopicSpec::new("orders", 4)).unwrap();
    let records: Vec<Record> = (0..400).map(|i| rec(&format!("c{}", i % 10), &format!("{i}"), i)).collect();
    let placed = log.append("orders", None, &records).unwrap();
    for (r, (p, _)) in records.iter().zip(&placed) {
        assert_eq!(*p, partition_for(r.key.as_deref().unwrap(), 4));
    }
    drop(log);

    let log = EmbeddedLog::open(dir.path()).unwrap();
    let info = log.describe("orders").unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.end).sum::<u64>(), 400);
    let mut by_key: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    for p in 0..4 {
        for r in log.read("orders", p, 0, usize::MAX).unwrap() {
            by_key.entry(r.key.unwrap()).or_default().push(String::from_utf8(r.value).unwrap().parse().unwrap());
        }
    }
    assert_eq!(by_key.len(), 10);
    for values in by_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "a key's records stay in order: {values:?}");
        assert_eq!(values.len(), 40);
    }
}

#[test]
fn topics_are_checked_and_keep_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    log.create_topic(&TopicSpec::new("a", 2)).unwrap();
    log.create_topic(&TopicSpec::new("a", 2)).unwrap();
    let e = log.create_topic(&TopicSpec::new("a", 3)).unwrap_err().to_string();
    assert!(e.contains("exists with 2 partition(s), not 3"), "{e}");
    let e = log.create_topic(&TopicSpec::new("../etc", 1)).unwrap_err().to_string();
    assert!(e.contains("may hold only letters"), "{e}");
    let e = log.append("nope", None, &[rec("k", "v", 0)]).unwrap_err().to_string();
    assert_eq!(e, "no topic named 'nope'");
    let e = log.read("a", 5, 0, 1).unwrap_err().to_string();
    assert!(e.contains("there is no partition 5"), "{e}");
    assert_eq!(log.topics().unwrap().iter().map(|t| t.spec.name.as_str()).collect::<Vec<_>>(), vec!["a"]);
}

#[test]
fn two_handles_on_one_folder_see_each_others_appends() {
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedLog::open(dir.path()).unwrap();
    let b = EmbeddedLog::open(dir.path()).unwrap();
    a.create_topic(&TopicSpec::new("t", 1)).unwrap();
    a.append("t", None, &[rec("k", "from a", 1)]).unwrap();
    assert_eq!(b.read("t", 0, 0, 10).unwrap().len(), 1);
    b.append("t", None, &[rec("k", "from b", 2)]).unwrap();
    let placed = a.append("t", None, &[rec("k", "from a again", 3)]).unwrap();
    assert_eq!(placed, vec![(0, 2)], "a appends after b's record, not over it");
    let values: Vec<String> = a.read("t", 0, 0, 10).unwrap().into_iter().map(|r| String::from_utf8(r.value).unwrap()).collect();
    assert_eq!(values, ["from a", "from b", "from a again"]);
}

#[test]
fn retention_deletes_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap().with_segment_bytes(4096);
    let mut spec = TopicSpec::new("t", 1);
    spec.retention = Retention { ms: Some(1000), bytes: None };
    log.create_topic(&spec).unwrap();
    for i in 0..100 {
        log.append("t", None, &[Record { key: None, value: vec![b'x'; 200], timestamp: i * 100, headers: vec![] }]).unwrap();
    }
    let removed = log.apply_retention(10_000).unwrap();
    assert!(removed > 0);
    let p = log.describe("t").unwrap().partitions[0];
    assert!(p.start > 0 && p.end == 100, "{p:?}");
    assert_eq!(log.read("t", 0, 0, 1).unwrap()[0].offset, p.start);
}

#[test]
fn a_commit_moves_outputs_and_positions_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    log.create_topic(&TopicSpec::new("in", 1)).unwrap();
    log.create_topic(&TopicSpec::new("out", 2)).unwrap();
    assert!(log.positions("job").unwrap().is_empty());
    let commit = Commit {
        outputs: vec![
            Output { topic: "out".into(), partition: None, records: vec![rec("a", "1", 0), rec("b", "2", 0)] },
            Output { topic: "out".into(), partition: Some(0), records: vec![rec("c", "3", 0)] },
            Output { topic: "out".into(), partition: Some(0), records: vec![rec("d", "4", 0)] },
        ],
        positions: Positions::from([(("in".to_string(), 0), 7)]),
    };
    log.commit("job", &commit).unwrap();
    assert_eq!(log.positions("job").unwrap()[&("in".to_string(), 0)], 7);
    let total: u64 = log.describe("out").unwrap().partitions.iter().map(|p| p.end).sum();
    assert_eq!(total, 4);
    let p0: Vec<Vec<u8>> = log.read("out", 0, 0, 10).unwrap().into_iter().map(|r| r.value).collect();
    assert!(p0.ends_with(&[b"3".to_vec(), b"4".to_vec()]), "outputs for one partition keep their order");
    assert_eq!(log.groups().unwrap(), vec!["job".to_string()]);
    assert!(!dir.path().join("groups/job.commit").exists(), "the journal is gone once applied");
}

/// What the crash test's child does: commits one output per input position, from where the
/// group stands, until it is killed.
const CHILD_ENV: &str = "WEIR_LOG_CRASH_CHILD_DIR";
const TOTAL: u64 = 3000;

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let log = EmbeddedLog::open(Path::new(&dir)).unwrap();
    let key = ("in".to_string(), 0);
    let mut next = log.positions("job").unwrap().get(&key).copied().unwrap_or(0);
    while next < TOTAL {
        // Two outputs per step, on two topics, so a crash can fall between them.
        let commit = Commit {
            outputs: vec![
                Output { topic: "out".into(), partition: None, records: vec![rec(&format!("k{}", next % 7), &next.to_string(), 0)] },
                Output { topic: "audit".into(), partition: Some(0), records: vec![rec("k", &next.to_string(), 0)] },
            ],
            positions: Positions::from([(key.clone(), next + 1)]),
        };
        log.commit("job", &commit).unwrap();
        next += 1;
    }
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every committed position has its outputs exactly once, in order, and nothing beyond it.
fn check_exactly_once(dir: &Path) -> u64 {
    let log = EmbeddedLog::open(dir).unwrap();
    let done = log.positions("job").unwrap().get(&("in".to_string(), 0)).copied().unwrap_or(0);
    let mut out: Vec<u64> = vec![];
    for p in 0..3 {
        out.extend(log.read("out", p, 0, usize::MAX).unwrap().iter().map(|r| String::from_utf8_lossy(&r.value).parse::<u64>().unwrap()));
    }
    out.sort_unstable();
    assert_eq!(out, (0..done).collect::<Vec<_>>(), "out holds each committed step once");
    let audit: Vec<u64> =
        log.read("audit", 0, 0, usize::MAX).unwrap().iter().map(|r| String::from_utf8_lossy(&r.value).parse().unwrap()).collect();
    assert_eq!(audit, (0..done).collect::<Vec<_>>(), "audit holds each committed step once, in order");
    done
}

#[test]
fn commits_are_exactly_once_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.create_topic(&TopicSpec::new("in", 1)).unwrap();
        log.create_topic(&TopicSpec::new("out", 3)).unwrap();
        log.create_topic(&TopicSpec::new("audit", 1)).unwrap();
    }
    let mut done = 0;
    let mut kills = 0;
    // Kill the child at varied moments (a simple LCG: no randomness crate needed).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    while done < TOTAL {
        let mut child = spawn_child(dir.path());
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 120));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let now = check_exactly_once(dir.path());
        assert!(now >= done, "positions never go back ({now} < {done})");
        done = now;
        if kills > 60 {
            // Let the last run finish on its own.
            let status = spawn_child(dir.path()).wait().unwrap();
            assert!(status.success());
            done = check_exactly_once(dir.path());
        }
    }
    assert_eq!(done, TOTAL);
    assert!(kills > 0, "the child was killed at least once");
}
