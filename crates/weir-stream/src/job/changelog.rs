//! A job over a table's change events (`{{ cdc('shop', 'public.orders') }}`), read as a
//! changelog: each event says what a row of the table now is (`c`, `u`, `r`), that it is gone
//! (`d`), or that the table was emptied (`t`), so the job's table follows the source table
//! as a query over it would, not the stream of events.
//!
//! - **Running aggregates** (`group by`): each row's contribution (its group and the
//!   aggregates' arguments) is held by its primary key; a change takes the old contribution
//!   back and adds the new one, moving the row between groups when its key columns changed.
//!   A group left with no rows is deleted from the table. `count`, `sum`, `avg`, `min`,
//!   `max` and `count(distinct)` take values back exactly (sums of decimals in integers of
//!   millionths; `min`, `max` and distinct values as counted sets).
//! - **Projections** (no `group by`): each row of the table is a row of the job's table, by
//!   the primary key: upserted when it changes, deleted when it is deleted or the `where`
//!   clause no longer keeps it.
//!
//! A row's events are in the partition its key hashes to, in order; a truncate is in every
//! partition, each in its turn, and takes back the rows of its own partition only, so the
//! partitions may be read at different paces.
//!
//! **Exactly once.** Each write carries the positions it reached, as for other jobs, and every
//! `checkpoint_interval` the rows held (each one's partition and contribution) are written
//! with the positions, after the table holds everything up to them. After a crash they come
//! back and the events past them are read again, each row and group written again with its
//! value (an upsert), so the table ends as one uninterrupted run leaves it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use weir_log::{Log, Records};
use weir_warehouse::Warehouse;

use super::decode::{Cell, Decoder};
use super::eval::{self, Evaluator, key_parts};
use super::sink::{Aside, Batch, Counts, Sink};
use super::{
    CHECKPOINT, COMMIT_EVERY, Control, JobRun, POLL, READ_MAX, Reporting, Status, layout, now_ms, read_checkpoint, write_atomically,
};
use crate::plan::{Output, Shape};
use crate::{Agg, StreamError};

/// Runs a changelog job until `control` stops it, calling `report` about once a second.
pub(super) fn run(
    run: &JobRun,
    log: &dyn Log,
    wh: Arc<dyn Warehouse>,
    control: &Control,
    report: &mut dyn FnMut(&Status),
) -> Result<Status, StreamError> {
    let mut job = Changes::start(run, log, wh)?;
    let config = &run.job.config;
    let (mut last_commit, mut last_checkpoint) = (Instant::now(), Instant::now());
    let mut reporting = Reporting::new(job.total().read);
    loop {
        let stopping = control.stop.load(Ordering::Relaxed);
        let read = if stopping { 0 } else { job.step()? };
        let caught_up = read == 0;
        let checkpoint_due = last_checkpoint.elapsed() >= Duration::from_millis(config.checkpoint_interval_ms as u64);
        let finishing = stopping || (control.drain && caught_up);
        if (job.has_pending() && (last_commit.elapsed() >= COMMIT_EVERY || caught_up)) || checkpoint_due || finishing {
            job.commit()?;
            last_commit = Instant::now();
        }
        if checkpoint_due || finishing {
            job.checkpoint()?;
            last_checkpoint = Instant::now();
        }
        if caught_up && !job.has_pending() && !control.drain {
            job.sink.release();
        }
        if reporting.due(finishing) {
            let total = job.total().read;
            reporting.mark(&mut job.status, total);
            job.refresh_status(if finishing { "stopped" } else { "running" })?;
            report(&job.status);
        }
        if finishing {
            return Ok(job.status);
        }
        if caught_up {
            std::thread::sleep(POLL);
        }
    }
}

/// What a row of the source table adds to a running aggregate: its group and the
/// aggregates' arguments.
type Contribution = (String, Vec<Option<f64>>);

/// A row of the source table as the job holds it: the partition its events are in, and
/// (running aggregates) what it contributes.
struct Held {
    partition: u32,
    contribution: Option<Contribution>,
}

/// A change event, decoded.
struct Change {
    op: char,
    /// The row's primary key: the record's key, as its text, and its columns' values.
    key: String,
    key_cells: Vec<Cell>,
    /// The row after the change (`c`, `u`, `r`).
    row: Option<Vec<Cell>>,
}

struct Changes<'a> {
    run: &'a JobRun,
    log: &'a dyn Log,
    /// The table's columns the job reads, and its primary key's.
    decoder: Decoder,
    keys: Decoder,
    evaluator: Evaluator,
    sink: Sink,
    positions: BTreeMap<u32, u64>,
    counts: BTreeMap<u32, Counts>,
    /// Each row the job holds, by its key's text; running aggregates: each group's state, and
    /// the groups changed since the last write.
    held: HashMap<String, Held>,
    groups: HashMap<String, Group>,
    dirty: HashSet<String>,
    /// A projection: each row changed since the last write, by its key's text: the key's
    /// values, and the row's output (`None` when it goes).
    rows: BTreeMap<String, (eval::Row, Option<eval::Row>)>,
    rejected: Vec<Aside>,
    status: Status,
    fingerprint: String,
    agg_int: Vec<bool>,
    /// Reads events written as Avro (a `format: avro` topic) with their schemas.
    reader: Option<weir_registry::codec::Reader>,
}

impl<'a> Changes<'a> {
    fn start(run: &'a JobRun, log: &'a dyn Log, wh: Arc<dyn Warehouse>) -> Result<Changes<'a>, StreamError> {
        let plan = &run.plan;
        let key_names = plan.changelog.clone().unwrap_or_default();
        log.create_topic(&run.topic.spec())?;
        let (evaluator, value_types) = Evaluator::new(plan, None)?;
        let mut layout = layout(plan, &value_types);
        if plan.shape == Shape::Stateless {
            // A projection's rows are known by the table's key, selected as it is.
            layout.keys = key_names
                .iter()
                .filter_map(|k| plan.outputs.iter().position(|(_, o)| matches!(o, Output::Expr(s) if s.column.as_ref() == Some(k))))
                .collect();
            layout.append = false;
        }
        let agg_int = super::agg_int(plan, &layout);
        let sink = Sink::open(wh, run.table.clone(), layout, &run.job.config.sink, &run.job.name, std::slice::from_ref(&run.topic.name))?;
        let key_columns: Vec<(String, String)> = key_names
            .iter()
            .map(|k| (k.clone(), run.topic.columns.iter().find(|(c, _)| c == k).map_or("varchar".into(), |(_, t)| t.clone())))
            .collect();
        let partitions = log.describe(&run.topic.name)?.partitions.len() as u32;
        let fingerprint = plan.fingerprint();
        let now = now_ms();
        let mut job = Changes {
            run,
            log,
            decoder: Decoder::new(&plan.columns, None),
            keys: Decoder::new(&key_columns, None),
            reader: run.registry.clone().map(weir_registry::codec::Reader::new),
            evaluator,
            positions: (0..partitions).map(|p| (p, 0)).collect(),
            counts: (0..partitions).map(|p| (p, Counts::default())).collect(),
            held: HashMap::new(),
            groups: HashMap::new(),
            dirty: HashSet::new(),
            rows: BTreeMap::new(),
            rejected: vec![],
            status: Status {
                job: run.job.name.clone(),
                state: "running".into(),
                pid: std::process::id(),
                started_at: now,
                updated_at: now,
                ..Status::default()
            },
            fingerprint,
            agg_int,
            sink,
        };
        job.restore()?;
        let at: BTreeMap<(String, u32), u64> = job.positions.iter().map(|(p, o)| ((run.topic.name.clone(), *p), *o)).collect();
        job.sink.forget_after(&at)?;
        Ok(job)
    }

    /// Takes the checkpoint back, if there is one: the positions, the counts and each row
    /// held, the groups added up again from their contributions.
    fn restore(&mut self) -> Result<(), StreamError> {
        let Some(c) = read_checkpoint(self.run.checkpoints.as_ref(), CHECKPOINT)? else { return Ok(()) };
        if c.get("fingerprint").and_then(J::as_str) != Some(self.fingerprint.as_str()) {
            return Err(StreamError::Job(format!(
                "{}: the job's SQL changed what its state means since its last checkpoint (was: {}; now: {}); run `weir stream run {} --reset` to start over from the first event",
                self.run.job.path.display(),
                c.get("fingerprint").and_then(J::as_str).unwrap_or("?"),
                self.fingerprint,
                self.run.job.name
            )));
        }
        let damaged = || StreamError::Job(format!("{}: damaged", self.run.checkpoints.location(CHECKPOINT)));
        for p in c.get("partitions").and_then(J::as_array).into_iter().flatten() {
            let n = |k: &str| p.get(k).and_then(J::as_u64).unwrap_or(0);
            let partition = n("partition") as u32;
            self.positions.insert(partition, n("offset"));
            self.counts.insert(
                partition,
                Counts { read: n("read"), counted: n("counted"), late: 0, rejected: n("rejected"), filtered: n("filtered") },
            );
        }
        let aggs: Vec<Agg> = self.run.plan.aggs.iter().map(|a| a.agg).collect();
        for h in c.get("held").and_then(J::as_array).into_iter().flatten() {
            let (Some(key), Some(partition)) = (h.get(0).and_then(J::as_str), h.get(1).and_then(J::as_u64)) else {
                return Err(damaged());
            };
            let contribution = match (h.get(2).and_then(J::as_str), h.get(3).and_then(J::as_array)) {
                (Some(group), Some(args)) => {
                    let args: Vec<Option<f64>> = args.iter().map(|a| a.as_u64().map(f64::from_bits)).collect();
                    self.groups.entry(group.to_string()).or_insert_with(|| Group::new(&aggs)).add(&args);
                    Some((group.to_string(), args))
                }
                _ => None,
            };
            self.held.insert(key.to_string(), Held { partition: partition as u32, contribution });
        }
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.dirty.is_empty() || !self.rows.is_empty() || !self.rejected.is_empty()
    }

    /// Reads a micro-batch of every partition and applies it; returns the events read.
    fn step(&mut self) -> Result<usize, StreamError> {
        let mut total = 0;
        let partitions: Vec<(u32, u64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
        for (p, from) in partitions {
            let records = self.log.read_records(&self.run.topic.name, p, from, READ_MAX)?;
            if records.is_empty() {
                continue;
            }
            total += records.len();
            self.take(p, &records)?;
        }
        Ok(total)
    }

    /// Applies one partition's records, in order.
    fn take(&mut self, p: u32, records: &Records) -> Result<(), StreamError> {
        let changes: Vec<Result<Change, String>> = records.iter().map(|r| self.decode(r.key, r.value)).collect();
        // What the stateless part makes of each row after a change, in one query.
        let rows: Vec<(usize, &[Cell])> =
            changes.iter().enumerate().filter_map(|(i, c)| c.as_ref().ok().and_then(|c| c.row.as_deref()).map(|r| (i, r))).collect();
        let refs: Vec<&[Cell]> = rows.iter().map(|(_, r)| *r).collect();
        let mut keyed: HashMap<usize, Contribution> = HashMap::new();
        let mut projected: HashMap<usize, Vec<Option<String>>> = HashMap::new();
        if !refs.is_empty() {
            if self.run.plan.shape == Shape::Stateless {
                for (i, row) in self.evaluator.project(&refs, self.run.plan.outputs.len())? {
                    projected.insert(rows[i].0, row);
                }
            } else {
                for k in self.evaluator.keyed(&refs)? {
                    keyed.insert(rows[k.index].0, (k.key, k.args));
                }
            }
        }
        let mut c = Counts { read: records.len() as u64, ..Counts::default() };
        for (i, (r, change)) in records.iter().zip(changes).enumerate() {
            let change = match change {
                Ok(change) => change,
                Err(reason) => {
                    c.rejected += 1;
                    let event = String::from_utf8_lossy(r.value).into_owned();
                    self.rejected.push(Aside {
                        topic: self.run.topic.name.clone(),
                        partition: p,
                        offset: r.offset,
                        event,
                        reason,
                        times: None,
                    });
                    continue;
                }
            };
            let kept = match self.run.plan.shape {
                Shape::Stateless => self.project(p, change, projected.remove(&i)),
                _ => self.fold(p, change, keyed.remove(&i)),
            };
            if kept {
                c.counted += 1;
            } else {
                c.filtered += 1;
            }
        }
        if let Some(last) = records.last() {
            self.positions.insert(p, last.offset + 1);
        }
        self.counts.entry(p).or_default().add(&c);
        Ok(())
    }

    /// A record as a change: its operation, the row's key, and the row after it.
    fn decode(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Change, String> {
        // Avro events (Confluent's wire format begins with a zero byte, which JSON never
        // does) are read as the JSON envelope they hold, keys too.
        let avro = |bytes: &[u8]| -> Result<Option<J>, String> {
            match (&self.reader, bytes.first()) {
                (Some(reader), Some(0)) => Ok(Some(weir_registry::codec::to_json(reader.read(bytes)?))),
                (None, Some(0)) => Err("an Avro change event, read without the project's schema registry".into()),
                _ => Ok(None),
            }
        };
        let v: J = match avro(value)? {
            Some(v) => v,
            None => serde_json::from_slice(value).map_err(|e| format!("not a change event: {e}"))?,
        };
        let key_json = key.map(avro).transpose()?.flatten().map(|k| k.to_string().into_bytes());
        let key = key_json.as_deref().or(key);
        let op = match v.get("op").and_then(J::as_str) {
            Some(op @ ("c" | "u" | "r" | "d" | "t")) => op.chars().next().unwrap_or('c'),
            Some(op) => return Err(format!("op '{op}' is not one of c, u, r, d, t")),
            None => return Err("not a change event: it has no `op`".into()),
        };
        if op == 't' {
            return Ok(Change { op, key: String::new(), key_cells: vec![], row: None });
        }
        let key = key.ok_or("a change event of a row without a key")?;
        let (key_cells, _) = self.keys.decode(key).map_err(|e| format!("its key: {e}"))?;
        let row = match op {
            'd' => None,
            _ => {
                let after = v.get("after").filter(|a| a.is_object()).ok_or("a change event without `after`")?;
                let bytes = serde_json::to_vec(after).map_err(|e| e.to_string())?;
                Some(self.decoder.decode(&bytes)?.0)
            }
        };
        Ok(Change { op, key: String::from_utf8_lossy(key).into_owned(), key_cells, row })
    }

    /// Running aggregates: the row's old contribution taken back and its new one (`new`;
    /// none when it is deleted or the `where` clause leaves it out) added. Returns whether
    /// the row counts.
    fn fold(&mut self, p: u32, change: Change, new: Option<Contribution>) -> bool {
        if change.op == 't' {
            for key in self.keys_in(p) {
                self.take_back(&key);
            }
            return true;
        }
        self.take_back(&change.key);
        match (change.op, new) {
            ('d', _) => true,
            (_, Some((group, args))) => {
                let aggs = &self.run.plan.aggs;
                self.groups.entry(group.clone()).or_insert_with(|| Group::new(&aggs.iter().map(|a| a.agg).collect::<Vec<_>>())).add(&args);
                self.dirty.insert(group.clone());
                self.held.insert(change.key, Held { partition: p, contribution: Some((group, args)) });
                true
            }
            (_, None) => false,
        }
    }

    /// The keys of the rows held from partition `p`: what a truncate there takes back.
    fn keys_in(&self, p: u32) -> Vec<String> {
        self.held.iter().filter(|(_, h)| h.partition == p).map(|(k, _)| k.clone()).collect()
    }

    /// Forgets the row `key`, taking back what it contributed.
    fn take_back(&mut self, key: &str) {
        if let Some(Held { contribution: Some((group, args)), .. }) = self.held.remove(key) {
            if let Some(g) = self.groups.get_mut(&group) {
                g.remove(&args);
            }
            self.dirty.insert(group);
        }
    }

    /// A projection: the row's output upserted (`row`), or deleted when the change deletes
    /// it or the `where` clause leaves it out. Returns whether the row counts.
    fn project(&mut self, p: u32, change: Change, row: Option<Vec<Option<String>>>) -> bool {
        if change.op == 't' {
            for key in self.keys_in(p) {
                self.held.remove(&key);
                if let Ok((cells, _)) = self.keys.decode(key.as_bytes()) {
                    self.write_row(key, &cells, None);
                }
            }
            return true;
        }
        let kept = change.op == 'd' || row.is_some();
        match row {
            Some(_) => self.held.insert(change.key.clone(), Held { partition: p, contribution: None }),
            None => self.held.remove(&change.key),
        };
        self.write_row(change.key, &change.key_cells, row);
        kept
    }

    /// Sets what the next write does to the projection's row of `key` (its columns' values
    /// `cells`): upserts `row`, or (none) deletes it.
    fn write_row(&mut self, key: String, cells: &[Cell], row: Option<Vec<Option<String>>>) {
        let kinds = self.keys.kinds();
        let parts: Vec<Option<String>> = cells.iter().zip(kinds).map(|(c, k)| eval::text(c, *k)).collect();
        self.rows.insert(key, (parts, row));
    }

    /// Writes what changed since the last write with the positions, in one transaction.
    fn commit(&mut self) -> Result<(), StreamError> {
        let plan = &self.run.plan;
        let layout = self.sink.layout().clone();
        let width = layout.columns.len();
        let mut batch = Batch { rejected: std::mem::take(&mut self.rejected), ..Batch::default() };
        let aggs: Vec<Agg> = plan.aggs.iter().map(|a| a.agg).collect();
        for group in std::mem::take(&mut self.dirty) {
            let parts = key_parts(&group);
            let g = self.groups.get(&group);
            // Without `group by`, SQL answers one row even over no rows (a count of 0).
            if plan.keys.is_empty() || g.is_some_and(|g| g.rows > 0) {
                let values = g.map_or_else(|| Group::new(&aggs).values(), Group::values);
                batch.rows.push((super::result_row(plan, &parts, &values, None, &self.agg_int), true));
            } else {
                self.groups.remove(&group);
                let mut row = vec![None; width];
                for (i, (_, o)) in plan.outputs.iter().enumerate() {
                    if let Output::Key(k) = o {
                        row[i] = parts.get(*k).cloned().flatten();
                    }
                }
                batch.deleted.push(row);
            }
        }
        let key_names = plan.changelog.clone().unwrap_or_default();
        for (_, (key, row)) in std::mem::take(&mut self.rows) {
            match row {
                Some(row) => batch.rows.push((row, true)),
                None => {
                    let mut gone = vec![None; width];
                    for &i in &layout.keys {
                        let name = match &plan.outputs[i].1 {
                            Output::Expr(s) => s.column.clone(),
                            _ => None,
                        };
                        if let Some(at) = name.and_then(|n| key_names.iter().position(|k| *k == n)) {
                            gone[i] = key.get(at).cloned().flatten();
                        }
                    }
                    batch.deleted.push(gone);
                }
            }
        }
        let positions = self
            .positions
            .iter()
            .map(|(p, o)| ((self.run.topic.name.clone(), *p), (*o, self.counts.get(p).copied().unwrap_or_default())))
            .collect();
        self.sink.commit(&batch, &positions, None, now_ms())
    }

    /// Writes each row's contribution with the positions (the table holds everything up to
    /// them).
    fn checkpoint(&mut self) -> Result<(), StreamError> {
        let now = now_ms();
        let partitions: Vec<J> = self
            .positions
            .iter()
            .map(|(p, o)| {
                let c = self.counts.get(p).copied().unwrap_or_default();
                json!({"topic": self.run.topic.name, "partition": p, "offset": o, "read": c.read, "counted": c.counted, "rejected": c.rejected, "filtered": c.filtered})
            })
            .collect();
        let held: Vec<J> = self
            .held
            .iter()
            .map(|(key, h)| match &h.contribution {
                Some((group, args)) => json!([key, h.partition, group, args.iter().map(|a| a.map(f64::to_bits)).collect::<Vec<_>>()]),
                None => json!([key, h.partition]),
            })
            .collect();
        let doc = json!({"version": 1, "job": self.run.job.name, "fingerprint": self.fingerprint, "written_at": now, "partitions": partitions, "held": held});
        self.run.checkpoints.put(CHECKPOINT, doc.to_string().as_bytes())?;
        self.status.checkpointed_at = Some(now);
        Ok(())
    }

    fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.counts.values() {
            t.add(c);
        }
        t
    }

    fn refresh_status(&mut self, state: &str) -> Result<(), StreamError> {
        let topic = &self.run.topic.name;
        self.status.lag.clear();
        for p in self.log.describe(topic)?.partitions {
            let behind = p.end.saturating_sub(self.positions.get(&p.partition).copied().unwrap_or(0));
            self.status.lag.insert((topic.clone(), p.partition), behind);
        }
        self.status.state = state.to_string();
        self.status.updated_at = now_ms();
        self.status.positions = self.positions.iter().map(|(p, o)| ((topic.clone(), *p), *o)).collect();
        self.status.counts = self.total();
        self.status.windows_held = self.groups.len();
        write_atomically(&self.run.dir.join("status.json"), self.status.to_json().to_string().as_bytes())
    }
}

/// One group's running aggregates and how many rows it holds.
struct Group {
    rows: u64,
    accs: Vec<Retractable>,
}

/// An aggregate that takes values back as well as adding them.
enum Retractable {
    Count(u64),
    CountValues(u64),
    Sum(Total),
    Avg(Total),
    /// Each value (by its bits, in `f64::total_cmp`'s order) and how many rows hold it.
    Min(BTreeMap<i64, u64>),
    Max(BTreeMap<i64, u64>),
    Distinct(HashMap<u64, u64>),
}

/// A sum that values are taken back from without drift: in integers of millionths while every
/// value is a whole number of them (decimals of up to six places), else as a float.
#[derive(Default)]
struct Total {
    n: u64,
    exact: i128,
    inexact: f64,
    /// Values that were not whole millionths have been added.
    floats: u64,
}

impl Total {
    fn add(&mut self, v: f64, sign: i8) {
        self.n = if sign > 0 { self.n + 1 } else { self.n.saturating_sub(1) };
        let scaled = v * 1e6;
        if scaled.abs() < 9e15 && (scaled - scaled.round()).abs() < 1e-3 {
            self.exact += i128::from(sign) * scaled.round() as i128;
        } else {
            self.inexact += f64::from(sign) * v;
            self.floats = if sign > 0 { self.floats + 1 } else { self.floats.saturating_sub(1) };
        }
    }

    fn sum(&self) -> f64 {
        let exact = self.exact as f64 / 1e6;
        if self.floats == 0 { exact } else { exact + self.inexact }
    }
}

/// A value's place in `f64::total_cmp`'s order, as an integer.
fn ordered(v: f64) -> i64 {
    let b = v.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

fn unordered(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

impl Group {
    fn new(aggs: &[Agg]) -> Group {
        let accs = aggs
            .iter()
            .map(|a| match a {
                Agg::Count => Retractable::Count(0),
                Agg::CountValues => Retractable::CountValues(0),
                Agg::Sum => Retractable::Sum(Total::default()),
                Agg::Avg => Retractable::Avg(Total::default()),
                Agg::Min => Retractable::Min(BTreeMap::new()),
                Agg::Max => Retractable::Max(BTreeMap::new()),
                // Refused by the plan over a changelog; counted as distinct values if it came.
                Agg::CountDistinct | Agg::Percentile { .. } => Retractable::Distinct(HashMap::new()),
            })
            .collect();
        Group { rows: 0, accs }
    }

    fn add(&mut self, args: &[Option<f64>]) {
        self.rows += 1;
        self.apply(args, 1);
    }

    fn remove(&mut self, args: &[Option<f64>]) {
        self.rows = self.rows.saturating_sub(1);
        self.apply(args, -1);
    }

    fn apply(&mut self, args: &[Option<f64>], sign: i8) {
        let step = |n: &mut u64| *n = if sign > 0 { *n + 1 } else { n.saturating_sub(1) };
        for (acc, v) in self.accs.iter_mut().zip(args.iter().copied().chain(std::iter::repeat(None))) {
            match (acc, v) {
                (Retractable::Count(n), _) | (Retractable::CountValues(n), Some(_)) => step(n),
                (Retractable::Sum(t) | Retractable::Avg(t), Some(v)) => t.add(v, sign),
                (Retractable::Min(m) | Retractable::Max(m), Some(v)) => m.step(ordered(v), sign),
                (Retractable::Distinct(m), Some(v)) => m.step(v.to_bits(), sign),
                (_, None) => {}
            }
        }
    }

    /// The aggregates' values; `None` for SQL's null (the sum of no values).
    fn values(&self) -> Vec<Option<f64>> {
        self.accs
            .iter()
            .map(|a| match a {
                Retractable::Count(n) | Retractable::CountValues(n) => Some(*n as f64),
                Retractable::Sum(t) => (t.n > 0).then(|| t.sum()),
                Retractable::Avg(t) => (t.n > 0).then(|| t.sum() / t.n as f64),
                Retractable::Min(m) => m.keys().next().map(|k| unordered(*k)),
                Retractable::Max(m) => m.keys().next_back().map(|k| unordered(*k)),
                Retractable::Distinct(m) => Some(m.len() as f64),
            })
            .collect()
    }
}

/// A set of values with how many rows hold each.
trait CountedSet<K> {
    /// Counts `k` in (`sign` > 0) or out; a value no row holds any more goes.
    fn step(&mut self, k: K, sign: i8);
}

impl<K: Ord> CountedSet<K> for BTreeMap<K, u64> {
    fn step(&mut self, k: K, sign: i8) {
        if sign > 0 {
            *self.entry(k).or_insert(0) += 1;
        } else if let std::collections::btree_map::Entry::Occupied(mut e) = self.entry(k) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl<K: std::hash::Hash + Eq> CountedSet<K> for HashMap<K, u64> {
    fn step(&mut self, k: K, sign: i8) {
        if sign > 0 {
            *self.entry(k).or_insert(0) += 1;
        } else if let std::collections::hash_map::Entry::Occupied(mut e) = self.entry(k) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_take_values_back_exactly() {
        let aggs = [Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Avg, Agg::CountDistinct, Agg::CountValues];
        let mut g = Group::new(&aggs);
        let row = |v: Option<f64>| vec![None, v, v, v, v, v, v];
        for v in [10.1, 20.2, -3.5, 20.2] {
            g.add(&row(Some(v)));
        }
        g.add(&row(None));
        g.remove(&row(Some(20.2)));
        g.remove(&row(Some(-3.5)));
        // 10.1 + 20.2 in floats is 30.299999999999997; taken back in millionths, it is not.
        assert_eq!(g.values(), vec![Some(3.0), Some(30.3), Some(10.1), Some(20.2), Some(15.15), Some(2.0), Some(2.0)]);
        g.remove(&row(Some(10.1)));
        g.remove(&row(Some(20.2)));
        assert_eq!(g.values(), vec![Some(1.0), None, None, None, None, Some(0.0), Some(0.0)]);
        assert_eq!(g.rows, 1);
        assert_eq!((unordered(ordered(-0.5)), unordered(ordered(3.25))), (-0.5, 3.25));
        assert!(ordered(-2.0) < ordered(-1.0) && ordered(-1.0) < ordered(0.0) && ordered(0.0) < ordered(1.5));
    }
}
