//! A DuckDB mirror kept by the stream of a real PostgreSQL: transactions of inserts, updates
//! that leave a TOAST value unchanged, a row moved to another key, deletes, a truncate and a
//! large streamed transaction, merged in micro-batches; the mirror must equal the source
//! table, and the position must be where the last batch ended.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as J};
use support::PrivatePostgres;
use weir_cdc::changes::Collapser;
use weir_cdc::mirror::{Mirror, MirrorOptions};
use weir_cdc::{ChangeSource, Config, Connection, Decoder, Lsn, Message};
use weir_warehouse::Warehouse;

#[test]
fn a_duckdb_mirror_merged_batch_by_batch_equals_the_source_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut fields = Map::new();
    fields.insert("path".into(), J::String(dir.path().join("wh.duckdb").display().to_string()));
    let wh: Arc<dyn Warehouse> = Arc::from(weir_warehouse::open("duckdb", &fields, dir.path()).unwrap());
    mirror_equals_source(wh, "wh", "mirror");
}

#[test]
fn a_postgresql_mirror_merged_batch_by_batch_equals_the_source_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut fields = Map::new();
    for (k, v) in [("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"), ("dbname", "test")] {
        fields.insert(k.into(), v.into());
    }
    let wh: Arc<dyn Warehouse> = Arc::from(weir_warehouse::open("postgres", &fields, dir.path()).unwrap());
    let schema = format!("weir_cdc_test_{}", std::process::id());
    let dropped = |wh: &Arc<dyn Warehouse>| wh.connect().and_then(|mut c| c.execute(&format!("drop schema if exists {schema} cascade")));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mirror_equals_source(wh.clone(), "test", &schema)));
    dropped(&wh).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The scenario, mirrored into `database.schema` of `wh`.
fn mirror_equals_source(wh: Arc<dyn Warehouse>, database: &str, schema: &str) {
    let pg = PrivatePostgres::start(&["logical_decoding_work_mem=64kB"]);
    let mut db = pg.connect();
    db.batch_execute(
        "create table orders (id int primary key, note text, amount numeric(10,2), paid boolean, at timestamp, big text);
         alter table orders alter column big set storage external;",
    )
    .unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    let config = Config { host: "127.0.0.1".into(), port: pg.port, user: "postgres".into(), password: None, database: "postgres".into() };
    let mut conn = Connection::connect(&config).unwrap();
    conn.create_slot("weir_slot").unwrap();

    for sql in [
        "insert into orders select i, 'n' || i, i * 1.25, i % 2 = 0, timestamp '2026-12-03 10:00:00' + i * interval '1 minute', repeat(md5(i::text), 200) from generate_series(1, 50) i",
        "update orders set note = 'changed', paid = not paid where id % 5 = 0",
        "update orders set id = id + 1000 where id in (3, 7)",
        "delete from orders where id in (10, 20, 1003)",
        "begin; update orders set amount = amount * 2 where id < 30; delete from orders where id = 1; commit",
        "truncate orders",
        "insert into orders select i, 'again', i, true, timestamp '2026-12-03', repeat('b', 3000) from generate_series(1, 40) i",
        // Large enough to arrive streamed before its commit.
        "insert into orders select i, repeat('s', 100), i, false, null, null from generate_series(100, 2100) i",
        "update orders set note = 'last' where id between 5 and 15",
        "select pg_logical_emit_message(true, 'weir-test', 'done')",
    ] {
        db.batch_execute(sql).unwrap();
    }

    let mut mirror = Mirror::open(wh.clone(), "shop", database, schema, MirrorOptions::default()).unwrap();
    assert_eq!(mirror.position().unwrap(), None);

    let mut stream = conn
        .start("weir_slot", Lsn(0), &[("proto_version", "2"), ("publication_names", "weir_pub"), ("streaming", "on"), ("messages", "true")])
        .unwrap();
    let (mut decoder, mut collapser) = (Decoder::new(), Collapser::new());
    let (mut seen, mut done, mut batches) = (0, false, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the stream did not end within 60 s");
        let Some(wal) = stream.recv(Duration::from_secs(5)).unwrap() else { continue };
        let message = decoder.decode(&wal.data).unwrap();
        done |= matches!(&message, Message::Message { prefix, .. } if prefix == "weir-test");
        let committed = matches!(message, Message::Commit { .. } | Message::StreamCommit { .. });
        collapser.take(message).unwrap();
        seen += 1;
        // A micro-batch every 40 messages, cut wherever that falls.
        if (seen % 40 == 0 || (done && committed))
            && let Some(end) = collapser.end()
        {
            let tables = collapser.drain();
            mirror.apply(&tables, end).unwrap();
            stream.confirm(end).unwrap();
            batches += 1;
        }
        if done && committed {
            break;
        }
    }
    assert!(batches > 3, "{batches} batches");

    let source: Vec<Vec<Option<String>>> = db
        .query("select id::text, note, amount::text, paid::text, at::text, md5(big) from orders order by orders.id", &[])
        .unwrap()
        .iter()
        .map(|r| (0..6).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    let mut wconn = wh.connect().unwrap();
    let mirrored: Vec<Vec<Option<String>>> = wconn
        .query(&format!(
            "select cast(id as varchar), note, cast(amount as varchar), cast(paid as varchar), cast(\"at\" as varchar), md5(big) from {database}.{schema}.orders order by orders.id"
        ))
        .unwrap()
        .rows
        .iter()
        .map(|r| r.iter().map(|d| if d.is_null() { None } else { Some(d.to_string()) }).collect())
        .collect();
    assert_eq!(source.len(), 2041);
    let differ = mirrored.iter().zip(&source).position(|(m, s)| m != s);
    assert!(
        differ.is_none() && mirrored.len() == source.len(),
        "{} rows mirrored, {} at the source; first difference: {:?}",
        mirrored.len(),
        source.len(),
        differ.map(|i| (&mirrored[i], &source[i]))
    );
    let confirmed: String = db.query_one("select confirmed_flush_lsn::text from pg_replication_slots", &[]).unwrap().get(0);
    let stored = mirror.position().unwrap().unwrap();
    assert!(confirmed.parse::<Lsn>().unwrap() <= stored, "the server never holds a position past the mirror's");
}
