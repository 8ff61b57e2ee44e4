//! `weir stream list|run|status|reset`: the project's stream jobs (`streams/*.sql`) over the
//! event log their topics are on (embedded or Kafka), writing to the target's warehouse.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_graph::streams::read_topics;
use weir_stream::StreamError;
use weir_stream::job::store::CheckpointStore;
use weir_stream::job::{self, Control, JobRun, Status};

use crate::cli::{Global, LogFormat, StreamCommand};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, cmd: &StreamCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("stream", false, false))?;
    let root = ws.manifest.project.root.clone();
    let runs = jobs(&ws, &root)?;
    let find = |name: &str| -> Result<&JobRun, Error> {
        runs.iter().find(|r| r.job.name == name).ok_or_else(|| {
            let names: Vec<&str> = runs.iter().map(|r| r.job.name.as_str()).collect();
            format!(
                "no stream job named '{name}' in streams/*.sql (jobs: {})",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            )
            .into()
        })
    };
    match cmd {
        StreamCommand::List => {
            list(&runs, out);
            Ok(0)
        }
        StreamCommand::Status { name } => {
            let chosen: Vec<&JobRun> = match name {
                Some(n) => vec![find(n)?],
                None => runs.iter().collect(),
            };
            status(&chosen, out);
            Ok(0)
        }
        StreamCommand::Reset { name } => {
            let r = find(name)?;
            let wh = warehouse(&ws)?;
            job::reset(r, wh.as_ref())?;
            reset_workers(&ws, &root, r)?;
            out.info(format!(
                "Reset '{name}': its checkpoints, {} and its positions are gone; it starts again from the first event",
                r.sink_text()
            ));
            Ok(0)
        }
        StreamCommand::Run { name, drain, reset, worker } => {
            let r = find(name)?;
            let wh = warehouse(&ws)?;
            if *reset {
                job::reset(r, wh.as_ref())?;
                reset_workers(&ws, &root, r)?;
            }
            // A worker's checkpoints are where every worker reaches them.
            let shared;
            let r = if *worker {
                shared = JobRun { checkpoints: Arc::new(StoreCheckpoints::of(&ws, r)?), ..r.clone() };
                &shared
            } else if workers_may_have_run(r) {
                // Workers' state is one checkpoint per partition: one process would start over.
                let stored = StoreCheckpoints::of(&ws, r)?;
                if stored.get("partition-0.json")?.is_some() {
                    return Err(format!(
                        "stream job '{name}' ran as workers, and its state is one checkpoint per partition in {}: \
                         run it with --worker, or `weir stream reset {name}` to start it over in one process",
                        stored.store.description()
                    )
                    .into());
                }
                r
            } else {
                r
            };
            let log = logs(&root)?.for_topics(&r.topic_names())?;
            let control = Control { drain: *drain, ..Control::default() };
            stop_on_signal(&control.stop);
            let live = std::io::stderr().is_terminal() && out.format == LogFormat::Text;
            let started = Instant::now();
            let mut last_line = Instant::now();
            let mut report = |s: &Status| {
                if live {
                    eprint!("\r\x1b[2K{}", line(r, s));
                    let _ = std::io::stderr().flush();
                } else if last_line.elapsed() >= Duration::from_secs(10) {
                    out.info(line(r, s));
                    last_line = Instant::now();
                }
            };
            out.info(format!("Running '{name}'{}: {} -> {}", if *worker { " as a worker" } else { "" }, r.topics_text(), r.sink_text()));
            let result = if *worker {
                job::workers::run_worker(r, log.as_ref(), wh, &control, &mut report)
            } else {
                job::run(r, log.as_ref(), wh, &control, &mut report)
            };
            if live {
                eprintln!();
            }
            let s = result?;
            match out.format {
                LogFormat::Json => println!("{}", s.to_json()),
                LogFormat::Text => out.info(format!("Stopped '{name}' after {:.1}s: {}", started.elapsed().as_secs_f64(), counts(&s))),
            }
            Ok(0)
        }
    }
}

/// Every job of the project (as the manifest read them), planned against its topics: a
/// mistake in any stops here.
pub(crate) fn jobs(ws: &Workspace, root: &Path) -> Result<Vec<JobRun>, Error> {
    let topics = read_topics(root)?;
    let m = &ws.manifest;
    let jobs = m.nodes.values().filter_map(|n| n.stream.as_deref());
    // Jobs over or into topics of the registry's formats read and register schemas in the
    // project's registry (the metadata store), opened only when one does.
    let registered = topics.iter().any(|t| t.format.schema_type().is_some());
    let registry = if registered { Some(weir_registry::Registry::new(ws.store()?)) } else { None };
    let mut runs = vec![];
    for j in jobs {
        let run = JobRun::in_project(m, j.clone(), &topics)?;
        runs.push(match &registry {
            Some(r) => run.with_registry(r.clone(), m.target.auto_register_schemas()),
            None => run,
        });
    }
    Ok(runs)
}

/// The project's event logs, as `streams/*.yml` and `weir.yml` place its topics.
pub(crate) fn logs(root: &Path) -> Result<weir_log::Logs, Error> {
    Ok(weir_graph::logs::project_logs(root, &read_topics(root)?)?)
}

pub(crate) fn warehouse(ws: &Workspace) -> Result<Arc<dyn weir_warehouse::Warehouse>, Error> {
    let t = &ws.manifest.target;
    Ok(Arc::from(weir_warehouse::open(&t.adapter_type, &t.fields, &std::env::current_dir()?)?))
}

fn list(runs: &[JobRun], out: &Output) {
    if out.format == LogFormat::Json {
        for r in runs {
            let s = Status::read(&r.dir);
            println!(
                "{}",
                json!({"name": r.job.name, "path": r.job.path, "topic": r.plan.topic, "joined_topic": r.joined.as_ref().map(|t| &t.name), "window": r.plan.window_text(),
                       "sink": r.sink_text(), "state": s.map(|s| s.state), "enabled": r.job.config.enabled})
            );
        }
        return;
    }
    if runs.is_empty() {
        out.info("No stream jobs: write one as streams/<name>.sql");
        return;
    }
    println!("{:<24} {:<16} {:<24} {:<28} state", "job", "topic", "window", "sink");
    for r in runs {
        let state = Status::read(&r.dir).map_or("never run".to_string(), |s| s.state);
        println!("{:<24} {:<16} {:<24} {:<28} {}", r.job.name, r.topics_text(), r.plan.window_text(), r.sink_text(), state);
    }
}

fn status(runs: &[&JobRun], out: &Output) {
    for r in runs {
        let Some(s) = Status::read(&r.dir) else {
            match out.format {
                LogFormat::Json => println!("{}", json!({"job": r.job.name, "state": "never run"})),
                LogFormat::Text => println!("{}: never run", r.job.name),
            }
            continue;
        };
        let state = if s.died(chrono::Utc::now().timestamp_millis()) { "died".into() } else { s.state.clone() };
        match out.format {
            LogFormat::Json => {
                let mut v = s.to_json();
                v["state"] = json!(state);
                println!("{v}");
            }
            LogFormat::Text => {
                println!("{} ({state}): {}", r.job.name, line(r, &s));
                println!("  events: {}", counts(&s));
                if !s.workers.is_empty() {
                    println!("  workers: {}", s.workers.join(", "));
                }
                for ((t, p), o) in &s.positions {
                    println!("  {t} partition {p}: offset {o}, lag {}", s.lag.get(&(t.clone(), *p)).copied().unwrap_or(0));
                }
                if let Some((p50, p99)) = s.latency_ms {
                    println!("  results committed {p50} ms (median), {p99} ms (p99) after the event that closed their window was appended");
                }
                if let Some(e) = &s.last_error {
                    println!("  last error: {e}");
                }
            }
        }
    }
}

fn counts(s: &Status) -> String {
    let c = &s.counts;
    format!("{} read = {} counted + {} late + {} rejected + {} filtered out", c.read, c.counted, c.late, c.rejected, c.filtered)
}

fn line(r: &JobRun, s: &Status) -> String {
    // A join holds events, not windows.
    let held = if r.plan.stream_join.is_some() { "events held" } else { "windows open" };
    let lag: u64 = s.lag.values().sum();
    let wm = s
        .watermark
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("none yet".into(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string());
    format!(
        "{} events, {:.0}/s, lag {lag}, watermark {wm}, {} {held}, {} late, {} rejected",
        s.counts.read, s.events_per_second, s.windows_held, s.counts.late, s.counts.rejected
    )
}

/// Ctrl-C or SIGTERM sets `stop`: a job stops after its batch, with a last write and
/// checkpoint; a cdc follower after its merge.
pub(crate) fn stop_on_signal(stop: &Arc<std::sync::atomic::AtomicBool>) {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        stop.store(true, Ordering::Relaxed);
    });
}

/// Whether workers may have run `run` (they need its topic on Kafka): only then is the
/// metadata store asked for their checkpoints.
fn workers_may_have_run(run: &JobRun) -> bool {
    run.topic.log == weir_log::Backend::Kafka
}

/// Forgets what workers kept of `run`: their checkpoints, and (a job they repartition) where
/// its consumer group stands in the source and the internal topic.
fn reset_workers(ws: &Workspace, root: &Path, run: &JobRun) -> Result<(), Error> {
    if !workers_may_have_run(run) {
        return Ok(());
    }
    StoreCheckpoints::of(ws, run)?.clear()?;
    if let Ok(Some(_)) = job::repartition::needed(run) {
        let log = logs(root)?.for_topics(&run.topic_names())?;
        job::repartition::rewind(run, log.as_ref())?;
    }
    Ok(())
}

/// A job's checkpoints in the metadata store, where every worker of the job reaches them (all
/// machines' on PostgreSQL, one machine's on SQLite).
struct StoreCheckpoints {
    store: Arc<weir_store::Store>,
    job: String,
}

impl std::fmt::Debug for StoreCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCheckpoints").field("store", &self.store.description()).field("job", &self.job).finish()
    }
}

impl StoreCheckpoints {
    fn of(ws: &Workspace, run: &JobRun) -> Result<StoreCheckpoints, Error> {
        Ok(StoreCheckpoints { store: ws.store()?, job: run.job.name.clone() })
    }
}

impl CheckpointStore for StoreCheckpoints {
    fn location(&self, name: &str) -> String {
        format!("{} (stream checkpoint '{name}' of job '{}')", self.store.description(), self.job)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError> {
        Ok(self.store.checkpoint_document(&self.job, name).map_err(|e| self.error(name, e))?.map(String::into_bytes))
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError> {
        let document = std::str::from_utf8(bytes).map_err(|e| StreamError::Job(format!("{}: {e}", self.location(name))))?;
        self.store.put_checkpoint_document(&self.job, name, document).map_err(|e| self.error(name, e))
    }

    fn promote(&self, from: &str, to: &str) -> Result<(), StreamError> {
        if self.store.promote_checkpoint_document(&self.job, from, to).map_err(|e| self.error(from, e))? {
            Ok(())
        } else {
            Err(StreamError::Job(format!("{}: gone before it became the checkpoint", self.location(from))))
        }
    }

    fn delete(&self, name: &str) -> Result<(), StreamError> {
        self.store.delete_checkpoint_documents(&self.job, Some(name)).map(drop).map_err(|e| self.error(name, e))
    }

    fn clear(&self) -> Result<(), StreamError> {
        self.store.delete_checkpoint_documents(&self.job, None).map(drop).map_err(|e| self.error("*", e))
    }
}

impl StoreCheckpoints {
    fn error(&self, name: &str, e: weir_store::StoreError) -> StreamError {
        StreamError::Job(format!("{}: {e}", self.location(name)))
    }
}
