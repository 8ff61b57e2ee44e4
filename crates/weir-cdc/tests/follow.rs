//! A new mirror takes the slot's snapshot, then follows the stream; stopped part way and
//! started again from its mirror's position, nothing is missed, and the slot's confirmed
//! position never passes what the mirror holds.

#[path = "support/events.rs"]
mod events;
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as J};
use support::PrivatePostgres;
use weir_cdc::events::{Connector, Publisher};
use weir_cdc::follow::{Follow, follow};
use weir_cdc::mirror::{Mirror, MirrorOptions};
use weir_cdc::{Config, Connection, Lsn};
use weir_log::Log;
use weir_warehouse::Warehouse;

fn config(pg: &PrivatePostgres) -> Config {
    Config { host: "127.0.0.1".into(), port: pg.port, user: "postgres".into(), password: None, database: "postgres".into() }
}

/// A DuckDB file warehouse in `dir`.
fn duckdb(dir: &std::path::Path) -> Arc<dyn Warehouse> {
    let mut fields = Map::new();
    fields.insert("path".into(), J::String(dir.join("wh.duckdb").display().to_string()));
    Arc::from(weir_warehouse::open("duckdb", &fields, dir).unwrap())
}

/// What a test follows with: the private server's settings, a DuckDB warehouse in a folder
/// of its own, the slot `weir_slot` of publication `weir_pub` merged every 100 ms, and the
/// mirror of source `shop`.
fn follower(pg: &PrivatePostgres) -> (Config, tempfile::TempDir, Arc<dyn Warehouse>, Follow, Mirror) {
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let settings = Follow {
        slot: "weir_slot".into(),
        publication: "weir_pub".into(),
        batch_messages: 30,
        batch_wait: Duration::from_millis(100),
        ..Follow::default()
    };
    let mirror = Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap();
    (config(pg), dir, wh, settings, mirror)
}

fn count(wh: &Arc<dyn Warehouse>, sql: &str) -> i64 {
    wh.connect().unwrap().query(sql).unwrap().scalar().and_then(|d| d.as_i64()).unwrap_or(-1)
}

#[test]
fn a_new_mirror_takes_the_snapshot_then_a_follower_started_again_goes_on_from_its_position() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute("create table orders (id int primary key, note text, big text)").unwrap();
    db.batch_execute("alter table orders alter column big set storage external").unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    let config = config(&pg);
    // A slot left by a snapshot that never finished: made again.
    Connection::connect(&config).unwrap().create_slot("weir_slot").unwrap();
    db.batch_execute("insert into orders select g, 'before', repeat('y', 3000) from generate_series(1000, 1099) g").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let settings = Follow {
        slot: "weir_slot".into(),
        publication: "weir_pub".into(),
        batch_messages: 30,
        batch_wait: Duration::from_millis(200),
        ..Follow::default()
    };

    let mut mirror = Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap();
    let snapshot = follow(&config, &settings, &mut mirror, &mut |_| true).unwrap();
    assert_eq!(count(&wh, "select count(*) from orders"), 100, "the rows there before the slot come from its snapshot");
    let consistent = snapshot.position.unwrap();
    assert_eq!(mirror.position().unwrap(), Some(consistent));

    for i in 0..20 {
        db.batch_execute(&format!(
            "insert into orders select g, 'a', repeat('x', 4000) from generate_series({}, {}) g",
            i * 10,
            i * 10 + 9
        ))
        .unwrap();
    }
    let first = follow(&config, &settings, &mut mirror, &mut |p| p.batches >= 2).unwrap();
    assert_eq!(first.batches, 2);
    let held = first.position.unwrap();
    assert!(held > consistent);
    let part = count(&wh, "select count(*) from orders where id < 1000");
    assert!(part > 0 && part < 200, "{part} rows after two batches");
    drop(mirror);

    // More changes while it is away: unchanged TOAST values and a moved row among them.
    db.batch_execute("update orders set note = 'b' where id % 3 = 0; delete from orders where id % 7 = 0; update orders set id = id + 5000 where id in (1001, 1002)")
        .unwrap();
    db.batch_execute("insert into orders values (100000, 'done', null)").unwrap();

    let mut mirror = Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap();
    assert_eq!(mirror.position().unwrap(), Some(held));
    let second =
        follow(&config, &settings, &mut mirror, &mut |_| count(&wh, "select count(*) from orders where id = 100000") == 1).unwrap();
    assert!(second.position.unwrap() > held);

    let source: Vec<(i32, String, String)> = db
        .query("select id, note, md5(coalesce(big, '')) from orders order by id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mirrored = wh.connect().unwrap().query("select id, note, md5(coalesce(big, '')) from orders order by id").unwrap();
    let mirrored: Vec<(i32, String, String)> =
        mirrored.rows.iter().map(|r| (r[0].as_i64().unwrap_or(-1) as i32, r[1].to_string(), r[2].to_string())).collect();
    assert_eq!(mirrored.len(), source.len());
    assert!(mirrored == source, "the mirror differs from the source");
    let confirmed: String = db.query_one("select confirmed_flush_lsn::text from pg_replication_slots", &[]).unwrap().get(0);
    assert!(confirmed.parse::<Lsn>().unwrap() <= mirror.position().unwrap().unwrap());
}

#[test]
fn a_column_added_between_changes_of_one_batch_reaches_the_mirror() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute("create table people (id int primary key, name text); insert into people values (1, 'ann')").unwrap();
    db.batch_execute("create publication weir_pub for table people").unwrap();
    let (config, _dir, wh, settings, mut mirror) = follower(&pg);
    follow(&config, &settings, &mut mirror, &mut |_| true).unwrap();
    // One batch: a transaction under the old columns, then one that writes a row, adds a
    // column and writes rows under the new ones.
    db.batch_execute("insert into people values (2, 'bob')").unwrap();
    db.batch_execute(
        "begin;
         insert into people values (4, 'dee');
         alter table people add column city text;
         insert into people values (3, 'cy', 'oslo');
         update people set city = 'rome' where id = 1;
         commit;",
    )
    .unwrap();
    let written: String = db.query_one("select pg_current_wal_flush_lsn()::text", &[]).unwrap().get(0);
    let written: Lsn = written.parse().unwrap();
    let slow = Follow { batch_wait: Duration::from_secs(3), batch_messages: 100_000, ..settings };
    follow(&config, &slow, &mut mirror, &mut |p| p.position.is_some_and(|l| l >= written)).unwrap();
    let rows: Vec<String> = wh
        .connect()
        .unwrap()
        .query("select id || ':' || name || ':' || coalesce(city, '-') from people order by id")
        .unwrap()
        .rows
        .iter()
        .map(|r| r[0].to_string())
        .collect();
    assert_eq!(rows, ["1:ann:rome", "2:bob:-", "3:cy:oslo", "4:dee:-"]);
}

/// The history table and the change events keep every change whole, with its commit.
#[test]
fn the_history_and_the_events_keep_each_change_whole_with_its_commit() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute(
        "create table docs (id int primary key, note text, big text, at timestamptz default '2026-12-03 11:00:00+01');
         alter table docs alter column big set storage external;
         insert into docs values (1, 'first', repeat('x', 5000));
         create publication weir_pub for table docs",
    )
    .unwrap();
    let (config, dir, wh, settings, _) = follower(&pg);
    let options = MirrorOptions { history: true, ..MirrorOptions::default() };
    let log = Arc::new(weir_log::EmbeddedLog::open(&dir.path().join("log")).unwrap());
    let publisher = Publisher::new(log.clone(), "shop", Connector::Postgres { database: "postgres".into() }, vec![]);
    let mut mirror = Mirror::open(wh.clone(), "shop", "wh", "main", options).unwrap().with_events(publisher);
    follow(&config, &settings, &mut mirror, &mut |_| true).unwrap();
    // The large value is not sent again by an update that leaves it: the history takes the
    // mirror's. Two batches: the second update finds it only in the mirror.
    db.batch_execute("update docs set note = 'second' where id = 1; insert into docs values (2, 'other', 'small')").unwrap();
    let end = |db: &mut postgres::Client| -> Lsn {
        db.query_one("select pg_current_wal_flush_lsn()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap()
    };
    let at = end(&mut db);
    follow(&config, &settings, &mut mirror, &mut |p| p.position.is_some_and(|l| l >= at)).unwrap();
    db.batch_execute("begin; update docs set note = 'third' where id = 1; delete from docs where id = 2; commit").unwrap();
    let at = end(&mut db);
    follow(&config, &settings, &mut mirror, &mut |p| p.position.is_some_and(|l| l >= at)).unwrap();
    let rows: Vec<String> = wh
        .connect()
        .unwrap()
        .query(
            "select _weir_op || ' ' || id || ' ' || coalesce(note, '-') || ' ' || coalesce(cast(length(big) as varchar), '-') || ' ' || _weir_seq
             from docs_history order by _weir_commit_time, _weir_seq",
        )
        .unwrap()
        .rows
        .iter()
        .map(|r| r[0].to_string())
        .collect();
    assert_eq!(rows, ["u 1 second 5000 1", "c 2 other 5 2", "u 1 third 5000 1", "d 2 - - 2"]);

    let events: Vec<J> =
        log.read("shop.public.docs", 0, 0, 100).unwrap().iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
    let row = |e: &J, side: &str| {
        let r = &e[side];
        if r.is_null() {
            return "-".to_string();
        }
        format!("{} {} {}", r["id"], r["note"].as_str().unwrap_or("-"), r["big"].as_str().map_or(0, str::len))
    };
    let seen: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} / {} / {}", e["op"].as_str().unwrap(), row(e, "before"), row(e, "after"), e["transaction"]["total_order"]))
        .collect();
    assert_eq!(
        seen,
        [
            "r - / 1 first 5000 / null",
            // The large value left unchanged is the mirror's, in the event too.
            "u - / 1 second 5000 / 1",
            "c - / 2 other 5 / 2",
            "u - / 1 third 5000 / 1",
            // Under the default replica identity a delete names its key only.
            "d 2 - 0 / - / 2",
        ]
    );
    // The snapshot's typed values as the stream's: a time with a zone in UTC.
    assert_eq!(
        (events[0]["after"]["at"].as_str(), events[1]["after"]["at"].as_str()),
        (Some("2026-12-03T10:00:00Z"), Some("2026-12-03T10:00:00Z"))
    );
    // Committed a moment ago, in the events and in the history.
    let now = chrono::Utc::now().timestamp_millis();
    assert!(events[1]["source"]["ts_ms"].as_i64().is_some_and(|ms| (now - ms).abs() < 60_000), "{}", events[1]["source"]);
    let ages = wh
        .connect()
        .unwrap()
        .query("select cast(max(abs(epoch(now()::timestamp) - epoch(_weir_commit_time))) as bigint) from docs_history")
        .unwrap();
    assert!(ages.scalar().and_then(|d| d.as_i64()).is_some_and(|s| s < 60), "{:?}", ages.rows);
    let (first, last) = (&events[1], &events[4]);
    assert_eq!((first["source"]["connector"].as_str(), first["source"]["table"].as_str()), (Some("postgresql"), Some("docs")));
    assert_eq!(first["source"]["snapshot"].as_str(), Some("false"));
    let lsn: Lsn = last["transaction"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(last["source"]["lsn"].as_u64(), Some(lsn.0), "the event names the commit's position");
    let keys: Vec<String> = log
        .read("shop.public.docs", 0, 0, 100)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"")).into_owned())
        .collect();
    assert_eq!(keys, [r#"{"id":1}"#, r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":1}"#, r#"{"id":2}"#]);
    drop(dir);
}

#[test]
fn a_quiet_table_keeps_its_slot_moving_while_other_tables_write() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute("create table orders (id int primary key); create table clicks (id int primary key, at timestamp)").unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    let (config, _dir, _wh, settings, mut mirror) = follower(&pg);
    let start = follow(&config, &settings, &mut mirror, &mut |_| true).unwrap().position.unwrap();

    // Another table, not captured, writes a good deal of WAL.
    for i in 0..200 {
        db.batch_execute(&format!("insert into clicks select g, now() from generate_series({}, {}) g", i * 100, i * 100 + 99)).unwrap();
    }
    let written: String = db.query_one("select pg_current_wal_lsn()::text", &[]).unwrap().get(0);
    let written: Lsn = written.parse().unwrap();
    assert!(written.0 - start.0 > 1_000_000, "{start} to {written}");
    let began = std::time::Instant::now();
    let mut reached =
        |p: &weir_cdc::follow::Progress| p.position.is_some_and(|l| l >= written) || began.elapsed() > Duration::from_secs(20);
    let moved = follow(&config, &settings, &mut mirror, &mut reached).unwrap();
    assert!(
        moved.position.unwrap() >= written,
        "the position stayed at {:?}, the server wrote up to {written}",
        moved.position.map(|l| l.to_string())
    );
    assert_eq!(moved.batches, 0, "nothing of the captured table was merged");
    // The server takes the last status update as it sees the connection go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let confirmed: String = db.query_one("select confirmed_flush_lsn::text from pg_replication_slots", &[]).unwrap().get(0);
        if confirmed.parse::<Lsn>().unwrap() >= written {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot's confirmed position stayed at {confirmed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mirror.position().unwrap(), moved.position);
}

#[test]
fn a_row_from_the_snapshot_and_the_same_row_streamed_are_the_same_in_the_mirror() {
    // The snapshot reads PostgreSQL's binary COPY, the stream its text: every type a mirror
    // holds must come out the same either way.
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute(
        "create type mood as enum ('ok', 'sad');
         create table t (id int primary key, b boolean, s smallint, i int, g bigint, r real, d double precision,
                         n numeric(12,3), nn numeric, wide numeric(50,2), dt date, tm time, ts timestamp, tz timestamptz,
                         u uuid, tx text, vc varchar(10), js jsonb, m mood, a int[], by bytea, iv interval);
         create publication weir_pub for table t;",
    )
    .unwrap();
    let row = |id: i32| {
        format!(
            "insert into t values ({id}, true, -3, 7, 9000000000, 1.5, 2.25, 12345.678, 3.14159, 123456789012345678901234567890.12,
             '2024-02-29', '13:14:15.5', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
             'it''s', 'short', '{{\"k\": [1, 2]}}', 'sad', '{{1,2,3}}', '\\xdeadbeef', '1 day 02:03:04');
             insert into t (id) values ({});",
            id + 1
        )
    };
    db.batch_execute(&row(1)).unwrap();
    let (config, dir, wh, settings, mirror) = follower(&pg);
    let log = Arc::new(weir_log::EmbeddedLog::open(&dir.path().join("log")).unwrap());
    let mut mirror = mirror.with_events(Publisher::new(log.clone(), "shop", Connector::Postgres { database: "postgres".into() }, vec![]));
    follow(&config, &settings, &mut mirror, &mut |_| true).unwrap();
    db.batch_execute(&row(11)).unwrap();
    follow(&config, &settings, &mut mirror, &mut |_| count(&wh, "select count(*) from t") == 4).unwrap();
    // And in the change events: the snapshot's `r` and the stream's `c` of the same row.
    let full = events::snapshot_and_stream_agree(log.as_ref(), "shop.public.t");
    assert_eq!((full["u"].as_str(), full["n"].as_str()), (Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), Some("12345.678")));
    let rows = wh.connect().unwrap().query("select * exclude (id, _weir_loaded_at) from t order by id").unwrap();
    let text = |r: &Vec<weir_core::Datum>| r.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(rows.rows.len(), 4);
    assert_eq!(text(&rows.rows[0]), text(&rows.rows[2]), "a full row");
    assert_eq!(text(&rows.rows[1]), text(&rows.rows[3]), "a row of nulls");
    let types: Vec<String> = rows.columns.iter().map(|c| c.data_type.to_lowercase()).collect();
    assert_eq!(types[..3], ["boolean", "integer", "integer"]);
    assert!(types[6].starts_with("decimal(12,3)") && types[8] == "varchar", "{types:?}");
}

#[test]
fn a_table_with_a_wide_integer_key_is_snapshotted_over_two_connections_whole() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    // Keys from -300,000 to 297,000: split at their middle; negative ones and the bounds too.
    db.batch_execute(
        "create table wide (id bigint primary key, v text);
         insert into wide select g * 100, 'v' || g from generate_series(-3000, 2970) g;
         create publication weir_pub for table wide",
    )
    .unwrap();
    let (config, _dir, wh, settings, mut mirror) = follower(&pg);
    let p = follow(&config, &settings, &mut mirror, &mut |_| true).unwrap();
    assert_eq!(p.snapshot_rows, 5971);
    let source: Vec<Vec<String>> = db
        .query("select count(*)::text, count(distinct id)::text, sum(id)::text, md5(string_agg(v, ',' order by id)) from wide", &[])
        .unwrap()
        .iter()
        .map(|r| (0..4).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    let mirrored: Vec<Vec<String>> = wh
        .connect()
        .unwrap()
        .query("select cast(count(*) as varchar), cast(count(distinct id) as varchar), cast(sum(id) as varchar), md5(string_agg(v, ',' order by id)) from wide")
        .unwrap()
        .rows
        .iter()
        .map(|r| r.iter().map(|d| d.to_string()).collect())
        .collect();
    assert_eq!(mirrored, source);
}
