//! The committed changes of a micro-batch of pgoutput messages, collapsed per table to the
//! last state of each row by its key: what a mirror table merges in one transaction.
//!
//! Only committed work counts. A transaction's changes are held until its commit; a large
//! one streamed in progress is held by its transaction id across blocks, the changes of a
//! subtransaction that rolls back are dropped, and all of it is dropped when the whole
//! transaction aborts. A change's row is known by its relation's replica identity columns:
//! an update that moves a row to another key deletes the old key. A TOAST value an update
//! left unchanged is filled from the row's earlier change in the batch when there is one;
//! otherwise it stays [`Value::Unchanged`], for the merge to keep the mirror's value, never
//! to write a null. A truncate empties the table and what the batch held for it before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::pgoutput::{Lsn, Message, Relation, Tuple, Value};

/// A row's key: its replica identity columns' values, in column order.
pub type Key = Vec<Value>;

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// The row as it now stands. `fill_from` is the key whose row, as the mirror held it
    /// before the batch, gives the values still [`Value::Unchanged`] (the row's own key,
    /// unless an update moved it).
    Upsert {
        values: Vec<Value>,
        fill_from: Key,
    },
    Delete,
}

/// One table's changes in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChanges {
    pub relation: Relation,
    /// Emptied first (a truncate), then `rows` applied.
    pub truncated: bool,
    /// The last change of each row, by key, in the order the keys were first changed.
    pub rows: Vec<(Key, RowChange)>,
    /// Every committed change, in commit order, when a history is kept.
    pub history: Vec<HistoryRow>,
}

/// One committed change as the history table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Debezium's operation: `c` insert, `u` update, `d` delete, `t` truncate. An update that
    /// moves a row to another key is a `d` of the old key and a `c` of the new one.
    pub op: char,
    /// The row after the change; for a delete, the row before it as the source sent it (only
    /// its key under PostgreSQL's default replica identity). A value still
    /// [`Value::Unchanged`] is the mirror's, as it stood before the batch, at `fill_from`.
    pub values: Vec<Value>,
    pub fill_from: Key,
    /// An update's row before it, when the source sent one (MariaDB's full row images;
    /// PostgreSQL's old key, or the whole row under REPLICA IDENTITY FULL).
    pub before: Option<Vec<Value>>,
    /// Where the change's transaction committed, when (microseconds since 1970, UTC), and the
    /// change's place in it (from 1).
    pub position: String,
    pub commit_time: i64,
    pub seq: u32,
}

/// Why a change cannot be collapsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("a change to relation {0} came before the relation was described")]
    UnknownRelation(u32),
    #[error("{0} has no replica identity: give it a primary key, or set REPLICA IDENTITY FULL, so that its rows can be matched")]
    NoKey(String),
    #[error("{table}: a row of {got} values, where the table has {want} columns")]
    Width { table: String, got: usize, want: usize },
}

/// Messages in, committed changes out.
#[derive(Debug, Default)]
pub struct Collapser {
    relations: HashMap<u32, Arc<Relation>>,
    /// The transaction being read (between begin and commit), and its changes.
    open: Vec<Change>,
    /// Streamed transactions not yet ended, by their id: each change with the
    /// (sub)transaction it belongs to.
    streamed: HashMap<u32, Vec<(u32, Change)>>,
    /// The top-level transaction of the open streamed block.
    block: Option<u32>,
    tables: BTreeMap<u32, Table>,
    /// The end of the last commit taken: where the batch ends.
    end: Option<Lsn>,
    /// Whether every committed change is kept for the history table, and the commit being
    /// applied (its position and time) with the changes of it applied so far.
    history: bool,
    commit: Commit,
}

/// A change to one row, or to a whole table.
#[derive(Debug, Clone)]
enum Change {
    /// `shape`: the relation as it was described when the new row came; `op`: Debezium's
    /// `c`, `u` or `d`; `old`: an updated or deleted row's old values, kept for the history.
    Row {
        relation: u32,
        op: char,
        shape: Option<Arc<Relation>>,
        old_key: Option<Key>,
        new: Option<Vec<Value>>,
        old: Option<Vec<Value>>,
    },
    Truncate(Vec<u32>),
}

#[derive(Debug, Default)]
struct Table {
    truncated: bool,
    rows: HashMap<Key, (usize, RowChange)>,
    next: usize,
    history: Vec<HistoryRow>,
}

/// The transaction whose changes are being applied, for their history rows.
#[derive(Debug, Default)]
struct Commit {
    position: String,
    /// Microseconds since 1970, UTC.
    time: i64,
    /// The changes of it recorded so far.
    seq: u32,
}

impl Commit {
    /// The history row of the transaction's next change.
    fn next(&mut self, op: char, values: Vec<Value>, fill_from: Key, before: Option<Vec<Value>>) -> HistoryRow {
        self.seq += 1;
        HistoryRow { op, values, fill_from, before, position: self.position.clone(), commit_time: self.time, seq: self.seq }
    }
}

impl Collapser {
    pub fn new() -> Collapser {
        Collapser::default()
    }

    /// A collapser that also keeps every committed change, in order ([`TableChanges::history`]).
    pub fn with_history() -> Collapser {
        Collapser { history: true, ..Collapser::default() }
    }

    /// Ends the transaction being read at `position`, committed at `time` (microseconds since
    /// 1970, UTC), for sources whose commits are not messages of their own (a binlog).
    pub fn commit_at(&mut self, position: String, time: i64) -> Result<(), ChangeError> {
        self.commit = Commit { position, time, seq: 0 };
        for c in std::mem::take(&mut self.open) {
            self.apply(c)?;
        }
        self.end = Some(Lsn(0));
        Ok(())
    }

    /// Takes the next message of the stream.
    pub fn take(&mut self, message: Message) -> Result<(), ChangeError> {
        match message {
            Message::Relation(r) => {
                self.relations.insert(r.oid, Arc::new(r));
            }
            Message::Begin { .. } => self.open.clear(),
            Message::Commit { end_lsn, commit_time, .. } => {
                self.commit = Commit { position: end_lsn.to_string(), time: commit_time, seq: 0 };
                for c in std::mem::take(&mut self.open) {
                    self.apply(c)?;
                }
                self.end = Some(end_lsn);
            }
            Message::StreamStart { xid, .. } => self.block = Some(xid),
            Message::StreamStop => self.block = None,
            Message::StreamCommit { xid, end_lsn, commit_time, .. } => {
                self.commit = Commit { position: end_lsn.to_string(), time: commit_time, seq: 0 };
                for (_, c) in self.streamed.remove(&xid).unwrap_or_default() {
                    self.apply(c)?;
                }
                self.end = Some(end_lsn);
            }
            Message::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    self.streamed.remove(&xid);
                } else if let Some(changes) = self.streamed.get_mut(&xid) {
                    changes.retain(|(of, _)| *of != subxid);
                }
            }
            Message::Insert { xid, relation, new } => {
                let shape = self.relations.get(&relation).cloned();
                self.hold(xid, Change::Row { relation, op: 'c', shape, old_key: None, new: Some(new.0), old: None })?
            }
            Message::Update { xid, relation, old, new } => {
                let (old_key, old) = match old {
                    Some((_, old)) => (Some(self.key_of(relation, &old)?), self.history.then_some(old.0)),
                    None => (None, None),
                };
                let shape = self.relations.get(&relation).cloned();
                self.hold(xid, Change::Row { relation, op: 'u', shape, old_key, new: Some(new.0), old })?;
            }
            Message::Delete { xid, relation, old: (_, old) } => {
                let old_key = Some(self.key_of(relation, &old)?);
                let old = self.history.then_some(old.0);
                self.hold(xid, Change::Row { relation, op: 'd', shape: None, old_key, new: None, old })?;
            }
            Message::Truncate { xid, relations, .. } => self.hold(xid, Change::Truncate(relations))?,
            Message::Type { .. } | Message::Origin { .. } | Message::Message { .. } => {}
        }
        Ok(())
    }

    /// Applies rows read from `relation` by a snapshot (each row whole, in `relation`'s column
    /// order) as if committed at `position`: an incremental snapshot's chunk, placed in the
    /// stream where it stands. They are `r` changes in the history (kept for the events, never
    /// for the history table). The values are placed by name into the table's columns as the
    /// stream last described them, when it has.
    pub fn take_read(&mut self, relation: &Relation, rows: Vec<Vec<Value>>, position: &str) -> Result<(), ChangeError> {
        let r = self.relations.entry(relation.oid).or_insert_with(|| Arc::new(relation.clone())).clone();
        let same = r.columns.len() == relation.columns.len() && r.columns.iter().zip(&relation.columns).all(|(a, b)| a.name == b.name);
        let places: Vec<Option<usize>> = r.columns.iter().map(|c| relation.columns.iter().position(|from| from.name == c.name)).collect();
        self.commit = Commit { position: position.to_string(), time: chrono::Utc::now().timestamp_micros(), seq: 0 };
        let table = self.tables.entry(relation.oid).or_default();
        for row in rows {
            let values: Vec<Value> =
                if same { row } else { places.iter().map(|p| p.and_then(|i| row.get(i).cloned()).unwrap_or(Value::Null)).collect() };
            let k = key(&r, &values)?;
            if self.history {
                table.history.push(self.commit.next('r', values.clone(), k.clone(), None));
            }
            table.set(k.clone(), RowChange::Upsert { values, fill_from: k });
        }
        Ok(())
    }

    /// Deletes the rows of `relation` with `keys` (rows an incremental snapshot found gone
    /// from the table): from the mirror only, as no change at the source made them go.
    pub fn take_gone(&mut self, relation: &Relation, keys: Vec<Key>) {
        if keys.is_empty() {
            return;
        }
        self.relations.entry(relation.oid).or_insert_with(|| Arc::new(relation.clone()));
        let table = self.tables.entry(relation.oid).or_default();
        for k in keys {
            table.set(k, RowChange::Delete);
        }
    }

    /// What the transaction about to commit does to `relation`: the keys its changes name (old
    /// and new), and whether it truncates the table. `streamed`: a streamed transaction's id;
    /// None for the one read between begin and commit.
    pub fn touched(&self, streamed: Option<u32>, relation: u32) -> (Vec<Key>, bool) {
        let held: Vec<&Change> = match streamed {
            Some(xid) => self.streamed.get(&xid).map(|c| c.iter().map(|(_, c)| c).collect()).unwrap_or_default(),
            None => self.open.iter().collect(),
        };
        let (mut keys, mut truncated) = (vec![], false);
        for change in held {
            match change {
                Change::Truncate(oids) => truncated |= oids.contains(&relation),
                Change::Row { relation: of, shape, old_key, new, .. } if *of == relation => {
                    keys.extend(old_key.iter().cloned());
                    let shape = shape.as_ref().or_else(|| self.relations.get(of));
                    if let (Some(values), Some(shape)) = (new, shape)
                        && let Ok(k) = key(shape, values)
                    {
                        keys.push(k);
                    }
                }
                Change::Row { .. } => {}
            }
        }
        (keys, truncated)
    }

    /// Moves the end of the batch to `end` (where an incremental snapshot placed its chunk),
    /// unless it is there already.
    pub fn mark(&mut self, end: Lsn) {
        if self.end.is_none_or(|e| e < end) {
            self.end = Some(end);
        }
    }

    /// Where the changes taken so far end: the end of the last commit.
    pub fn end(&self) -> Option<Lsn> {
        self.end
    }

    /// Whether changes are held for transactions not yet committed (a batch cut here is
    /// still whole: they wait for their commit).
    pub fn in_transaction(&self) -> bool {
        !self.open.is_empty() || !self.streamed.is_empty()
    }

    /// The committed changes so far, per table, and forgets them (what is held for open
    /// transactions stays).
    pub fn drain(&mut self) -> Vec<TableChanges> {
        let mut out = vec![];
        for (oid, table) in std::mem::take(&mut self.tables) {
            let Some(relation) = self.relations.get(&oid).map(|r| r.as_ref().clone()) else { continue };
            let mut rows: Vec<(usize, Key, RowChange)> = table.rows.into_iter().map(|(k, (at, c))| (at, k, c)).collect();
            rows.sort_by_key(|(at, ..)| *at);
            out.push(TableChanges {
                relation,
                truncated: table.truncated,
                rows: rows.into_iter().map(|(_, k, c)| (k, c)).collect(),
                history: table.history,
            });
        }
        self.end = None;
        out
    }

    fn hold(&mut self, xid: Option<u32>, change: Change) -> Result<(), ChangeError> {
        match (self.block, xid) {
            (Some(top), Some(of)) => self.streamed.entry(top).or_default().push((of, change)),
            _ => self.open.push(change),
        }
        Ok(())
    }

    fn relation(&self, oid: u32) -> Result<&Arc<Relation>, ChangeError> {
        self.relations.get(&oid).ok_or(ChangeError::UnknownRelation(oid))
    }

    /// The key of `row` (an old row: its key columns, or all of it): its replica identity's
    /// columns.
    fn key_of(&self, oid: u32, row: &Tuple) -> Result<Key, ChangeError> {
        let r = self.relation(oid)?;
        key(r, &row.0)
    }

    fn apply(&mut self, change: Change) -> Result<(), ChangeError> {
        match change {
            Change::Truncate(oids) => {
                for oid in oids {
                    let width = self.relations.get(&oid).map_or(0, |r| r.columns.len());
                    let t = self.tables.entry(oid).or_default();
                    t.truncated = true;
                    t.rows.clear();
                    if self.history {
                        t.history.push(self.commit.next('t', vec![Value::Null; width], vec![], None));
                    }
                }
            }
            Change::Row { relation, op, shape, old_key, new, old } => {
                let r = self.relation(relation)?.clone();
                // Described again since (a column added or dropped in the same transaction):
                // the values are placed by name, a column the row did not have is null.
                let new = match (new, shape) {
                    (Some(values), Some(shape)) if !Arc::ptr_eq(&shape, &r) => Some(
                        r.columns
                            .iter()
                            .map(|c| {
                                shape
                                    .columns
                                    .iter()
                                    .position(|s| s.name == c.name)
                                    .and_then(|i| values.get(i).cloned())
                                    .unwrap_or(Value::Null)
                            })
                            .collect(),
                    ),
                    (new, _) => new,
                };
                let table = self.tables.entry(relation).or_default();
                let new_key = new.as_ref().map(|v| key(&r, v)).transpose()?;
                let moved = old_key.as_ref().filter(|old| new_key.as_ref() != Some(old));
                match new {
                    Some(mut values) => {
                        if values.len() != r.columns.len() {
                            return Err(ChangeError::Width { table: name(&r), got: values.len(), want: r.columns.len() });
                        }
                        let new_key = new_key.unwrap_or_default();
                        // The row as it stood: its own key's earlier change, or (moved) the
                        // old key's.
                        let from = moved.cloned().unwrap_or_else(|| new_key.clone());
                        let mut fill_from = from.clone();
                        if let Some((_, RowChange::Upsert { values: before, fill_from: earlier })) = table.rows.get(&from) {
                            for (v, b) in values.iter_mut().zip(before) {
                                if *v == Value::Unchanged {
                                    *v = b.clone();
                                }
                            }
                            fill_from = earlier.clone();
                        }
                        if let Some(old) = moved {
                            table.set(old.clone(), RowChange::Delete);
                        }
                        let before = old.filter(|o| o.len() == values.len());
                        if self.history && moved.is_some() {
                            // A row moved to another key is a delete of the old key and an
                            // insert of the new one, as Debezium sends it.
                            let gone = before.clone().unwrap_or_else(|| {
                                let mut keys = moved.into_iter().flatten();
                                r.columns
                                    .iter()
                                    .map(|c| if c.key { keys.next().cloned().unwrap_or(Value::Null) } else { Value::Null })
                                    .collect()
                            });
                            table.history.push(self.commit.next('d', gone, vec![], None));
                            table.history.push(self.commit.next('c', values.clone(), fill_from.clone(), None));
                        } else if self.history {
                            table.history.push(self.commit.next(op, values.clone(), fill_from.clone(), before));
                        }
                        table.set(new_key, RowChange::Upsert { values, fill_from });
                    }
                    None => {
                        if self.history {
                            let width = r.columns.len();
                            let values = old.filter(|o| o.len() == width).unwrap_or_else(|| vec![Value::Null; width]);
                            table.history.push(self.commit.next(op, values, vec![], None));
                        }
                        if let Some(old) = old_key {
                            table.set(old, RowChange::Delete);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Table {
    fn set(&mut self, key: Key, change: RowChange) {
        match self.rows.get_mut(&key) {
            Some((_, c)) => *c = change,
            None => {
                self.rows.insert(key, (self.next, change));
                self.next += 1;
            }
        }
    }
}

fn key(r: &Relation, values: &[Value]) -> Result<Key, ChangeError> {
    let key: Key = r.columns.iter().zip(values).filter(|(c, _)| c.key).map(|(_, v)| v.clone()).collect();
    if key.is_empty() {
        return Err(ChangeError::NoKey(name(r)));
    }
    Ok(key)
}

fn name(r: &Relation) -> String {
    format!("{}.{}", r.namespace, r.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::{Column, OldRow, ReplicaIdentity};

    fn relation() -> Relation {
        let col =
            |name: &str, key: bool| Column { key, name: name.into(), type_oid: 25, type_modifier: -1, ty: weir_core::ColumnType::Varchar };
        Relation {
            xid: None,
            oid: 1,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", true), col("big", false)],
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn a_row_without_a_key_is_refused_with_what_to_change() {
        let mut c = Collapser::new();
        let mut r = relation();
        r.columns.iter_mut().for_each(|c| c.key = false);
        c.take(Message::Relation(r)).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(1), commit_time: 0, xid: 5 }).unwrap();
        let err = c.take(Message::Delete { xid: None, relation: 1, old: (OldRow::Full, Tuple(vec![t("1"), t("x")])) }).unwrap_err();
        assert!(err.to_string().contains("public.t has no replica identity"), "{err}");
        assert_eq!(c.take(Message::Insert { xid: None, relation: 9, new: Tuple(vec![]) }).map(|_| ()), Ok(()), "held until the commit");
        assert_eq!(c.take(Message::Commit { commit_lsn: Lsn(1), end_lsn: Lsn(2), commit_time: 0 }), Err(ChangeError::UnknownRelation(9)));
    }

    #[test]
    fn an_unchanged_value_is_filled_from_the_rows_earlier_change_and_follows_a_moved_row() {
        let mut c = Collapser::new();
        c.take(Message::Relation(relation())).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(1), commit_time: 0, xid: 5 }).unwrap();
        c.take(Message::Insert { xid: None, relation: 1, new: Tuple(vec![t("1"), t("large")]) }).unwrap();
        c.take(Message::Update {
            xid: None,
            relation: 1,
            old: Some((OldRow::Key, Tuple(vec![t("1"), Value::Null]))),
            new: Tuple(vec![t("2"), Value::Unchanged]),
        })
        .unwrap();
        c.take(Message::Update {
            xid: None,
            relation: 1,
            old: Some((OldRow::Key, Tuple(vec![t("7"), Value::Null]))),
            new: Tuple(vec![t("8"), Value::Unchanged]),
        })
        .unwrap();
        c.take(Message::Commit { commit_lsn: Lsn(1), end_lsn: Lsn(3), commit_time: 0 }).unwrap();
        assert_eq!(c.end(), Some(Lsn(3)));
        let tables = c.drain();
        assert_eq!(
            tables[0].rows,
            vec![
                (vec![t("1")], RowChange::Delete),
                (vec![t("2")], RowChange::Upsert { values: vec![t("2"), t("large")], fill_from: vec![t("1")] }),
                (vec![t("7")], RowChange::Delete),
                // Moved from a row the batch never saw: the mirror's row 7 fills it.
                (vec![t("8")], RowChange::Upsert { values: vec![t("8"), Value::Unchanged], fill_from: vec![t("7")] }),
            ]
        );
    }

    #[test]
    fn a_row_moved_to_another_key_is_a_delete_and_an_insert_in_the_history() {
        let mut c = Collapser::with_history();
        c.take(Message::Relation(relation())).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(1), commit_time: 0, xid: 5 }).unwrap();
        let old = Some((OldRow::Key, Tuple(vec![t("1"), Value::Null])));
        c.take(Message::Update { xid: None, relation: 1, old, new: Tuple(vec![t("2"), t("x")]) }).unwrap();
        c.take(Message::Commit { commit_lsn: Lsn(1), end_lsn: Lsn(16), commit_time: 0 }).unwrap();
        let h: Vec<(char, Vec<Value>, u32)> = c.drain().remove(0).history.into_iter().map(|h| (h.op, h.values, h.seq)).collect();
        assert_eq!(h, vec![('d', vec![t("1"), Value::Null], 1), ('c', vec![t("2"), t("x")], 2)]);
    }

    #[test]
    fn the_history_keeps_every_committed_change_in_order_with_its_commit() {
        let mut c = Collapser::with_history();
        c.take(Message::Relation(relation())).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(1), commit_time: 0, xid: 5 }).unwrap();
        c.take(Message::Insert { xid: None, relation: 1, new: Tuple(vec![t("1"), t("a")]) }).unwrap();
        c.take(Message::Update { xid: None, relation: 1, old: None, new: Tuple(vec![t("1"), Value::Unchanged]) }).unwrap();
        c.take(Message::Commit { commit_lsn: Lsn(1), end_lsn: Lsn(16), commit_time: 1_000_000 }).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(17), commit_time: 0, xid: 6 }).unwrap();
        c.take(Message::Delete { xid: None, relation: 1, old: (OldRow::Key, Tuple(vec![t("2"), Value::Null])) }).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(17), commit_time: 0, xid: 7 }).unwrap();
        c.take(Message::Delete { xid: None, relation: 1, old: (OldRow::Key, Tuple(vec![t("1"), Value::Null])) }).unwrap();
        c.take(Message::Truncate { xid: None, relations: vec![1], cascade: false, restart_identity: false }).unwrap();
        c.commit_at("bin.000001:900".into(), 42).unwrap();
        let h: Vec<(char, Vec<Value>, String, i64, u32)> =
            c.drain().remove(0).history.into_iter().map(|h| (h.op, h.values, h.position, h.commit_time, h.seq)).collect();
        let at = |p: &str| p.to_string();
        assert_eq!(
            h,
            vec![
                ('c', vec![t("1"), t("a")], at("0/10"), 1_000_000, 1),
                // Filled from the row's earlier change in the batch.
                ('u', vec![t("1"), t("a")], at("0/10"), 1_000_000, 2),
                // The transaction begun again (xid 6 never committed) is not there.
                ('d', vec![t("1"), Value::Null], at("bin.000001:900"), 42, 1),
                ('t', vec![Value::Null, Value::Null], at("bin.000001:900"), 42, 2),
            ]
        );
    }
}
