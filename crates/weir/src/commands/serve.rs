//! `weir serve`: the scheduler, the REST API and the project's stream jobs in one process,
//! until Ctrl-C or SIGTERM (the first stops claiming runs and waits for those running, and
//! stops the stream jobs, each with a last write and checkpoint; a second cancels the runs).

use std::sync::Arc;

use tokio::sync::watch;
use weir_graph::streams::read_topics;
use weir_log::Log;
use weir_orchestrate::{Pipelines, Scheduler, WorkerHandle};
use weir_server::{AppState, Assets, Cdc, Ended, Events, ServerConfig, ServerError, Streams, Supervisor, Work};

use crate::cli::Global;
use crate::commands::pipeline::{executor, runtime};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, bind: Option<&str>, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("serve", false, false))?;
    let root = ws.manifest.project.root.clone();
    let pipelines = Pipelines::load(&root.join("pipelines"))?;
    let mut config = ServerConfig::for_project(&root)?;
    if let Some(b) = bind {
        config.bind = b.to_string();
    }
    let store = ws.store()?;
    runtime()?.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&config.bind).await.map_err(|source| ServerError::Bind { bind: config.bind.clone(), source })?;
        let addr = listener.local_addr()?;
        let worker = WorkerHandle::register(store.clone(), "scheduler")?;
        let exec = executor(g, &ws, pipelines, out, true, &worker)?;
        let scheduler = Scheduler::new(exec.clone(), worker)?;
        out.info(format!(
            "Weir serving the web UI at http://{addr}/ui/ and the API at /api/v1 (OpenAPI at /api/v1/openapi.json); scheduler {} over {} pipeline(s); store {}",
            scheduler.worker_id(),
            exec.pipelines().by_name.len(),
            store.description()
        ));
        if config.token.is_none() {
            out.warn(
                "no API token is configured ($WEIR_API_TOKEN or server.token in weir.yml): the API answers only /health and /openapi.json",
            );
        }
        let topics = read_topics(&root)?;
        let events = Arc::new(Events { logs: weir_graph::logs::project_logs(&root, &topics)?, topics });
        let jobs = super::stream::jobs(&ws, &root)?;
        let supervisor = if jobs.is_empty() {
            None
        } else {
            let enabled = jobs.iter().filter(|r| r.job.config.enabled).count();
            out.info(format!("Running {enabled} of {} stream job(s); GET /api/v1/streams shows them", jobs.len()));
            let wh = super::stream::warehouse(&ws)?;
            let mut work = vec![];
            for r in &jobs {
                work.push(stream_work(r.clone(), events.logs.for_topics(&r.topic_names())?, wh.clone()));
            }
            Some(Supervisor::start("stream", work))
        };
        let sources = super::cdc::sources(&ws)?;
        let followers = if sources.is_empty() {
            None
        } else {
            out.info(format!("Following {} cdc source(s) into their mirrors", sources.len()));
            let wh = super::stream::warehouse(&ws)?;
            Some(Supervisor::start("cdc", sources.iter().cloned().map(|s| super::cdc::work(s, wh.clone(), out.clone())).collect()))
        };
        let cdc = Arc::new(Cdc { sources, warehouse: super::stream::warehouse(&ws)? });
        let streams = Arc::new(Streams { jobs, states: supervisor.as_ref().map(Supervisor::states).unwrap_or_default() });
        tokio::spawn(apply_retention(events.clone(), out.clone()));
        let state = AppState {
            exec,
            config: Arc::new(config),
            wake: scheduler.waker(),
            worker_id: scheduler.worker_id().to_string(),
            events: Some(events),
            streams: Some(streams),
            cdc: Some(cdc),
            assets: Some(Arc::new(Assets { session: ws.session(out, &Default::default())?, graph: ws.graph.clone() })),
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            // Each signal flips the channel: the first stops, the second cancels.
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                let _ = stop.send(true);
            }
        });
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(weir_server::serve(listener, state, async move {
            let _ = server_stop.wait_for(|s| *s).await;
        }));
        scheduler.run(stopped).await?;
        for s in [supervisor, followers].into_iter().flatten() {
            tokio::task::spawn_blocking(move || s.stop()).await.map_err(|e| e.to_string())?;
        }
        server.await.map_err(|e| e.to_string())?;
        Ok::<u8, Error>(0)
    })
}

/// A stream job as supervised work: run until stopped; a job another process runs is left
/// to it.
fn stream_work(run: weir_stream::job::JobRun, log: Arc<dyn weir_log::Log>, wh: Arc<dyn weir_warehouse::Warehouse>) -> Work {
    Work {
        name: run.job.name.clone(),
        enabled: run.job.config.enabled,
        run: Box::new(move |stop| {
            let control = weir_stream::job::Control { stop: stop.clone(), drain: false };
            let outcome = weir_stream::job::run(&run, log.as_ref(), wh.clone(), &control, &mut |_| {});
            // Whatever it ended in, its connections are closed: other processes may have the
            // database (a DuckDB file) while it waits.
            wh.release();
            match outcome {
                Err(weir_stream::StreamError::Busy { pid, .. }) => Ended::Elsewhere(format!("process {pid} runs it")),
                Err(e) => Ended::Failed(e.to_string()),
                Ok(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => Ended::Stopped,
                Ok(_) => Ended::Failed("it stopped by itself".into()),
            }
        }),
    }
}

/// Deletes, once a minute, the old segments the topics' retention no longer keeps.
async fn apply_retention(events: Arc<Events>, out: Arc<Output>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let events = events.clone();
        let done =
            tokio::task::spawn_blocking(move || events.logs.embedded()?.apply_retention(chrono::Utc::now().timestamp_millis())).await;
        if let Ok(Err(e)) = done {
            out.warn(format!("event log retention: {e}"));
        }
    }
}
