//! `weir serve`'s HTTP API: a JSON REST API over the metadata store, the scheduler, the
//! event log, the stream jobs and the asset graph, with its OpenAPI document at
//! `/api/v1/openapi.json`; and the web UI over that API at `/ui/`.
//!
//! Reads go straight to the store, so they show what every scheduler sharing it did.
//! Writes change the store and wake the local scheduler: triggering queues a run (a
//! scheduler claims it within a tick), clearing a task forgets its instance and queues its
//! run again, pausing stops new scheduled runs and holds queued ones. Nothing the API does
//! runs a task in the request: requests return at once whatever the pipelines do.
//!
//! Every endpoint but `health`, `openapi.json` and the UI's files needs
//! `Authorization: Bearer <token>` (the token from `$WEIR_API_TOKEN` or `weir.yml`), reads too
//! unless `open_reads` is set.
//! Errors are JSON `{"error": "..."}` with the status that says what went wrong.

mod api;
mod assets;
mod cdc;
mod config;
mod registry;
mod ui;

use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;
use weir_orchestrate::Executor;

pub use api::{ApiDoc, router};
pub use assets::Assets;
pub use cdc::Cdc;
pub use config::ServerConfig;
pub use weir_orchestrate::supervise::{Ended, Supervisor, Work};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {bind}: {source}")]
    Bind { bind: String, source: std::io::Error },
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The pipelines, the store and the settings (what a triggered run resolves against).
    pub exec: Executor,
    pub config: Arc<ServerConfig>,
    /// Wakes the scheduler after a write, so a triggered run starts within milliseconds.
    pub wake: Arc<Notify>,
    /// The scheduler's worker id, shown by `health`.
    pub worker_id: String,
    /// The project's event log, which `POST /api/v1/topics/{topic}/records` appends to.
    pub events: Option<Arc<Events>>,
    /// The project's stream jobs, which `GET /api/v1/streams` shows.
    pub streams: Option<Arc<Streams>>,
    /// The project's asset graph, which `GET /api/v1/assets` shows.
    pub assets: Option<Arc<Assets>>,
    /// The project's CDC sources, which `GET /api/v1/cdc` shows.
    pub cdc: Option<Arc<Cdc>>,
}

/// The project's stream jobs as `weir serve` runs them: each job's plan, what the supervisor
/// knows of it, and (read from `.weir/streams/<job>/status.json` on each request) its
/// progress, whoever runs it.
pub struct Streams {
    pub jobs: Vec<weir_stream::job::JobRun>,
    pub states: Arc<std::sync::Mutex<std::collections::BTreeMap<String, weir_orchestrate::supervise::Supervised>>>,
}

/// The event logs and the topics `streams/*.yml` declares: a declared topic is made on its
/// first event, with its partitions and retention, on the log it is declared on, and its
/// events are keyed by its key column.
pub struct Events {
    pub logs: weir_log::Logs,
    pub topics: Vec<weir_graph::streams::Topic>,
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the requests under way
/// finish.
///
/// Each connection must send a request's head within `read_timeout` of opening or of its
/// previous response, and must not pause longer than that inside a body (408), so clients
/// that stall or hold idle connections cannot pile them up.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let read_timeout = state.config.read_timeout;
    let app = tower_http::timeout::RequestBodyTimeout::new(router(state), read_timeout);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(read_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    wait_after_accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            // A connection that ends badly (a timeout, a reset) concerns only its client.
            let _ = conn.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// A failed `accept` that concerns one client is skipped; one that concerns the process
/// (too many open files) is retried after a pause, as there is nothing better to do.
async fn wait_after_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        eprintln!("weir serve: cannot accept a connection: {e}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
