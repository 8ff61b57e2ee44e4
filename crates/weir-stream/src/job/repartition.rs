//! Repartitioning, for workers. A job that groups by columns its topic is not keyed by runs in
//! two stages, as Kafka Streams runs such a topology: the first stage reads each partition of
//! the source and writes every event, as it came, into the job's internal topic
//! (`weir-stream.<job>-repartition`), keyed by the values of the columns the job groups by, so
//! that every event of a group lands in one partition; the second stage is the job over that
//! topic. Both stages' partitions are dealt among the workers by the job's one consumer group.
//!
//! **Exactly once.** A first-stage task commits the events it forwarded with its source offsets
//! in one Kafka transaction, and the second stage reads `read_committed`: each event is in the
//! internal topic once, however often the first stage is started again.
//!
//! **Watermarks.** A partition of the internal topic holds events of every source partition,
//! mixed as the first-stage tasks happened to run. Each first-stage commit appends to every
//! internal partition, after its events, a marker: the source partition's greatest event time
//! and whether it is idle (a record with the header `weir.watermark` and no value). The second
//! stage's watermark is the least over the source's partitions as last reported: the one the
//! job has in one process, so the same events are late.

use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use weir_graph::stream_jobs::StartFrom;
use weir_log::{Commit, Log, Output, Positions, Record, RecordRef};

use super::decode::{Cell, Decoder};
use super::{Control, JobRun, READ_MAX, Turn, now_ms};
use crate::plan::Shape;
use crate::{StreamError, WatermarkSpec, Watermarks};

/// What the second stage knows of the first: how many partitions the source has, each of
/// which reports its event time.
#[derive(Debug, Clone)]
pub struct Stage {
    pub partitions: u32,
}

/// The columns of its stream a job groups by, when the topic is keyed by none of them and
/// workers must repartition it; `Ok(None)` when the topic's partitions serve as they are. A
/// group computed by an expression cannot be repartitioned (its value is not an event's).
pub fn needed(run: &JobRun) -> Result<Option<Vec<String>>, String> {
    if run.plan.shape == Shape::Stateless {
        return Ok(None);
    }
    let grouped: Vec<&str> = run.plan.keys.iter().filter_map(|k| k.column.as_deref()).collect();
    if run.topic.key.as_deref().is_some_and(|k| grouped.contains(&k)) {
        return Ok(None);
    }
    if run.plan.keys.is_empty() {
        return Err("it keeps one group for the whole stream, which one task must hold: run it in one process".into());
    }
    if let Some(k) = run.plan.keys.iter().find(|k| k.column.is_none()) {
        return Err(format!(
            "it groups by `{}`, which is no column of the stream: the events cannot be repartitioned by it; group by columns, \
             or key the topic by one of them (`key:` in streams/*.yml)",
            k.sql
        ));
    }
    Ok(Some(grouped.into_iter().map(str::to_string).collect()))
}

/// The job's second stage: the job over its internal topic of `partitions` partitions
/// (the source's), keyed by `keys`.
pub fn second_stage(run: &JobRun, partitions: u32, keys: &[String]) -> JobRun {
    let mut stage = run.clone();
    stage.topic.name = format!("{}-repartition", run.group());
    stage.topic.key = keys.first().cloned();
    stage.topic.partitions = partitions;
    stage.plan.topic = stage.topic.name.clone();
    // Where the job starts in the source is the first stage's to say; the second reads what
    // the first forwarded since the job was last reset (see [`rewind`]).
    stage.job.config.start_from = StartFrom::Committed;
    stage.repartition = Some(Stage { partitions });
    stage
}

/// Moves the consumer group of a job that workers repartition back to where the job starts:
/// the source's partitions to where `start_from` says, the internal topic's to their ends (so
/// what was forwarded before is not read again), as Kafka Streams' reset tool does. For
/// `weir stream reset`, with every worker stopped.
pub fn rewind(run: &JobRun, log: &dyn Log) -> Result<(), StreamError> {
    let Ok(Some(keys)) = needed(run) else { return Ok(()) };
    let Ok(source) = log.describe(&run.topic.name) else { return Ok(()) };
    let second = second_stage(run, source.partitions.len() as u32, &keys);
    let Ok(internal) = log.describe(&second.topic.name) else { return Ok(()) };
    let mut positions = Positions::new();
    for p in source.partitions {
        positions.insert((run.topic.name.clone(), p.partition), start_of(run, log, &p)?);
    }
    for p in internal.partitions {
        positions.insert((second.topic.name.clone(), p.partition), p.end);
    }
    log.commit(&run.group(), &Commit { outputs: vec![], positions })?;
    Ok(())
}

/// The header that marks a first-stage report.
pub const MARKER: &str = "weir.watermark";
/// Where a first-stage task keeps its partition's greatest event time, with its offsets.
const TIME_MARK: &str = "_weir_repartition_event_time";

/// A first-stage report of one source partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub partition: u32,
    pub max_event_time: Option<i64>,
    pub idle: bool,
}

impl Marker {
    /// The report `r` carries, if it is a marker.
    pub fn of(r: &RecordRef) -> Option<Marker> {
        let headers = r.headers();
        let (_, v) = headers.iter().find(|(n, _)| n == MARKER)?;
        let doc: J = serde_json::from_slice(v).ok()?;
        Some(Marker {
            partition: doc.get("partition")?.as_u64()? as u32,
            max_event_time: doc.get("max_event_time").and_then(J::as_i64),
            idle: doc.get("idle").and_then(J::as_bool).unwrap_or(false),
        })
    }

    fn record(&self, now: i64) -> Record {
        let doc = json!({"partition": self.partition, "max_event_time": self.max_event_time, "idle": self.idle});
        Record { key: None, value: vec![], timestamp: now, headers: vec![(MARKER.to_string(), doc.to_string().into_bytes())] }
    }
}

/// A first-stage task: one partition of the source, forwarded into the internal topic.
pub(crate) struct Shuffle<'a> {
    run: &'a JobRun,
    log: &'a dyn Log,
    partition: u32,
    into: String,
    partitions: u32,
    /// Decodes the group columns and the event time only.
    decoder: Decoder,
    /// Where the group columns are among the decoded cells.
    keys: Vec<usize>,
    /// The next offset to read.
    pub(crate) from: u64,
    watermarks: Watermarks,
    /// Per partition of the internal topic, the events forwarded since the last commit.
    pending: Vec<Vec<Record>>,
    committed_at: Instant,
}

impl<'a> Shuffle<'a> {
    /// The task of source partition `partition`, forwarding into `second`'s topic; it goes on
    /// from the group's committed offset (else where the job's `start_from` says, written
    /// down at once).
    pub(crate) fn start(
        run: &'a JobRun,
        second: &JobRun,
        log: &'a dyn Log,
        partition: u32,
        keys: &[String],
    ) -> Result<Shuffle<'a>, StreamError> {
        let plan = &run.plan;
        let mut columns: Vec<(String, String)> = plan.columns.iter().filter(|(n, _)| keys.contains(n)).cloned().collect();
        if let Some(t) = &plan.time_column
            && !columns.iter().any(|(n, _)| n == t)
        {
            columns.extend(plan.columns.iter().filter(|(n, _)| n == t).cloned());
        }
        let positions: Vec<usize> = keys.iter().filter_map(|k| columns.iter().position(|(n, _)| n == k)).collect();
        let decoder = run.decoder(&run.topic, &columns, plan.time_column.as_deref())?;
        let spec = WatermarkSpec {
            delay: run.topic.watermark.as_ref().map_or(0, |w| w.delay_ms),
            idle_timeout: run.job.config.idle_timeout_ms,
            max_future: run.job.config.max_future_ms,
        };
        let now = now_ms();
        let mut watermarks = Watermarks::new(spec, 1, now);
        let committed = log.positions(&run.group())?;
        if let Some(t) = committed.get(&(TIME_MARK.to_string(), partition)) {
            let _ = watermarks.observe(0, *t as i64, now);
        }
        let at = committed.get(&(run.topic.name.clone(), partition)).copied();
        let partitions = second.repartition.as_ref().map_or(second.topic.partitions, |s| s.partitions).max(1);
        let mut task = Shuffle {
            run,
            log,
            partition,
            into: second.topic.name.clone(),
            partitions,
            decoder,
            keys: positions,
            from: 0,
            watermarks,
            pending: vec![vec![]; partitions as usize],
            committed_at: Instant::now(),
        };
        match at {
            Some(o) => task.from = o,
            None => {
                let p = log.describe(&run.topic.name)?.partitions.into_iter().find(|p| p.partition == partition);
                let Some(p) = p else {
                    return Err(StreamError::Job(format!("topic '{}' has no partition {partition}", run.topic.name)));
                };
                task.from = start_of(run, log, &p)?;
                task.commit()?;
            }
        }
        Ok(task)
    }

    /// Reads and forwards one batch; commits at the job's checkpoint interval, and as it
    /// stops or is drained.
    pub(crate) fn turn(&mut self, control: &Control) -> Result<Turn, StreamError> {
        let stopping = control.stop.load(std::sync::atomic::Ordering::Relaxed);
        let mut read = 0;
        if !stopping {
            let records = self.log.read_records(&self.run.topic.name, self.partition, self.from, READ_MAX)?;
            read = records.len();
            let now = now_ms();
            for r in records.iter() {
                let key = match self.decoder.decode_record(&r) {
                    Ok((cells, ts)) => {
                        if self.run.plan.time_column.is_some() {
                            // One dated too far ahead moves nothing; the second stage refuses it.
                            let _ = self.watermarks.observe(0, ts, now);
                        }
                        Some(key_of(&cells, &self.keys))
                    }
                    // The second stage refuses it too, with the reason, wherever it lands.
                    Err(_) => r.key.map(<[u8]>::to_vec),
                };
                let to = key.as_deref().map_or(self.partition % self.partitions.max(1), |k| weir_log::partition_for(k, self.partitions));
                let record = Record { key, value: r.value.to_vec(), timestamp: r.timestamp, headers: r.headers() };
                self.pending[to as usize].push(record);
                self.from = r.offset + 1;
            }
        }
        let caught_up = read == 0;
        let finishing = stopping || (control.drain && caught_up);
        let interval = Duration::from_millis(self.run.job.config.checkpoint_interval_ms as u64);
        if finishing || self.committed_at.elapsed() >= interval {
            self.commit()?;
        }
        Ok(Turn { caught_up, finished: finishing })
    }

    /// The events read since the last commit into the internal topic, a marker after them in
    /// every partition, and the source offset, in one transaction.
    fn commit(&mut self) -> Result<(), StreamError> {
        let now = now_ms();
        let (max_event_time, idle) = self.watermarks.state(0, now);
        let marker = Marker { partition: self.partition, max_event_time, idle }.record(now);
        let outputs: Vec<Output> = (0..self.partitions)
            .zip(&mut self.pending)
            .map(|(k, records)| {
                let mut records = std::mem::take(records);
                records.push(marker.clone());
                Output { topic: self.into.clone(), partition: Some(k), records }
            })
            .collect();
        let mut positions = Positions::new();
        positions.insert((self.run.topic.name.clone(), self.partition), self.from);
        if let Some(t) = max_event_time {
            positions.insert((TIME_MARK.to_string(), self.partition), t.max(0) as u64);
        }
        self.log.commit(&self.run.group(), &Commit { outputs, positions })?;
        self.committed_at = Instant::now();
        Ok(())
    }
}

/// Where the first stage starts reading source partition `p` when the group has no offset for
/// it: as the job's `start_from` says.
fn start_of(run: &JobRun, log: &dyn Log, p: &weir_log::PartitionInfo) -> Result<u64, StreamError> {
    Ok(match run.job.config.start_from {
        StartFrom::Earliest | StartFrom::Committed => p.start,
        StartFrom::Latest => p.end,
        StartFrom::Time(ms) => log.offset_for_time(&run.topic.name, p.partition, ms)?,
    })
}

/// An event's group columns as its key in the internal topic: equal groups, equal keys (and
/// partitions, by Kafka's partitioner's hash).
fn key_of(cells: &[Cell], keys: &[usize]) -> Vec<u8> {
    let text = |c: Option<&Cell>| match c {
        None | Some(Cell::Null) => String::new(),
        Some(Cell::Bool(b)) => b.to_string(),
        Some(Cell::Int(i)) => i.to_string(),
        Some(Cell::Float(f)) => f.to_string(),
        Some(Cell::Text(t)) => t.clone(),
        Some(Cell::Time(us)) => us.to_string(),
    };
    keys.iter().map(|k| text(cells.get(*k))).collect::<Vec<_>>().join("\u{1f}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the log gives back of `r`.
    fn read_back(r: Record) -> Option<Marker> {
        let stored = weir_log::StoredRecord { offset: 7, timestamp: r.timestamp, key: r.key, value: r.value, txn: 0, headers: r.headers };
        let records = weir_log::Records::from(vec![stored]);
        records.get(0).and_then(|r| Marker::of(&r))
    }

    #[test]
    fn markers_read_back_and_events_are_no_markers() {
        let m = Marker { partition: 2, max_event_time: Some(1_796_205_600_000), idle: false };
        assert_eq!(read_back(m.record(5)), Some(m));
        let idle = Marker { partition: 0, max_event_time: None, idle: true };
        assert_eq!(read_back(idle.record(5)), Some(idle));
        let event = Record { key: None, value: b"{}".to_vec(), timestamp: 5, headers: vec![("trace".into(), b"x".to_vec())] };
        assert_eq!(read_back(event), None);
    }

    #[test]
    fn equal_groups_have_equal_keys_and_nulls_one_of_their_own() {
        let a = [Cell::Text("DE".into()), Cell::Int(3)];
        let b = [Cell::Text("DE".into()), Cell::Int(3)];
        assert_eq!(key_of(&a, &[0, 1]), key_of(&b, &[0, 1]));
        assert_ne!(key_of(&a, &[0, 1]), key_of(&[Cell::Text("DE3".into()), Cell::Null], &[0, 1]));
        assert_eq!(key_of(&[Cell::Null], &[0]), Vec::<u8>::new());
        assert_eq!(key_of(&a, &[0]), b"DE".to_vec());
    }
}
