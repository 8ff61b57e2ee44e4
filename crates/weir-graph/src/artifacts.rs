//! `target/manifest.json`, with dbt's field names (manifest v12) for what tools read:
//! `unique_id`, `depends_on`, `checksum`, `config`, ...; and where a node's SQL goes under
//! `target/`. `run_results.json` is the build's (`weir-build`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value as J, json};

use crate::error::GraphError;
use crate::node::{Node, ResourceType};
use crate::parse::Manifest;

/// The `metadata` block every artifact starts with (`dbt_schema_version` is `version`).
pub fn metadata(m: &Manifest, version: &str) -> J {
    json!({
        "dbt_schema_version": version,
        "dbt_version": weir_project::jinja::DBT_VERSION,
        "generated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "invocation_id": m.flags.invocation_id,
        "env": {},
        "project_name": m.project.name(),
        "adapter_type": m.target.adapter_type,
        "generator": format!("weir {}", env!("CARGO_PKG_VERSION")),
    })
}

fn checksum(n: &Node) -> J {
    let (name, sum) = checksum_of(n);
    json!({"name": name, "checksum": sum})
}

/// A node's checksum as dbt computes it, so a dbt manifest works as `--state`: sha256 of the
/// trimmed SQL (of a seed file's trimmed contents); generic tests have none.
pub fn checksum_of(n: &Node) -> (&'static str, String) {
    use sha2::{Digest, Sha256};
    if n.test.is_some() {
        return ("none", String::new());
    }
    let digest = if n.resource_type == ResourceType::Seed {
        let bytes = std::fs::read(&n.file).unwrap_or_default();
        Sha256::digest(bytes.trim_ascii())
    } else {
        Sha256::digest(n.raw_code.trim().as_bytes())
    };
    ("sha256", digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// A node as `manifest.json` (and the `graph` variable) describe it.
pub fn node_json(m: &Manifest, n: &Node, wh: &(dyn Fn(&weir_core::Relation) -> String + Sync)) -> J {
    let rel = n.relation.clone();
    let columns: serde_json::Map<String, J> = n
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                json!({"name": c.name, "description": c.description, "meta": c.meta, "data_type": c.data_type,
                       "constraints": c.constraints, "quote": if c.quote { J::Bool(true) } else { J::Null }, "tags": c.tags}),
            )
        })
        .collect();
    let mut j = json!({
        "database": rel.as_ref().map(|r| r.database.clone()),
        "schema": rel.as_ref().map(|r| r.schema.clone()).unwrap_or_else(|| m.target.schema()),
        "name": n.name,
        "resource_type": n.resource_type.as_str(),
        "package_name": n.package,
        "path": n.path,
        "original_file_path": n.original_file_path,
        "unique_id": n.unique_id,
        "fqn": n.fqn,
        "alias": rel.as_ref().map(|r| r.identifier.clone()).unwrap_or_else(|| n.name.clone()),
        "checksum": checksum(n),
        "config": n.config,
        "tags": n.tags(),
        "description": n.description,
        "columns": columns,
        "meta": n.config.get("meta").cloned().unwrap_or(json!({})),
        "docs": {"show": true, "node_color": null},
        "patch_path": n.patch_path,
        "relation_name": rel.as_ref().filter(|_| n.is_relational()).map(wh),
        "raw_code": n.raw_code,
        "language": "sql",
        "refs": n.refs.iter().map(|r| match r.name.split_once(".v") {
            Some((name, v)) => json!({"name": name, "package": r.package, "version": v}),
            None => json!({"name": r.name, "package": r.package, "version": null}),
        }).collect::<Vec<_>>(),
        "sources": n.sources.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
        "metrics": [],
        "depends_on": {"macros": [], "nodes": n.depends_on},
        "contract": {"enforced": n.config.get("contract").and_then(|c| c.get("enforced")).and_then(J::as_bool).unwrap_or(false), "alias_types": true, "checksum": null},
        "access": n.config.get("access").cloned().unwrap_or(json!("protected")),
        "group": n.config.get("group").cloned().unwrap_or(J::Null),
        "version": n.version,
        "latest_version": n.latest_version,
        "constraints": [],
        "primary_key": n.columns.iter().filter(|c| c.constraints.iter().any(|k| k.get("type").and_then(J::as_str) == Some("primary_key"))).map(|c| c.name.clone()).collect::<Vec<_>>(),
        "created_at": m.run_started_at.and_utc().timestamp() as f64,
    });
    if let Some(t) = &n.test {
        j["test_metadata"] = json!({"name": t.name, "kwargs": t.kwargs, "namespace": t.namespace});
        j["column_name"] = json!(t.column_name);
        j["attached_node"] = json!(t.attached_node);
    }
    if let Some((s, t)) = &n.source {
        let src = json!({"source_name": s, "identifier": rel.as_ref().map(|r| r.identifier.clone()), "source_description": "", "loader": "",
            "loaded_at_field": n.config.get("loaded_at_field"), "freshness": n.config.get("freshness"), "quoting": {}, "external": null, "source_meta": {}});
        if let (Some(obj), Some(extra)) = (j.as_object_mut(), src.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let _ = t;
    }
    j
}

/// Writes `manifest.json` into the target folder.
pub fn write_manifest(m: &Manifest, target_dir: &Path, render: &(dyn Fn(&weir_core::Relation) -> String + Sync)) -> Result<(), GraphError> {
    let mut parent_map: BTreeMap<&str, &[String]> = BTreeMap::new();
    let mut child_map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // Node documents are independent: build and serialize them on every core, then stitch
    // the pieces together (a 10,000-model manifest is most of `weir compile`'s time otherwise).
    // Check, load and stream nodes are Weir's own: dbt tools reading the manifest would not know them.
    let all: Vec<&Node> =
        m.nodes.values().filter(|n| !matches!(n.resource_type, ResourceType::Check | ResourceType::Load | ResourceType::Stream)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = all.len().div_ceil(threads).max(1);
    let docs: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let parts: Vec<_> = all
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|n| serde_json::to_vec(&node_json(m, n, render))).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        parts.into_iter().map(|p| p.join().unwrap_or_else(|_| Ok(vec![]))).collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| GraphError::Graph(format!("manifest: {e}")))?
    .into_iter()
    .flatten()
    .collect();
    if docs.len() != all.len() {
        return Err(GraphError::Graph("a manifest thread panicked".into()));
    }
    let (mut nodes, mut sources) = (Vec::with_capacity(docs.iter().map(Vec::len).sum::<usize>() + 64), Vec::new());
    for (n, doc) in all.iter().zip(&docs) {
        let out = if n.resource_type == ResourceType::Source { &mut sources } else { &mut nodes };
        out.push(if out.is_empty() { b'{' } else { b',' });
        out.extend(J::from(n.unique_id.as_str()).to_string().as_bytes());
        out.push(b':');
        out.extend(doc);
        parent_map.insert(&n.unique_id, &n.depends_on);
        child_map.entry(&n.unique_id).or_default();
        for d in &n.depends_on {
            child_map.entry(d).or_default().push(&n.unique_id);
        }
    }
    for out in [&mut nodes, &mut sources] {
        if out.is_empty() {
            out.push(b'{');
        }
        out.push(b'}');
    }
    let macros: serde_json::Map<String, J> = m
        .jinja
        .macros
        .all()
        .map(|d| {
            let id = format!("macro.{}.{}", d.package, d.name);
            (
                id.clone(),
                json!({"unique_id": id, "name": d.name, "package_name": d.package, "original_file_path": d.file.display().to_string(),
                               "arguments": d.arguments.iter().map(|a| json!({"name": a})).collect::<Vec<_>>(), "resource_type": "macro"}),
            )
        })
        .collect();
    let rest = json!({
        "macros": macros,
        "docs": {},
        "exposures": {},
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": {},
        "parent_map": parent_map,
        "child_map": child_map,
        "group_map": {},
        "saved_queries": {},
        "semantic_models": {},
        "unit_tests": {},
    });
    let json_err = |e: serde_json::Error| GraphError::Graph(format!("manifest: {e}"));
    let mut text = Vec::with_capacity(nodes.len() + sources.len() + 4096);
    text.extend(b"{\"metadata\":");
    text.extend(serde_json::to_vec(&metadata(m, "https://schemas.getdbt.com/dbt/manifest/v12.json")).map_err(json_err)?);
    text.extend(b",\"nodes\":");
    text.extend(nodes);
    text.extend(b",\"sources\":");
    text.extend(sources);
    // `rest` is an object: splice its members in after the first brace.
    let rest = serde_json::to_vec(&rest).map_err(json_err)?;
    text.push(b',');
    text.extend(&rest[1..]);
    let path = target_dir.join("manifest.json");
    std::fs::create_dir_all(target_dir).map_err(|e| GraphError::io(target_dir, e))?;
    std::fs::write(&path, text).map_err(|e| GraphError::io(&path, e))
}

/// Where a node's SQL goes under `target/<kind>/` (`compiled` or `run`), as dbt lays it out:
/// the node's file path, or a file per node under the YAML file that declares tests and YAML
/// snapshots.
pub fn node_sql_path(target_dir: &Path, kind: &str, n: &Node) -> std::path::PathBuf {
    let mut path = target_dir.join(kind).join(&n.package).join(&n.original_file_path);
    if n.test.is_some() || n.original_file_path.ends_with(".yml") || n.original_file_path.ends_with(".yaml") {
        path = path.join(format!("{}.sql", n.name));
    } else if n.resource_type == ResourceType::Seed {
        path.set_extension("sql");
    }
    path
}

/// Writes `text` unless the file already holds it. Rewriting an unchanged file costs a forced
/// flush on ext4 (its replace-by-truncate heuristic), which dominated recompiling big projects.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|md| md.len() == text.len() as u64) && std::fs::read(path).is_ok_and(|old| old == text.as_bytes())
    {
        return Ok(());
    }
    std::fs::write(path, text)
}

/// Writes an artifact as compact JSON, making its folder first.
pub fn write_json(path: &Path, doc: &J) -> Result<(), GraphError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GraphError::io(parent, e))?;
    }
    // Compact, as dbt writes its artifacts: a 10,000-model manifest is tens of megabytes.
    let text = serde_json::to_vec(doc).map_err(|e| GraphError::Graph(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| GraphError::io(path, e))
}
