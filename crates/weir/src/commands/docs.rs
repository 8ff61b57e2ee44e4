//! `weir docs generate`: the manifest, a catalog read from the warehouse (every built
//! relation's columns and types), and a static index.html to browse them.

use std::sync::Arc;

use serde_json::{Value as J, json};
use weir_graph::artifacts;

use crate::cli::Global;
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn generate(g: &Global, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("generate", false, false))?;
    let session = ws.session(out, &Default::default())?;
    let m = &ws.manifest;
    artifacts::write_manifest(m, &ws.target_dir, &|r| session.warehouse.render(r))?;
    let mut conn = session.warehouse.connect()?;
    let (mut nodes, mut sources) = (serde_json::Map::new(), serde_json::Map::new());
    let mut missing = 0;
    for n in m.nodes.values().filter(|n| n.is_relational()) {
        let Some(rel) = &n.relation else { continue };
        let cols = conn.columns(rel)?;
        if cols.is_empty() {
            missing += 1;
            continue;
        }
        let columns: serde_json::Map<String, J> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), json!({"type": c.data_type, "index": i + 1, "name": c.name, "comment": null})))
            .collect();
        let entry = json!({
            "metadata": {"type": if n.materialized() == "view" { "VIEW" } else { "BASE TABLE" }, "schema": rel.schema, "name": rel.identifier, "database": rel.database, "comment": null, "owner": null},
            "columns": columns, "stats": {}, "unique_id": n.unique_id,
        });
        if n.resource_type == weir_graph::ResourceType::Source {
            sources.insert(n.unique_id.clone(), entry);
        } else {
            nodes.insert(n.unique_id.clone(), entry);
        }
    }
    let catalog = json!({
        "metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/catalog/v1.json", "dbt_version": weir_project::jinja::DBT_VERSION,
                     "generated_at": chrono::Utc::now().to_rfc3339(), "invocation_id": m.flags.invocation_id, "env": {}},
        "nodes": nodes, "sources": sources, "errors": null,
    });
    std::fs::write(ws.target_dir.join("catalog.json"), serde_json::to_string_pretty(&catalog)?)?;
    std::fs::write(ws.target_dir.join("index.html"), index_html(m, &catalog))?;
    out.info(format!(
        "Wrote manifest.json, catalog.json ({} relations{}) and index.html to {}",
        catalog["nodes"].as_object().map_or(0, |o| o.len()) + catalog["sources"].as_object().map_or(0, |o| o.len()),
        if missing > 0 { format!("; {missing} not built yet") } else { String::new() },
        ws.target_dir.display()
    ));
    Ok(0)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A self-contained page: every node with its description, columns and lineage.
fn index_html(m: &weir_graph::Manifest, catalog: &J) -> String {
    let mut body = String::new();
    for n in m.nodes.values().filter(|n| !matches!(n.resource_type, weir_graph::ResourceType::Test | weir_graph::ResourceType::Check)) {
        let cat = catalog["nodes"].get(&n.unique_id).or_else(|| catalog["sources"].get(&n.unique_id));
        body.push_str(&format!(
            "<section id=\"{id}\"><h2>{kind} <code>{name}</code></h2><p>{desc}</p>",
            id = esc(&n.unique_id),
            kind = n.resource_type.as_str(),
            name = esc(&n.name),
            desc = esc(&n.description)
        ));
        if let Some(r) = &n.relation {
            body.push_str(&format!("<p>Relation: <code>{}</code></p>", esc(&r.to_string())));
        }
        body.push_str("<table><tr><th>column</th><th>type</th><th>description</th></tr>");
        let mut names: Vec<String> = n.columns.iter().map(|c| c.name.clone()).collect();
        if let Some(cols) = cat.and_then(|c| c["columns"].as_object()) {
            for k in cols.keys() {
                if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                    names.push(k.clone());
                }
            }
        }
        for name in names {
            let ty = cat
                .and_then(|c| c["columns"].as_object())
                .and_then(|cols| cols.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)))
                .and_then(|(_, v)| v["type"].as_str())
                .unwrap_or("");
            let desc = n.columns.iter().find(|c| c.name == name).map(|c| c.description.clone()).unwrap_or_default();
            body.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&name), esc(ty), esc(&desc)));
        }
        body.push_str("</table>");
        if !n.depends_on.is_empty() {
            let links: Vec<String> = n.depends_on.iter().map(|d| format!("<a href=\"#{d}\">{d}</a>", d = esc(d))).collect();
            body.push_str(&format!("<p>Depends on: {}</p>", links.join(", ")));
        }
        body.push_str("</section>\n");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} — Weir docs</title><style>body{{font-family:sans-serif;max-width:60em;margin:auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}section{{border-bottom:1px solid #eee;padding-bottom:1em}}</style></head><body><h1>{name}</h1>\n{body}</body></html>\n",
        name = esc(m.project.name())
    )
}
