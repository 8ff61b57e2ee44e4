//! `weir ls`: the project's resources, as selectors, names, paths or JSON; with
//! `--intervals`, what event time each microbatch model has processed and what is missing;
//! with `--lineage MODEL.COLUMN`, the columns that feed a column, back to the sources.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use weir_graph::{GraphError, ResourceType};
use weir_store::{Interval, merge, missing};
use weir_transform::lineage::{Direction, ProjectLineage};
use weir_transform::microbatch::{MicrobatchConfig, batches};

use crate::cli::{Global, LogFormat, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, s: &Selection, types: &[String], format: &str, intervals: bool, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("list", false, false))?;
    if intervals {
        return list_intervals(&ws, &ws.select(s)?, format == "json", out);
    }
    let mut wanted = vec![];
    for t in types {
        wanted.push(ResourceType::parse(t).ok_or_else(|| GraphError::Selection(format!("unknown resource type '{t}'")))?);
    }
    let selected = ws.select(s)?;
    for id in &selected {
        let Some(n) = ws.manifest.node(id) else { continue };
        if !wanted.is_empty() && !wanted.contains(&n.resource_type) {
            continue;
        }
        let line = match format {
            "name" => n.name.clone(),
            "path" => n.original_file_path.clone(),
            "json" => serde_json::json!({
                "name": n.name, "resource_type": n.resource_type.as_str(), "package_name": n.package,
                "original_file_path": n.original_file_path, "unique_id": n.unique_id, "alias": n.relation.as_ref().map(|r| r.identifier.clone()),
                "config": n.config, "tags": n.tags(), "depends_on": {"nodes": n.depends_on},
            })
            .to_string(),
            _ => match n.resource_type {
                ResourceType::Source => format!("source:{}", n.fqn.join(".")),
                ResourceType::Load => format!("load:{}.{}", n.package, n.name),
                ResourceType::Stream => format!("stream:{}.{}", n.package, n.name),
                _ => n.fqn.join("."),
            },
        };
        println!("{line}");
    }
    Ok(0)
}

/// For each selected microbatch model: the processed event time (merged into ranges), and the
/// batches missing between `begin` (or the first processed batch) and now.
fn list_intervals(ws: &Workspace, selected: &BTreeSet<String>, as_json: bool, out: &Arc<Output>) -> Result<u8, Error> {
    let models: Vec<_> = selected.iter().filter_map(|id| ws.manifest.node(id)).filter(|n| n.is_microbatch()).collect();
    if models.is_empty() {
        out.info("No microbatch models selected: only they track processed intervals.");
        return Ok(0);
    }
    let session = ws.session(out, selected)?;
    let Some(store) = &session.store else { return Err("the metadata store is not open".into()) };
    let now = chrono::Utc::now().naive_utc();
    for n in models {
        let Some(cfg) = MicrobatchConfig::of(n)? else { continue };
        let Some(rel) = &n.relation else { continue };
        let key = session.warehouse.render(rel);
        let records = store.intervals(&key)?;
        let done: Vec<Interval> = records.iter().map(|p| p.interval).collect();
        let from = cfg.begin.or_else(|| done.first().map(|i| i.start));
        let expected = from.map(|f| batches(cfg.size, f, now)).unwrap_or_default();
        let gaps = missing(&expected, &done);
        let count = |r: &Interval| batches(cfg.size, r.start, r.end).len();
        let ranges = |v: &[Interval]| -> Vec<serde_json::Value> {
            merge(v).iter().map(|r| json!({"start": r.start.to_string(), "end": r.end.to_string(), "batches": count(r)})).collect()
        };
        let last = records.iter().max_by_key(|p| p.processed_at);
        if as_json {
            let line = json!({
                "unique_id": n.unique_id, "name": n.name, "relation": key,
                "batch_size": format!("{:?}", cfg.size).to_lowercase(), "begin": cfg.begin.map(|b| b.to_string()),
                "processed": ranges(&done), "missing": ranges(&gaps),
                "last_run": last.map(|p| json!({"run_id": p.run_id, "at": p.processed_at.to_rfc3339()})),
            });
            println!("{line}");
            continue;
        }
        let begin = cfg.begin.map(|b| format!(", begin {b}")).unwrap_or_default();
        println!("{} ({}{begin})", n.name, format!("{:?}", cfg.size).to_lowercase());
        for (label, v) in [("processed", &done), ("missing", &gaps)] {
            let merged = merge(v);
            if merged.is_empty() {
                println!("  {label:<9}  none");
            }
            for r in merged {
                let k = count(&r);
                println!("  {label:<9}  {} .. {}  ({k} batch{})", r.start, r.end, if k == 1 { "" } else { "es" });
            }
        }
        if let Some(p) = last {
            println!("  last run   {} at {}", p.run_id, p.processed_at.format("%Y-%m-%d %H:%M:%S UTC"));
        }
    }
    Ok(0)
}

/// Prints what feeds `target` (`model.column`): its expression, then each column it reads, and
/// theirs in turn where they are columns of other models, snapshots or stream jobs, down to
/// sources, seeds, loads and topics; then the columns of the models built on it that it feeds
/// (`->`), and theirs. A seed's, source's or load's column shows what feeds it and what it feeds.
/// Each model's compiled SQL is read with [`weir_graph::lineage`]; `select *` is expanded with
/// the warehouse's columns of the tables built.
pub fn lineage(g: &Global, target: &str, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("list", false, false))?;
    let (model, column) = target
        .rsplit_once('.')
        .ok_or_else(|| GraphError::Selection(format!("--lineage {target}: expected MODEL.COLUMN (daily_revenue.revenue)")))?;
    // A model, snapshot or stream job of that name, else a seed, source or load.
    let named = |traced: bool| {
        ws.manifest.nodes.values().find(|n| n.name == model && ProjectLineage::is_traced(n) == traced && n.relation.is_some())
    };
    let start = named(true).or_else(|| named(false)).ok_or_else(|| {
        GraphError::Selection(format!("--lineage {target}: no model, snapshot, stream job, seed, source or load named '{model}'"))
    })?;
    let session = ws.session(out, &BTreeSet::from([start.unique_id.clone()]))?;
    let steps = ProjectLineage::new(session).trace(&start.unique_id, column)?;
    for s in &steps {
        if out.format == LogFormat::Json {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
            continue;
        }
        let indent = "  ".repeat(s.depth);
        let arrow = match (s.depth, s.direction) {
            (0, _) => "",
            (_, Direction::Down) => "-> ",
            (_, Direction::Up) => "<- ",
        };
        let node = s.node.as_deref().map(|id| id.split('.').skip(2).collect::<Vec<_>>().join(".")).unwrap_or_default();
        match &s.expression {
            Some(e) => {
                let note = s.opaque.as_ref().map(|o| format!("  (not traced further: {o})")).unwrap_or_default();
                println!("{indent}{arrow}{node}.{} = {e}{note}", s.column);
            }
            None => {
                let what = s.node.as_deref().map(|id| format!("  ({})", id.split('.').next().unwrap_or(""))).unwrap_or_default();
                let note = s.opaque.as_ref().map(|o| format!("  ({o})")).unwrap_or_default();
                // A table's column is `table.column`; a file's, topic's or query's, `what: column`.
                let relation = s.relation.as_deref().unwrap_or("");
                let sep = if relation.contains(' ') { ": " } else { "." };
                println!("{indent}{arrow}{relation}{sep}{}{what}{note}", s.column);
            }
        }
    }
    Ok(0)
}
