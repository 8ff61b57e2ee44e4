//! Compilation: a node's Jinja rendered against real relations, with ephemeral models
//! injected as CTEs, and generic tests turned into SQL by their test macros.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use minijinja::value::{Kwargs, Value};
use serde_json::Value as J;
use weir_graph::parse::is_jinja_expression;
use weir_graph::{Node, ResourceType};
use weir_project::jinja::{LazyModel, NodeContext, NodeScope, RenderMode, json_value};

use crate::error::TransformError;
use crate::session::ExecHost;

/// A node's execute-mode Jinja context.
pub fn context(host: &ExecHost, n: &Node) -> NodeContext {
    let this = match host.unit.as_ref().and_then(|u| u.ctes.get(&n.unique_id)) {
        Some(name) => Some(weir_project::jinja::RelationValue::cte(name)),
        None => n.relation.as_ref().map(|_| host.session.relation_value(n)),
    };
    let m = &host.session.manifest;
    let model = {
        let (m, id) = (m.clone(), n.unique_id.clone());
        LazyModel::new(move || m.node(&id).map(Node::to_jinja).unwrap_or_default())
    };
    let scope = NodeScope { unique_id: n.unique_id.clone(), package: n.package.clone(), file: n.file.clone(), this, model };
    NodeContext::new(Arc::new(host.clone()), m.jinja.macros.clone(), scope, RenderMode::Execute, n.config.clone())
}

/// The node's SQL, compiled: Jinja rendered and ephemeral dependencies inlined as CTEs.
pub fn compile(host: &ExecHost, n: &Node) -> Result<String, TransformError> {
    Ok(compile_with_config(host, n)?.0)
}

/// As [`compile`], with the node's config as the render leaves it: what a generic test's
/// macro sets with `config(...)` (`fail_calc`, `warn_if`, ...) fills in what the node's own
/// config does not say, as in dbt.
pub fn compile_with_config(host: &ExecHost, n: &Node) -> Result<(String, weir_project::ConfigMap), TransformError> {
    let ctx = context(host, n);
    if n.test.is_some() {
        ctx.capture_config();
    }
    let sql = render_in(host, n, ctx.clone())?;
    let ctes = ephemeral_ctes(host, n)?;
    let mut config = n.config.clone();
    for (k, v) in ctx.config() {
        config.entry(k).or_insert(v);
    }
    Ok((inject_ctes(&sql, &ctes), config))
}

/// Renders the node's own Jinja (no CTE injection).
fn render(host: &ExecHost, n: &Node) -> Result<String, TransformError> {
    render_in(host, n, context(host, n))
}

fn render_in(host: &ExecHost, n: &Node, ctx: NodeContext) -> Result<String, TransformError> {
    let m = &host.session.manifest;
    if let Some(t) = &n.test {
        return compile_generic_test(host, n, t, ctx);
    }
    Ok(m.jinja.render(&n.file, &n.raw_code, &ctx)?)
}

fn compile_generic_test(host: &ExecHost, n: &Node, t: &weir_graph::node::TestMeta, mut ctx: NodeContext) -> Result<String, TransformError> {
    let m = &host.session.manifest;
    let attached = t.attached_node.as_ref().and_then(|a| m.node(a));
    let relation = attached.map(|a| host.session.relation_value(a).into_value()).unwrap_or_default();
    let model = m.jinja.call_macro(&ctx, "get_where_subquery", &[relation])?;
    ctx.set_extra("model", model.clone());
    let mut kwargs: Vec<(String, Value)> = vec![("model".to_string(), model)];
    for (k, v) in &t.kwargs {
        let value = match v {
            J::String(s) if is_jinja_expression(s) => m.jinja.eval(&n.file, s, &ctx)?,
            J::String(s) if s.contains("{{") => Value::from(m.jinja.render(&n.file, s, &ctx)?),
            J::Array(items) => weir_project::jinja::list_value(items),
            other => json_value(other),
        };
        if k == "column_name" {
            ctx.set_extra("column_name", value.clone());
        }
        kwargs.push((k.clone(), value));
    }
    let macro_name = format!("test_{}", t.name);
    let def = match &t.namespace {
        Some(ns) => m.jinja.macros.get(ns, &macro_name),
        None => m.jinja.macros.resolve(&n.package, &macro_name),
    }
    .ok_or_else(|| {
        TransformError::at(
            weir_core::Location::file(&n.file),
            format!(
                "test '{}{}' is not defined: no macro named {macro_name} (define it with {{% test {} %}} in macros/ or tests/generic/)",
                t.namespace.as_ref().map(|n| format!("{n}.")).unwrap_or_default(),
                t.name,
                t.name
            ),
            None,
        )
    })?
    .clone();
    let args = [Value::from(Kwargs::from_iter(kwargs))];
    Ok(m.jinja.call_def(&ctx, &def, &args)?.to_string())
}

/// Ephemeral models this node reads, directly or through other ephemerals, upstream first.
fn ephemeral_ctes(host: &ExecHost, n: &Node) -> Result<Vec<(String, String)>, TransformError> {
    let m = &host.session.manifest;
    let mut order: Vec<String> = vec![];
    let mut seen = HashSet::new();
    fn visit(m: &weir_graph::Manifest, id: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        let Some(n) = m.node(id) else { return };
        for d in &n.depends_on {
            if m.node(d).is_some_and(Node::is_ephemeral) && seen.insert(d.clone()) {
                visit(m, d, seen, order);
                order.push(d.clone());
            }
        }
    }
    visit(m, &n.unique_id, &mut seen, &mut order);
    let mut out = vec![];
    for id in order {
        if let Some(e) = m.node(&id) {
            out.push((format!("__dbt__cte__{}", e.name), render(host, e)?));
        }
    }
    Ok(out)
}

/// Prepends CTEs to a query, merging them into its own `with` clause if it has one.
pub fn inject_ctes(sql: &str, ctes: &[(String, String)]) -> String {
    if ctes.is_empty() {
        return sql.to_string();
    }
    let defs: Vec<String> = ctes.iter().map(|(name, body)| format!("{name} as (\n{}\n)", body.trim())).collect();
    let start = skip_space_and_comments(sql);
    let rest = &sql[start..];
    let head = &sql[..start];
    if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case("with") && rest[4..].starts_with(|c: char| c.is_whitespace()) {
        let after = rest[4..].trim_start();
        let (recursive, after) = match after.get(..9) {
            Some(w) if w.eq_ignore_ascii_case("recursive") => ("recursive ", after[9..].trim_start()),
            _ => ("", after),
        };
        format!("{head}with {recursive}{},\n{after}", defs.join(",\n"))
    } else {
        format!("{head}with {}\n{rest}", defs.join(",\n"))
    }
}

fn skip_space_and_comments(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map(|p| i + p + 1).unwrap_or(b.len());
        } else if sql[i..].starts_with("/*") {
            i = sql[i..].find("*/").map(|p| i + p + 2).unwrap_or(b.len());
        } else {
            return i;
        }
    }
}

/// The schemas a run writes into (the nodes' relations and stored test failures), created once
/// before it starts.
pub fn schemas_of(m: &weir_graph::Manifest, ids: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut out: BTreeSet<(String, String)> = BTreeSet::new();
    for id in ids {
        let Some(n) = m.node(id) else { continue };
        if let Some(r) = &n.relation
            && n.resource_type != ResourceType::Source
        {
            out.insert((r.database.clone(), r.schema.clone()));
        }
        if let Some(r) = crate::run::stored_failures_relation(m, n) {
            out.insert((r.database, r.schema));
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctes_merge_into_an_existing_with() {
        let ctes = vec![("__dbt__cte__a".to_string(), "select 1 as x".to_string())];
        assert_eq!(
            inject_ctes("-- c\nWITH b as (select 2) select * from b", &ctes),
            "-- c\nwith __dbt__cte__a as (\nselect 1 as x\n),\nb as (select 2) select * from b"
        );
        assert_eq!(
            inject_ctes("select * from __dbt__cte__a", &ctes),
            "with __dbt__cte__a as (\nselect 1 as x\n)\nselect * from __dbt__cte__a"
        );
        assert_eq!(inject_ctes("without_with as x", &ctes).lines().next(), Some("with __dbt__cte__a as ("));
    }
}
