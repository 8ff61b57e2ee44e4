//! Collapsing against applying: random transactions of inserts, updates (some leaving a TOAST
//! value unchanged, some moving a row to another key), deletes and truncates, some streamed in
//! blocks with subtransactions rolled back and some aborted whole, cut into micro-batches at
//! random; each batch collapsed and merged into a mirror as a merge would, must leave the
//! mirror exactly as applying every committed change in order leaves the table.

use std::collections::BTreeMap;

use proptest::prelude::*;
use weir_cdc::changes::{Collapser, RowChange, TableChanges};
use weir_cdc::{Column, Lsn, Message, OldRow, Relation, ReplicaIdentity, Tuple, Value};

type Rows = BTreeMap<i64, String>;

fn relation() -> Relation {
    let col =
        |name: &str, key: bool| Column { key, name: name.into(), type_oid: 25, type_modifier: -1, ty: weir_core::ColumnType::Varchar };
    Relation {
        xid: None,
        oid: 7,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", true), col("big", false)],
    }
}

fn t(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec())
}

/// A tiny deterministic generator, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// One change against `rows` (which it updates), as a message tagged with `xid`.
fn change(rng: &mut Rng, rows: &mut Rows, xid: Option<u32>, n: &mut u64) -> Message {
    *n += 1;
    let keys: Vec<i64> = rows.keys().copied().collect();
    let free = || (0..12).find(|k| !rows.contains_key(k));
    let pick = rng.below(6);
    match (pick, keys.is_empty(), free()) {
        (0, _, Some(k)) | (_, true, Some(k)) => {
            let v = format!("v{n}");
            rows.insert(k, v.clone());
            Message::Insert { xid, relation: 7, new: Tuple(vec![t(&k.to_string()), t(&v)]) }
        }
        (1, false, _) => {
            let k = keys[rng.below(keys.len() as u64) as usize];
            let v = format!("v{n}");
            rows.insert(k, v.clone());
            Message::Update { xid, relation: 7, old: None, new: Tuple(vec![t(&k.to_string()), t(&v)]) }
        }
        (2, false, _) => {
            // Another column changed: the TOAST value is left as it was, and not sent.
            let k = keys[rng.below(keys.len() as u64) as usize];
            Message::Update { xid, relation: 7, old: None, new: Tuple(vec![t(&k.to_string()), Value::Unchanged]) }
        }
        (3, false, Some(to)) => {
            let k = keys[rng.below(keys.len() as u64) as usize];
            let v = rows.remove(&k).unwrap_or_default();
            rows.insert(to, v);
            Message::Update {
                xid,
                relation: 7,
                old: Some((OldRow::Key, Tuple(vec![t(&k.to_string()), Value::Null]))),
                new: Tuple(vec![t(&to.to_string()), Value::Unchanged]),
            }
        }
        (4, false, _) => {
            let k = keys[rng.below(keys.len() as u64) as usize];
            rows.remove(&k);
            Message::Delete { xid, relation: 7, old: (OldRow::Key, Tuple(vec![t(&k.to_string()), Value::Null])) }
        }
        (5, false, _) if rng.below(4) == 0 => {
            rows.clear();
            Message::Truncate { xid, relations: vec![7], cascade: false, restart_identity: false }
        }
        _ => {
            let k = keys.first().copied().unwrap_or(0);
            rows.remove(&k);
            Message::Delete { xid, relation: 7, old: (OldRow::Key, Tuple(vec![t(&k.to_string()), Value::Null])) }
        }
    }
}

/// A mirror merging a collapsed batch: fills from the rows it held before the batch, then
/// deletes, then upserts.
fn merge(mirror: &mut Rows, tables: Vec<TableChanges>) {
    for table in tables {
        if table.truncated {
            mirror.clear();
        }
        let before = mirror.clone();
        let key = |k: &[Value]| -> i64 { k[0].text().and_then(|s| s.parse().ok()).unwrap_or(-1) };
        for (k, change) in table.rows {
            match change {
                RowChange::Delete => {
                    mirror.remove(&key(&k));
                }
                RowChange::Upsert { values, fill_from } => {
                    let big = match &values[1] {
                        Value::Unchanged => before.get(&key(&fill_from)).cloned().expect("a value to keep"),
                        v => v.text().unwrap_or_default().to_string(),
                    };
                    mirror.insert(key(&k), big);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn merged_batches_equal_every_committed_change_applied(seed in any::<u64>(), txns in 1usize..12) {
        let mut rng = Rng(seed);
        let mut truth = Rows::new();
        let mut mirror = Rows::new();
        let mut collapser = Collapser::new();
        collapser.take(Message::Relation(relation())).unwrap();
        let (mut n, mut lsn) = (0u64, 100u64);
        for x in 0..txns as u32 {
            let xid = 1000 + x * 10;
            let mut rows = truth.clone();
            let streamed = rng.below(3) == 0;
            let mut messages = vec![];
            if streamed {
                // Two blocks; in the second a subtransaction whose changes may roll back.
                messages.push(Message::StreamStart { xid, first: true });
                for _ in 0..1 + rng.below(4) {
                    messages.push(change(&mut rng, &mut rows, Some(xid), &mut n));
                }
                messages.push(Message::StreamStop);
                messages.push(Message::StreamStart { xid, first: false });
                let mut sub = rows.clone();
                for _ in 0..1 + rng.below(3) {
                    messages.push(change(&mut rng, &mut sub, Some(xid + 1), &mut n));
                }
                let sub_aborts = rng.below(2) == 0;
                if !sub_aborts {
                    rows = sub;
                }
                messages.push(Message::StreamStop);
                if sub_aborts {
                    messages.push(Message::StreamAbort { xid, subxid: xid + 1 });
                }
                lsn += 10;
                if rng.below(4) == 0 {
                    messages.push(Message::StreamAbort { xid, subxid: xid });
                } else {
                    messages.push(Message::StreamCommit { xid, commit_lsn: Lsn(lsn), end_lsn: Lsn(lsn + 1), commit_time: 0 });
                    truth = rows;
                }
            } else {
                lsn += 10;
                messages.push(Message::Begin { final_lsn: Lsn(lsn), commit_time: 0, xid });
                for _ in 0..1 + rng.below(5) {
                    messages.push(change(&mut rng, &mut rows, None, &mut n));
                }
                messages.push(Message::Commit { commit_lsn: Lsn(lsn), end_lsn: Lsn(lsn + 1), commit_time: 0 });
                truth = rows;
            }
            for m in messages {
                collapser.take(m).unwrap();
                // A batch may end anywhere: what is not committed waits in the collapser.
                if rng.below(7) == 0 {
                    merge(&mut mirror, collapser.drain());
                }
            }
        }
        merge(&mut mirror, collapser.drain());
        prop_assert!(!collapser.in_transaction());
        prop_assert_eq!(mirror, truth);
    }
}
