//! `weir compile` and `weir parse`: render SQL into target/compiled, write the manifest.

use std::sync::{Arc, Mutex};

use weir_graph::{Node, ResourceType, artifacts};
use weir_transform::compile::compile;
use weir_transform::session::ExecHost;

use crate::cli::{Global, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn parse_only(g: &Global, out: &Arc<Output>) -> Result<u8, Error> {
    let started = std::time::Instant::now();
    let ws = Workspace::load(g, out, new_flags("parse", false, false))?;
    artifacts::write_manifest(&ws.manifest, &ws.target_dir, &|r| format!("\"{}\".\"{}\".\"{}\"", r.database, r.schema, r.identifier))?;
    out.info(format!(
        "Parsed {} in {:.3}s; wrote {}",
        super::build::found(&ws.manifest),
        started.elapsed().as_secs_f64(),
        ws.target_dir.join("manifest.json").display()
    ));
    Ok(0)
}

pub fn run(g: &Global, s: &Selection, inline: Option<&str>, out: &Arc<Output>) -> Result<u8, Error> {
    let started = std::time::Instant::now();
    let ws = Workspace::load(g, out, new_flags("compile", false, false))?;
    let session = ws.session(out, &Default::default())?;
    let host = ExecHost::new(session.clone(), Arc::new(Mutex::new(None)));
    if let Some(sql) = inline {
        let node = inline_node(&ws, sql);
        println!("{}", compile(&host, &node)?);
        return Ok(0);
    }
    let selected = ws.select(s)?;
    let m = &ws.manifest;
    let (compiled, last) = weir_build::compile::compile(&session, &selected, &ws.target_dir)?;
    artifacts::write_manifest(m, &ws.target_dir, &|r| session.warehouse.render(r))?;
    if compiled == 1 && !s.select.is_empty() {
        println!("{}", last.unwrap_or_default());
    }
    out.info(format!(
        "Compiled {compiled} nodes in {:.3}s into {}",
        started.elapsed().as_secs_f64(),
        ws.target_dir.join("compiled").display()
    ));
    // The process ends here: freeing a big project's manifest node by node is wasted time.
    std::mem::forget(session);
    std::mem::forget(ws);
    Ok(0)
}

/// A throwaway analysis node for `--inline` SQL, rendered in the root project's context.
pub fn inline_node(ws: &Workspace, sql: &str) -> Node {
    let m = &ws.manifest;
    Node {
        unique_id: format!("sql_operation.{}.inline_query", m.project.name()),
        resource_type: ResourceType::Analysis,
        package: m.project.name().to_string(),
        name: "inline_query".into(),
        fqn: vec![m.project.name().to_string(), "inline_query".into()],
        path: "inline_query.sql".into(),
        original_file_path: "inline_query.sql".into(),
        file: std::path::PathBuf::from("<inline>"),
        raw_code: sql.to_string(),
        config: Default::default(),
        description: String::new(),
        columns: vec![],
        refs: vec![],
        sources: vec![],
        depends_on: vec![],
        relation: None,
        test: None,
        patch_path: None,
        source: None,
        check: None,
        load: None,
        stream: None,
        unit: None,
        version: None,
        latest_version: None,
    }
}
