//! `weir load [NAME...]`: the extract-and-load jobs of `loads/*.yml`, or `--history NAME`:
//! a load's runs, with what each read, loaded and rejected.

use std::sync::Arc;

use serde_json::json;
use weir_build::{Command, RunOptions};
use weir_graph::ResourceType;
use weir_transform::ExecOptions;

use crate::cli::{Global, LoadArgs, LogFormat};
use crate::commands::build::execute;
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, a: &LoadArgs, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("load", a.full_refresh, false))?;
    if let Some(name) = &a.history {
        return history(&ws, name, a.limit, out);
    }
    let m = &ws.manifest;
    let loads: Vec<&weir_graph::Node> = m.nodes.values().filter(|n| n.resource_type == ResourceType::Load).collect();
    let selected = if a.names.is_empty() {
        ws.select(&a.selection)?
    } else {
        let mut ids = std::collections::BTreeSet::new();
        for name in &a.names {
            let Some(n) = loads.iter().find(|n| &n.name == name) else {
                let hint = weir_project::error::closest(name, loads.iter().map(|n| n.name.as_str()))
                    .map(|c| format!("; did you mean '{c}'?"))
                    .unwrap_or_default();
                let known: Vec<&str> = loads.iter().map(|n| n.name.as_str()).collect();
                return Err(format!(
                    "no load is named '{name}'{hint} (loads: {})",
                    if known.is_empty() { "none; write them in loads/*.yml".to_string() } else { known.join(", ") }
                )
                .into());
            };
            ids.insert(n.unique_id.clone());
        }
        ids
    };
    let session = ws.session(out, &selected)?;
    let ids = weir_build::runnable(&session, &selected, Command::Load);
    if ids.is_empty() {
        out.info("No loads selected: write them in loads/*.yml (see docs/loads.md).");
        return Ok(0);
    }
    let opts = RunOptions {
        fail_fast: a.fail_fast,
        command: Command::Load,
        exec: ExecOptions { threads: ws.threads, target_dir: ws.target_dir.clone(), ..Default::default() },
        load_progress: ws.load_progress(out, &ids),
    };
    let args = json!({"which": "load", "select": a.names, "full_refresh": a.full_refresh, "threads": ws.threads});
    execute(&ws, &session, (&selected, &ids), None, &opts, args, out)
}

fn history(ws: &Workspace, name: &str, limit: usize, out: &Arc<Output>) -> Result<u8, Error> {
    let store = ws.store()?;
    let runs = store.load_runs(name, limit)?;
    if out.format == LogFormat::Json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({"load_id": r.load_id, "load": r.load_name, "destination": r.destination, "status": r.status,
                       "started_at": r.started_at.to_rfc3339(), "finished_at": r.finished_at.map(|t| t.to_rfc3339()),
                       "rows_read": r.rows_read, "rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected,
                       "cursor": r.cursor, "message": r.message})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"history": rows}))?);
        return Ok(0);
    }
    if runs.is_empty() {
        out.info(format!("No recorded run of a load named '{name}' in {}: run `weir load {name}` first.", store.description()));
        return Ok(0);
    }
    out.info(format!("Runs of load '{name}' (the newest {}, from {})", runs.len(), store.description()));
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    out.info(format!("  {:<19}  {:<9} {:>10} {:>10} {:>9}  cursor / message", "started", "status", "read", "loaded", "rejected"));
    for r in &runs {
        let note = [r.cursor.clone(), r.message.clone()].into_iter().flatten().collect::<Vec<_>>().join("  ");
        out.info(format!(
            "  {}  {:<9} {:>10} {:>10} {:>9}  {note}",
            r.started_at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
            r.status,
            n(r.rows_read),
            n(r.rows_loaded),
            n(r.rows_rejected)
        ));
    }
    Ok(0)
}
