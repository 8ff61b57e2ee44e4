//! `weir serve`'s HTTP API: a JSON REST API over the metadata store and the scheduler,
//! with its OpenAPI document at `/api/v1/openapi.json`.
//!
//! Reads go straight to the store, so they show what every scheduler sharing it did.
//! Writes change the store and wake the local scheduler: triggering queues a run (a
//! scheduler claims it within a tick), clearing a task forgets its instance and queues its
//! run again, pausing stops new scheduled runs and holds queued ones. Nothing the API does
//! runs a task in the request: requests return at once whatever the pipelines do.
//!
//! Every endpoint but `health` and `openapi.json` needs `Authorization: Bearer <token>`
//! (the token from `$WEIR_API_TOKEN` or `weir.yml`), reads too unless `open_reads` is set.
//! Errors are JSON `{"error": "..."}` with the status that says what went wrong.

mod api;
mod config;

use std::sync::Arc;

use tokio::sync::Notify;
use weir_orchestrate::Executor;

pub use api::{ApiDoc, router};
pub use config::ServerConfig;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {bind}: {source}")]
    Bind { bind: String, source: std::io::Error },
    #[error("the HTTP server stopped: {0}")]
    Serve(std::io::Error),
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
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
}
