//! A job shared by workers (`weir stream run NAME --worker`, in as many processes or on as
//! many machines as wanted): each joins the job's Kafka consumer group and runs one task per
//! partition it is dealt. A task is the job over that partition alone, with its own
//! positions, watermark, window state and checkpoint (`partition-<p>.json` in a store every
//! worker reaches).
//!
//! **Commits.** A task writing a topic commits its records with its offsets in one Kafka
//! transaction. A task writing the warehouse (or Redis) commits its rows with its partition's
//! positions in one warehouse transaction, under its claim on the partition (see
//! [`super::sink::Sink::claim`]); the consumer group is told the offsets at checkpoints.
//!
//! **Rebalances.** When a worker joins, leaves or dies, the brokers deal the partitions
//! again. A worker drops the tasks of partitions it lost, with whatever they did since their
//! last commit; the partition's next owner restores its last checkpoint and reads again from
//! the positions committed with it, so the results stay exactly once. A worker that missed a
//! rebalance (paused, cut off) has its commits refused: it learns it no longer owns the
//! partition before its transaction is begun, the brokers refuse offsets sent under an old
//! generation of the group, and the warehouse refuses a commit under an older claim.
//!
//! **What a task needs.** Its partition must hold every event of each group it keeps: when
//! the topic is not keyed by a column the job groups by, the job runs in two stages through
//! an internal topic (see [`super::repartition`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_log::{Log, LogError};
use weir_warehouse::Warehouse;

use super::repartition;
use super::store::{CheckpointStore, LocalDir};
use super::{CHECKPOINT, Control, JobLock, JobRun, POLL, Runner, Status, now_ms, write_atomically};
use crate::StreamError;

/// Runs `run` as one of its workers until `control` stops it (or, with `drain`, until the
/// partitions it owns are read to their end), calling `report` about once a second.
pub fn run_worker(
    run: &JobRun,
    log: &dyn Log,
    wh: Arc<dyn Warehouse>,
    control: &Control,
    report: &mut dyn FnMut(&Status),
) -> Result<Status, StreamError> {
    let keys = shareable(run)?;
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
    log.create_topic(&run.topic.spec())?;
    // Grouped by columns the topic is not keyed by: the job's tasks read its internal topic,
    // which the first stage's tasks fill from the source.
    let second = match &keys {
        Some(keys) => {
            let partitions = log.describe(&run.topic.name)?.partitions.len() as u32;
            let stage = repartition::second_stage(run, partitions, keys);
            log.create_topic(&stage.topic.spec())?;
            Some(stage)
        }
        None => None,
    };
    let job = second.as_ref().unwrap_or(run);
    let topics: Vec<String> = std::iter::once(run.topic.name.clone()).chain(second.as_ref().map(|s| s.topic.name.clone())).collect();
    log.join_group(&group, &topics, &slot.member)?;
    let started = now_ms();
    let mut tasks: BTreeMap<(String, u32), Task> = BTreeMap::new();
    // A task that failed (a broker away, the warehouse refusing a write) is started again
    // from its checkpoint after a pause that doubles, while the others go on.
    let mut failing: BTreeMap<(String, u32), (Instant, Duration)> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    // Tasks that finished (drained, or stopped): kept for the status, not turned again.
    let mut done: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut last_report: Option<Instant> = None;
    // Since when the group has been dealing its partitions.
    let mut dealing: Option<Instant> = None;
    loop {
        let stopping = control.stop.load(Ordering::Relaxed);
        let owned: Option<BTreeSet<(String, u32)>> =
            log.owned(&group)?.map(|o| o.into_iter().filter(|(t, _)| topics.contains(t)).collect());
        // A rebalance waits for the members to join again, for `max.poll.interval.ms` at
        // most; one that lasts far longer is stuck (some brokers lose track of a member that
        // died during it): this worker leaves and joins again, which starts a new one.
        match (&owned, dealing) {
            (Some(_), _) => dealing = None,
            (None, None) => dealing = Some(Instant::now()),
            (None, Some(since)) if since.elapsed() >= STUCK => {
                log.join_group(&group, &topics, &slot.member)?;
                dealing = Some(Instant::now());
            }
            (None, Some(_)) => {}
        }
        let mine = owned.clone().unwrap_or_default();
        // Partitions dealt elsewhere: their tasks go, with what they did since their last
        // commit; the next owner does it again from there.
        tasks.retain(|at, _| mine.contains(at));
        done.retain(|at| mine.contains(at));
        if !stopping {
            let dealt: Vec<(String, u32)> = mine.iter().filter(|at| !tasks.contains_key(*at)).cloned().collect();
            for at in dealt {
                if failing.get(&at).is_some_and(|(since, pause)| since.elapsed() < *pause) {
                    continue;
                }
                let (topic, p) = (&at.0, at.1);
                let started = if *topic == job.topic.name {
                    Runner::start(job, log, wh.clone(), Some((p, &slot.member))).map(|mut task| {
                        // Other workers write the same warehouse between this one's commits.
                        task.sink.release();
                        Task::Job(Box::new(task))
                    })
                } else {
                    let keys = keys.as_deref().unwrap_or_default();
                    repartition::Shuffle::start(run, job, log, p, keys).map(|t| Task::Shuffle(Box::new(t)))
                };
                match started {
                    Ok(task) => {
                        tasks.insert(at, task);
                    }
                    Err(e) => last_error = Some(failed(&mut failing, &at, e)?),
                }
            }
        }
        let mut caught_up = true;
        let mut dropped = vec![];
        let mut finished_now = vec![];
        // Drained, the job's tasks read until the first stage's tasks here have forwarded
        // all they read, and once more after.
        let forwarded = tasks.iter().all(|(at, t)| matches!(t, Task::Job(_)) || done.contains(at));
        for (at, task) in tasks.iter_mut().filter(|(at, _)| !done.contains(*at)) {
            let turned = match task {
                Task::Job(t) => t.turn(control, &mut |_| {}),
                Task::Shuffle(t) => t.turn(control),
            };
            match turned {
                Ok(turn) => {
                    caught_up &= turn.caught_up;
                    failing.remove(at);
                    if turn.finished && (forwarded || matches!(task, Task::Shuffle(_)) || stopping) {
                        finished_now.push(at.clone());
                    }
                }
                Err(e) => {
                    // A next checkpoint its commit did not make is no one's.
                    if let Task::Job(t) = task {
                        let _ = job.checkpoints.delete(&t.names.next(t.seq));
                    }
                    dropped.push(at.clone());
                    // Dealt to another worker since it was last asked: not a failure.
                    if !matches!(e, StreamError::Log(LogError::Rebalanced { .. }) | StreamError::Moved { .. }) {
                        last_error = Some(failed(&mut failing, at, e)?);
                    }
                }
            }
        }
        for at in dropped {
            tasks.remove(&at);
        }
        done.extend(finished_now);
        let finished = stopping || (control.drain && owned.is_some() && mine.iter().all(|at| done.contains(at)));
        if finished || last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            if failing.is_empty() {
                last_error = None;
            }
            let status =
                slot.report(job, log, &topics, &mut tasks, started, if finished { "stopped" } else { "running" }, last_error.clone())?;
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

/// A worker's task: the job over one partition, or (repartitioning) the first stage's over
/// one partition of the source.
enum Task<'a> {
    Job(Box<Runner<'a>>),
    Shuffle(Box<repartition::Shuffle<'a>>),
}

/// How long a rebalance may last before a worker takes it for stuck.
const STUCK: Duration = Duration::from_secs(45);

/// Notes that the task of partition `at` failed with `e`: it is started again after a pause
/// (1 s, doubling to 30 s); says why in words. Being fenced is final.
fn failed(failing: &mut BTreeMap<(String, u32), (Instant, Duration)>, at: &(String, u32), e: StreamError) -> Result<String, StreamError> {
    if matches!(e, StreamError::Log(LogError::Fenced { .. })) {
        return Err(e);
    }
    let pause = failing.get(at).map_or(Duration::from_secs(1), |(_, d)| (*d * 2).min(Duration::from_secs(30)));
    failing.insert(at.clone(), (Instant::now(), pause));
    Ok(format!("{}[{}]: {e}; started again in {:.0}s", at.0, at.1, pause.as_secs_f64()))
}

/// Refuses a job whose state could not be split by partition; the columns to repartition
/// by, when the job groups by columns its topic is not keyed by.
fn shareable(run: &JobRun) -> Result<Option<Vec<String>>, StreamError> {
    let refuse = |why: String| Err(StreamError::Job(format!("{}: workers cannot share this job: {why}", run.job.path.display())));
    if run.plan.changelog.is_some() {
        return refuse("a job over cdc() follows one table's changes in order, in one process".into());
    }
    if run.joined.is_some() {
        return refuse("a join of two streams pairs events across both topics' partitions: it runs in one process".into());
    }
    repartition::needed(run).or_else(refuse)
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
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        run: &JobRun,
        log: &dyn Log,
        topics: &[String],
        tasks: &mut BTreeMap<(String, u32), Task>,
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
        // The topics' ends, asked once for every task. Their lag is not known while the
        // brokers are away: the status says why.
        let mut described = BTreeMap::new();
        for topic in topics {
            match log.describe(topic) {
                Ok(info) => {
                    described.insert(topic.clone(), info);
                }
                Err(e) => s.last_error = Some(format!("reading the lag: {e}")),
            }
        }
        // A first-stage task shows where it is in the source, and how far behind.
        for ((topic, p), task) in tasks.iter() {
            let Task::Shuffle(t) = task else { continue };
            s.positions.insert((topic.clone(), *p), t.from);
            let end = described.get(topic).and_then(|d| d.partitions.iter().find(|q| q.partition == *p)).map(|q| q.end);
            if let Some(end) = end {
                s.lag.insert((topic.clone(), *p), end.saturating_sub(t.from));
            }
        }
        let jobs = tasks.values_mut().filter_map(|t| match t {
            Task::Job(t) => Some(t),
            Task::Shuffle(_) => None,
        });
        for task in jobs {
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
