//! `weir check`: the data-quality checks of `checks/*.yml` alone, reported check by check
//! (value, threshold, failing rows), or `--history NAME`: what a check measured run after run.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use weir_build::{Command, NodeResult, Reporter, RunOptions, artifacts};
use weir_graph::Node;
use weir_quality::Verdict;
use weir_transform::ExecOptions;

use crate::cli::{CheckArgs, Global, LogFormat};
use crate::output::{Output, check_lines};
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, a: &CheckArgs, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("check", false, false))?;
    if let Some(name) = &a.history {
        return history(&ws, name, a, out);
    }
    let selected = ws.select(&a.selection)?;
    let session = ws.session(out, &selected)?;
    let ids = weir_build::runnable(&session, &selected, Command::Check);
    let m = &ws.manifest;
    if ids.is_empty() {
        out.info("No checks selected: write them in checks/*.yml (see docs/checks.md).");
        return Ok(0);
    }

    // Every column every check names is looked up before anything runs: a typo stops the
    // run with its file:line, not halfway through.
    let mut conn = session.warehouse.connect()?;
    let mut problems = vec![];
    for n in ids.iter().filter_map(|id| m.node(id)) {
        let (_, bound) = weir_build::bind_check(&session, n)?;
        if let Some(suite) = n.check.as_deref()
            && let Err(e) = weir_quality::validate(conn.as_mut(), suite, &bound)
        {
            problems.push(e.to_string());
        }
    }
    drop(conn);
    if !problems.is_empty() {
        return Err(format!("{}\nnothing was checked: fix the checks above first", problems.join("\n")).into());
    }

    let checks: usize = ids.iter().filter_map(|id| m.node(id)).filter_map(|n| n.check.as_ref()).map(|s| s.checks.len()).sum();
    if !a.json {
        out.info(format!(
            "Checking {} dataset{} ({checks} checks) on {} thread{}, recording to {}",
            ids.len(),
            plural(ids.len()),
            ws.threads,
            plural(ws.threads),
            session.store.as_ref().map(|s| s.description()).unwrap_or("no store")
        ));
    }
    let opts = RunOptions {
        fail_fast: a.fail_fast,
        command: Command::Check,
        exec: ExecOptions { threads: ws.threads, target_dir: ws.target_dir.clone(), ..Default::default() },
        load_progress: None,
    };
    let outcome = weir_build::execute(session.clone(), &ws.graph, &ids, &opts, &Quiet)?;
    let args = json!({"which": "check", "select": a.selection.select, "exclude": a.selection.exclude, "threads": ws.threads});
    artifacts::write_run_results(m, &outcome, args, &ws.target_dir)?;
    if let Err(e) = super::build::record_history(&ws, &outcome) {
        out.warn(format!("the checks' outcome is not kept in the metadata store: {e}"));
    }

    let mut tally: BTreeMap<Verdict, usize> = BTreeMap::new();
    for suite in outcome.results.iter().filter_map(|r| r.checks.as_ref()) {
        for o in &suite.outcomes {
            *tally.entry(o.verdict).or_default() += 1;
        }
    }
    let count = |v: Verdict| tally.get(&v).copied().unwrap_or(0);
    // Suites that could not run at all (skipped by --fail-fast) count as errors of the run.
    let not_run: Vec<&NodeResult> = outcome.results.iter().filter(|r| r.checks.is_none()).collect();
    if a.json {
        let results: Vec<_> = outcome
            .results
            .iter()
            .map(|r| {
                let suite = r.checks.as_ref();
                json!({
                    "unique_id": r.unique_id,
                    "dataset": m.node(&r.unique_id).map(|n| n.name.clone()),
                    "relation": r.relation_name,
                    "status": r.status.as_str(),
                    "message": if suite.is_none() { r.message.clone() } else { None },
                    "queries": suite.map(|s| s.queries),
                    "elapsed": r.execution_time,
                    "checks": suite.map(|s| s.outcomes.iter().map(artifacts::check_json).collect::<Vec<_>>()).unwrap_or_default(),
                })
            })
            .collect();
        let doc = json!({
            "results": results,
            "summary": {"pass": count(Verdict::Pass), "warn": count(Verdict::Warn), "fail": count(Verdict::Fail),
                        "error": count(Verdict::Error), "not_run": not_run.len(), "total": tally.values().sum::<usize>()},
            "elapsed": outcome.elapsed,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &outcome.results {
            let name = m.node(&r.unique_id).map(|n| n.name.clone()).unwrap_or_default();
            out.info("");
            match &r.checks {
                Some(s) => {
                    out.info(format!(
                        "{name} ({}): {} check{}, {} quer{} in {:.2}s",
                        s.relation,
                        s.outcomes.len(),
                        plural(s.outcomes.len()),
                        s.queries,
                        if s.queries == 1 { "y" } else { "ies" },
                        s.elapsed
                    ));
                    for line in check_lines(s, true) {
                        out.info(format!("  {line}"));
                    }
                }
                None => out.info(format!("{name}: {}", r.message.as_deref().unwrap_or("not run"))),
            }
        }
        out.info("");
        let line = format!(
            "Done in {:.2}s. PASS={} WARN={} FAIL={} ERROR={} TOTAL={}",
            outcome.elapsed,
            count(Verdict::Pass),
            count(Verdict::Warn),
            count(Verdict::Fail),
            count(Verdict::Error),
            tally.values().sum::<usize>()
        );
        out.info(line);
    }
    Ok(if count(Verdict::Fail) + count(Verdict::Error) + not_run.len() > 0 { 1 } else { 0 })
}

/// `weir check` prints its report when every suite is done, grouped by dataset.
struct Quiet;

impl Reporter for Quiet {
    fn started(&self, _: &Node, _: usize, _: usize) {}
    fn finished(&self, _: &Node, _: &NodeResult, _: usize, _: usize) {}
}

fn history(ws: &Workspace, name: &str, a: &CheckArgs, out: &Arc<Output>) -> Result<u8, Error> {
    let store = ws.store()?;
    let records = store.check_history(name, a.limit)?;
    if a.json || out.format == LogFormat::Json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                json!({"run_id": r.run_id, "measured_at": r.measured_at.to_rfc3339(), "dataset": r.dataset, "check": r.check,
                       "metric": r.metric, "value": r.value, "status": r.status, "threshold": r.threshold, "message": r.message,
                       "samples": r.samples.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"history": rows}))?);
        return Ok(0);
    }
    if records.is_empty() {
        out.info(format!("No recorded check matches '{name}' in {}: run `weir check` first.", store.description()));
        return Ok(0);
    }
    out.info(format!("History of checks matching '{name}' (the newest {}, from {})", records.len(), store.description()));
    let mut groups: Vec<((String, String), Vec<&weir_store::CheckRecord>)> = vec![];
    for r in &records {
        let key = (r.dataset.clone(), r.check.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    for ((dataset, check), list) in groups {
        out.info("");
        out.info(format!("{dataset}: {check}"));
        for r in &list {
            let value = r.value.map(weir_graph::checks::num).unwrap_or_else(|| "-".into());
            let why = r.message.as_deref().map(|m| format!("  {m}")).unwrap_or_default();
            out.info(format!(
                "  {}  {:<5} {value:>14}{why}",
                r.measured_at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                r.status
            ));
        }
        let values: Vec<f64> = list.iter().filter_map(|r| r.value).collect();
        if values.len() > 1 {
            out.info(format!("  trend {}", sparkline(&values)));
        }
    }
    Ok(0)
}

/// Values as a row of block characters, lowest to highest.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values.iter().map(|v| if hi > lo { BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize] } else { BARS[3] }).collect::<String>()
        + &format!("  (min {}, max {})", weir_graph::checks::num(lo), weir_graph::checks::num(hi))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
