//! Unit tests (`unit_tests:` in schema YAML), as dbt runs them: the model's SQL rendered with
//! each given input replaced by a CTE of fixture rows (typed as the input relation's columns),
//! its output compared with the expected rows as multisets, over the expected columns.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value as J};
use weir_core::Column;
use weir_graph::Manifest;
use weir_graph::Status;
use weir_graph::parse::call_args;
use weir_graph::{Node, ResourceType};
use weir_project::schema::{Fixture, UnitTestDef};
use weir_warehouse::Warehouse;

use crate::compile::{compile, inject_ctes};
use crate::error::TransformError;
use crate::run::{ExecOptions, RunReport, write_sql};
use crate::session::{ConnSlot, ExecHost, UnitInputs, with_conn};

/// Runs one unit test node; a difference is a failure whose message shows the rows that
/// differ.
pub fn run_unit_test(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let m = &session.manifest;
    let wh = session.warehouse.as_ref();
    let def = n.unit.as_ref().ok_or_else(|| TransformError::Graph(format!("{} is not a unit test", n.unique_id)))?;
    let fail = |msg: String| TransformError::at(def.location.clone(), format!("unit test '{}': {msg}", def.name), None);
    let model = n.depends_on.first().and_then(|id| m.node(id)).ok_or_else(|| fail("its model is not in the project".into()))?;

    let mut inputs = UnitInputs { vars: overrides(def, "vars"), ..Default::default() };
    if let Some(forced) = overrides(def, "macros").get("is_incremental").and_then(J::as_bool) {
        inputs.is_incremental = Some(forced);
    }
    let mut ctes = vec![];
    for (input, fixture) in &def.given {
        let node = input_node(m, model, input)
            .ok_or_else(|| fail(format!("input {input} is not something the model reads (a ref(), a source() or this)")))?;
        let rel = node.relation.clone().ok_or_else(|| fail(format!("input {input} has no relation")))?;
        let columns = with_conn(session, slot, |c| c.columns(&rel))?;
        if columns.is_empty() && matches!(fixture, Fixture::Rows(_)) {
            return Err(fail(format!(
                "input {input}: {} does not exist, so the fixture's column types are unknown; build it first",
                wh.render(&rel)
            )));
        }
        let sql = fixture_sql(wh, fixture, &columns).map_err(|m| fail(format!("input {input}: {m}")))?;
        let name = format!("{}__fixture", node.name);
        inputs.ctes.insert(node.unique_id.clone(), name.clone());
        ctes.push((format!("__dbt__cte__{name}"), sql));
    }
    let unit_host = ExecHost { unit: Some(Arc::new(inputs)), ..host.clone() };
    let actual = inject_ctes(&compile(&unit_host, model)?, &ctes);
    let output = with_conn(session, slot, |c| c.describe_query(&actual))?;
    let (expected, compared) = match &def.expect {
        Fixture::Rows(rows) => {
            let mut names: Vec<String> = vec![];
            for row in rows {
                for k in row.keys() {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                        names.push(k.clone());
                    }
                }
            }
            let mut columns = vec![];
            for name in &names {
                let c = output.iter().find(|c| c.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
                    fail(format!(
                        "expected column '{name}' is not in the model's output ({})",
                        output.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                columns.push(c.clone());
            }
            (fixture_sql(wh, &def.expect, &columns).map_err(|m| fail(format!("expect: {m}")))?, columns)
        }
        // As in dbt, an expected query gives every column of the model's output.
        Fixture::Sql(sql) => (sql.clone(), output.clone()),
    };
    let list = compared.iter().map(|c| wh.quote(&c.name)).collect::<Vec<_>>().join(", ");
    let typed = compared.iter().map(|c| format!("cast({0} as {1}) as {0}", wh.quote(&c.name), c.data_type)).collect::<Vec<_>>().join(", ");
    let actual_sql = format!("select {list} from (\n{actual}\n) as dbt_internal_unit_test_actual");
    let expected_sql = format!("select {typed} from (\n{expected}\n) as dbt_internal_unit_test_expected");
    let shown = format!("-- actual\n{actual_sql}\n-- expected\n{expected_sql}\n");
    write_sql(opts, "compiled", n, &shown);
    result.compiled_code = Some(shown);
    result.compile_done_at = Some(chrono::Utc::now());
    let (got, want) = with_conn(session, slot, |c| Ok((c.query(&actual_sql)?, c.query(&expected_sql)?)))?;
    let rows =
        |r: &weir_core::QueryResult| -> Vec<Vec<String>> { r.rows.iter().map(|row| row.iter().map(|d| d.to_string()).collect()).collect() };
    let (mut got_rows, mut want_rows) = (rows(&got), rows(&want));
    got_rows.sort();
    want_rows.sort();
    if got_rows == want_rows {
        result.status = Status::Pass;
        result.failures = Some(0);
        return Ok(());
    }
    let (extra, missing) = difference(&got_rows, &want_rows);
    result.status = Status::Fail;
    // dbt counts a failed unit test as one failure; the message has the rows.
    result.failures = Some(1);
    let header: Vec<&str> = compared.iter().map(|c| c.name.as_str()).collect();
    let mut message = format!("actual differs from expected:\n  {}\n", header.join(" | "));
    for r in &missing {
        message.push_str(&format!("- {}   (expected, not produced)\n", r.join(" | ")));
    }
    for r in &extra {
        message.push_str(&format!("+ {}   (produced, not expected)\n", r.join(" | ")));
    }
    result.message = Some(message.trim_end().to_string());
    Ok(())
}

/// A test's `overrides.<key>` mapping.
fn overrides(def: &UnitTestDef, key: &str) -> Map<String, J> {
    def.overrides.get(key).and_then(J::as_object).cloned().unwrap_or_default()
}

/// The node an input names: `ref('m')`, `ref('pkg', 'm')`, `source('s', 't')` or `this`.
fn input_node<'a>(m: &'a Manifest, model: &'a Node, input: &str) -> Option<&'a Node> {
    let input = input.trim();
    if input == "this" {
        return Some(model);
    }
    if let Some(a) = call_args(input, "ref") {
        return match a.as_slice() {
            [name] => m.find_ref(None, name, &model.package),
            [package, name] => m.find_ref(Some(package), name, &model.package),
            _ => None,
        }
        .filter(|n| n.resource_type != ResourceType::UnitTest);
    }
    if let Some(a) = call_args(input, "source") {
        return match a.as_slice() {
            [source, table] => m.find_source(source, table),
            _ => None,
        };
    }
    None
}

/// Fixture rows as a query typed like `columns`: each row one `select` of casts, columns a
/// row leaves out null; no rows, a `select` that returns none.
fn fixture_sql(wh: &dyn Warehouse, fixture: &Fixture, columns: &[Column]) -> Result<String, String> {
    let rows = match fixture {
        Fixture::Sql(sql) => return Ok(sql.clone()),
        Fixture::Rows(rows) => rows,
    };
    let by_name: HashMap<String, &Column> = columns.iter().map(|c| (c.name.to_lowercase(), c)).collect();
    for row in rows {
        for k in row.keys() {
            if !by_name.contains_key(&k.to_lowercase()) {
                return Err(format!(
                    "column '{k}' is not one of its columns ({})",
                    columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    let select = |row: Option<&Map<String, J>>| {
        let values: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = row.and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)).map(|(_, v)| v));
                format!("cast({} as {}) as {}", literal(v), c.data_type, wh.quote(&c.name))
            })
            .collect();
        format!("select {}", values.join(", "))
    };
    if rows.is_empty() {
        return Ok(format!("{} where false", select(None)));
    }
    Ok(rows.iter().map(|r| select(Some(r))).collect::<Vec<_>>().join("\nunion all\n"))
}

fn literal(v: Option<&J>) -> String {
    match v {
        None | Some(J::Null) => "null".into(),
        Some(J::Bool(b)) => b.to_string(),
        Some(J::Number(n)) => n.to_string(),
        Some(J::String(s)) => format!("'{}'", s.replace('\'', "''")),
        Some(other) => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

/// Rows of `got` not in `want` and of `want` not in `got`, counting repeats (both sorted).
fn difference(got: &[Vec<String>], want: &[Vec<String>]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let (mut i, mut j) = (0, 0);
    let (mut extra, mut missing) = (vec![], vec![]);
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                extra.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                missing.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                extra.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                missing.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (extra, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_count_repeated_rows() {
        let r = |s: &[&str]| s.iter().map(|x| vec![x.to_string()]).collect::<Vec<_>>();
        let (extra, missing) = difference(&r(&["a", "a", "b"]), &r(&["a", "b", "c"]));
        assert_eq!((extra, missing), (r(&["a"]), r(&["c"])));
    }
}
