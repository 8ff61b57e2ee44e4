//! Weir's orchestrator: a pipeline is a DAG of tasks (`pipelines/*.yml`) that runs on a
//! schedule, for one data interval at a time, and triggers the heavy lifting (loads, model
//! builds, SQL in the warehouse, shell commands) rather than processing data itself.
//!
//! The pieces, in the order a run meets them: [`spec`] reads and validates the files (every
//! error names file:line:col); [`schedule`] turns a cron expression in a time zone into data
//! intervals; [`executor`] runs one pipeline run: tasks in parallel up to global, pipeline
//! and pool limits, trigger rules, retries with exponential backoff, timeouts that kill the
//! task's whole process group, sensors that hold no slot while they wait, and small JSON
//! values passed between tasks. Every state change is written to the metadata store first,
//! so a run can be inspected, and resumed, from there.

pub mod alert;
mod attempt;
mod config;
pub mod executor;
pub mod run_id;
pub mod schedule;
pub mod scheduler;
pub mod spec;
pub mod supervise;
mod template;
pub mod worker;

use weir_core::Location;

pub use executor::{Decision, Event, Executor, RunOutcome, RunRequest, Settings, TaskState, WeirCommand, decide};
pub use schedule::{DataInterval, Schedule};
pub use scheduler::Scheduler;
pub use spec::{Pipeline, Pipelines, Task, TaskKind, TriggerRule};
pub use worker::WorkerHandle;

/// Why a pipeline could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// A pipeline file says something wrong, at this place.
    #[error("{location}: {message}{}", snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default())]
    Invalid { location: Location, message: String, snippet: Option<String> },
    #[error(transparent)]
    Project(#[from] weir_project::ProjectError),
    #[error(transparent)]
    Store(#[from] weir_store::StoreError),
    /// A pipeline or run was asked for that does not exist, or cannot run as asked.
    #[error("{0}")]
    Request(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}
