//! `weir ls`: the project's resources, as selectors, names, paths or JSON.

use std::sync::Arc;

use weir_transform::{ResourceType, TransformError};

use crate::cli::{Global, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, s: &Selection, types: &[String], format: &str, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("list", false, false))?;
    let mut wanted = vec![];
    for t in types {
        wanted.push(ResourceType::parse(t).ok_or_else(|| TransformError::Selection(format!("unknown resource type '{t}'")))?);
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
                _ => n.fqn.join("."),
            },
        };
        println!("{line}");
    }
    Ok(0)
}
