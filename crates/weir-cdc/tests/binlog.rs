//! MariaDB's binlog into mirror tables: a consistent snapshot, then the row events from its
//! position; stopped at random points and started again, the mirror equals the source table;
//! every type crosses the same way by the snapshot and by the stream; a column added
//! mid-stream, a truncate, a second follower, and a server set up wrong.

#[path = "support/events.rs"]
mod events;
#[path = "support/mariadb.rs"]
mod mariadb;

use std::sync::Arc;
use std::time::Duration;

use mariadb::PrivateMariadb;
use mysql::prelude::Queryable;
use serde_json::{Map, Value as J};
use weir_cdc::binlog::{BinlogError, Position, Server};
use weir_cdc::events::{Connector, Publisher};
use weir_cdc::follow::{BinlogFollow, FollowError, Progress, follow_binlog};
use weir_cdc::mirror::{Mirror, MirrorOptions};
use weir_warehouse::Warehouse;

/// A DuckDB file warehouse in `dir`.
fn duckdb(dir: &std::path::Path) -> Arc<dyn Warehouse> {
    let mut fields = Map::new();
    fields.insert("path".into(), J::String(dir.join("wh.duckdb").display().to_string()));
    Arc::from(weir_warehouse::open("duckdb", &fields, dir).unwrap())
}

fn settings(tables: &[&str]) -> BinlogFollow {
    BinlogFollow {
        lock: "weir_shop".into(),
        tables: tables.iter().map(|t| ("shop".to_string(), t.to_string())).collect(),
        batch_messages: 40,
        batch_wait: Duration::from_millis(100),
        ..BinlogFollow::default()
    }
}

fn mirror(wh: &Arc<dyn Warehouse>) -> Mirror {
    Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap().with_home("shop")
}

/// Follows until the mirror holds the binlog as it ends now.
fn catch_up(server: &Server, follow: &BinlogFollow, mirror: &mut Mirror) -> Progress {
    let target = server.prepare("shop", &follow.tables).unwrap();
    follow_binlog(server, follow, mirror, &mut |p| p.binlog.as_ref().is_some_and(|at| at.reached(&target))).unwrap()
}

fn rows(wh: &Arc<dyn Warehouse>, sql: &str) -> Vec<Vec<String>> {
    wh.connect().unwrap().query(sql).unwrap().rows.iter().map(|r| r.iter().map(|d| d.to_string()).collect()).collect()
}

fn source_rows(db: &mut mysql::Conn, sql: &str) -> Vec<Vec<String>> {
    db.query_map(sql, |row: mysql::Row| {
        row.unwrap()
            .into_iter()
            .map(|v| if v == mysql::Value::NULL { "NULL".to_string() } else { mysql::from_value::<String>(v) })
            .collect()
    })
    .unwrap()
}

#[test]
fn random_changes_stopped_and_started_again_leave_the_mirror_equal_to_the_source() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    c.query_drop("create table orders (id int primary key, note varchar(40), amount decimal(10,2), qty int)").unwrap();
    c.query_drop("create table noise (id int primary key auto_increment, v int)").unwrap();
    for i in 0..50 {
        c.exec_drop("insert into orders values (?, 'before', ?, ?)", (i, format!("{i}.25"), i)).unwrap();
    }
    let server = Server::from_url(&db.url("shop"), 77_001).unwrap();
    let follow = settings(&["orders"]);
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let options = MirrorOptions { history: true, ..MirrorOptions::default() };
    let mut m = Mirror::open(wh.clone(), "shop", "wh", "main", options).unwrap().with_home("shop");
    let first = follow_binlog(&server, &follow, &mut m, &mut |_| true).unwrap();
    assert!(first.snapshotted && first.snapshot_rows == 50, "{first:?}");
    // The rows each committed transaction changed: the history holds each change once.
    let mut changes = 0;
    let stored: Position = m.position_text().unwrap().unwrap().parse().unwrap();
    assert!(!stored.gtid.is_empty(), "the snapshot's position carries the GTID state: {stored}");

    let seed: u64 = std::env::var("WEIR_CDC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..6 {
        for _ in 0..15 {
            c.query_drop("start transaction").unwrap();
            let mut changed = 0;
            for _ in 0..1 + next(8) {
                let (id, kind) = (next(120), next(10));
                match kind {
                    0..=3 => c
                        .exec_drop(
                            "insert into orders values (?, ?, ?, ?) on duplicate key update note = values(note), amount = values(amount)",
                            (id, format!("r{round}"), format!("{}.{:02}", next(1000), next(100)), next(50)),
                        )
                        .unwrap(),
                    4..=6 => c.exec_drop("update orders set qty = qty + 1, note = ? where id = ?", (format!("u{round}"), id)).unwrap(),
                    7 => c.exec_drop("update ignore orders set id = id + 1000 where id = ?", (id,)).unwrap(),
                    _ => c.exec_drop("delete from orders where id = ?", (id,)).unwrap(),
                }
                // An upsert that updated says 2; a row moved to another key is a delete and an
                // insert in the history.
                changed += c.affected_rows().min(1) * if kind == 7 { 2 } else { 1 };
                c.query_drop("insert into noise (v) values (1)").unwrap();
            }
            if next(6) == 0 {
                c.query_drop("rollback").unwrap()
            } else {
                c.query_drop("commit").unwrap();
                changes += changed;
            }
        }
        if round == 3 {
            // The server starts a new file: the stored GTID state finds the stream again.
            c.query_drop("flush binary logs").unwrap();
        }
        // Stopped after a random number of batches, then started again from the mirror.
        let (batches, end) = (1 + next(3), server.prepare("shop", &follow.tables).unwrap());
        follow_binlog(&server, &follow, &mut m, &mut |p| p.batches >= batches || p.binlog.as_ref().is_some_and(|at| at.reached(&end)))
            .unwrap();
    }
    c.query_drop("truncate table noise").unwrap();
    catch_up(&server, &follow, &mut m);
    let want = source_rows(&mut c, "select id, note, cast(amount as char), qty from orders order by id");
    let got = rows(&wh, "select id, note, cast(amount as varchar), qty from orders order by id");
    assert_eq!(got, want, "seed {seed}");
    assert!(want.len() > 20);
    let history = rows(&wh, "select count(*), count(distinct (_weir_position, _weir_seq)) from orders_history");
    assert_eq!(history, [[changes.to_string(), changes.to_string()]], "seed {seed}: every change in the history, once");
}

#[test]
fn every_type_crosses_the_same_by_the_snapshot_and_by_the_stream() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    c.query_drop(
        "create table kinds (id int primary key, t tinyint, s smallint unsigned, m mediumint, i int unsigned, b bigint, ub bigint unsigned,
           d decimal(12,3), wide decimal(50,5), f float, dbl double, dt date, ts datetime(6), stamp timestamp(3) null, tm time,
           y year, bits bit(12), e enum('small','large'), st set('a','b','c'), vc varchar(20), tx text, bin varbinary(8), bl blob,
           js json, ch char(3), l1 varchar(10) character set latin1)",
    )
    .unwrap();
    let values = "-5, 65535, -8000000, 4000000000, -9000000000000000000, 18446744073709551615, -123456789.125,
        12345678901234567890123456789012345678901234.56789, 1.5, 2.718281828459045, '2024-02-29', '2024-01-02 03:04:05.123456',
        '2024-06-01 12:00:00.250', '13:30:00', 2024, b'101000000001', 'large', 'a,c', 'héllo', 'long text', x'00ff10', x'cafe',
        '{\"k\": [1, 2]}', 'ab', 'café'";
    c.query_drop("set time_zone = '+00:00'").unwrap();
    c.query_drop(format!("insert into kinds values (1, {values})")).unwrap();
    c.query_drop("insert into kinds (id) values (2)").unwrap();
    let server = Server::from_url(&db.url("shop"), 77_002).unwrap();
    let follow = settings(&["kinds"]);
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let log = Arc::new(weir_log::EmbeddedLog::open(&dir.path().join("log")).unwrap());
    let mut m = mirror(&wh).with_events(Publisher::new(log.clone(), "shop", Connector::Mariadb, vec![]));
    follow_binlog(&server, &follow, &mut m, &mut |_| true).unwrap();
    c.query_drop(format!("insert into kinds values (11, {values})")).unwrap();
    c.query_drop("insert into kinds (id) values (12)").unwrap();
    catch_up(&server, &follow, &mut m);
    // In the change events too: the snapshot's `r` and the binlog's `c` of the same row.
    events::snapshot_and_stream_agree(log.as_ref(), "shop.shop.kinds");
    let all = "select * exclude (id, _weir_loaded_at) from kinds";
    let snapshot = rows(&wh, &format!("{all} where id < 10 order by id"));
    let streamed = rows(&wh, &format!("{all} where id > 10 order by id"));
    assert_eq!(snapshot.len(), 2);
    assert_eq!(streamed, snapshot, "a value read from the snapshot and the same value from the binlog");
    let row = &snapshot[0];
    let want = [
        "-5",
        "65535",
        "-8000000",
        "4000000000",
        "-9000000000000000000",
        "18446744073709551615",
        "-123456789.125",
        "12345678901234567890123456789012345678901234.56789",
        "1.5",
        "2.718281828459045",
        "2024-02-29",
        "2024-01-02T03:04:05.123456",
        "2024-06-01T12:00:00.250",
    ];
    assert_eq!(&row[..want.len()], want.map(String::from).as_slice());
    assert_eq!(
        &row[want.len()..],
        ["13:30:00", "2024", "2561", "large", "a,c", "héllo", "long text", "00ff10", "cafe", "{\"k\": [1, 2]}", "ab", "café"]
            .map(String::from)
    );
    assert!(snapshot[1].iter().all(|v| v == "NULL"), "{:?}", snapshot[1]);
}

#[test]
fn a_column_added_mid_stream_and_a_truncate_reach_the_mirror() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    // Events without checksums: the stream's first rotate has one all the same.
    c.query_drop("set global binlog_checksum = 'NONE'").unwrap();
    c.query_drop("create table people (id int primary key, name varchar(20))").unwrap();
    c.query_drop("insert into people values (1, 'ann'), (2, 'bob')").unwrap();
    let server = Server::from_url(&db.url("shop"), 77_003).unwrap();
    let follow = BinlogFollow { batch_wait: Duration::from_secs(5), batch_messages: 100_000, ..settings(&["people"]) };
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let mut m = mirror(&wh);
    follow_binlog(&server, &follow, &mut m, &mut |_| true).unwrap();
    // In one batch: rows under the old columns, the new column, rows under the new ones.
    c.query_drop("insert into people values (3, 'cy')").unwrap();
    c.query_drop("alter table people add column city varchar(20)").unwrap();
    c.query_drop("insert into people values (4, 'dee', 'oslo')").unwrap();
    c.query_drop("update people set city = 'rome' where id = 1").unwrap();
    catch_up(&server, &follow, &mut m);
    assert_eq!(
        rows(&wh, "select id, name, city from people order by id"),
        [["1", "ann", "rome"], ["2", "bob", "NULL"], ["3", "cy", "NULL"], ["4", "dee", "oslo"]].map(|r| r.map(String::from).to_vec())
    );
    c.query_drop("truncate table people").unwrap();
    c.query_drop("insert into people values (9, 'new', 'x')").unwrap();
    catch_up(&server, &follow, &mut m);
    assert_eq!(m.position_text().unwrap().and_then(|p| p.parse::<Position>().ok()).map(|p| p.file), Some("bin.000002".into()));
    assert_eq!(rows(&wh, "select id from people"), [["9".to_string()]]);
}

#[test]
fn a_second_follower_finds_the_source_taken_and_a_server_set_up_wrong_says_what_to_change() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    c.query_drop("create table orders (id int primary key)").unwrap();
    c.query_drop("create table loose (v int)").unwrap();
    let server = Server::from_url(&db.url("shop"), 77_004).unwrap();
    let follow = settings(&["orders"]);
    let held = server.lock(&follow.lock).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let e = follow_binlog(&server, &follow, &mut mirror(&wh), &mut |_| true).unwrap_err();
    assert!(matches!(e, FollowError::Binlog(BinlogError::InUse(_))), "{e}");
    drop(held);

    let tables = |t: &str| vec![("shop".to_string(), t.to_string())];
    let e = server.prepare("shop", &tables("loose")).unwrap_err().to_string();
    assert!(e.contains("shop.loose has no primary key") && e.contains("ADD PRIMARY KEY"), "{e}");
    let e = server.prepare("shop", &tables("missing")).unwrap_err().to_string();
    assert!(e.contains("there is no table shop.missing"), "{e}");
    for (set, says) in [
        ("binlog_format = 'MIXED'", "binlog_format is MIXED: set binlog_format=ROW"),
        ("binlog_row_image = 'MINIMAL'", "binlog_row_image is MINIMAL: set binlog_row_image=FULL"),
        ("binlog_row_metadata = 'MINIMAL'", "binlog_row_metadata is MINIMAL: set binlog_row_metadata=FULL"),
    ] {
        c.query_drop(format!("set global {set}")).unwrap();
        // Global settings reach new sessions.
        let e = server.prepare("shop", &tables("orders")).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
        c.query_drop("set global binlog_format = 'ROW', binlog_row_image = 'FULL', binlog_row_metadata = 'FULL'").unwrap();
    }
    c.query_drop("create user plain@localhost").unwrap();
    let plain = Server::from_url(&format!("mysql://plain@127.0.0.1:{}/", db.port), 77_005).unwrap();
    let e = plain.prepare("shop", &tables("orders")).unwrap_err().to_string();
    assert!(e.contains("GRANT REPLICATION SLAVE, BINLOG MONITOR"), "{e}");
}

#[test]
fn an_incremental_snapshot_of_a_binlog_source_places_each_chunk_where_it_was_read() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    c.query_drop("create table orders (id int primary key, note varchar(40), n int)").unwrap();
    c.query_drop("insert into orders select seq, 'first', 0 from seq_1_to_2000").unwrap();
    let server = Server::from_url(&db.url("shop"), 77_009).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let requests = dir.path().join("requests");
    let follow = BinlogFollow { requests: Some(requests.clone()), chunk_rows: 150, ..settings(&["orders"]) };
    let wh = duckdb(dir.path());
    let mut m = mirror(&wh);
    catch_up(&server, &follow, &mut m);
    // The mirror drifts; a table joins the source's tables.
    let mut w = wh.connect().unwrap();
    w.execute("delete from wh.main.orders where id % 3 = 0").unwrap();
    w.execute("update wh.main.orders set note = 'stale' where id % 5 = 0").unwrap();
    drop(w);
    c.query_drop("create table customers (region varchar(8), id bigint, name varchar(20), primary key (region, id))").unwrap();
    c.query_drop("insert into customers select if(seq % 2 = 0, 'eu', 'us'), seq, concat('c', seq) from seq_1_to_700").unwrap();
    weir_cdc::incremental::request(&requests, &["shop.orders".into()]).unwrap();

    // A writer changes both tables all the while, until the snapshot is done.
    let url = db.url("shop");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = done.clone();
    let writer = std::thread::spawn(move || {
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut round = 0;
        while !writing.load(std::sync::atomic::Ordering::SeqCst) || round < 200 {
            round += 1;
            c.query_drop("start transaction").unwrap();
            for _ in 0..1 + next(4) {
                let id = 1 + next(2400);
                let _ = match next(8) {
                    0..=3 => c.exec_drop("update orders set note = ?, n = n + 1 where id = ?", (format!("r{round}"), id)),
                    4 => c.exec_drop("insert into orders values (?, 'new', 0) on duplicate key update note = 'upserted'", (id,)),
                    5 => c.exec_drop("delete from orders where id = ?", (id,)),
                    6 => c.exec_drop("update customers set name = ? where id = ?", (format!("n{round}"), id % 700)),
                    _ => c.exec_drop("delete from customers where id = ?", (id % 700,)),
                };
            }
            c.query_drop("commit").unwrap();
            // Paced, for the follower (on the same cores) to keep up.
            std::thread::sleep(Duration::from_millis(1 + next(3)));
        }
    });
    let both = BinlogFollow { tables: vec![("shop".into(), "orders".into()), ("shop".into(), "customers".into())], ..follow };
    let progress = follow_binlog(&server, &both, &mut m, &mut |p| {
        if p.incremental_tables == 0 {
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        writer.is_finished() && p.incremental_tables == 0
    })
    .unwrap();
    writer.join().unwrap();
    assert!(!progress.snapshotted && progress.incremental_rows >= 2000, "{progress:?}");
    catch_up(&server, &both, &mut m);
    for (table, order) in [("orders", "id"), ("customers", "region, id")] {
        let source = source_rows(&mut c, &format!("select * from {table} order by {order}"));
        let mirrored = rows(&wh, &format!("select * exclude (_weir_loaded_at) from wh.main.{table} order by {order}"));
        assert_eq!(mirrored.len(), source.len(), "{table}");
        assert!(mirrored == source, "{table}'s mirror differs from the source");
    }
}
