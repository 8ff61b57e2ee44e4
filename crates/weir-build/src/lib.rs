//! Runs a selection of the asset graph: what `weir build`, `run`, `test`, `seed`, `snapshot`,
//! `check`, `load` and `backfill` share.
//!
//! [`run`] prepares the warehouse once ([`prepare`]: the relation cache, `--defer`, schemas,
//! the loads' bookkeeping tables), runs the projects' `on-run-start` hooks, walks the selected
//! nodes in dependency order on `--threads` workers ([`walk`]), hands each node to its
//! executor ([`handoff`]), and ends with the `on-run-end` hooks. What it returns is written as
//! `run_results.json` ([`artifacts`]).
//!
//! The graph (`weir-graph`) says what the nodes are; the executors (`weir-transform`,
//! `weir-connect`, `weir-quality`) say how one node runs. This crate says in what order, what
//! a failure skips, and when the run stops. A new node kind is a new executor crate and one
//! arm in [`handoff`].

pub mod artifacts;
pub mod compile;
pub mod error;
pub mod handoff;
pub mod prepare;
pub mod result;
pub mod walk;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use error::BuildError;
pub use handoff::bind_check;
pub use result::{NodeResult, RunOutcome};
pub use walk::{Command, Reporter, RunOptions, execute, runnable};
use weir_graph::{Graph, PriorState};
use weir_transform::Session;

/// Runs `ids` (the part of `selected` the command runs, see [`runnable`]) with the projects'
/// hooks around them. `defer` is the `--state` manifest under `--defer`.
pub fn run(
    session: &Arc<Session>,
    graph: &Graph,
    (selected, ids): (&BTreeSet<String>, &[String]),
    defer: Option<&PriorState>,
    opts: &RunOptions,
    reporter: &dyn Reporter,
) -> Result<RunOutcome, BuildError> {
    prepare::prepare(session, selected, ids, defer)?;
    let start_hooks = weir_transform::run_project_hooks(session, "on-run-start")?;
    let mut outcome = execute(session.clone(), graph, ids, opts, reporter)?;
    let end_hooks = weir_transform::run_project_hooks(session, "on-run-end")?;
    // Hooks appear in run_results.json as dbt's `operation.*` results.
    outcome.results.splice(0..0, start_hooks.into_iter().map(NodeResult::from));
    outcome.results.extend(end_hooks.into_iter().map(NodeResult::from));
    Ok(outcome)
}
