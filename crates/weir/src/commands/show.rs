//! `weir show`: runs a model's compiled SQL (or inline SQL) with a limit and prints rows.

use std::sync::{Arc, Mutex};

use weir_graph::{GraphError, ResourceType};
use weir_transform::compile::compile;
use weir_transform::session::ExecHost;

use crate::cli::{Global, LogFormat, Selection};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, s: &Selection, inline: Option<&str>, limit: usize, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("show", false, false))?;
    let session = ws.session(out, &Default::default())?;
    let host = ExecHost::new(session.clone(), Arc::new(Mutex::new(None)));
    let (title, sql) = match inline {
        Some(sql) => ("inline query".to_string(), compile(&host, &super::compile::inline_node(&ws, sql))?),
        None => {
            let selected = ws.select(s)?;
            let nodes: Vec<_> = selected
                .iter()
                .filter_map(|id| ws.manifest.node(id))
                .filter(|n| {
                    matches!(n.resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Analysis | ResourceType::Snapshot)
                })
                .collect();
            let [n] = nodes.as_slice() else {
                return Err(GraphError::Selection(format!(
                    "`weir show` previews one node; the selection matched {} (use --select NAME or --inline SQL)",
                    nodes.len()
                ))
                .into());
            };
            let sql = if n.resource_type == ResourceType::Seed {
                format!("select * from {}", session.warehouse.render(n.relation.as_ref().ok_or("seed without relation")?))
            } else {
                compile(&host, n)?
            };
            (n.name.clone(), sql)
        }
    };
    let mut conn = session.warehouse.connect()?;
    let r = conn.query(&format!("select * from (\n{sql}\n) as weir_show limit {limit}"))?;
    match out.format {
        LogFormat::Json => println!("{}", serde_json::json!({"node": title, "columns": r.columns, "rows": r.rows})),
        LogFormat::Text => {
            println!("Previewing {title}:");
            println!("{}", r.to_grid());
        }
    }
    Ok(0)
}
