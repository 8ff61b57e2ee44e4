//! `target/run_results.json`, with dbt's field names (run results v6) for what tools read:
//! `unique_id`, `status`, `timing`, `adapter_response`, ...; check nodes add what each check
//! measured.

use std::path::Path;

use serde_json::{Value as J, json};
use weir_graph::Manifest;
use weir_graph::artifacts::{metadata, write_json};

use crate::error::BuildError;
use crate::result::{NodeResult, RunOutcome};

fn result_json(r: &NodeResult) -> J {
    let ts = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut doc = json!({
        "status": r.status.as_str(),
        "timing": [
            {"name": "compile", "started_at": ts(&r.started_at), "completed_at": ts(&r.compile_done_at)},
            {"name": "execute", "started_at": ts(&r.compile_done_at), "completed_at": ts(&r.completed_at)},
        ],
        "thread_id": r.thread_id,
        "execution_time": r.execution_time,
        "adapter_response": match r.rows_affected {
            Some(n) => json!({"_message": format!("OK {n}"), "code": "OK", "rows_affected": n}),
            None => json!({}),
        },
        "message": r.message,
        "failures": r.failures,
        "unique_id": r.unique_id,
        "compiled": r.compiled_code.is_some(),
        "compiled_code": r.compiled_code,
        "relation_name": r.relation_name,
        "batch_results": null,
    });
    // Weir's own key: each check of a check node, with what it measured (dbt tools ignore it).
    if let (Some(suite), Some(o)) = (&r.checks, doc.as_object_mut()) {
        o.insert("checks".into(), J::Array(suite.outcomes.iter().map(check_json).collect()));
    }
    doc
}

/// One check's outcome as `run_results.json` and `weir check --json` show it.
pub fn check_json(o: &weir_quality::Outcome) -> J {
    json!({
        "check": o.check,
        "location": o.location.to_string(),
        "metric": o.metric,
        "status": o.verdict.as_str(),
        "value": o.value,
        "measured": o.shown,
        "threshold": o.threshold,
        "message": o.message,
        "samples": o.samples.as_ref().map(weir_quality::measure::samples_json),
    })
}

/// Writes `run_results.json` into the target folder.
pub fn write_run_results(m: &Manifest, outcome: &RunOutcome, args: J, target_dir: &Path) -> Result<(), BuildError> {
    let doc = json!({
        "metadata": metadata(m, "https://schemas.getdbt.com/dbt/run-results/v6.json"),
        "results": outcome.results.iter().map(result_json).collect::<Vec<_>>(),
        "elapsed_time": outcome.elapsed,
        "args": args,
    });
    Ok(write_json(&target_dir.join("run_results.json"), &doc)?)
}
