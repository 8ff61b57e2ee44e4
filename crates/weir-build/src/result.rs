//! What a run produced: one result per node, as `run_results.json` lists them.

use std::sync::Arc;

use weir_graph::Status;
use weir_transform::HookRun;

/// The outcome of one node.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub unique_id: String,
    pub status: Status,
    pub message: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub compile_done_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    pub execution_time: f64,
    pub rows_affected: Option<u64>,
    pub failures: Option<i64>,
    pub compiled_code: Option<String>,
    pub relation_name: Option<String>,
    pub thread_id: String,
    /// For a check node: every check's outcome.
    pub checks: Option<Arc<weir_quality::SuiteOutcome>>,
    /// For a load node: what it read, loaded and rejected.
    pub load: Option<Arc<weir_connect::LoadReport>>,
}

/// Everything a run produced.
pub struct RunOutcome {
    pub results: Vec<NodeResult>,
    pub elapsed: f64,
}

impl RunOutcome {
    pub fn count(&self, s: Status) -> usize {
        self.results.iter().filter(|r| r.status == s).count()
    }

    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| matches!(r.status, Status::Error | Status::Fail))
    }
}

impl NodeResult {
    /// A result with nothing run yet: `status` at `at`.
    pub(crate) fn blank(unique_id: String, status: Status, at: chrono::DateTime<chrono::Utc>, thread_id: &str) -> NodeResult {
        NodeResult {
            unique_id,
            status,
            message: None,
            started_at: at,
            compile_done_at: at,
            completed_at: at,
            execution_time: 0.0,
            rows_affected: None,
            failures: None,
            compiled_code: None,
            relation_name: None,
            thread_id: thread_id.to_string(),
            checks: None,
            load: None,
        }
    }
}

impl From<HookRun> for NodeResult {
    /// A project hook, as dbt lists it among a run's results (`operation.*`).
    fn from(h: HookRun) -> NodeResult {
        NodeResult {
            completed_at: h.completed_at,
            execution_time: h.execution_time,
            compiled_code: Some(h.sql),
            ..NodeResult::blank(h.unique_id, Status::Success, h.started_at, "main")
        }
    }
}
