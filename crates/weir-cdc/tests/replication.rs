//! The replication protocol against a real server: a slot made with its exported snapshot,
//! changes streamed (a large transaction in pieces before its commit), the confirmed
//! position reaching the server, and a mistake named by the server's own words.

mod support;

use std::time::{Duration, Instant};

use support::PrivatePostgres;
use weir_cdc::{ChangeSource, Config, Connection, Decoder, Lsn, Message, ReplicationError};

fn config(pg: &PrivatePostgres) -> Config {
    Config { host: "127.0.0.1".into(), port: pg.port, user: "postgres".into(), password: None, database: "postgres".into() }
}

#[test]
fn a_slot_streams_what_came_after_its_snapshot_and_takes_the_confirmed_position() {
    let pg = PrivatePostgres::start(&["logical_decoding_work_mem=64kB"]);
    let mut db = pg.connect();
    db.batch_execute("create table orders (id int primary key, note text)").unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    db.batch_execute("insert into orders select i, 'before' from generate_series(1, 10) i").unwrap();

    let mut conn = Connection::connect(&config(&pg)).unwrap();
    assert!(conn.identify_system().unwrap() > Lsn(0));
    let slot = conn.create_slot("weir_slot").unwrap();
    let snapshot = slot.snapshot.clone().expect("an exported snapshot");
    // Changes after the slot: in the stream, not in the snapshot.
    db.batch_execute("insert into orders values (11, 'after')").unwrap();
    db.batch_execute("insert into orders select i, repeat('x', 200) from generate_series(100, 3099) i").unwrap();
    let mut reader = pg.connect();
    let mut tx = reader.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start().unwrap();
    tx.batch_execute(&format!("set transaction snapshot '{snapshot}'")).unwrap();
    let in_snapshot: i64 = tx.query_one("select count(*) from orders", &[]).unwrap().get(0);
    assert_eq!(in_snapshot, 10, "the snapshot holds the table as it stood at the slot's start");
    tx.commit().unwrap();

    let mut stream = conn
        .start("weir_slot", Lsn(0), &[("proto_version", "2"), ("publication_names", "weir_pub"), ("streaming", "on"), ("messages", "true")])
        .unwrap();
    let mut decoder = Decoder::new();
    let (mut inserts, mut streamed, mut last_end) = (0, 0, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_end.is_none() || inserts < 3001 {
        assert!(Instant::now() < deadline, "{inserts} inserts after 30 s");
        let Some(wal) = stream.recv(Duration::from_secs(5)).unwrap() else { continue };
        match decoder.decode(&wal.data).unwrap() {
            Message::Insert { xid, .. } => {
                inserts += 1;
                streamed += usize::from(xid.is_some());
            }
            Message::StreamCommit { end_lsn, .. } => last_end = Some(end_lsn),
            _ => {}
        }
    }
    assert_eq!(inserts, 3001);
    assert_eq!(streamed, 3000, "the large transaction came streamed");
    let end = last_end.unwrap_or_default();
    assert!(end > slot.consistent_point);

    stream.confirm(end).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let confirmed: String =
            db.query_one("select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'weir_slot'", &[]).unwrap().get(0);
        if confirmed.parse::<Lsn>().unwrap() >= end {
            break;
        }
        assert!(Instant::now() < deadline, "the slot's confirmed position stayed at {confirmed}, not {end}");
        std::thread::sleep(Duration::from_millis(50));
        // Quiet: the stream sends its status again when asked or when due.
        let _ = stream.recv(Duration::from_millis(10));
        stream.confirm(end).unwrap();
    }
}

#[test]
fn a_missing_slot_is_named_in_the_servers_words() {
    let pg = PrivatePostgres::start(&[]);
    let conn = Connection::connect(&config(&pg)).unwrap();
    let err = conn.start("no_such_slot", Lsn(0), &[("proto_version", "1"), ("publication_names", "p")]).err().unwrap();
    assert!(matches!(&err, ReplicationError::Server { code, .. } if code == "42704"), "{err}");
    assert!(err.to_string().contains("no_such_slot"), "{err}");
}

#[test]
fn setup_mistakes_say_what_to_change() {
    let pg = PrivatePostgres::start(&["wal_level=replica"]);
    let mut conn = Connection::connect(&config(&pg)).unwrap();
    let err = conn.create_slot("weir_slot").unwrap_err();
    assert!(err.to_string().contains("wal_level = logical"), "{err}");

    pg.connect().batch_execute("create role plain login").unwrap();
    let plain = Config { user: "plain".into(), ..config(&pg) };
    let err = Connection::connect(&plain).err().unwrap();
    assert!(err.to_string().contains("ALTER ROLE \"plain\" WITH REPLICATION"), "{err}");
}
