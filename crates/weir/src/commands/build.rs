//! `weir build`, `run`, `test`, `seed`, `snapshot` and `backfill`: select, run in dependency
//! order, write artifacts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::json;
use weir_build::{Command, RunOptions, RunOutcome, artifacts};
use weir_graph::{Manifest, PriorState, ResourceType, Status};
use weir_store::NodeRun;
use weir_transform::{Backfill, ExecOptions, Session};

use crate::cli::{BackfillArgs, Global, RunFlags, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, f: &RunFlags, command: Command, out: &Arc<Output>) -> Result<u8, Error> {
    let which = match command {
        Command::Build => "build",
        Command::Run => "run",
        Command::Test => "test",
        Command::Seed => "seed",
        Command::Snapshot => "snapshot",
        Command::Check => "check",
        Command::Load => "load",
    };
    let ws = Workspace::load(g, out, new_flags(which, f.full_refresh, f.store_failures))?;
    let selected = ws.select(&f.selection)?;
    let session = ws.session(out, &selected)?;
    let ids = weir_build::runnable(&session, &selected, command);
    let time =
        |flag: &str, v: &Option<String>| -> Result<Option<NaiveDateTime>, Error> { v.as_deref().map(|s| parse_time(flag, s)).transpose() };
    let event_time = (time("--event-time-start", &f.event_time_start)?, time("--event-time-end", &f.event_time_end)?);
    let opts = RunOptions {
        fail_fast: f.fail_fast,
        command,
        exec: ExecOptions { threads: ws.threads, target_dir: ws.target_dir.clone(), event_time, backfill: None },
        load_progress: ws.load_progress(out, &ids),
    };
    let args = json!({"which": which, "select": f.selection.select, "exclude": f.selection.exclude, "full_refresh": f.full_refresh, "threads": ws.threads});
    let defer = f.selection.state.as_deref().filter(|_| f.defer);
    execute(&ws, &session, (&selected, &ids), defer, &opts, args, out)
}

/// `weir backfill`: the missing batches of a range of the selected microbatch models, the
/// other selected models as `weir run` builds them. With `--restate`, every batch of the
/// range, and everything downstream: microbatch models restate the same range, other
/// incremental models are rebuilt whole (they would not revisit rows already seen).
pub fn backfill(g: &Global, a: &BackfillArgs, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("backfill", false, false))?;
    let m = &ws.manifest;
    let (start, end) = (parse_time("--start", &a.start)?, parse_time("--end", &a.end)?);
    if end <= start {
        return Err(format!("--end {end} is not after --start {start}: the range is empty").into());
    }
    let mut selected = ws.select(&Selection { select: a.models.clone(), exclude: a.exclude.clone(), state: None })?;
    if a.restate {
        let downstream: Vec<String> = selected.iter().flat_map(|id| ws.graph.descendants(id, None)).collect();
        selected.extend(downstream);
    }
    let microbatch: Vec<&str> =
        selected.iter().filter_map(|id| m.node(id)).filter(|n| n.is_microbatch()).map(|n| n.name.as_str()).collect();
    if microbatch.is_empty() {
        return Err(format!(
            "nothing to backfill: none of the selected models ({}) is a microbatch model (incremental_strategy='microbatch')",
            a.models.join(" ")
        )
        .into());
    }
    let session = ws.session(out, &selected)?;
    let ids = weir_build::runnable(&session, &selected, Command::Run);
    if a.restate {
        for n in ids.iter().filter_map(|id| m.node(id)).filter(|n| n.materialized() == "incremental" && !n.is_microbatch()) {
            out.info(format!("{} is downstream of the restated range: rebuilding it whole", n.name));
            session.rebuild_fully(&n.unique_id);
        }
    }
    let backfill = Backfill { range: weir_store::Interval { start, end }, restate: a.restate };
    let opts = RunOptions {
        fail_fast: a.fail_fast,
        command: Command::Run,
        exec: ExecOptions { threads: ws.threads, target_dir: ws.target_dir.clone(), event_time: (None, None), backfill: Some(backfill) },
        load_progress: None,
    };
    out.info(format!(
        "Backfilling [{start}, {end}){} with the metadata store at {}",
        if a.restate { ", restated" } else { "" },
        session.store.as_ref().map(|s| s.description()).unwrap_or("?")
    ));
    let args = json!({"which": "backfill", "select": a.models, "exclude": a.exclude, "start": a.start, "end": a.end, "restate": a.restate, "threads": ws.threads});
    execute(&ws, &session, (&selected, &ids), None, &opts, args, out)
}

/// A date or timestamp given on the command line.
fn parse_time(flag: &str, s: &str) -> Result<NaiveDateTime, Error> {
    weir_transform::microbatch::parse_time(s)
        .ok_or_else(|| format!("{flag} '{s}' is not a date (2024-01-31) or timestamp (2024-01-31 10:00:00)").into())
}

/// Runs `ids` with the project's hooks around them, writes the artifacts, prints the summary.
pub(crate) fn execute(
    ws: &Workspace,
    session: &Arc<Session>,
    (selected, ids): (&BTreeSet<String>, &[String]),
    defer: Option<&std::path::Path>,
    opts: &RunOptions,
    args: serde_json::Value,
    out: &Arc<Output>,
) -> Result<u8, Error> {
    let m = &ws.manifest;
    out.info(format!("Running with weir {} (dbt {}-compatible)", env!("CARGO_PKG_VERSION"), weir_project::jinja::DBT_VERSION));
    out.info(format!("Found {}", found(m)));
    weir_graph::artifacts::write_manifest(m, &ws.target_dir, &|r| session.warehouse.render(r))?;
    if ids.is_empty() {
        out.info("Nothing to do: the selection matched no nodes this command runs.");
        return Ok(0);
    }
    out.info("");
    out.info(format!("Concurrency: {} thread{} (target='{}')", ws.threads, if ws.threads == 1 { "" } else { "s" }, m.target.name));
    out.info("");

    let prior = defer.map(PriorState::load).transpose()?;
    let outcome = weir_build::run(session, &ws.graph, (selected, ids), prior.as_ref(), opts, out.as_ref())?;
    artifacts::write_run_results(m, &outcome, args, &ws.target_dir)?;
    record_assets(ws, &outcome)?;
    if let Err(e) = record_history(ws, &outcome) {
        out.warn(format!("the build's outcome is not kept in the metadata store: {e}"));
    }
    let hooks = outcome.results.iter().filter(|r| r.unique_id.starts_with("operation.")).count();
    let mut summary = counts(session, ids);
    if hooks > 0 {
        summary = format!("{hooks} project hook{}, {summary}", if hooks == 1 { "" } else { "s" });
    }
    out.summary(&outcome, &summary);
    Ok(if outcome.failed() { 1 } else { 0 })
}

/// Inside a pipeline task (the executor sets `$WEIR_PIPELINE`, `$WEIR_RUN_ID` and
/// `$WEIR_TASK`), records that each model, seed, snapshot and load that succeeded updated its
/// asset, under its name and as `schema.table`, so that asset sensors of other pipelines see it.
fn record_assets(ws: &Workspace, outcome: &RunOutcome) -> Result<(), Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(pipeline), Some(run_id), Some(task)) = (var("WEIR_PIPELINE"), var("WEIR_RUN_ID"), var("WEIR_TASK")) else {
        return Ok(());
    };
    use ResourceType as R;
    let store = ws.store()?;
    for r in outcome.results.iter().filter(|r| r.status == Status::Success) {
        let Some(n) = ws.manifest.node(&r.unique_id) else { continue };
        if !matches!(n.resource_type, R::Model | R::Seed | R::Snapshot | R::Load) {
            continue;
        }
        store.record_asset_event(&n.name, &pipeline, &run_id, &task, r.completed_at)?;
        if let Some(rel) = &n.relation {
            store.record_asset_event(&format!("{}.{}", rel.schema, rel.identifier), &pipeline, &run_id, &task, r.completed_at)?;
        }
    }
    Ok(())
}

/// Keeps each node's outcome in the metadata store, where `weir serve` shows a node's builds.
pub(crate) fn record_history(ws: &Workspace, outcome: &RunOutcome) -> Result<(), Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let runs: Vec<NodeRun> = outcome
        .results
        .iter()
        .filter(|r| ws.manifest.node(&r.unique_id).is_some())
        .map(|r| NodeRun {
            unique_id: r.unique_id.clone(),
            invocation: ws.manifest.flags.invocation_id.clone(),
            status: r.status.as_str().to_string(),
            started_at: r.started_at,
            completed_at: r.completed_at,
            rows: r.rows_affected,
            message: r.message.clone(),
            pipeline: var("WEIR_PIPELINE"),
            run_id: var("WEIR_RUN_ID"),
        })
        .collect();
    if !runs.is_empty() {
        ws.store()?.record_node_runs(&runs)?;
    }
    Ok(())
}

/// "3 models, 1 seed, 8 data tests, 1 source".
pub fn found(m: &Manifest) -> String {
    let mut c: BTreeMap<&str, usize> = BTreeMap::new();
    for n in m.nodes.values() {
        let key = match n.resource_type {
            ResourceType::Test => "data test",
            ResourceType::Check => "check suite",
            other => other.as_str(),
        };
        *c.entry(key).or_default() += 1;
    }
    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{v} {k}{}", if *v == 1 { "" } else { "s" })).collect();
    if parts.is_empty() { "nothing".into() } else { parts.join(", ") }
}

fn counts(session: &Session, ids: &[String]) -> String {
    let mut c: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        if let Some(n) = session.manifest.node(id) {
            let key = match n.resource_type {
                ResourceType::Model => format!("{} model", n.materialized()),
                ResourceType::Test => "data test".to_string(),
                ResourceType::Check => "check suite".to_string(),
                other => other.as_str().to_string(),
            };
            *c.entry(key).or_default() += 1;
        }
    }
    c.iter().map(|(k, v)| format!("{v} {k}{}", if *v == 1 { "" } else { "s" })).collect::<Vec<_>>().join(", ")
}
