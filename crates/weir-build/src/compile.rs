//! `weir compile` of a selection: every node that has SQL rendered into `target/compiled/`,
//! as its executor renders it when it runs.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use weir_graph::artifacts::{node_sql_path, write_if_changed};
use weir_graph::{Node, ResourceType};
use weir_transform::session::ExecHost;
use weir_transform::{Session, TransformError};

use crate::error::BuildError;

/// Compiles the nodes of `selected` that have SQL into `target_dir/compiled/`; returns how
/// many, and the last one's SQL (what `weir compile -s one_model` prints).
pub fn compile(session: &Arc<Session>, selected: &BTreeSet<String>, target_dir: &Path) -> Result<(usize, Option<String>), BuildError> {
    let m = &session.manifest;
    let nodes: Vec<&Node> = selected
        .iter()
        .filter_map(|id| m.node(id))
        .filter(|n| !matches!(n.resource_type, ResourceType::Source | ResourceType::Seed | ResourceType::Check))
        .collect();
    // Nodes render independently: split them over the machine's cores, each thread with its
    // own (lazily opened) connection for introspective macros, writing its own files.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(nodes.len().max(1));
    let chunk = nodes.len().div_ceil(threads).max(1);
    type Part = Result<(usize, Option<String>), TransformError>;
    let parts: Vec<Part> = std::thread::scope(|scope| {
        let workers: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| {
                let session = session.clone();
                scope.spawn(move || -> Part {
                    let host = ExecHost::new(session, Arc::new(Mutex::new(None)));
                    let mut dirs = HashSet::new();
                    let mut last = None;
                    for n in part {
                        let sql = weir_transform::compile::compile(&host, n)?;
                        let path = node_sql_path(target_dir, "compiled", n);
                        if let Some(parent) = path.parent()
                            && dirs.insert(parent.to_path_buf())
                        {
                            std::fs::create_dir_all(parent).map_err(|e| TransformError::io(parent, e))?;
                        }
                        write_if_changed(&path, &sql).map_err(|e| TransformError::io(&path, e))?;
                        last = Some(sql);
                    }
                    Ok((part.len(), last))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(TransformError::Graph("a compile thread panicked".into())))).collect()
    });
    let mut compiled = 0;
    let mut last = None;
    for part in parts {
        let (count, sql) = part?;
        compiled += count;
        last = sql.or(last);
    }
    Ok((compiled, last))
}
