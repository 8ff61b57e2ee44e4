//! A job shared by workers (`weir stream run NAME --worker`, in as many processes or on as
//! many machines as wanted): each joins the job's Kafka consumer group and runs one task per
//! partition it is dealt. A task is the job over that partition alone, with its own
//! positions, watermark, window state and checkpoint (`partition-<p>.json` in a store every
//! worker reaches), committed with its records and its offsets in one Kafka transaction.
//!
//! **Rebalances.** When a worker joins, leaves or dies, the brokers deal the partitions
//! again. A worker drops the tasks of partitions it lost, with whatever they did since their
//! last commit; the partition's next owner restores its last checkpoint and reads again from
//! the offsets committed with it, so the results stay exactly once. A worker that missed a
//! rebalance (paused, cut off) has its commits refused: it learns it no longer owns the
//! partition before its transaction is begun, and the brokers refuse offsets sent under an
//! old generation of the group.
//!
//! **What a task needs.** Its partition must hold every event of each group it keeps: the
//! topic is keyed by a column the job groups by. Results go to a topic (`sink='topic'`), the
//! one sink whose commit can carry the offsets of the partitions one worker owns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_log::{Log, LogError};
use weir_warehouse::Warehouse;

use super::store::{CheckpointStore, LocalDir};
use super::{CHECKPOINT, Control, JobLock, JobRun, POLL, Runner, Status, now_ms, write_atomically};
use crate::StreamError;
use crate::plan::Shape;

/// Runs `run` as one of its workers until `control` stops it (or, with `drain`, until the
/// partitions it owns are read to their end), calling `report` about once a second.
pub fn run_worker(
    run: &JobRun,
    log: &dyn Log,
    wh: Arc<dyn Warehouse>,
    control: &Control,
    report: &mut dyn FnMut(&Status),
) -> Result<Status, StreamError> {
    shareable(run)?;
    let slot = WorkerSlot::take(run)?;
    // A run in one process keeps its checkpoint in the job's folder.
    let alone = LocalDir::new(&run.dir);
    if alone.get(CHECKPOINT)?.is_some() {
        return Err(StreamError::Job(format!(
            "{}: the job ran in one process before, and its state is one checkpoint ({}), not one per partition: \
             run `weir stream reset {}` to start it over with workers",
            run.job.path.display(),
            alone.location(CHECKPOINT),
            run.job.name
        )));
    }
    let group = run.group();
    let topic = run.topic.name.clone();
    log.create_topic(&run.topic.spec())?;
    log.join_group(&group, std::slice::from_ref(&topic), &slot.member)?;
    let started = now_ms();
    let mut tasks: BTreeMap<u32, Runner> = BTreeMap::new();
    // A task that failed (a broker away, the warehouse refusing a write) is started again
    // from its checkpoint after a pause that doubles, while the others go on.
    let mut failing: BTreeMap<u32, (Instant, Duration)> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    // Tasks that finished (drained, or stopped): kept for the status, not turned again.
    let mut done: BTreeSet<u32> = BTreeSet::new();
    let mut last_report: Option<Instant> = None;
    // Since when the group has been dealing its partitions.
    let mut dealing: Option<Instant> = None;
    loop {
        let stopping = control.stop.load(Ordering::Relaxed);
        let owned: Option<BTreeSet<u32>> = log.owned(&group)?.map(|o| o.into_iter().filter(|(t, _)| *t == topic).map(|(_, p)| p).collect());
        // A rebalance waits for the members to join again, for `max.poll.interval.ms` at
        // most; one that lasts far longer is stuck (some brokers lose track of a member that
        // died during it): this worker leaves and joins again, which starts a new one.
        match (&owned, dealing) {
            (Some(_), _) => dealing = None,
            (None, None) => dealing = Some(Instant::now()),
            (None, Some(since)) if since.elapsed() >= STUCK => {
                log.join_group(&group, std::slice::from_ref(&topic), &slot.member)?;
                dealing = Some(Instant::now());
            }
            (None, Some(_)) => {}
        }
        let mine = owned.clone().unwrap_or_default();
        // Partitions dealt elsewhere: their tasks go, with what they did since their last
        // commit; the next owner does it again from there.
        tasks.retain(|p, _| mine.contains(p));
        done.retain(|p| mine.contains(p));
        if !stopping {
            let dealt: Vec<u32> = mine.iter().copied().filter(|p| !tasks.contains_key(p)).collect();
            for p in dealt {
                if failing.get(&p).is_some_and(|(at, pause)| at.elapsed() < *pause) {
                    continue;
                }
                match Runner::start(run, log, wh.clone(), Some(p)) {
                    Ok(mut task) => {
                        // Other workers write the same warehouse between this one's commits.
                        task.sink.release();
                        tasks.insert(p, task);
                    }
                    Err(e) => last_error = Some(failed(&mut failing, p, e)?),
                }
            }
        }
        let mut caught_up = true;
        let mut dropped = vec![];
        let mut finished_now = vec![];
        for (p, task) in tasks.iter_mut().filter(|(p, _)| !done.contains(p)) {
            match task.turn(control, &mut |_| {}) {
                Ok(turn) => {
                    caught_up &= turn.caught_up;
                    failing.remove(p);
                    if turn.finished {
                        finished_now.push(*p);
                    }
                }
                Err(e) => {
                    // A next checkpoint its commit did not make is no one's.
                    let _ = run.checkpoints.delete(&task.names.next(task.seq));
                    dropped.push(*p);
                    // Dealt to another worker since it was last asked: not a failure.
                    if !matches!(e, StreamError::Log(LogError::Rebalanced { .. })) {
                        last_error = Some(failed(&mut failing, *p, e)?);
                    }
                }
            }
        }
        for p in dropped {
            tasks.remove(&p);
        }
        done.extend(finished_now);
        let finished = stopping || (control.drain && owned.is_some() && mine.iter().all(|p| done.contains(p)));
        if finished || last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            if failing.is_empty() {
                last_error = None;
            }
            let status = slot.report(run, log, &mut tasks, started, if finished { "stopped" } else { "running" }, last_error.clone())?;
            report(&status);
            last_report = Some(Instant::now());
            if finished {
                return Ok(status);
            }
        }
        if caught_up {
            std::thread::sleep(POLL);
        }
    }
}

/// How long a rebalance may last before a worker takes it for stuck.
const STUCK: Duration = Duration::from_secs(45);

/// Notes that partition `p`'s task failed with `e`: it is started again after a pause
/// (1 s, doubling to 30 s); says why in words. Being fenced is final.
fn failed(failing: &mut BTreeMap<u32, (Instant, Duration)>, p: u32, e: StreamError) -> Result<String, StreamError> {
    if matches!(e, StreamError::Log(LogError::Fenced { .. })) {
        return Err(e);
    }
    let pause = failing.get(&p).map_or(Duration::from_secs(1), |(_, d)| (*d * 2).min(Duration::from_secs(30)));
    failing.insert(p, (Instant::now(), pause));
    Ok(format!("partition {p}: {e}; started again in {:.0}s", pause.as_secs_f64()))
}

/// Refuses a job whose state or results could not be split by partition.
fn shareable(run: &JobRun) -> Result<(), StreamError> {
    let refuse = |why: String| Err(StreamError::Job(format!("{}: workers cannot share this job: {why}", run.job.path.display())));
    if run.plan.changelog.is_some() {
        return refuse("a job over cdc() follows one table's changes in order, in one process".into());
    }
    if run.joined.is_some() {
        return refuse("a join of two streams pairs events across both topics' partitions: it runs in one process".into());
    }
    if run.out_topic.is_none() {
        return refuse(format!(
            "its results go to {}; workers write a topic (`sink='topic'`), whose transactions carry the offsets of the \
             partitions each worker owns",
            run.sink_text()
        ));
    }
    if run.plan.shape != Shape::Stateless {
        let grouped: Vec<&str> = run.plan.keys.iter().filter_map(|k| k.column.as_deref()).collect();
        let keyed = run.topic.key.as_deref();
        if !keyed.is_some_and(|k| grouped.contains(&k)) {
            let grouped = if run.plan.keys.is_empty() {
                "nothing (one group)".to_string()
            } else {
                run.plan.keys.iter().map(|k| k.sql.as_str()).collect::<Vec<_>>().join(", ")
            };
            return refuse(format!(
                "each worker keeps the groups of the partitions it owns, so every event of a group must be in one partition: \
                 the job groups by {grouped}, and topic '{}' is keyed by {}; key the topic by a column the job groups by \
                 (`key:` in streams/*.yml, and its producers keying records alike), or run the job in one process",
                run.topic.name,
                keyed.map_or("nothing".to_string(), |k| format!("'{k}'"))
            ));
        }
    }
    Ok(())
}

/// A worker's place on this machine: its number (so one restarted takes the same name and
/// settles at once what it left half done) and its locks. Workers share the job's lock,
/// which keeps out a run of the job in one process and `reset`.
struct WorkerSlot {
    _job: JobLock,
    _mine: JobLock,
    member: String,
    /// This worker's status, beside the others'.
    path: std::path::PathBuf,
}

impl WorkerSlot {
    fn take(run: &JobRun) -> Result<WorkerSlot, StreamError> {
        let job = JobLock::take_file(run, "lock", true)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let mut n = 0;
        loop {
            match JobLock::take_file(run, &format!("worker-{n}.lock"), false) {
                Ok(mine) => {
                    let path = run.dir.join(format!("worker-{n}.json"));
                    return Ok(WorkerSlot { _job: job, _mine: mine, member: format!("{host}-{n}"), path });
                }
                Err(StreamError::Busy { .. }) => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The worker's tasks' statuses as one, written beside the other workers'.
    fn report(
        &self,
        run: &JobRun,
        log: &dyn Log,
        tasks: &mut BTreeMap<u32, Runner>,
        started: i64,
        state: &str,
        error: Option<String>,
    ) -> Result<Status, StreamError> {
        let now = now_ms();
        let mut s = Status {
            job: run.job.name.clone(),
            state: state.to_string(),
            pid: std::process::id(),
            started_at: started,
            updated_at: now,
            workers: vec![self.member.clone()],
            last_error: error,
            ..Status::default()
        };
        let mut latencies = vec![];
        // The topic's ends, asked once for every task. Its lag is not known while the
        // brokers are away: the status says why.
        let mut described = BTreeMap::new();
        match log.describe(&run.topic.name) {
            Ok(info) => {
                described.insert(run.topic.name.clone(), info);
            }
            Err(e) => s.last_error = Some(format!("reading the lag: {e}")),
        }
        for task in tasks.values_mut() {
            let total = task.total().read;
            task.clock.reporting.mark(&mut task.status, total);
            task.refresh_status_from(state, &described)?;
            let t = &task.status;
            s.positions.extend(t.positions.clone());
            s.lag.extend(t.lag.clone());
            s.counts.add(&t.counts);
            s.windows_held += t.windows_held;
            s.events_per_second += t.events_per_second;
            s.read_this_run += t.read_this_run;
            s.watermark = match (s.watermark, t.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            s.checkpointed_at = s.checkpointed_at.max(t.checkpointed_at);
            s.last_error = s.last_error.take().or_else(|| t.last_error.clone());
            latencies.extend(t.latency_ms);
        }
        s.latency_ms = latencies.iter().copied().reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)));
        write_atomically(&self.path, s.to_json().to_string().as_bytes())?;
        Ok(s)
    }
}
