//! The scheduler: the loop behind `weir serve` that turns schedules into runs and runs
//! them, on one machine or several sharing one metadata store.
//!
//! Every tick it does three things, each safe to do from several schedulers at once:
//!
//! 1. **Recover**: a worker silent for longer than the worker timeout is declared dead (the
//!    store lets one scheduler do it), and each of its runs is taken over: what it left
//!    running is killed, interrupted tasks are retried or failed by their retry policy,
//!    and the run is queued again.
//! 2. **Schedule**: for each unpaused pipeline with a schedule, the data intervals that
//!    have closed become queued runs: only the newest without `catchup`, every one since
//!    the last (or `start_date`) with it. A run per interval is added once whoever adds it.
//! 3. **Claim and run**: queued runs (scheduled, triggered through the API, requeued) are
//!    claimed up to each pipeline's `max_active_runs` (row locks with `SKIP LOCKED` on
//!    PostgreSQL), each scheduler taking no more than its fair part of them among the live
//!    schedulers, and run by this scheduler's executor.
//!
//! Nothing about a run lives only in memory: a scheduler killed at any point loses nothing
//! that another (or itself, restarted) does not pick up from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value as J;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use weir_store::PipelineRun;

use crate::executor::{Executor, RunOutcome, RunRequest};
use crate::schedule::DataInterval;
use crate::worker::WorkerHandle;
use crate::{OrchestrateError, Pipeline};

/// How often the scheduler looks for work when nothing wakes it.
pub const TICK: Duration = Duration::from_secs(1);

/// The most runs a catching-up pipeline gets queued in one tick: a pipeline years behind
/// is caught up over a few ticks rather than in one long transaction.
const CATCHUP_PER_TICK: usize = 100;

/// Stopped workers (every `weir pipeline run` is one) are forgotten after this long.
const KEEP_STOPPED_WORKERS: chrono::Duration = chrono::Duration::days(7);

/// A scheduler over one executor, running as one registered worker.
pub struct Scheduler {
    exec: Executor,
    worker: WorkerHandle,
    wake: Arc<Notify>,
    /// When stopped workers were last pruned.
    pruned: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// The live schedulers at the last tick, this one included.
    schedulers: std::sync::Mutex<usize>,
}

/// What one tick did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tick {
    /// `pipeline/run_id` of the runs taken over and queued again.
    pub recovered: Vec<String>,
    /// `pipeline/run_id` of the scheduled runs added.
    pub queued: Vec<String>,
    /// The runs this scheduler took, now `running` under it.
    pub claimed: Vec<PipelineRun>,
}

impl Scheduler {
    /// A scheduler running as `worker`, which the executor's settings must name
    /// (`worker_id`): the runs it claims are recorded as the worker's.
    pub fn new(exec: Executor, worker: WorkerHandle) -> Result<Scheduler, OrchestrateError> {
        if exec.settings().worker_id.as_deref() != Some(worker.id.as_str()) {
            return Err(OrchestrateError::Request(format!("the executor does not run as worker {}", worker.id)));
        }
        Ok(Scheduler {
            exec,
            worker,
            wake: Arc::new(Notify::new()),
            pruned: std::sync::Mutex::new(None),
            schedulers: std::sync::Mutex::new(1),
        })
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn worker_id(&self) -> &str {
        &self.worker.id
    }

    /// A handle that makes the scheduler look for work now (after a run was triggered).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `stop` turns true: ticks, heartbeats, and the runs it claims. On stop it
    /// claims nothing more and waits for its runs to finish; on a second stop (`stop`
    /// changing again) it cancels them, and they are recorded as interrupted.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), OrchestrateError> {
        let beat = self.worker.beat_for(self.exec.clone());
        self.exec.notice("info", format!("scheduler {} started", self.worker.id));
        let mut running: JoinSet<(String, String, Result<RunOutcome, OrchestrateError>)> = JoinSet::new();
        let mut stopping = *stop.borrow_and_update();
        // Whether to wait for the next tick before claiming again.
        let mut hold = false;
        while !stopping {
            let claim = if std::mem::take(&mut hold) { Ok(Tick::default()) } else { self.tick() };
            match claim {
                Ok(t) => {
                    for r in t.claimed {
                        let exec = self.exec.clone();
                        running.spawn(async move {
                            let req = RunRequest {
                                run_type: r.run_type.clone(),
                                interval: r.interval_start.zip(r.interval_end).map(|(start, end)| DataInterval { start, end }),
                                params: serde_json::from_str::<J>(&r.params).ok().and_then(|j| j.as_object().cloned()).unwrap_or_default(),
                                run_id: Some(r.run_id.clone()),
                                keep_failed: true,
                            };
                            let outcome = exec.run(&r.pipeline, req).await;
                            (r.pipeline, r.run_id, outcome)
                        });
                    }
                }
                Err(e) => self.exec.notice("error", format!("scheduler tick failed: {e}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    self.report(done);
                    // With other schedulers on the store, the one whose run just ended does
                    // not claim the next at once: it waits for its tick like the others,
                    // so the next run goes to whichever looks first.
                    hold = self.schedulers.lock().map(|n| *n > 1).unwrap_or(false);
                }
                changed = stop.changed() => stopping = changed.is_err() || *stop.borrow_and_update(),
            }
        }
        if !running.is_empty() {
            self.exec
                .notice("info", format!("scheduler stopping: waiting for {} run(s) to finish (stop again to cancel them)", running.len()));
            let mut cancelled = false;
            loop {
                tokio::select! {
                    done = running.join_next() => match done {
                        Some(d) => self.report(d),
                        None => break,
                    },
                    changed = stop.changed(), if !cancelled => {
                        cancelled = true;
                        if changed.is_ok() {
                            self.exec.cancel();
                        }
                    }
                }
            }
        }
        beat.abort();
        self.worker.stop()?;
        self.exec.notice("info", format!("scheduler {} stopped", self.worker.id));
        Ok(())
    }

    /// One pass: recover dead workers' runs, queue what is due, claim what there is room
    /// for. The claimed runs are returned (in `claimed`) for the caller to run.
    pub fn tick(&self) -> Result<Tick, OrchestrateError> {
        let mut t = Tick::default();
        let now = Utc::now();
        self.recover(now, &mut t)?;
        let store = self.exec.store();
        for (name, p) in self.exec.pipelines().by_name.iter().filter(|(_, p)| p.schedule.is_some()) {
            if store.is_paused(name)? {
                continue;
            }
            for interval in due(p, store.latest_interval_start(name)?, now) {
                let run = PipelineRun {
                    pipeline: name.clone(),
                    run_id: format!("scheduled__{}", interval.start.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    run_type: "scheduled".into(),
                    state: "queued".into(),
                    interval_start: Some(interval.start),
                    interval_end: Some(interval.end),
                    params: J::Object(p.resolve_params(&Default::default())?).to_string(),
                    queued_at: Utc::now(),
                    started_at: None,
                    finished_at: None,
                    message: None,
                    owner: None,
                };
                if store.enqueue_run(&run)? {
                    t.queued.push(format!("{name}/{}", run.run_id));
                }
            }
        }
        let schedulers = self.live_schedulers()?;
        if let Ok(mut n) = self.schedulers.lock() {
            *n = schedulers;
        }
        for (name, p) in &self.exec.pipelines().by_name {
            t.claimed.extend(store.claim_runs(name, &self.worker.id, p.max_active_runs, schedulers, Utc::now())?);
        }
        Ok(t)
    }

    /// The schedulers sharing the store's work: those that beat within the worker timeout
    /// (this one among them).
    fn live_schedulers(&self) -> Result<usize, OrchestrateError> {
        let timeout = chrono::Duration::from_std(self.exec.settings().worker_timeout).unwrap_or_else(|_| chrono::Duration::seconds(30));
        let since = Utc::now() - timeout;
        let live = self.exec.store().live_workers()?;
        Ok(live.iter().filter(|w| w.kind == "scheduler" && (w.heartbeat_at >= since || w.worker_id == self.worker.id)).count().max(1))
    }

    /// Recovers the runs of workers that stopped beating, and running runs whose owner is
    /// not a live worker at all (it stopped without handing them back).
    fn recover(&self, now: DateTime<Utc>, t: &mut Tick) -> Result<(), OrchestrateError> {
        let store = self.exec.store();
        if let Ok(mut last) = self.pruned.lock()
            && last.is_none_or(|l| now - l > chrono::Duration::hours(1))
        {
            store.prune_workers(now - KEEP_STOPPED_WORKERS)?;
            *last = Some(now);
        }
        let timeout = chrono::Duration::from_std(self.exec.settings().worker_timeout).unwrap_or_else(|_| chrono::Duration::seconds(30));
        let mut dead = HashMap::new();
        for w in store.silent_workers(now - timeout)? {
            if w.worker_id != self.worker.id && store.stop_worker(&w.worker_id, now, Some(&self.worker.id))? {
                self.exec
                    .notice("warn", format!("worker {} (pid {} on {}) stopped beating; taking over its runs", w.worker_id, w.pid, w.host));
                dead.insert(w.worker_id.clone(), w);
            }
        }
        for run in store.runs_in_state("running", None)? {
            let owner = match run.owner.as_deref() {
                Some(o) if o == self.worker.id => continue,
                Some(o) => match dead.get(o) {
                    Some(w) => Some(w.clone()),
                    None => match store.worker(o)? {
                        Some(w) if self.exec.is_live(&w) => continue,
                        w => w,
                    },
                },
                None => None,
            };
            if self.exec.recover_run(&run, owner.as_ref())? {
                self.exec.notice("warn", format!("run {} of {} requeued: its worker died", run.run_id, run.pipeline));
                t.recovered.push(format!("{}/{}", run.pipeline, run.run_id));
            }
        }
        Ok(())
    }

    fn report(&self, done: Result<(String, String, Result<RunOutcome, OrchestrateError>), tokio::task::JoinError>) {
        match done {
            Ok((p, id, Ok(o))) => self.exec.notice("info", format!("run {id} of {p} finished: {}", o.state)),
            Ok((p, id, Err(e))) => {
                self.exec.notice("error", format!("run {id} of {p} could not run: {e}"));
                if let Err(e) = self.exec.store().fail_run(&p, &id, &self.worker.id, &format!("could not run: {e}")) {
                    self.exec.notice("error", format!("run {id} of {p}: {e}"));
                }
            }
            Err(e) => self.exec.notice("error", format!("a run stopped unexpectedly: {e}")),
        }
    }
}

/// The intervals of a pipeline's schedule due for a run at `now`, given the newest interval
/// start already run (`latest`): closed intervals within `start_date`..`end_date`; with
/// catchup every one after `latest` (from `start_date` when none), else only the newest.
pub fn due(p: &Pipeline, latest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<DataInterval> {
    let Some(schedule) = &p.schedule else { return Vec::new() };
    let in_range = |i: &DataInterval| i.end <= now && p.start_date.is_none_or(|s| i.start >= s) && p.end_date.is_none_or(|e| i.start < e);
    if p.catchup {
        let from = match latest {
            Some(l) => l + chrono::Duration::seconds(1),
            None => p.start_date.unwrap_or(now),
        };
        schedule.intervals(from, now, CATCHUP_PER_TICK).into_iter().filter(|i| in_range(i)).collect()
    } else {
        schedule.last_complete(now).filter(|i| in_range(i) && latest.is_none_or(|l| i.start > l)).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pipeline(yaml: &str) -> Pipeline {
        Pipeline::parse(Path::new("p.yml"), yaml).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_intervals_with_and_without_catchup() {
        let now = t("2024-01-05T12:00:00Z");
        let catchup = pipeline("schedule: '@daily'\nstart_date: 2024-01-01\ncatchup: true\ntasks:\n  a: {shell: 'true'}\n");
        let days: Vec<String> = due(&catchup, None, now).iter().map(|i| i.start.format("%d").to_string()).collect();
        assert_eq!(days, ["01", "02", "03", "04"], "every closed day since start_date");
        let rest: Vec<String> =
            due(&catchup, Some(t("2024-01-02T00:00:00Z")), now).iter().map(|i| i.start.format("%d").to_string()).collect();
        assert_eq!(rest, ["03", "04"], "on from the newest run");
        let newest = pipeline("schedule: '@daily'\ntasks:\n  a: {shell: 'true'}\n");
        let one: Vec<String> = due(&newest, None, now).iter().map(|i| i.start.format("%d").to_string()).collect();
        assert_eq!(one, ["04"], "without catchup only the newest closed interval");
        assert!(due(&newest, Some(t("2024-01-04T00:00:00Z")), now).is_empty(), "already run");
        let ended =
            pipeline("schedule: '@daily'\nstart_date: 2024-01-01\nend_date: 2024-01-03\ncatchup: true\ntasks:\n  a: {shell: 'true'}\n");
        assert_eq!(due(&ended, None, now).len(), 2, "nothing from end_date on");
        let manual = pipeline("tasks:\n  a: {shell: 'true'}\n");
        assert!(due(&manual, None, now).is_empty());
    }
}
