//! `weir source freshness`, as dbt runs it: for each selected source table with a
//! `freshness` block, the newest `loaded_at_field` is compared with now, and the table is
//! `pass`, `warn` (older than `warn_after`) or `error` (older than `error_after`); results go
//! to `target/sources.json` in dbt's format (sources v3).
//!
//! A source table written by a Weir load needs no `loaded_at_field`: its rows carry
//! `_weir_loaded_at`, which is used instead.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value as J, json};
use weir_graph::Manifest;
use weir_graph::{Node, ResourceType};

use crate::error::TransformError;
use crate::session::Session;

/// A table's verdict, spelled as dbt spells it in `sources.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessStatus {
    Pass,
    Warn,
    Error,
    /// The query failed, or the criteria could not be read.
    RuntimeError,
}

impl FreshnessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FreshnessStatus::Pass => "pass",
            FreshnessStatus::Warn => "warn",
            FreshnessStatus::Error => "error",
            FreshnessStatus::RuntimeError => "runtime error",
        }
    }
}

/// `warn_after` / `error_after`: a count of minutes, hours or days.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub count: u64,
    pub period: String,
}

impl Threshold {
    pub fn seconds(&self) -> f64 {
        let unit = match self.period.as_str() {
            "minute" => 60.0,
            "hour" => 3600.0,
            _ => 86400.0,
        };
        self.count as f64 * unit
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}{}", self.count, self.period, if self.count == 1 { "" } else { "s" })
    }
}

/// What a source table is held to.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    pub warn_after: Option<Threshold>,
    pub error_after: Option<Threshold>,
    pub filter: Option<String>,
}

/// One table's measurement.
#[derive(Debug, Clone)]
pub struct FreshnessResult {
    pub unique_id: String,
    /// `source_name.table_name`.
    pub name: String,
    pub max_loaded_at: Option<NaiveDateTime>,
    pub snapshotted_at: DateTime<Utc>,
    pub age_secs: Option<f64>,
    pub status: FreshnessStatus,
    pub criteria: Criteria,
    /// The column or expression measured.
    pub loaded_at: String,
    pub error: Option<String>,
    pub execution_time: f64,
}

/// The selected sources that have a freshness block, in order.
pub fn freshness_sources<'m>(m: &'m Manifest, selected: &BTreeSet<String>) -> Vec<&'m Node> {
    selected
        .iter()
        .filter_map(|id| m.node(id))
        .filter(|n| n.resource_type == ResourceType::Source)
        .filter(|n| n.config.get("freshness").is_some_and(|f| !f.is_null()))
        .collect()
}

/// Measures one source table.
pub fn measure(session: &Session, n: &Node) -> FreshnessResult {
    let clock = Instant::now();
    let empty = Criteria { warn_after: None, error_after: None, filter: None };
    let mut r = FreshnessResult {
        unique_id: n.unique_id.clone(),
        name: n.source.as_ref().map(|(s, t)| format!("{s}.{t}")).unwrap_or_else(|| n.name.clone()),
        max_loaded_at: None,
        snapshotted_at: Utc::now(),
        age_secs: None,
        status: FreshnessStatus::RuntimeError,
        criteria: empty,
        loaded_at: String::new(),
        error: None,
        execution_time: 0.0,
    };
    match measure_inner(session, n, &mut r) {
        Ok(()) => {}
        Err(e) => {
            r.status = FreshnessStatus::RuntimeError;
            r.error = Some(e);
        }
    }
    r.execution_time = clock.elapsed().as_secs_f64();
    r
}

fn measure_inner(session: &Session, n: &Node, r: &mut FreshnessResult) -> Result<(), String> {
    let m = &session.manifest;
    let wh = session.warehouse.as_ref();
    r.criteria = criteria(n.config.get("freshness").unwrap_or(&J::Null)).map_err(|e| format!("{}: {e}", n.original_file_path))?;
    let written_by_load = n.depends_on.iter().filter_map(|d| m.node(d)).any(|d| d.resource_type == ResourceType::Load);
    r.loaded_at = match n.config.get("loaded_at_field").and_then(|v| v.as_str()) {
        Some(f) => f.to_string(),
        None if written_by_load => wh.quote("_weir_loaded_at"),
        None => {
            return Err(format!(
                "source {} has a freshness block but no loaded_at_field (name the column that holds each row's load time)",
                r.name
            ));
        }
    };
    let relation = n.relation.as_ref().ok_or_else(|| format!("source {} has no relation", r.name))?;
    let mut sql = format!("select cast(max({}) as varchar) from {}", r.loaded_at, wh.render(relation));
    if let Some(f) = &r.criteria.filter {
        sql.push_str(&format!(" where {f}"));
    }
    let mut conn = wh.connect().map_err(|e| e.to_string())?;
    let result = conn.query(&sql).map_err(|e| format!("{e}\n  in: {sql}"))?;
    r.snapshotted_at = Utc::now();
    let newest = result.scalar().filter(|d| !matches!(d, weir_core::Datum::Null)).map(|d| d.to_string());
    let Some(text) = newest else {
        // No rows: as stale as can be, as dbt treats it.
        r.status = judge(&r.criteria, f64::INFINITY);
        return Ok(());
    };
    let at = parse_time(&text).ok_or_else(|| format!("{} of {} is '{text}', not a timestamp", r.loaded_at, r.name))?;
    let age = (r.snapshotted_at.naive_utc() - at).num_milliseconds() as f64 / 1000.0;
    r.max_loaded_at = Some(at);
    r.age_secs = Some(age);
    r.status = judge(&r.criteria, age);
    Ok(())
}

fn judge(c: &Criteria, age: f64) -> FreshnessStatus {
    if c.error_after.as_ref().is_some_and(|t| age > t.seconds()) {
        FreshnessStatus::Error
    } else if c.warn_after.as_ref().is_some_and(|t| age > t.seconds()) {
        FreshnessStatus::Warn
    } else {
        FreshnessStatus::Pass
    }
}

/// Reads a `freshness` block: `{warn_after: {count: 12, period: hour}, error_after: ..., filter: ...}`.
pub fn criteria(v: &J) -> Result<Criteria, String> {
    let threshold = |key: &str| -> Result<Option<Threshold>, String> {
        match v.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(t) => {
                let count = match t.get("count") {
                    Some(J::Number(n)) => n.as_u64(),
                    Some(J::String(s)) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("freshness {key} needs a whole `count`"))?;
                let period = t.get("period").and_then(|p| p.as_str()).unwrap_or("");
                if !matches!(period, "minute" | "hour" | "day") {
                    return Err(format!("freshness {key} period '{period}' is not one of minute, hour, day"));
                }
                Ok(Some(Threshold { count, period: period.to_string() }))
            }
        }
    };
    let c = Criteria {
        warn_after: threshold("warn_after")?,
        error_after: threshold("error_after")?,
        filter: v.get("filter").and_then(|f| f.as_str()).map(str::to_string),
    };
    if c.warn_after.is_none() && c.error_after.is_none() {
        return Err("a freshness block needs warn_after or error_after".into());
    }
    Ok(c)
}

/// A timestamp as the engines print one (`2024-05-01 10:00:00.123`, with or without an
/// offset, or a bare date), in UTC.
fn parse_time(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim().replace('T', " ");
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(d) = DateTime::parse_from_str(&t, f) {
            return Some(d.naive_utc());
        }
    }
    NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
}

/// `target/sources.json` (or `path`), as dbt writes it.
pub fn write_sources_json(m: &Manifest, results: &[FreshnessResult], elapsed: f64, path: &Path) -> Result<(), TransformError> {
    let fmt = |t: &NaiveDateTime| t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let threshold = |t: &Option<Threshold>| match t {
        Some(t) => json!({"count": t.count, "period": t.period}),
        None => json!({"count": null, "period": null}),
    };
    let rows: Vec<J> = results
        .iter()
        .map(|r| {
            if r.status == FreshnessStatus::RuntimeError {
                return json!({"unique_id": r.unique_id, "error": r.error, "status": r.status.as_str()});
            }
            json!({
                "unique_id": r.unique_id,
                "max_loaded_at": r.max_loaded_at.as_ref().map(fmt),
                "snapshotted_at": r.snapshotted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "max_loaded_at_time_ago_in_s": r.age_secs,
                "status": r.status.as_str(),
                "criteria": {"warn_after": threshold(&r.criteria.warn_after), "error_after": threshold(&r.criteria.error_after), "filter": r.criteria.filter},
                "adapter_response": {},
                "timing": [],
                "thread_id": "Thread-1",
                "execution_time": r.execution_time,
            })
        })
        .collect();
    let doc = json!({
        "metadata": weir_graph::artifacts::metadata(m, "https://schemas.getdbt.com/dbt/sources/v3.json"),
        "results": rows,
        "elapsed_time": elapsed,
    });
    weir_graph::artifacts::write_json(path, &doc).map_err(TransformError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criteria_and_judges() {
        let c = criteria(&json!({"warn_after": {"count": 12, "period": "hour"}, "error_after": {"count": 1, "period": "day"}})).unwrap();
        assert_eq!(judge(&c, 3600.0), FreshnessStatus::Pass);
        assert_eq!(judge(&c, 13.0 * 3600.0), FreshnessStatus::Warn);
        assert_eq!(judge(&c, 25.0 * 3600.0), FreshnessStatus::Error);
        assert_eq!(judge(&c, f64::INFINITY), FreshnessStatus::Error);
        assert_eq!(c.error_after.as_ref().map(|t| t.to_string()).as_deref(), Some("1 day"));
        assert!(criteria(&json!({"warn_after": {"count": 1, "period": "fortnight"}})).unwrap_err().contains("fortnight"));
        assert!(criteria(&json!({"filter": "x"})).is_err());
    }

    #[test]
    fn reads_engine_timestamps() {
        let at = NaiveDate::from_ymd_opt(2024, 5, 1).and_then(|d| d.and_hms_opt(10, 0, 0)).unwrap();
        assert_eq!(parse_time("2024-05-01 10:00:00"), Some(at));
        assert_eq!(parse_time("2024-05-01 12:00:00+02"), Some(at));
        assert_eq!(parse_time("2024-05-01T10:00:00.000"), Some(at));
        assert_eq!(parse_time("2024-05-01"), at.date().and_hms_opt(0, 0, 0));
        assert_eq!(parse_time("yesterday"), None);
    }
}
