//! Loads into topics (`to: topic`) on the embedded event log: rows published once as events
//! of the topic's columns and key, rows that do not fit rejected with the reason, and runs a
//! crash broke off settled from the log's mark, so that nothing is published twice.

mod common;

use std::sync::Arc;

use common::Project;
use serde_json::Value as J;
use weir_connect::topic::TopicOut;
use weir_connect::{LoadOptions, run_load};
use weir_log::Log;

const TOPICS: &str = "topics:\n  - name: orders\n    partitions: 2\n    key: country\n    \
    columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n";

fn publish(p: &Project, load: &weir_connect::Load) -> Result<weir_connect::LoadReport, weir_connect::ConnectError> {
    let topic = TopicOut::in_project(p.root(), load.topic.as_deref().unwrap())?;
    let opts = LoadOptions {
        root: p.root().to_path_buf(),
        database: p.database.clone(),
        full_refresh: false,
        progress: None,
        topic: Some(Arc::new(topic)),
    };
    run_load(p.wh.as_ref(), load, &p.store, &opts)
}

/// Every event of the topic: (partition, key, value).
fn events(p: &Project, topic: &str) -> Vec<(u32, Option<String>, J)> {
    let log = weir_log::EmbeddedLog::open(&p.root().join(".weir/log")).unwrap();
    let info = log.describe(topic).unwrap();
    let mut out = vec![];
    for part in &info.partitions {
        for r in log.read(topic, part.partition, part.start, 100_000).unwrap() {
            let key = r.key.map(|k| String::from_utf8(k).unwrap());
            out.push((part.partition, key, serde_json::from_slice(&r.value).unwrap()));
        }
    }
    out
}

fn status_of(p: &Project, load: &str) -> Vec<(String, Option<String>)> {
    p.store.load_runs(load, 20).unwrap().into_iter().map(|r| (r.status, r.message)).collect()
}

#[test]
fn a_file_load_publishes_its_rows_once_keyed_and_typed_by_the_topics_columns() {
    let p = Project::duckdb();
    p.write("streams/shop.yml", TOPICS);
    p.write(
        "drop/a.csv",
        "order_id,country,amount,ordered_at,note\n1,DE,10.5,2026-12-01 10:00:00,x\n2,FR,lots,2026-12-01 10:00:01,y\n3,DE,7,2026-12-01 10:00:02,z\n",
    );
    let load = p.load("loads:\n  - name: orders_in\n    source: {kind: csv, path: 'drop/*.csv'}\n    to: topic\n    topic: orders\n");
    let r = publish(&p, &load).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (3, 2, 1), "{}", r.summary());
    assert!(r.summary().starts_with("2 events into topic 'orders'"), "{}", r.summary());
    assert_eq!(r.rejected_sample[0].reason, "column amount: 'lots' is not a double");
    let rejected = p.rows("select position, reason from raw._weir_rejected");
    assert_eq!(rejected, [["row 2", "column amount: 'lots' is not a double"]]);

    let got = events(&p, "orders");
    assert_eq!(got.len(), 2);
    for (partition, key, value) in &got {
        assert_eq!(key.as_deref(), value["country"].as_str(), "keyed by the topic's key");
        assert_eq!(*partition, weir_log::partition_for(key.as_deref().unwrap().as_bytes(), 2), "in its key's partition");
        assert!(value.get("note").is_none(), "only the declared columns: {value}");
    }
    let first = got.iter().find(|e| e.2["order_id"] == 1).unwrap();
    assert_eq!(first.2, serde_json::json!({"order_id": 1, "country": "DE", "amount": 10.5, "ordered_at": "2026-12-01T10:00:00Z"}));

    // A file already loaded is not published again; a new one is, alone.
    let r = publish(&p, &load).unwrap();
    assert!(r.up_to_date, "{}", r.summary());
    p.write("drop/b.csv", "order_id,country,amount,ordered_at,note\n4,NL,1.25,2026-12-01 10:00:03,w\n");
    let r = publish(&p, &load).unwrap();
    assert_eq!(r.rows_loaded, 1);
    assert_eq!(events(&p, "orders").len(), 3);
}

/// A log is read in the order it was written: a file large enough for DuckDB to read in
/// parallel is still published row after row.
#[test]
fn events_keep_the_files_row_order() {
    let p = Project::duckdb();
    let mut csv = String::from("id,note\n");
    for i in 0..400_000 {
        csv.push_str(&format!("{i},row number {i} of the file\n"));
    }
    p.write("data/big.csv", &csv);
    let load = p.load("loads:\n  - name: big\n    source: {kind: csv, path: data/big.csv}\n    to: topic\n");
    assert_eq!(publish(&p, &load).unwrap().rows_loaded, 400_000);
    let log = weir_log::EmbeddedLog::open(&p.root().join(".weir/log")).unwrap();
    let mut expected = 0i64;
    let mut at = 0;
    loop {
        let records = log.read("big", 0, at, 50_000).unwrap();
        let Some(last) = records.last() else { break };
        at = last.offset + 1;
        for r in &records {
            let v: J = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["id"].as_i64(), Some(expected), "at offset {}", r.offset);
            expected += 1;
        }
    }
    assert_eq!(expected, 400_000);
}

#[test]
fn a_run_broken_off_around_its_commit_is_settled_from_the_topics_mark() {
    let p = Project::duckdb();
    p.write("data/a.jsonl", "{\"id\": 1, \"tags\": [\"a\", \"b\"], \"at\": {\"x\": 1}}\n{\"id\": 2, \"tags\": [], \"at\": {\"x\": 2}}\n");
    // No declaration: the topic is made on first use, JSON, one partition, with the
    // source's columns, nested values as JSON.
    let load = p.load("loads:\n  - name: things\n    source: {kind: jsonl, path: data/a.jsonl}\n    to: topic\n    primary_key: id\n");
    publish(&p, &load).unwrap();
    let got = events(&p, "things");
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].1.as_deref(), &got[0].2["tags"], &got[0].2["at"]["x"]), (Some("1"), &serde_json::json!(["a", "b"]), &J::from(1)));

    // The process died after publishing, before the store heard: the next run finds the
    // run's mark on the log and keeps what it had prepared (its file stays loaded).
    let db = rusqlite::Connection::open(p.root().join(".weir/weir.db")).unwrap();
    db.execute("update weir_load_runs set status = 'publishing', finished_at = null", []).unwrap();
    let r = publish(&p, &load).unwrap();
    assert!(r.up_to_date, "the file counts as loaded: {}", r.summary());
    let runs = status_of(&p, "things");
    assert_eq!(runs[1].0, "committed");
    assert!(runs[1].1.as_deref().unwrap_or("").contains("settled from topic 'things'"), "{runs:?}");

    // It died before publishing: the run failed, and its rows are published by the next.
    p.write("data/a.jsonl", "{\"id\": 3, \"tags\": [], \"at\": {\"x\": 3}}\n");
    db.execute(
        "insert into weir_load_runs (load_id, load_name, destination, status, started_at, pending_files)
         values ('00000000-0000-4000-8000-000000000001', 'things', 'topic:things', 'publishing', '2026-12-04T00:00:00Z', '[]')",
        [],
    )
    .unwrap();
    let r = publish(&p, &load).unwrap();
    assert_eq!(r.rows_loaded, 1, "{}", r.summary());
    let failed = p.store.load_runs("things", 20).unwrap().into_iter().find(|r| r.load_id.starts_with("00000000")).unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.message.as_deref()),
        ("failed", Some("interrupted before it published: none of its events were kept"))
    );
    assert_eq!(events(&p, "things").len(), 3, "nothing twice");
}

#[test]
fn a_postgres_warehouse_stages_the_rows_it_publishes() {
    let p = Project::postgres();
    let schema = format!("raw_topic_{}", std::process::id());
    p.write("data/a.csv", "id,name\n1,ada\n2,grace\n");
    // Its stage and rejected rows are in the schema `destination` names.
    let load = p.load(&format!(
        "loads:\n  - name: people\n    source: {{kind: csv, path: data/a.csv}}\n    to: topic\n    destination: {schema}\n"
    ));
    let r = publish(&p, &load);
    p.execute(&format!("drop schema if exists {schema} cascade"));
    let r = r.unwrap();
    assert_eq!(r.rows_loaded, 2, "{}", r.summary());
    let names: Vec<J> = events(&p, "people").into_iter().map(|e| e.2["name"].clone()).collect();
    assert_eq!(names, [J::from("ada"), J::from("grace")]);
}
