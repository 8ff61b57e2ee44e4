//! The executor: runs one pipeline run to its end.
//!
//! Each task instance is one future that loops over its attempts: it takes a slot from the
//! global limit, the pipeline's `max_active_tasks` and its pool, runs one attempt, gives the
//! slots back, and then either ends, sleeps until its retry (exponential backoff), or, for a
//! sensor whose condition does not hold yet, sleeps until its next poke. Slots are held only
//! while an attempt runs, so a waiting sensor or a task backing off never blocks other work
//! (Airflow's reschedule mode). The run loop starts a task as soon as its trigger rule is
//! decided, so the time from one task's end to the next one's start is the cost of a few
//! store writes.
//!
//! Every state change goes to the metadata store before it is reported, and a rerun of the
//! same run id keeps the tasks that succeeded and runs the rest: runs are resumable and
//! reruns idempotent.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value as J};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use weir_store::{PipelineRun, Store, TaskAttempt, TaskInstance, Worker};

use crate::OrchestrateError;
use crate::alert::{AlertEvent, Happening};
pub use crate::attempt::WeirCommand;
use crate::attempt::{Attempt, Log, Outcome, clip, describe};
use crate::schedule::DataInterval;
use crate::spec::{Pipeline, Pipelines, Task, TaskKind, TriggerRule};
use crate::template::{Renderer, RunContext};

/// How the executor runs tasks, from `weir.yml`'s `orchestrator:` section and the project.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where tasks run (their working folder) and where relative paths start.
    pub project_dir: PathBuf,
    /// The binary that runs `build`, `load` and `sql` tasks (`None` in tests of shell tasks).
    pub weir: Option<WeirCommand>,
    /// Attempt logs go to `<logs_dir>/<pipeline>/<run_id>/<task>/attempt-<n>.log`.
    pub logs_dir: PathBuf,
    /// Attempts running at once across all pipelines.
    pub parallelism: usize,
    /// Named pools and their slots.
    pub pools: BTreeMap<String, usize>,
    /// The pool tasks that use the warehouse (build, load, sql, sql sensors) take when they
    /// name none: DuckDB lets one process write a database file at a time.
    pub warehouse_pool: Option<String>,
    /// The largest value a task may publish for later tasks, as JSON text.
    pub xcom_max_bytes: usize,
    /// The most of a task's output kept in its log file per attempt.
    pub max_log_bytes: u64,
    /// The worker this executor runs as (see [`crate::worker`]): it owns the runs it runs,
    /// and a run owned by another live worker is refused.
    pub worker_id: Option<String>,
    /// How often a worker records that it is alive, and after how long without a heartbeat
    /// it is declared dead and its runs are taken over.
    pub heartbeat_interval: Duration,
    pub worker_timeout: Duration,
}

impl Settings {
    pub fn new(project_dir: PathBuf) -> Settings {
        Settings {
            logs_dir: project_dir.join(".weir").join("logs"),
            project_dir,
            weir: None,
            parallelism: 32,
            pools: BTreeMap::new(),
            warehouse_pool: None,
            xcom_max_bytes: 64 * 1024,
            max_log_bytes: 16 * 1024 * 1024,
            worker_id: None,
            heartbeat_interval: Duration::from_secs(5),
            worker_timeout: Duration::from_secs(30),
        }
    }
}

/// What run to make.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `manual`, `scheduled` or `backfill`.
    pub run_type: String,
    /// The data interval; `None` means the newest closed interval of the schedule, or
    /// `[now, now]` for a pipeline without one.
    pub interval: Option<DataInterval>,
    pub params: Map<String, J>,
    /// Resume or rerun this run id; `None` derives one from the type and interval.
    pub run_id: Option<String>,
    /// Resuming keeps failed tasks failed and runs only those not done (the scheduler
    /// resuming a run after a crash, or after some tasks were cleared); otherwise a rerun
    /// runs again every task that did not succeed.
    pub keep_failed: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub pipeline: String,
    pub run_id: String,
    /// `success` or `failed`.
    pub state: String,
    pub interval: DataInterval,
    pub tasks: Vec<(String, TaskState)>,
    pub elapsed: Duration,
    /// The run had already succeeded; nothing was run again.
    pub already_done: bool,
}

/// Where a task instance stands (Airflow's states, less the queueing ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    None,
    Running,
    UpForRetry,
    UpForReschedule,
    Success,
    Failed,
    Skipped,
    UpstreamFailed,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::None => "none",
            TaskState::Running => "running",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::UpForReschedule => "up_for_reschedule",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::UpstreamFailed => "upstream_failed",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed | TaskState::Skipped | TaskState::UpstreamFailed)
    }
}

/// What happened, as it happens, for a live view.
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        pipeline: String,
        run_id: String,
        interval: DataInterval,
        tasks: usize,
        already_done: usize,
    },
    TaskStarted {
        pipeline: String,
        run_id: String,
        task: String,
        attempt: u32,
    },
    TaskRetrying {
        pipeline: String,
        run_id: String,
        task: String,
        attempt: u32,
        delay: Duration,
        message: String,
    },
    SensorWaiting {
        pipeline: String,
        run_id: String,
        task: String,
        next_poke: Duration,
        seen: String,
    },
    TaskFinished {
        pipeline: String,
        run_id: String,
        task: String,
        state: TaskState,
        attempts: u32,
        elapsed: Duration,
        message: Option<String>,
    },
    RunFinished {
        pipeline: String,
        run_id: String,
        state: String,
        elapsed: Duration,
    },
    /// Something a scheduler or worker wants an operator to see (`info`, `warn`, `error`):
    /// a run queued or taken over, a worker declared dead.
    Notice {
        level: &'static str,
        message: String,
    },
}

/// What a task decides from the states of the tasks it runs after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Run,
    Skip,
    UpstreamFailed,
}

/// Airflow's trigger rules. A decision taken before every upstream task is done (an
/// `all_success` task whose upstream failed, a `one_success` task whose upstream succeeded)
/// never changes once they are.
pub fn decide(rule: TriggerRule, upstream: &[TaskState]) -> Decision {
    let total = upstream.len();
    let count = |f: fn(TaskState) -> bool| upstream.iter().filter(|s| f(**s)).count();
    let success = count(|s| s == TaskState::Success);
    let failed = count(|s| matches!(s, TaskState::Failed | TaskState::UpstreamFailed));
    let skipped = count(|s| s == TaskState::Skipped);
    let done = success + failed + skipped;
    let all_done = done == total;
    match rule {
        TriggerRule::AllSuccess if failed > 0 => Decision::UpstreamFailed,
        // Skipped only once every upstream task is done: one still running may yet fail.
        TriggerRule::AllSuccess if all_done && skipped > 0 => Decision::Skip,
        TriggerRule::AllSuccess if all_done => Decision::Run,
        TriggerRule::AllFailed if success + skipped > 0 => Decision::Skip,
        TriggerRule::AllFailed if all_done => Decision::Run,
        TriggerRule::AllDone if all_done => Decision::Run,
        TriggerRule::OneSuccess if success > 0 => Decision::Run,
        TriggerRule::OneSuccess if all_done && total == 0 => Decision::Run,
        TriggerRule::OneSuccess if all_done && skipped == total => Decision::Skip,
        TriggerRule::OneSuccess if all_done => Decision::UpstreamFailed,
        TriggerRule::OneFailed if failed > 0 => Decision::Run,
        TriggerRule::OneFailed if all_done && total == 0 => Decision::Run,
        TriggerRule::OneFailed if all_done => Decision::Skip,
        TriggerRule::NoneFailed if failed > 0 => Decision::UpstreamFailed,
        TriggerRule::NoneFailed if all_done => Decision::Run,
        TriggerRule::NoneSkipped if skipped > 0 => Decision::Skip,
        TriggerRule::NoneSkipped if all_done => Decision::Run,
        _ => Decision::Wait,
    }
}

/// Runs pipeline runs; cheap to clone (everything is shared).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Arc<Store>,
    pipelines: Pipelines,
    global: Arc<Semaphore>,
    pools: HashMap<String, Arc<Semaphore>>,
    observer: Box<dyn Fn(&Event) + Send + Sync>,
    cancel: watch::Sender<bool>,
}

/// Everything one task instance's future needs.
struct TaskRun {
    exec: Executor,
    pipeline: Arc<Pipeline>,
    task: Task,
    renderer: Arc<Renderer>,
    pipeline_slots: Arc<Semaphore>,
    dir: PathBuf,
    /// Attempts made in earlier executions of this run (a resumed run counts on from them).
    tries_before: u32,
    /// The highest attempt number allowed, for a task resumed after its worker died; a
    /// task starting afresh gets its retries on top of `tries_before`.
    max_tries: Option<u32>,
    /// For such a task, when its retry delay is over.
    retry_at: Option<DateTime<Utc>>,
    /// Alerts being delivered for this run.
    alerts: Pending,
}

/// Alert deliveries in flight, awaited (briefly) when their run ends.
type Pending = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// How long a finished run waits for its alerts to be delivered.
const ALERT_GRACE: Duration = Duration::from_secs(60);

impl Executor {
    /// An executor over a project's pipelines. Every pool a task names must be configured.
    pub fn new(
        settings: Settings,
        store: Arc<Store>,
        pipelines: Pipelines,
        observer: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<Executor, OrchestrateError> {
        for p in pipelines.by_name.values() {
            for t in &p.tasks {
                if let Some(pool) = &t.pool
                    && !settings.pools.contains_key(pool)
                {
                    let known: Vec<&str> = settings.pools.keys().map(String::as_str).collect();
                    return Err(OrchestrateError::Invalid {
                        location: t.location.clone(),
                        message: format!(
                            "task '{}' uses pool '{pool}', which weir.yml does not define (orchestrator: pools: {{{pool}: N}}; pools: {})",
                            t.name,
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                        snippet: None,
                    });
                }
            }
        }
        let pools = settings.pools.iter().map(|(k, v)| (k.clone(), Arc::new(Semaphore::new((*v).max(1))))).collect();
        let global = Arc::new(Semaphore::new(settings.parallelism.max(1)));
        let (cancel, _) = watch::channel(false);
        Ok(Executor { inner: Arc::new(Inner { settings, store, pipelines, global, pools, observer: Box::new(observer), cancel }) })
    }

    pub fn pipelines(&self) -> &Pipelines {
        &self.inner.pipelines
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Reports something to the observer, outside any one task.
    pub fn notice(&self, level: &'static str, message: String) {
        self.emit(Event::Notice { level, message });
    }

    /// Stops every run in progress: their tasks' processes are killed and the runs recorded
    /// as failed ("interrupted").
    pub fn cancel(&self) {
        let _ = self.inner.cancel.send(true);
    }

    /// The data interval and run id a request resolves to, without running anything.
    pub fn plan(&self, pipeline: &Pipeline, req: &RunRequest) -> (DataInterval, String) {
        let now = Utc::now();
        let interval = req.interval.unwrap_or_else(|| {
            pipeline.schedule.as_ref().and_then(|s| s.last_complete(now)).unwrap_or(DataInterval { start: now, end: now })
        });
        let run_type = if req.run_type.is_empty() { "manual" } else { req.run_type.as_str() };
        let run_id = req.run_id.clone().unwrap_or_else(|| match run_type {
            // To the microsecond, as Airflow's: a trigger that still meets an earlier one's id
            // (see the API) asks again, and the clock has moved on.
            "manual" => format!("manual__{}", now.to_rfc3339_opts(SecondsFormat::Micros, true)),
            other => format!("{other}__{}", interval.start.to_rfc3339_opts(SecondsFormat::Secs, true)),
        });
        (interval, run_id)
    }

    /// Runs (or resumes) one run of a pipeline to its end.
    pub async fn run(&self, name: &str, req: RunRequest) -> Result<RunOutcome, OrchestrateError> {
        let started = Instant::now();
        let pipeline = Arc::new(self.inner.pipelines.get(name)?.clone());
        if let Some(id) = &req.run_id {
            crate::run_id::check(id).map_err(OrchestrateError::Request)?;
        }
        let params = pipeline.resolve_params(&req.params)?;
        let (interval, run_id) = self.plan(&pipeline, &req);
        let run_type = if req.run_type.is_empty() { "manual".to_string() } else { req.run_type.clone() };
        let store = &self.inner.store;
        let me = self.inner.settings.worker_id.clone();
        let mut previous = store.pipeline_run(name, &run_id)?;
        if let Some(prev) = previous.as_ref().filter(|p| p.state == "running" && p.owner != me) {
            // Another worker's run: refused while that worker lives, taken over once it died.
            let owner = prev.owner.as_deref().map(|o| store.worker(o)).transpose()?.flatten();
            if let Some(w) = owner.as_ref().filter(|w| self.is_live(w)) {
                return Err(OrchestrateError::Request(format!(
                    "run {run_id} of {name} is being run by worker {} (pid {} on {}, last heartbeat {})",
                    w.worker_id,
                    w.pid,
                    w.host,
                    w.heartbeat_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                )));
            }
            self.recover_run(prev, owner.as_ref())?;
            previous = store.pipeline_run(name, &run_id)?;
            // Another worker may have taken it over first.
            if previous.as_ref().is_some_and(|p| p.state == "running" && p.owner != me) {
                return Err(OrchestrateError::Request(format!("run {run_id} of {name} was just taken over by another worker")));
            }
        }
        if let Some(prev) = previous.as_ref().filter(|p| p.state == "queued" || p.state == "failed")
            && !store.take_run(name, &run_id, &[prev.state.as_str()], me.as_deref())?
        {
            return Err(OrchestrateError::Request(format!("run {run_id} of {name} was just taken by another worker")));
        }
        if let Some(prev) = previous.as_ref().filter(|p| p.state == "success") {
            let tasks = store.task_instances(name, &run_id)?.into_iter().map(|t| (t.task, parse_state(&t.state))).collect();
            let interval =
                DataInterval { start: prev.interval_start.unwrap_or(interval.start), end: prev.interval_end.unwrap_or(interval.end) };
            return Ok(RunOutcome {
                pipeline: name.into(),
                run_id,
                state: "success".into(),
                interval,
                tasks,
                elapsed: started.elapsed(),
                already_done: true,
            });
        }
        let mut record = PipelineRun {
            pipeline: name.to_string(),
            run_id: run_id.clone(),
            run_type: run_type.clone(),
            state: "running".into(),
            interval_start: Some(interval.start),
            interval_end: Some(interval.end),
            params: J::Object(params.clone()).to_string(),
            queued_at: previous.as_ref().map(|p| p.queued_at).unwrap_or_else(Utc::now),
            started_at: Some(Utc::now()),
            finished_at: None,
            message: None,
            owner: me,
        };
        store.save_run(&record)?;

        // A resumed run keeps what succeeded (or was skipped) and redoes the rest.
        let mut states: HashMap<String, TaskState> = pipeline.tasks.iter().map(|t| (t.name.clone(), TaskState::None)).collect();
        let mut tries: HashMap<String, u32> = HashMap::new();
        // Tasks whose attempt was lost with a dead worker keep their allowance of tries, and
        // wait their retry delay from when the attempt ended, like any retry.
        let mut lost: HashMap<String, (u32, Option<DateTime<Utc>>)> = HashMap::new();
        for ti in store.task_instances(name, &run_id)? {
            let s = parse_state(&ti.state);
            tries.insert(ti.task.clone(), ti.try_number);
            let keep = match s {
                TaskState::Success | TaskState::Skipped => true,
                TaskState::Failed | TaskState::UpstreamFailed => req.keep_failed,
                _ => false,
            };
            if keep && let Some(slot) = states.get_mut(&ti.task) {
                *slot = s;
            }
            if req.keep_failed
                && s == TaskState::UpForRetry
                && let Some(m) = ti.max_tries
            {
                let ended = store.task_attempts(name, &run_id, &ti.task)?.iter().filter_map(|a| a.finished_at).max();
                let delay = pipeline.task(&ti.task).map(|t| t.retry.delay_before(ti.try_number.max(1))).unwrap_or_default();
                let retry_at = ended.map(|e| e + chrono::Duration::from_std(delay).unwrap_or_default());
                lost.insert(ti.task.clone(), (m, retry_at));
            }
        }
        let already = states.values().filter(|s| s.is_done()).count();
        self.emit(Event::RunStarted {
            pipeline: name.into(),
            run_id: run_id.clone(),
            interval,
            tasks: pipeline.tasks.len(),
            already_done: already,
        });

        let ctx = RunContext { pipeline: name.into(), run_id: run_id.clone(), run_type, interval, tz: pipeline.tz, params };
        let renderer = Arc::new(Renderer { ctx, store: store.clone() });
        let pipeline_slots = Arc::new(Semaphore::new(pipeline.max_active_tasks.max(1)));
        let dir = self.inner.settings.logs_dir.join(name).join(crate::run_id::folder(&run_id));
        let mut running: JoinSet<(String, TaskState, u32, Option<String>)> = JoinSet::new();
        let alerts: Pending = Arc::default();
        let deadline = pipeline.deadline.map(|d| tokio::time::Instant::now() + d);
        let mut deadline_passed = false;
        let mut cancel = self.inner.cancel.subscribe();
        let mut interrupted = *cancel.borrow_and_update();
        loop {
            if interrupted {
                break;
            }
            // Decide every task whose upstream allows it; a skip may decide others in turn.
            let mut changed = true;
            while changed {
                changed = false;
                for t in &pipeline.tasks {
                    if states[&t.name] != TaskState::None {
                        continue;
                    }
                    let ups: Vec<TaskState> = t.after.iter().map(|a| states[a]).collect();
                    let decision = decide(t.trigger_rule, &ups);
                    let state = match decision {
                        Decision::Wait => continue,
                        Decision::Run => TaskState::Running,
                        Decision::Skip => TaskState::Skipped,
                        Decision::UpstreamFailed => TaskState::UpstreamFailed,
                    };
                    states.insert(t.name.clone(), state);
                    changed = true;
                    if state == TaskState::Running {
                        let job = TaskRun {
                            exec: self.clone(),
                            pipeline: pipeline.clone(),
                            task: t.clone(),
                            renderer: renderer.clone(),
                            pipeline_slots: pipeline_slots.clone(),
                            dir: dir.clone(),
                            tries_before: tries.get(&t.name).copied().unwrap_or(0),
                            max_tries: lost.get(&t.name).map(|l| l.0),
                            retry_at: lost.get(&t.name).and_then(|l| l.1),
                            alerts: alerts.clone(),
                        };
                        running.spawn(job.run());
                    } else {
                        let why = match state {
                            TaskState::Skipped => "skipped by its trigger rule",
                            _ => "an upstream task failed",
                        };
                        self.finish_task(&pipeline.name, &run_id, &t.name, state, 0, Duration::ZERO, Some(why.into()))?;
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                joined = running.join_next() => match joined {
                    Some(Ok((task, state, _, _))) => {
                        states.insert(task, state);
                    }
                    Some(Err(e)) => return Err(OrchestrateError::Request(format!("a task of run {run_id} stopped unexpectedly: {e}"))),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() && !deadline_passed => {
                    deadline_passed = true;
                    let after = weir_core::duration::show_duration(pipeline.deadline.unwrap_or_default().as_secs_f64());
                    let message = format!("still running {after} after it started");
                    self.alert(&pipeline, &renderer, &alerts, AlertEvent::Deadline, None, message);
                }
                seen = cancel.changed() => {
                    // The channel cannot close while `self` holds its sender.
                    interrupted = seen.is_ok() && *cancel.borrow_and_update();
                }
            }
            if interrupted {
                running.shutdown().await;
                break;
            }
        }
        let failed: Vec<&str> = pipeline
            .tasks
            .iter()
            .filter(|t| matches!(states[&t.name], TaskState::Failed | TaskState::UpstreamFailed))
            .map(|t| t.name.as_str())
            .collect();
        let state = if interrupted || !failed.is_empty() { "failed" } else { "success" };
        record.state = state.into();
        record.finished_at = Some(Utc::now());
        record.message = if interrupted {
            Some("interrupted".into())
        } else if failed.is_empty() {
            None
        } else {
            Some(format!("failed tasks: {}", failed.join(", ")))
        };
        if interrupted {
            for t in &pipeline.tasks {
                if !states[&t.name].is_done() {
                    states.insert(t.name.clone(), TaskState::Failed);
                    let ti = TaskInstance {
                        pipeline: name.into(),
                        run_id: run_id.clone(),
                        task: t.name.clone(),
                        state: "failed".into(),
                        try_number: tries.get(&t.name).copied().unwrap_or(0),
                        max_tries: None,
                        started_at: None,
                        finished_at: Some(Utc::now()),
                        message: Some("interrupted".into()),
                    };
                    store.save_task(&ti)?;
                }
            }
        }
        store.save_run(&record)?;
        if state == "success" {
            let message = format!("all {} tasks done in {:.1}s", pipeline.tasks.len(), started.elapsed().as_secs_f64());
            self.alert(&pipeline, &renderer, &alerts, AlertEvent::Success, None, message);
        }
        let handles: Vec<_> = alerts.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        let _ = tokio::time::timeout(ALERT_GRACE, async {
            for h in handles {
                let _ = h.await;
            }
        })
        .await;
        let elapsed = started.elapsed();
        self.emit(Event::RunFinished { pipeline: name.into(), run_id: run_id.clone(), state: state.into(), elapsed });
        let tasks = pipeline.tasks.iter().map(|t| (t.name.clone(), states[&t.name])).collect();
        Ok(RunOutcome { pipeline: name.into(), run_id, state: state.into(), interval, tasks, elapsed, already_done: false })
    }

    /// Whether a worker is alive: not stopped, and heard from within the worker timeout.
    pub fn is_live(&self, w: &Worker) -> bool {
        let timeout = chrono::Duration::from_std(self.inner.settings.worker_timeout).unwrap_or_else(|_| chrono::Duration::seconds(30));
        w.stopped_at.is_none() && w.heartbeat_at > Utc::now() - timeout
    }

    /// Takes over a run whose worker died (`dead`, if it is known): what that worker left
    /// running is killed (when it ran on this host), its open attempts are closed as
    /// failed, each interrupted task is retried if it has tries left and failed if not,
    /// and the run goes back to the queue. Returns whether this call took it over; two
    /// workers recovering the same run at once cannot both succeed.
    pub fn recover_run(&self, run: &PipelineRun, dead: Option<&Worker>) -> Result<bool, OrchestrateError> {
        let store = &self.inner.store;
        let me = self.inner.settings.worker_id.clone().unwrap_or_else(|| format!("pid-{}", std::process::id()));
        if !store.adopt_run(&run.pipeline, &run.run_id, run.owner.as_deref(), &me)? {
            return Ok(false);
        }
        let why = match dead {
            Some(w) => format!(
                "its worker {} (pid {} on {}) died: no heartbeat since {}",
                w.worker_id,
                w.pid,
                w.host,
                w.heartbeat_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!("its worker {} is gone", run.owner.as_deref().unwrap_or("(unknown)")),
        };
        let same_host = dead.is_some_and(|w| w.host == crate::worker::host_name());
        let spec = self.inner.pipelines.by_name.get(&run.pipeline);
        let now = Utc::now();
        for mut ti in store.task_instances(&run.pipeline, &run.run_id)? {
            if !matches!(parse_state(&ti.state), TaskState::Running | TaskState::UpForRetry | TaskState::UpForReschedule) {
                continue;
            }
            for mut a in store.task_attempts(&run.pipeline, &run.run_id, &ti.task)?.into_iter().filter(|a| a.state == "running") {
                if let Some(pid) = a.pid.filter(|p| same_host && *p > 1) {
                    crate::worker::kill_group(pid);
                }
                a.state = "failed".into();
                a.finished_at = Some(now);
                a.message = Some(format!("lost: {why}"));
                a.pid = None;
                store.save_attempt(&a)?;
            }
            let retries = spec.and_then(|p| p.task(&ti.task)).map(|t| t.retry.retries).unwrap_or(0);
            let max = ti.max_tries.unwrap_or(ti.try_number + retries);
            if ti.try_number >= max {
                ti.state = TaskState::Failed.name().into();
                ti.finished_at = Some(now);
                ti.message = Some(format!("{why}; no tries left"));
            } else {
                ti.state = TaskState::UpForRetry.name().into();
                ti.message = Some(format!("{why}; will be retried"));
            }
            ti.max_tries = Some(max);
            store.save_task(&ti)?;
        }
        store.requeue_run(&run.pipeline, &run.run_id, &["running"], Some(&me), Some(&format!("requeued: {why}")))?;
        Ok(true)
    }

    /// [`Executor::run`] behind a box, for a pipeline task running another pipeline (a
    /// future cannot contain itself).
    fn run_boxed(
        &self,
        name: String,
        req: RunRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<RunOutcome, OrchestrateError>> + Send + '_>> {
        Box::pin(async move { self.run(&name, req).await })
    }

    fn emit(&self, e: Event) {
        (self.inner.observer)(&e);
    }

    /// Starts delivering the pipeline's alerts for `event`, without waiting for them.
    fn alert(
        &self,
        pipeline: &Pipeline,
        renderer: &Arc<Renderer>,
        pending: &Pending,
        event: AlertEvent,
        task: Option<&str>,
        message: String,
    ) {
        if pipeline.alerts.is_empty() {
            return;
        }
        let what = Happening { event, task: task.map(str::to_string), message };
        if let Ok(mut p) = pending.lock() {
            crate::alert::fire(&pipeline.alerts, &what, renderer, &mut p);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_task(
        &self,
        pipeline: &str,
        run_id: &str,
        task: &str,
        state: TaskState,
        attempts: u32,
        elapsed: Duration,
        message: Option<String>,
    ) -> Result<(), OrchestrateError> {
        let now = Utc::now();
        self.inner.store.save_task(&TaskInstance {
            pipeline: pipeline.into(),
            run_id: run_id.into(),
            task: task.into(),
            state: state.name().into(),
            try_number: attempts,
            max_tries: None,
            started_at: (attempts > 0).then(|| now - chrono::Duration::from_std(elapsed).unwrap_or_default()),
            finished_at: Some(now),
            message: message.clone(),
        })?;
        self.emit(Event::TaskFinished {
            pipeline: pipeline.into(),
            run_id: run_id.into(),
            task: task.into(),
            state,
            attempts,
            elapsed,
            message,
        });
        Ok(())
    }
}

impl TaskRun {
    /// Runs the task to a final state; returns it with the attempts made and why it ended.
    async fn run(self) -> (String, TaskState, u32, Option<String>) {
        let name = self.task.name.clone();
        let started = Instant::now();
        let (state, attempts, message) = match self.attempts(started).await {
            Ok(r) => r,
            Err(e) => (TaskState::Failed, self.tries_before, Some(e.to_string())),
        };
        let elapsed = started.elapsed();
        if state == TaskState::Failed {
            let m = message.clone().unwrap_or_default();
            self.exec.alert(&self.pipeline, &self.renderer, &self.alerts, AlertEvent::Failure, Some(&name), m);
        }
        let p = &self.pipeline.name;
        let run_id = &self.renderer.ctx.run_id;
        if let Err(e) = self.exec.finish_task(p, run_id, &name, state, attempts, elapsed, message.clone()) {
            return (name, TaskState::Failed, attempts, Some(e.to_string()));
        }
        (name, state, attempts, message)
    }

    async fn attempts(&self, started: Instant) -> Result<(TaskState, u32, Option<String>), OrchestrateError> {
        let inner = &self.exec.inner;
        let store = &inner.store;
        let (p, run_id, task) = (&self.pipeline.name, &self.renderer.ctx.run_id, &self.task.name);
        if let TaskKind::Pipeline { name, params } = &self.task.kind {
            return self.trigger(name, params).await;
        }
        let sensor = match &self.task.kind {
            TaskKind::Sensor(s) => Some(s.clone()),
            _ => None,
        };
        // A sensor's timeout bounds its whole wait; Airflow's default is seven days.
        let sensor_deadline = sensor.as_ref().map(|_| started + self.task.timeout.unwrap_or(Duration::from_secs(7 * 86400)));
        let pool =
            self.task.pool.clone().or_else(|| if uses_warehouse(&self.task.kind) { inner.settings.warehouse_pool.clone() } else { None });
        let mut number = self.tries_before + 1;
        let max_tries = self.max_tries.unwrap_or(self.tries_before + self.task.retry.retries + 1);
        if number > max_tries {
            return Ok((TaskState::Failed, self.tries_before, Some("no tries left after its worker died".into())));
        }
        if let Some(wait) = self.retry_at.and_then(|at| (at - Utc::now()).to_std().ok()).filter(|w| !w.is_zero()) {
            self.exec.emit(Event::TaskRetrying {
                pipeline: p.clone(),
                run_id: run_id.clone(),
                task: task.clone(),
                attempt: self.tries_before,
                delay: wait,
                message: "its attempt was lost with its worker".into(),
            });
            tokio::time::sleep(wait).await;
        }
        let mut retry_n = 0;
        loop {
            // An attempt starts when it has its slots; until then the task is only queued.
            let mut held = Some(self.slots(pool.as_deref()).await?);
            let attempt_started = Utc::now();
            let log_path = self.dir.join(crate::run_id::folder(task)).join(format!("attempt-{number}.log"));
            let mut record = TaskAttempt {
                pipeline: p.clone(),
                run_id: run_id.clone(),
                task: task.clone(),
                attempt: number,
                state: "running".into(),
                started_at: attempt_started,
                finished_at: None,
                exit_code: None,
                message: None,
                log_path: Some(log_path.display().to_string()),
                log_tail: None,
                worker: inner.settings.worker_id.clone(),
                pid: None,
            };
            store.save_attempt(&record)?;
            store.clear_xcoms(p, run_id, task)?;
            self.save_state(TaskState::Running, number, attempt_started, None, Some(max_tries))?;
            self.exec.emit(Event::TaskStarted { pipeline: p.clone(), run_id: run_id.clone(), task: task.clone(), attempt: number });
            let mut log = Log::open(log_path, inner.settings.max_log_bytes);
            // Pokes of one sensor attempt share its record and log.
            let outcome = loop {
                let outcome = {
                    let _slots = match held.take() {
                        Some(h) => h,
                        None => self.slots(pool.as_deref()).await?,
                    };
                    let limit = match sensor_deadline {
                        Some(d) => Some(d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))),
                        None => self.task.timeout,
                    };
                    let on_spawn = |pid: u32| {
                        let _ = store.save_attempt(&TaskAttempt { pid: Some(pid), ..record.clone() });
                    };
                    let attempt = Attempt {
                        settings: &inner.settings,
                        renderer: &self.renderer,
                        task: &self.task,
                        dir: self.dir.clone(),
                        number,
                        on_spawn: &on_spawn,
                    };
                    attempt.run(&mut log, limit).await
                };
                let Outcome::NotYet(seen) = &outcome else { break outcome };
                let (Some(s), Some(deadline)) = (&sensor, sensor_deadline) else { break outcome };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let waited = weir_core::duration::show_duration(started.elapsed().as_secs_f64());
                    break Outcome::Failed { message: format!("sensor timed out after waiting {waited}: {seen}"), exit_code: None };
                }
                let next = s.poke_interval.min(left);
                self.save_state(TaskState::UpForReschedule, number, attempt_started, Some(seen.clone()), None)?;
                self.exec.emit(Event::SensorWaiting {
                    pipeline: p.clone(),
                    run_id: run_id.clone(),
                    task: task.clone(),
                    next_poke: next,
                    seen: seen.clone(),
                });
                tokio::time::sleep(next).await;
            };
            let outcome = match outcome {
                Outcome::Success { published } => self.publish(published),
                other => other,
            };
            log.close();
            record.finished_at = Some(Utc::now());
            record.log_tail = Some(log.tail_text());
            let message = match &outcome {
                Outcome::Success { .. } => None,
                o => Some(describe(o)),
            };
            record.message = message.clone();
            (record.state, record.exit_code) = match &outcome {
                Outcome::Success { .. } => ("success".into(), Some(0)),
                Outcome::Failed { exit_code, .. } => ("failed".into(), *exit_code),
                Outcome::TimedOut(_) => ("timed_out".into(), None),
                Outcome::NotYet(_) => ("failed".into(), None),
            };
            store.save_attempt(&record)?;
            if let Outcome::Success { published } = &outcome {
                // What a shell task said last (its return value) is its message, so a
                // foreground run and the run's record show it.
                let said = match self.task.kind {
                    TaskKind::Shell { .. } => published.iter().find(|(k, _)| k == "return_value").and_then(|(_, v)| v.as_str()),
                    _ => None,
                };
                return Ok((TaskState::Success, number, said.map(|s| clip(s, 200))));
            }
            let message = message.unwrap_or_default();
            if number >= max_tries {
                let last = log.last_line().filter(|l| !message.contains(l.as_str())).map(|l| format!(" (last output: {})", clip(&l, 200)));
                return Ok((TaskState::Failed, number, Some(format!("{message}{}", last.unwrap_or_default()))));
            }
            retry_n += 1;
            let delay = self.task.retry.delay_before(retry_n);
            self.save_state(TaskState::UpForRetry, number, attempt_started, Some(message.clone()), None)?;
            let next = weir_core::duration::show_duration(delay.as_secs_f64());
            let m = format!("attempt {number} {message}; next attempt in {next}");
            self.exec.alert(&self.pipeline, &self.renderer, &self.alerts, AlertEvent::Retry, Some(task), m);
            self.exec.emit(Event::TaskRetrying {
                pipeline: p.clone(),
                run_id: run_id.clone(),
                task: task.clone(),
                attempt: number,
                delay,
                message,
            });
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }

    /// Takes a slot of the global limit, the pipeline's and the pool's, in that order
    /// (always the same order, so two tasks never hold one each of what the other waits for).
    async fn slots(&self, pool: Option<&str>) -> Result<Vec<tokio::sync::OwnedSemaphorePermit>, OrchestrateError> {
        let closed = |_| OrchestrateError::Request("the executor is shutting down".into());
        let mut held = vec![self.exec.inner.global.clone().acquire_owned().await.map_err(closed)?];
        held.push(self.pipeline_slots.clone().acquire_owned().await.map_err(closed)?);
        if let Some(p) = pool.and_then(|p| self.exec.inner.pools.get(p)) {
            held.push(p.clone().acquire_owned().await.map_err(closed)?);
        }
        Ok(held)
    }

    /// Keeps the published values, refusing any larger than the limit.
    fn publish(&self, published: Vec<(String, J)>) -> Outcome {
        let limit = self.exec.inner.settings.xcom_max_bytes;
        let (p, run_id, task) = (&self.pipeline.name, &self.renderer.ctx.run_id, &self.task.name);
        for (name, value) in &published {
            let json = value.to_string();
            if json.len() > limit {
                return Outcome::Failed {
                    message: format!(
                        "the value '{name}' is {} as JSON; values passed between tasks are limited to {} (xcom_max_bytes in weir.yml): write large data to a table or a file and pass its name",
                        weir_core::size::human(json.len() as u64),
                        weir_core::size::human(limit as u64)
                    ),
                    exit_code: None,
                };
            }
            if let Err(e) = self.exec.inner.store.push_xcom(p, run_id, task, name, &json) {
                return Outcome::Failed { message: e.to_string(), exit_code: None };
            }
        }
        Outcome::Success { published }
    }

    fn save_state(
        &self,
        state: TaskState,
        tries: u32,
        started: DateTime<Utc>,
        message: Option<String>,
        max_tries: Option<u32>,
    ) -> Result<(), OrchestrateError> {
        self.exec.inner.store.save_task(&TaskInstance {
            pipeline: self.pipeline.name.clone(),
            run_id: self.renderer.ctx.run_id.clone(),
            task: self.task.name.clone(),
            state: state.name().into(),
            try_number: tries,
            max_tries,
            started_at: Some(started),
            finished_at: None,
            message,
        })?;
        Ok(())
    }

    /// A `pipeline` task: runs the other pipeline for the same interval, holding no slot
    /// while it does (its own tasks take them).
    async fn trigger(&self, other: &str, params: &Map<String, J>) -> Result<(TaskState, u32, Option<String>), OrchestrateError> {
        let ctx = &self.renderer.ctx;
        let mut rendered = Map::new();
        for (k, v) in params {
            let value = match v {
                J::String(s) => {
                    J::String(self.renderer.render(s, &self.task.name).map_err(|e| OrchestrateError::Request(format!("param {k}: {e}")))?)
                }
                other => other.clone(),
            };
            rendered.insert(k.clone(), value);
        }
        let number = self.tries_before + 1;
        self.save_state(TaskState::Running, number, Utc::now(), None, None)?;
        self.exec.emit(Event::TaskStarted {
            pipeline: ctx.pipeline.clone(),
            run_id: ctx.run_id.clone(),
            task: self.task.name.clone(),
            attempt: number,
        });
        let req = RunRequest {
            run_type: ctx.run_type.clone(),
            interval: Some(ctx.interval),
            params: rendered,
            run_id: Some(format!("{}.{}.{}", ctx.run_id, ctx.pipeline, self.task.name)),
            keep_failed: false,
        };
        let outcome = self.exec.run_boxed(other.to_string(), req).await?;
        self.exec.inner.store.push_xcom(
            &ctx.pipeline,
            &ctx.run_id,
            &self.task.name,
            "run_id",
            &J::String(outcome.run_id.clone()).to_string(),
        )?;
        if outcome.state == "success" {
            Ok((TaskState::Success, number, None))
        } else {
            Ok((TaskState::Failed, number, Some(format!("pipeline '{other}' run {} failed", outcome.run_id))))
        }
    }
}

/// Sleeps until `deadline`, or forever without one (for a `select!` branch).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn uses_warehouse(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::Build { .. } | TaskKind::Load { .. } | TaskKind::Sql { .. })
        || matches!(kind, TaskKind::Sensor(s) if matches!(s.condition, crate::spec::Condition::Sql { .. }))
}

pub fn parse_state(s: &str) -> TaskState {
    match s {
        "running" => TaskState::Running,
        "up_for_retry" => TaskState::UpForRetry,
        "up_for_reschedule" => TaskState::UpForReschedule,
        "success" => TaskState::Success,
        "failed" => TaskState::Failed,
        "skipped" => TaskState::Skipped,
        "upstream_failed" => TaskState::UpstreamFailed,
        _ => TaskState::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [TaskState; 4] = [TaskState::Success, TaskState::Failed, TaskState::Skipped, TaskState::UpstreamFailed];
    const RULES: [TriggerRule; 7] = [
        TriggerRule::AllSuccess,
        TriggerRule::AllFailed,
        TriggerRule::AllDone,
        TriggerRule::OneSuccess,
        TriggerRule::OneFailed,
        TriggerRule::NoneFailed,
        TriggerRule::NoneSkipped,
    ];

    #[test]
    fn trigger_rules_as_airflow_decides_them() {
        use TaskState::*;
        use TriggerRule::*;
        assert_eq!(decide(AllSuccess, &[Success, Success]), Decision::Run);
        assert_eq!(decide(AllSuccess, &[Success, Running]), Decision::Wait);
        assert_eq!(decide(AllSuccess, &[Failed, Running]), Decision::UpstreamFailed);
        assert_eq!(decide(AllSuccess, &[Skipped, Success]), Decision::Skip);
        assert_eq!(decide(AllDone, &[Failed, Skipped]), Decision::Run);
        assert_eq!(decide(OneSuccess, &[Success, Running]), Decision::Run);
        assert_eq!(decide(OneSuccess, &[Failed, Failed]), Decision::UpstreamFailed);
        assert_eq!(decide(OneFailed, &[Success, Success]), Decision::Skip);
        assert_eq!(decide(OneFailed, &[UpstreamFailed, Running]), Decision::Run);
        assert_eq!(decide(NoneFailed, &[Success, Skipped]), Decision::Run);
        assert_eq!(decide(NoneFailed, &[Success, Failed]), Decision::UpstreamFailed);
        assert_eq!(decide(AllFailed, &[Failed, Success]), Decision::Skip);
        assert_eq!(decide(NoneSkipped, &[Success, Failed]), Decision::Run);
        for rule in RULES {
            assert_eq!(decide(rule, &[]), Decision::Run, "{rule:?} with no upstream runs");
        }
    }

    proptest! {
        /// A decision taken while some upstream tasks still run is the one taken once they
        /// have all finished, whatever their ends: firing early is never wrong.
        #[test]
        fn early_decisions_hold(rule in 0usize..7, ends in proptest::collection::vec(0usize..4, 1..6), known in proptest::collection::vec(any::<bool>(), 1..6)) {
            let rule = RULES[rule];
            let final_states: Vec<TaskState> = ends.iter().map(|e| ALL[*e]).collect();
            let partial: Vec<TaskState> = final_states.iter().zip(known.iter().cycle()).map(|(s, k)| if *k { *s } else { TaskState::Running }).collect();
            let early = decide(rule, &partial);
            let late = decide(rule, &final_states);
            prop_assert_ne!(late, Decision::Wait);
            if early != Decision::Wait {
                prop_assert_eq!(early, late);
            }
        }
    }
}
