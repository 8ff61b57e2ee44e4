//! `weir source freshness`: dbt's source freshness, on the selected sources (all by default),
//! with the same statuses, exit code and `target/sources.json`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use weir_transform::freshness::{self, FreshnessResult, FreshnessStatus};

use crate::cli::{Global, LogFormat, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn freshness(g: &Global, selection: &Selection, output: Option<&Path>, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("source", false, false))?;
    let selected = ws.select(selection)?;
    let m = &ws.manifest;
    let sources = freshness::freshness_sources(m, &selected);
    if sources.is_empty() {
        out.info("No source with a freshness block selected: add `freshness:` and `loaded_at_field:` to a source (see docs/loads.md).");
        return Ok(0);
    }
    let session = ws.session(out, &Default::default())?;
    let started = Instant::now();
    let total = sources.len();
    out.info(format!("Checking the freshness of {total} source table{}", if total == 1 { "" } else { "s" }));
    let mut results = Vec::with_capacity(total);
    for (i, n) in sources.iter().enumerate() {
        let r = freshness::measure(&session, n);
        if out.format == LogFormat::Text {
            out.info(line(i + 1, total, &r));
            if let Some(e) = &r.error {
                for l in e.lines() {
                    out.info(format!("    {l}"));
                }
            }
        } else {
            out.info(serde_json::json!({"unique_id": r.unique_id, "status": r.status.as_str(), "max_loaded_at_time_ago_in_s": r.age_secs, "error": r.error}).to_string());
        }
        results.push(r);
    }
    let path = match output {
        Some(p) => p.to_path_buf(),
        None => ws.target_dir.join("sources.json"),
    };
    freshness::write_sources_json(m, &results, started.elapsed().as_secs_f64(), &path)?;
    let count = |s: FreshnessStatus| results.iter().filter(|r| r.status == s).count();
    let (pass, warn, error, runtime) =
        (count(FreshnessStatus::Pass), count(FreshnessStatus::Warn), count(FreshnessStatus::Error), count(FreshnessStatus::RuntimeError));
    out.info(format!("Done. PASS={pass} WARN={warn} ERROR={error} RUNTIME_ERROR={runtime}; results in {}", path.display()));
    Ok(u8::from(error + runtime > 0))
}

/// `2 of 3 WARN freshness of raw.orders: newest 2024-05-01 10:00:00, 13h 2m ago (warn after 12 hours) [WARN in 0.01s]`
fn line(i: usize, total: usize, r: &FreshnessResult) -> String {
    let status = match r.status {
        FreshnessStatus::Pass => "PASS",
        FreshnessStatus::Warn => "WARN",
        FreshnessStatus::Error => "ERROR STALE",
        FreshnessStatus::RuntimeError => "ERROR",
    };
    let detail = match (&r.max_loaded_at, r.age_secs) {
        (Some(at), Some(age)) => format!("newest {at}, {} ago", weir_core::duration::show_duration(age)),
        _ if r.status == FreshnessStatus::RuntimeError => "could not be measured".to_string(),
        _ => "no rows".to_string(),
    };
    let mut limits = vec![];
    if let Some(t) = &r.criteria.warn_after {
        limits.push(format!("warn after {t}"));
    }
    if let Some(t) = &r.criteria.error_after {
        limits.push(format!("error after {t}"));
    }
    let limits = if limits.is_empty() { String::new() } else { format!(" ({})", limits.join(", ")) };
    format!("{i} of {total} {status} freshness of {}: {detail}{limits} [{status} in {:.2}s]", r.name, r.execution_time)
}
