//! `weir pipeline list|run|backfill|runs|logs`: pipelines run in the foreground exactly as
//! the scheduler runs them, with a line per task as it starts, retries, waits and ends.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use serde_json::{Map, Value as J, json};
use weir_orchestrate::schedule::parse_time;
use weir_orchestrate::{DataInterval, Event, Executor, Pipelines, RunOutcome, RunRequest, Settings, TaskState, WeirCommand, WorkerHandle};

use crate::cli::{Global, PipelineCommand};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, cmd: &PipelineCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("pipeline", false, false))?;
    let root = ws.manifest.project.root.clone();
    let pipelines = Pipelines::load(&root.join("pipelines"))?;
    match cmd {
        PipelineCommand::List => list(&ws, &pipelines, out),
        PipelineCommand::Run { name, params, date, run_id } => {
            let p = pipelines.get(name)?;
            let interval = match date {
                None => None,
                Some(d) => {
                    let t = parse_time(d, p.tz).map_err(|m| format!("--date: {m}"))?;
                    Some(match &p.schedule {
                        Some(s) => s.interval_containing(t).ok_or_else(|| format!("--date {d}: the schedule has no interval there"))?,
                        None => DataInterval { start: t, end: t },
                    })
                }
            };
            let req = RunRequest {
                run_type: "manual".into(),
                interval,
                params: parse_params(params)?,
                run_id: run_id.clone(),
                keep_failed: false,
            };
            let rt = runtime()?;
            let (exec, worker) = foreground(g, &ws, pipelines.clone(), out, false)?;
            let outcome = rt.block_on(as_worker(&exec, &worker, exec.run(name, req)));
            Ok(report(&outcome?, out))
        }
        PipelineCommand::Backfill { name, start, end, parallel, rerun, params } => {
            let p = pipelines.get(name)?;
            let schedule = p.schedule.as_ref().ok_or_else(|| {
                format!(
                    "pipeline '{name}' has no schedule, so it has no intervals to backfill; run it with `weir pipeline run {name} --date D`"
                )
            })?;
            let (from, to) =
                (parse_time(start, p.tz).map_err(|m| format!("--start: {m}"))?, parse_time(end, p.tz).map_err(|m| format!("--end: {m}"))?);
            if to <= from {
                return Err("--end must be after --start".into());
            }
            let intervals = schedule.intervals(from, to, 100_000);
            let parallel = parallel.unwrap_or(p.max_active_runs.min(4)).max(1);
            backfill(g, &ws, pipelines.clone(), name, intervals, parallel, *rerun, parse_params(params)?, out)
        }
        PipelineCommand::Runs { name, limit } => runs(&ws, &pipelines, name.as_deref(), *limit, out),
        PipelineCommand::Logs { name, run_id, task, attempt } => logs(&ws, name, run_id, task, *attempt),
        PipelineCommand::Pause { name } | PipelineCommand::Unpause { name } => {
            pipelines.get(name)?;
            let paused = matches!(cmd, PipelineCommand::Pause { .. });
            ws.store()?.set_paused(name, paused)?;
            out.info(if paused {
                format!("Paused {name}: schedulers queue no new runs of it, and its queued runs wait")
            } else {
                format!("Unpaused {name}")
            });
            Ok(0)
        }
    }
}

/// An executor for the project: `weir.yml`'s settings, this binary for build, load and sql
/// tasks (with the same project, profiles and target), and one warehouse slot on DuckDB,
/// which lets one process write a database file at a time. It runs as `worker`.
pub fn executor(
    g: &Global,
    ws: &Workspace,
    pipelines: Pipelines,
    out: &Arc<Output>,
    many: bool,
    worker: &WorkerHandle,
) -> Result<Executor, Error> {
    let root = &ws.manifest.project.root;
    let mut settings = Settings::for_project(root)?;
    let absolute = |p: &Path| std::path::absolute(p).map(|p| p.display().to_string());
    let mut args = vec!["--project-dir".to_string(), absolute(root)?];
    if let Some(dir) = &g.profiles_dir {
        args.extend(["--profiles-dir".to_string(), absolute(dir)?]);
    }
    if let Some(t) = &g.target {
        args.extend(["--target".to_string(), t.clone()]);
    }
    settings.weir = Some(WeirCommand { exe: std::env::current_exe()?, args });
    let one_writer = ws.manifest.target.adapter_type == "duckdb";
    settings.pools.entry("warehouse".into()).or_insert(if one_writer { 1 } else { ws.threads.max(1) });
    settings.warehouse_pool = Some("warehouse".into());
    settings.worker_id = Some(worker.id.clone());
    let zones: HashMap<String, Tz> = pipelines.by_name.iter().map(|(k, p)| (k.clone(), p.tz)).collect();
    let view = LiveView { out: out.clone(), zones, many, waiting: Mutex::new(HashSet::new()) };
    Ok(Executor::new(settings, worker.store().clone(), pipelines, move |e| view.show(e))?)
}

/// An executor running as a foreground worker (`kind` cli), registered in the store so a
/// scheduler can tell it is alive, and take its runs over if it is killed.
fn foreground(g: &Global, ws: &Workspace, pipelines: Pipelines, out: &Arc<Output>, many: bool) -> Result<(Executor, WorkerHandle), Error> {
    let worker = WorkerHandle::register(ws.store()?, "cli")?;
    Ok((executor(g, ws, pipelines, out, many, &worker)?, worker))
}

/// Runs `work` while the worker beats; the worker is recorded as stopped when it ends.
async fn as_worker<T>(exec: &Executor, worker: &WorkerHandle, work: impl Future<Output = T>) -> T {
    let beat = worker.beat_for(exec.clone());
    let done = until_interrupted(exec, work).await;
    beat.abort();
    let _ = worker.stop();
    done
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs `work`; on Ctrl-C the executor kills its tasks and records the runs as interrupted.
async fn until_interrupted<T>(exec: &Executor, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => done,
        _ = tokio::signal::ctrl_c() => {
            exec.cancel();
            work.await
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn backfill(
    g: &Global,
    ws: &Workspace,
    pipelines: Pipelines,
    name: &str,
    intervals: Vec<DataInterval>,
    parallel: usize,
    rerun: bool,
    params: Map<String, J>,
    out: &Arc<Output>,
) -> Result<u8, Error> {
    let rt = runtime()?;
    let (exec, worker) = foreground(g, ws, pipelines, out, true)?;
    let exec = &exec;
    let store = exec.store().clone();
    let mut todo = Vec::new();
    let mut done = 0;
    for i in &intervals {
        let succeeded = store.runs_for_interval(name, i.start)?.iter().any(|r| r.state == "success");
        if succeeded && !rerun {
            done += 1;
        } else {
            todo.push(*i);
        }
    }
    out.info(format!(
        "Backfilling {name}: {} interval{} in range, {done} already done, {} to run, {parallel} at a time",
        intervals.len(),
        if intervals.len() == 1 { "" } else { "s" },
        todo.len()
    ));
    let stamp = Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let outcomes: Vec<Result<RunOutcome, String>> = rt.block_on(as_worker(exec, &worker, async {
        let slots = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut set = tokio::task::JoinSet::new();
        for (n, interval) in todo.into_iter().enumerate() {
            let (exec, slots, name, params) = (exec.clone(), slots.clone(), name.to_string(), params.clone());
            let run_id =
                rerun.then(|| format!("backfill__{}__rerun_{stamp}", interval.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            set.spawn(async move {
                let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
                let req = RunRequest { run_type: "backfill".into(), interval: Some(interval), params, run_id, keep_failed: false };
                exec.run(&name, req).await.map(|o| (n, o)).map_err(|e| e.to_string())
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.map_err(|e| e.to_string()).and_then(|r| r));
        }
        results.sort_by_key(|r| r.as_ref().map(|(n, _)| *n).unwrap_or(usize::MAX));
        results.into_iter().map(|r| r.map(|(_, o)| o)).collect()
    }));
    let (mut ok, mut failed) = (0, 0);
    for o in &outcomes {
        match o {
            Ok(o) if o.state == "success" => ok += 1,
            Ok(_) => failed += 1,
            Err(e) => {
                failed += 1;
                out.error(e);
            }
        }
    }
    out.info(format!("Backfill of {name} finished: {ok} succeeded, {failed} failed, {done} already done"));
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Prints a run's closing lines; the exit code is 1 when it failed.
fn report(o: &RunOutcome, out: &Output) -> u8 {
    if o.already_done {
        out.info(format!("Run {} of {} already succeeded; nothing to do (pass a new --run-id to run it again)", o.run_id, o.pipeline));
        return 0;
    }
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for (_, s) in &o.tasks {
        match counts.iter_mut().find(|(k, _)| k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((*s, 1)),
        }
    }
    let shown: Vec<String> = counts.iter().map(|(s, n)| format!("{}={n}", s.name().to_uppercase())).collect();
    out.emit("info", "pipeline_summary", &format!("Done. {}", shown.join(" ")), json!({"run_id": o.run_id, "state": o.state}));
    if o.state == "success" { 0 } else { 1 }
}

/// A line per event (one JSON object per event with `--log-format json`).
struct LiveView {
    out: Arc<Output>,
    zones: HashMap<String, Tz>,
    /// Several runs at once (a backfill): lines name their run.
    many: bool,
    /// Sensors already reported waiting, so each says so once.
    waiting: Mutex<HashSet<(String, String)>>,
}

impl LiveView {
    fn show(&self, e: &Event) {
        let secs = |d: &Duration| format!("{:.2}s", d.as_secs_f64());
        let who = |run_id: &str, task: &str| if self.many { format!("{run_id} {task}") } else { task.to_string() };
        match e {
            Event::RunStarted { pipeline, run_id, interval, tasks, already_done } => {
                let tz = self.zones.get(pipeline).copied().unwrap_or(Tz::UTC);
                let resumed = if *already_done > 0 { format!(", {already_done} already done") } else { String::new() };
                let text =
                    format!("Running pipeline {pipeline}, run {run_id}, interval {}: {tasks} tasks{resumed}", show_interval(interval, tz));
                self.out.emit("info", "run_started", &text, json!({"pipeline": pipeline, "run_id": run_id, "data_interval_start": interval.start, "data_interval_end": interval.end}));
            }
            Event::TaskStarted { pipeline, run_id, task, attempt } => {
                let n = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                self.out.emit(
                    "info",
                    "task_started",
                    &format!("START {}{n}", who(run_id, task)),
                    json!({"pipeline": pipeline, "run_id": run_id, "task": task, "attempt": attempt}),
                );
            }
            Event::TaskRetrying { pipeline, run_id, task, attempt, delay, message } => {
                let text = format!("RETRY {} in {}: attempt {attempt} {message}", who(run_id, task), secs(delay));
                self.out.emit("info", "task_retrying", &text, json!({"pipeline": pipeline, "run_id": run_id, "task": task, "attempt": attempt, "delay_s": delay.as_secs_f64(), "message": message}));
            }
            Event::SensorWaiting { pipeline, run_id, task, next_poke, seen } => {
                let first = self.waiting.lock().map(|mut w| w.insert((run_id.clone(), task.clone()))).unwrap_or(true);
                if first {
                    let text = format!("WAIT  {}: {seen}; looking again every {}", who(run_id, task), secs(next_poke));
                    self.out.emit(
                        "info",
                        "sensor_waiting",
                        &text,
                        json!({"pipeline": pipeline, "run_id": run_id, "task": task, "seen": seen}),
                    );
                }
            }
            Event::TaskFinished { pipeline, run_id, task, state, attempts, elapsed, message } => {
                // A long-running scheduler forgets sensors once they are done.
                if let Ok(mut w) = self.waiting.lock() {
                    w.remove(&(run_id.clone(), task.clone()));
                }
                // Every line goes to stdout, so a terminal shows them in order.
                let word = match state {
                    TaskState::Success => "OK   ",
                    TaskState::Skipped | TaskState::UpstreamFailed => "SKIP ",
                    _ => "FAIL ",
                };
                let tries = if *attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
                let why = message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                let text = match state {
                    TaskState::Skipped | TaskState::UpstreamFailed => format!("{word} {} [{}{why}]", who(run_id, task), state.name()),
                    _ => format!("{word} {} [{} in {}{tries}{why}]", who(run_id, task), state.name(), secs(elapsed)),
                };
                let extra = json!({"pipeline": pipeline, "run_id": run_id, "task": task, "state": state.name(), "attempts": attempts, "elapsed_s": elapsed.as_secs_f64(), "message": message});
                self.out.emit("info", "task_finished", &text, extra);
            }
            Event::Notice { level, message } => self.out.emit(level, "notice", message, json!({})),
            Event::RunFinished { pipeline, run_id, state, elapsed } => {
                let text = format!("Finished pipeline {pipeline}, run {run_id}, in {}: {state}", secs(elapsed));
                self.out.emit(
                    "info",
                    "run_finished",
                    &text,
                    json!({"pipeline": pipeline, "run_id": run_id, "state": state, "elapsed_s": elapsed.as_secs_f64()}),
                );
            }
        }
    }
}

fn show_interval(i: &DataInterval, tz: Tz) -> String {
    let f = |t: chrono::DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    if i.start == i.end { format!("{} {tz}", f(i.start)) } else { format!("{} to {} {tz}", f(i.start), f(i.end)) }
}

/// `KEY=VALUE` pairs, values read as YAML scalars (`true`, `3`, `eu`).
fn parse_params(pairs: &[String]) -> Result<Map<String, J>, Error> {
    let mut m = Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("--param {pair}: write KEY=VALUE"))?;
        let value = weir_project::yaml::parse(Path::new("--param"), v)?.map(|n| n.to_json()).unwrap_or(J::Null);
        m.insert(k.trim().to_string(), value);
    }
    Ok(m)
}

fn list(ws: &Workspace, pipelines: &Pipelines, out: &Output) -> Result<u8, Error> {
    if pipelines.by_name.is_empty() {
        out.info("No pipelines: write them in pipelines/*.yml (see docs/pipelines.md).");
        return Ok(0);
    }
    let store = ws.store()?;
    let now = Utc::now();
    for (name, p) in &pipelines.by_name {
        let schedule = match &p.schedule {
            Some(s) => {
                let next = s.next_after(now).map(|t| t.with_timezone(&p.tz).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
                format!("{} ({}), next {next}", s.expr, p.tz)
            }
            None => "manual".into(),
        };
        let last = store.pipeline_runs(Some(name), 1)?.into_iter().next();
        let last = last.map(|r| format!("last run {} {}", r.run_id, r.state)).unwrap_or_else(|| "never run".into());
        let text = format!("{name}: {} tasks, {schedule}, {last}", p.tasks.len());
        out.emit(
            "info",
            "pipeline",
            &text,
            json!({"pipeline": name, "tasks": p.tasks.len(), "schedule": p.schedule.as_ref().map(|s| s.expr.clone())}),
        );
    }
    Ok(0)
}

fn runs(ws: &Workspace, pipelines: &Pipelines, name: Option<&str>, limit: usize, out: &Output) -> Result<u8, Error> {
    if let Some(n) = name {
        pipelines.get(n)?;
    }
    let store = ws.store()?;
    let runs = store.pipeline_runs(name, limit)?;
    if runs.is_empty() {
        out.info("No runs recorded yet.");
    }
    for r in runs {
        let tz = pipelines.by_name.get(&r.pipeline).map(|p| p.tz).unwrap_or(Tz::UTC);
        let interval = match (r.interval_start, r.interval_end) {
            (Some(s), Some(e)) => show_interval(&DataInterval { start: s, end: e }, tz),
            _ => String::new(),
        };
        let took = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => format!(" in {:.2}s", (f - s).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        let why = r.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
        println!("{} {} {}: {}{took}{why}  [{interval}]", r.pipeline, r.run_type, r.run_id, r.state);
        for t in store.task_instances(&r.pipeline, &r.run_id)? {
            let why = t.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            println!("    {} {} (attempts: {}){why}", t.task, t.state, t.try_number);
        }
        for a in store.alerts(&r.pipeline, &r.run_id)? {
            let task = a.task.as_deref().map(|t| format!(" of {t}")).unwrap_or_default();
            let why = a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            println!("    alert {}{task} to {}: {} after {} attempt(s){why}", a.event, a.channel, a.status, a.attempts);
        }
    }
    Ok(0)
}

fn logs(ws: &Workspace, name: &str, run_id: &str, task: &str, attempt: Option<u32>) -> Result<u8, Error> {
    let store = ws.store()?;
    let attempts = store.task_attempts(name, run_id, task)?;
    let chosen = match attempt {
        Some(n) => attempts.iter().find(|a| a.attempt == n),
        None => attempts.last(),
    }
    .ok_or_else(|| {
        format!("no attempt{} of task '{task}' in run {run_id} of {name} is recorded", attempt.map(|n| format!(" {n}")).unwrap_or_default())
    })?;
    let text =
        chosen.log_path.as_deref().and_then(|p| std::fs::read_to_string(p).ok()).or_else(|| chosen.log_tail.clone()).unwrap_or_default();
    print!("{text}");
    Ok(0)
}
