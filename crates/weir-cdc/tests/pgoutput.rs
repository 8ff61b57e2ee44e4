//! What a real PostgreSQL sends through `pgoutput`, decoded: every kind of change, the old
//! key of an update that moves a row, an unchanged TOAST value, a logical message, and (in
//! protocol version 2) a large transaction streamed while still in progress.

mod support;

use support::PrivatePostgres;
use weir_cdc::{Decoder, Message, OldRow, ReplicaIdentity, Value};

/// The messages the slot holds now, decoded, with the slot's options.
fn changes(db: &mut postgres::Client, slot: &str, options: &[&str]) -> Vec<Message> {
    let placeholders: Vec<String> = (0..options.len()).map(|i| format!("${}", i + 1)).collect();
    let sql = format!("select data from pg_logical_slot_get_binary_changes('{slot}', null, null, {})", placeholders.join(", "));
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = options.iter().map(|o| o as &(dyn postgres::types::ToSql + Sync)).collect();
    let mut decoder = Decoder::new();
    db.query(&sql, &params).unwrap().iter().map(|row| decoder.decode(row.get::<_, &[u8]>(0)).unwrap()).collect()
}

fn text(v: &Value) -> &str {
    v.text().unwrap_or_else(|| panic!("not text: {v:?}"))
}

#[test]
fn every_kind_of_change_decodes_as_the_server_sent_it() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    // Each statement its own transaction: a slot is made in a transaction that wrote nothing.
    for sql in [
        "create table orders (id int primary key, note text, big text)",
        "alter table orders alter column big set storage external",
        "create publication weir_pub for table orders",
        "select pg_create_logical_replication_slot('weir_slot', 'pgoutput')",
        "insert into orders values (1, 'first', repeat('x', 10000)), (2, 'second', null)",
        "update orders set note = 'first, changed' where id = 1",
        "update orders set id = 3 where id = 2",
        "delete from orders where id = 1",
        "select pg_logical_emit_message(true, 'weir', 'hello')",
        "truncate orders",
    ] {
        db.batch_execute(sql).unwrap();
    }
    let got = changes(&mut db, "weir_slot", &["proto_version", "1", "publication_names", "weir_pub", "messages", "true"]);
    let kinds: Vec<&str> = got
        .iter()
        .map(|m| match m {
            Message::Begin { .. } => "begin",
            Message::Commit { .. } => "commit",
            Message::Relation(_) => "relation",
            Message::Insert { .. } => "insert",
            Message::Update { .. } => "update",
            Message::Delete { .. } => "delete",
            Message::Truncate { .. } => "truncate",
            Message::Message { .. } => "message",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    #[rustfmt::skip]
    let expected = [
        "begin", "relation", "insert", "insert", "commit",
        "begin", "update", "commit",
        "begin", "update", "commit",
        "begin", "delete", "commit",
        "begin", "message", "commit",
        // A truncate gives the table a new file: its relation is sent again.
        "begin", "relation", "truncate", "commit",
    ];
    assert_eq!(kinds, expected, "{got:#?}");
    let relation = got.iter().find_map(|m| if let Message::Relation(r) = m { Some(r) } else { None }).unwrap();
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str(), relation.replica_identity),
        ("public", "orders", ReplicaIdentity::Default)
    );
    let columns: Vec<(&str, bool, u32)> = relation.columns.iter().map(|c| (c.name.as_str(), c.key, c.type_oid)).collect();
    assert_eq!(columns, vec![("id", true, 23), ("note", false, 25), ("big", false, 25)]);

    let inserts: Vec<&weir_cdc::Tuple> =
        got.iter().filter_map(|m| if let Message::Insert { new, .. } = m { Some(new) } else { None }).collect();
    assert_eq!(text(&inserts[0].0[0]), "1");
    assert_eq!(text(&inserts[0].0[2]).len(), 10_000);
    assert_eq!(inserts[1].0[2], Value::Null);

    let updates: Vec<_> = got
        .iter()
        .filter_map(|m| if let Message::Update { old, new, relation: r, .. } = m { Some((old, new, *r)) } else { None })
        .collect();
    // The TOAST value the update did not touch is not sent: it must not become a null.
    assert_eq!(updates[0].0, &None);
    assert_eq!(text(&updates[0].1.0[1]), "first, changed");
    assert_eq!(updates[0].1.0[2], Value::Unchanged);
    assert_eq!(updates[0].2, relation.oid);
    // A changed key sends the old key.
    let (kind, old) = updates[1].0.as_ref().unwrap();
    assert_eq!((*kind, text(&old.0[0]), &old.0[1]), (OldRow::Key, "2", &Value::Null));
    assert_eq!(text(&updates[1].1.0[0]), "3");

    let deleted = got.iter().find_map(|m| if let Message::Delete { old, .. } = m { Some(old) } else { None }).unwrap();
    assert_eq!((deleted.0, text(&deleted.1.0[0])), (OldRow::Key, "1"));
    assert!(
        got.iter()
            .any(|m| matches!(m, Message::Message { transactional: true, prefix, content, .. } if prefix == "weir" && content == b"hello"))
    );
    assert!(got.iter().any(|m| matches!(m, Message::Truncate { relations, cascade: false, .. } if relations == &vec![relation.oid])));
    // Each transaction's begin names where its commit is, and the commit agrees.
    let ends: Vec<_> = got.iter().filter_map(|m| if let Message::Begin { final_lsn, .. } = m { Some(*final_lsn) } else { None }).collect();
    let commits: Vec<_> =
        got.iter().filter_map(|m| if let Message::Commit { commit_lsn, .. } = m { Some(*commit_lsn) } else { None }).collect();
    assert_eq!(ends, commits);
}

#[test]
fn a_large_transaction_arrives_streamed_before_its_commit() {
    let pg = PrivatePostgres::start(&["logical_decoding_work_mem=64kB"]);
    let mut db = pg.connect();
    for sql in [
        "create table events (id int primary key, payload text)",
        "create publication weir_pub for table events",
        "select pg_create_logical_replication_slot('weir_slot', 'pgoutput')",
        "insert into events select i, repeat('p', 100) from generate_series(1, 5000) i",
    ] {
        db.batch_execute(sql).unwrap();
    }
    let got = changes(&mut db, "weir_slot", &["proto_version", "2", "publication_names", "weir_pub", "streaming", "on"]);
    let starts: Vec<(u32, bool)> =
        got.iter().filter_map(|m| if let Message::StreamStart { xid, first } = m { Some((*xid, *first)) } else { None }).collect();
    assert!(starts.len() > 1, "{} streamed blocks", starts.len());
    let xid = starts[0].0;
    assert!(starts[0].1 && starts[1..].iter().all(|(x, first)| *x == xid && !first));
    let stops = got.iter().filter(|m| matches!(m, Message::StreamStop)).count();
    assert_eq!(stops, starts.len());
    let inserts: Vec<Option<u32>> =
        got.iter().filter_map(|m| if let Message::Insert { xid, .. } = m { Some(*xid) } else { None }).collect();
    assert_eq!(inserts.len(), 5000);
    assert!(inserts.iter().all(|x| *x == Some(xid)), "every streamed change names its transaction");
    assert!(matches!(got.last(), Some(Message::StreamCommit { xid: x, .. }) if *x == xid), "{:?}", got.last());
}
