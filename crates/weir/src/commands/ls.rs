//! `weir ls`: the project's resources, as selectors, names, paths or JSON; with
//! `--intervals`, what event time each microbatch model has processed and what is missing;
//! with `--lineage MODEL.COLUMN`, the columns that feed a column, back to the sources.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::json;
use weir_graph::{GraphError, ResourceType};
use weir_store::{Interval, merge, missing};
use weir_transform::compile::compile;
use weir_transform::microbatch::{MicrobatchConfig, batches};
use weir_transform::session::ExecHost;

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
/// theirs in turn where they are columns of other models or snapshots, down to sources, seeds
/// and loads; then the columns of the models built on it that it feeds (`->`), and theirs.
/// Each model's compiled SQL is read with [`weir_graph::lineage`]; `select *` is expanded with
/// the warehouse's columns of the tables built.
pub fn lineage(g: &Global, target: &str, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("list", false, false))?;
    let (model, column) = target
        .rsplit_once('.')
        .ok_or_else(|| GraphError::Selection(format!("--lineage {target}: expected MODEL.COLUMN (daily_revenue.revenue)")))?;
    let nodes: Vec<_> = ws.manifest.nodes.values().collect();
    let start = nodes
        .iter()
        .find(|n| n.name == model && matches!(n.resource_type, ResourceType::Model | ResourceType::Snapshot))
        .ok_or_else(|| GraphError::Selection(format!("--lineage {target}: no model or snapshot named '{model}'")))?;
    let session = ws.session(out, &BTreeSet::from([start.unique_id.clone()]))?;
    let host = ExecHost::new(session.clone(), Arc::new(Mutex::new(None)));
    // Every relation the project builds or reads, by its parts joined with `.` (lower case),
    // with and without the database.
    let mut by_relation: BTreeMap<String, &weir_graph::node::Node> = BTreeMap::new();
    for n in &nodes {
        if let Some(r) = &n.relation {
            by_relation.insert(format!("{}.{}.{}", r.database, r.schema, r.identifier).to_lowercase(), n);
            by_relation.insert(format!("{}.{}", r.schema, r.identifier).to_lowercase(), n);
        }
    }
    // Each table's columns, asked of the warehouse once however many models read it.
    let conn = RefCell::new(session.warehouse.connect()?);
    let known: RefCell<BTreeMap<String, Option<Vec<String>>>> = RefCell::default();
    let catalog = |name: &str| -> Option<Vec<String>> {
        let key = name.to_lowercase();
        if let Some(cols) = known.borrow().get(&key) {
            return cols.clone();
        }
        let rel = by_relation.get(&key).and_then(|n| n.relation.clone());
        let cols = rel
            .and_then(|rel| conn.borrow_mut().columns(&rel).ok())
            .filter(|cols| !cols.is_empty())
            .map(|cols| cols.into_iter().map(|c| c.name).collect::<Vec<String>>());
        known.borrow_mut().insert(key, cols.clone());
        cols
    };
    // Each model's columns, read once.
    let mut read: BTreeMap<String, Vec<weir_graph::lineage::ColumnLineage>> = BTreeMap::new();
    let mut columns_of = |n: &weir_graph::node::Node| -> Result<Vec<weir_graph::lineage::ColumnLineage>, Error> {
        if let Some(c) = read.get(&n.unique_id) {
            return Ok(c.clone());
        }
        let sql = compile(&host, n)?;
        let all = weir_graph::lineage::lineage(&sql, &catalog).map_err(|e| format!("{}: {e}", n.original_file_path))?;
        read.insert(n.unique_id.clone(), all.clone());
        Ok(all)
    };
    let is_model = |n: &weir_graph::node::Node| matches!(n.resource_type, ResourceType::Model | ResourceType::Snapshot);
    let mut lines = vec![];
    let mut seen = BTreeSet::new();
    let mut todo = vec![(0usize, start.unique_id.clone(), column.to_string())];
    while let Some((depth, id, col)) = todo.pop() {
        let Some(n) = ws.manifest.node(&id) else { continue };
        let all = columns_of(n)?;
        let Some(c) = all.iter().find(|c| c.name.eq_ignore_ascii_case(&col)) else {
            let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            return Err(format!("{}: no column '{col}' among its columns ({})", n.name, names.join(", ")).into());
        };
        lines.push(json!({"depth": depth, "node": n.unique_id, "column": c.name, "expression": c.expression, "opaque": c.opaque}));
        if !seen.insert((id.clone(), col.to_lowercase())) {
            continue;
        }
        // Depth first, in the order the sources sort.
        for s in c.sources.iter().rev() {
            match by_relation.get(&s.relation.to_lowercase()) {
                Some(up) if is_model(up) => todo.push((depth + 1, up.unique_id.clone(), s.column.clone())),
                up => lines.push(json!({
                    "depth": depth + 1, "node": up.map(|u| u.unique_id.clone()), "relation": s.relation, "column": s.column,
                })),
            }
        }
    }
    // Downstream: the columns of the models built on it that read it, and theirs in turn.
    let mut children: BTreeMap<&str, Vec<&weir_graph::node::Node>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| is_model(n)) {
        for d in &n.depends_on {
            children.entry(d.as_str()).or_default().push(n);
        }
    }
    let mut down = vec![(1usize, start.unique_id.clone(), column.to_lowercase())];
    let mut fed = BTreeSet::new();
    while let Some((depth, id, col)) = down.pop() {
        let Some(rel) = ws.manifest.node(&id).and_then(|n| n.relation.clone()) else { continue };
        let names = [format!("{}.{}.{}", rel.database, rel.schema, rel.identifier), format!("{}.{}", rel.schema, rel.identifier)];
        for child in children.get(id.as_str()).into_iter().flatten() {
            for c in columns_of(child)? {
                let reads = c
                    .sources
                    .iter()
                    .any(|s| s.column.eq_ignore_ascii_case(&col) && names.iter().any(|n| n.eq_ignore_ascii_case(&s.relation)));
                if reads && fed.insert((child.unique_id.clone(), c.name.to_lowercase())) {
                    lines.push(
                        json!({"depth": depth, "direction": "down", "node": child.unique_id, "column": c.name, "expression": c.expression}),
                    );
                    down.push((depth + 1, child.unique_id.clone(), c.name.to_lowercase()));
                }
            }
        }
    }
    for l in &lines {
        if out.format == LogFormat::Json {
            println!("{l}");
            continue;
        }
        let indent = "  ".repeat(l["depth"].as_u64().unwrap_or(0) as usize);
        let arrow = match (l["depth"].as_u64(), l.get("direction")) {
            (Some(0), _) => "",
            (_, Some(_)) => "-> ",
            _ => "<- ",
        };
        let node = l["node"].as_str().map(|id| id.split('.').skip(2).collect::<Vec<_>>().join(".")).unwrap_or_default();
        match l.get("expression") {
            Some(e) => {
                let note = l["opaque"].as_str().map(|o| format!("  (not traced further: {o})")).unwrap_or_default();
                println!("{indent}{arrow}{node}.{} = {}{note}", l["column"].as_str().unwrap_or(""), e.as_str().unwrap_or(""));
            }
            None => {
                let what = l["node"].as_str().map(|id| format!("  ({})", id.split('.').next().unwrap_or(""))).unwrap_or_default();
                println!("{indent}{arrow}{}.{}{what}", l["relation"].as_str().unwrap_or(""), l["column"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(0)
}
