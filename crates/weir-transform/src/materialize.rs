//! Materializations as plans of statements. Each plan runs in one transaction on the
//! worker's connection: a model killed mid-build leaves the previous version intact.
//!
//! - `view` / `table`: build `<name>__dbt_tmp`, drop the old relation, rename the new one.
//! - `incremental`: the first run (or `--full-refresh`) builds like a table; later runs put
//!   the new rows in a temporary table and `append`, `delete+insert` or `merge` them.
//! - `seed`: create the inferred table and `COPY` the CSV into it.
//! - contracts: column names and types are checked before anything is built.

use serde_json::Value as J;
use weir_core::{Column, Location, Relation, RelationKind};
use weir_graph::Node;
use weir_warehouse::{Connection, Warehouse};

use crate::error::TransformError;

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    Sql(String),
    CopyCsv {
        target: String,
        columns: Vec<String>,
        path: std::path::PathBuf,
        delimiter: char,
    },
    /// A query that must return no rows; if it does, the plan is rolled back with `message`
    /// followed by the rows it returned, e.g. the duplicated keys of a merge.
    ExpectNoRows {
        sql: String,
        message: String,
    },
}

impl Step {
    pub fn text(&self) -> String {
        match self {
            Step::Sql(s) => s.clone(),
            Step::CopyCsv { target, path, .. } => format!("-- copy {} into {target}", path.display()),
            Step::ExpectNoRows { sql, .. } => format!("-- must return no rows:\n{sql}"),
        }
    }
}

/// Runs steps in one transaction; rows affected by the main statement are returned.
pub fn run_plan(conn: &mut dyn Connection, steps: &[Step], main: usize) -> Result<u64, TransformError> {
    conn.execute("begin")?;
    let rows = run_steps(conn, steps, main)?;
    commit(conn)?;
    Ok(rows)
}

/// Commits the open transaction (rolled back if the commit fails).
pub fn commit(conn: &mut dyn Connection) -> Result<(), TransformError> {
    if let Err(e) = conn.execute("commit") {
        let _ = conn.execute("rollback");
        return Err(e.into());
    }
    Ok(())
}

/// Runs steps inside a transaction already begun; a failing step rolls it back. Rows affected
/// by the `main` statement are returned.
pub fn run_steps(conn: &mut dyn Connection, steps: &[Step], main: usize) -> Result<u64, TransformError> {
    let mut rows = 0;
    for (i, step) in steps.iter().enumerate() {
        let result = match step {
            Step::Sql(sql) => conn.execute(sql),
            Step::CopyCsv { target, columns, path, delimiter } => conn.copy_csv(target, columns, path, *delimiter),
            Step::ExpectNoRows { sql, message } => match conn.query(sql) {
                Ok(found) if found.rows.is_empty() => Ok(0),
                Ok(found) => {
                    let _ = conn.execute("rollback");
                    return Err(TransformError::Data(format!("{message}\n{}", found.to_grid())));
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(n) if i == main => rows = n,
            Ok(_) => {}
            Err(e) => {
                let _ = conn.execute("rollback");
                return Err(e.into());
            }
        }
    }
    Ok(rows)
}

/// The statements that build `rel` from `sql` as a table or view, swapped in atomically.
pub fn swap_plan(
    wh: &dyn Warehouse,
    rel: &Relation,
    existing: Option<RelationKind>,
    tmp_existing: Option<RelationKind>,
    create: Vec<Step>,
    kind: RelationKind,
) -> Vec<Step> {
    let tmp = tmp_relation(rel);
    let mut steps = vec![];
    if let Some(k) = tmp_existing {
        steps.push(Step::Sql(wh.drop_relation_sql(&tmp, k)));
    }
    steps.extend(create);
    if let Some(k) = existing {
        steps.push(Step::Sql(wh.drop_relation_sql(rel, k)));
    }
    let what = if kind == RelationKind::View { "view" } else { "table" };
    steps.push(Step::Sql(format!("alter {what} {} rename to {}", wh.render(&tmp), wh.quote(&rel.identifier))));
    steps
}

pub fn tmp_relation(rel: &Relation) -> Relation {
    rel.with_identifier(format!("{}__dbt_tmp", rel.identifier))
}

/// `create table` statements for a model under an enforced contract: the declared columns
/// with their constraints, then the rows.
pub fn contract_create(wh: &dyn Warehouse, target: &Relation, n: &Node, sql: &str) -> Vec<Step> {
    let mut defs = vec![];
    for c in &n.columns {
        let mut d = format!("{} {}", wh.quote(&c.name), c.data_type.clone().unwrap_or_default());
        for con in &c.constraints {
            let t = con.get("type").and_then(J::as_str).unwrap_or("");
            match t {
                "not_null" => d.push_str(" not null"),
                "primary_key" => d.push_str(" primary key"),
                "unique" => d.push_str(" unique"),
                "check" => {
                    if let Some(expr) = con.get("expression").and_then(J::as_str) {
                        d.push_str(&format!(" check ({expr})"));
                    }
                }
                _ => {}
            }
        }
        defs.push(d);
    }
    let cols: Vec<String> = n.columns.iter().map(|c| wh.quote(&c.name)).collect();
    vec![
        Step::Sql(format!("create table {} (\n    {}\n)", wh.render(target), defs.join(",\n    "))),
        Step::Sql(format!(
            "insert into {} ({})\nselect {} from (\n{}\n) as model_subq",
            wh.render(target),
            cols.join(", "),
            cols.join(", "),
            sql
        )),
    ]
}

/// Checks a query's columns against the model's enforced contract, before building.
pub fn check_contract(conn: &mut dyn Connection, n: &Node, sql: &str) -> Result<(), TransformError> {
    let actual = conn.describe_query(sql)?;
    let mut problems = vec![];
    for c in &n.columns {
        let Some(declared) = &c.data_type else {
            problems.push(format!("{:<20} | {:<20} | {:<20} | no data_type declared", c.name, "", ""));
            continue;
        };
        let want = conn.canonical_type(declared).unwrap_or_else(|_| declared.clone());
        match actual.iter().find(|a| a.name.eq_ignore_ascii_case(&c.name)) {
            None => problems.push(format!("{:<20} | {:<20} | {:<20} | missing in definition", c.name, "", want)),
            Some(a) => {
                let got = conn.canonical_type(&a.data_type).unwrap_or_else(|_| a.data_type.clone());
                if !same_type(&got, &want) {
                    problems.push(format!("{:<20} | {:<20} | {:<20} | data type mismatch", c.name, got, want));
                }
            }
        }
    }
    for a in &actual {
        if !n.columns.iter().any(|c| c.name.eq_ignore_ascii_case(&a.name)) {
            problems.push(format!("{:<20} | {:<20} | {:<20} | missing in contract", a.name, a.data_type, ""));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(TransformError::at(
        Location::file(&n.file),
        format!(
            "model '{}' has an enforced contract that failed; nothing was built:\n{:<20} | {:<20} | {:<20} | mismatch\n{}",
            n.name,
            "column",
            "definition type",
            "contract type",
            problems.join("\n")
        ),
        None,
    ))
}

/// What `on_schema_change` does when the model's columns (`source`) differ from its table's
/// (`dest`), as dbt does it: `ignore` (the default) writes the table's columns; `fail` stops
/// with the differences; `append_new_columns` adds new columns; `sync_all_columns` also drops
/// vanished columns and retypes changed ones. Returns the `alter` statements and the columns to
/// write.
pub fn schema_change_steps(
    wh: &dyn Warehouse,
    n: &Node,
    target: &Relation,
    source: &[Column],
    dest: &[Column],
) -> Result<(Vec<Step>, Vec<Column>), TransformError> {
    let mode = n.config_str("on_schema_change").unwrap_or_else(|| "ignore".into());
    let find = |cols: &[Column], name: &str| cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)).cloned();
    let added: Vec<Column> = source.iter().filter(|c| find(dest, &c.name).is_none()).cloned().collect();
    let removed: Vec<Column> = dest.iter().filter(|c| find(source, &c.name).is_none()).cloned().collect();
    let retyped: Vec<Column> =
        source.iter().filter(|c| find(dest, &c.name).is_some_and(|d| !same_type(&d.data_type, &c.data_type))).cloned().collect();
    let changed = !(added.is_empty() && removed.is_empty() && retyped.is_empty());
    let list = |cols: &[Column]| -> String {
        if cols.is_empty() {
            "none".into()
        } else {
            cols.iter().map(|c| format!("{} {}", c.name, c.data_type)).collect::<Vec<_>>().join(", ")
        }
    };
    let t = wh.render(target);
    match mode.as_str() {
        "fail" if changed => Err(TransformError::at(
            Location::file(&n.file),
            format!(
                "model '{}': the model's columns no longer match {t} (on_schema_change: fail); nothing was written.\n  \
                 new in the model: {}\n  missing from the model: {}\n  new types: {}\n\
                 Set on_schema_change to append_new_columns or sync_all_columns, or rebuild with --full-refresh.",
                n.name,
                list(&added),
                list(&removed),
                list(&retyped)
            ),
            None,
        )),
        "append_new_columns" | "sync_all_columns" if changed => {
            let mut steps: Vec<Step> =
                added.iter().map(|c| Step::Sql(format!("alter table {t} add column {} {}", wh.quote(&c.name), c.data_type))).collect();
            if mode == "sync_all_columns" {
                steps.extend(removed.iter().map(|c| Step::Sql(format!("alter table {t} drop column {}", wh.quote(&c.name)))));
                for c in &retyped {
                    // dbt's alter_column_type: a new column, a copy, a drop and a rename (so the
                    // column moves to the end, as under dbt).
                    let (col, tmp) = (wh.quote(&c.name), wh.quote(&format!("{}__dbt_alter", c.name)));
                    steps.push(Step::Sql(format!("alter table {t} add column {tmp} {}", c.data_type)));
                    steps.push(Step::Sql(format!("update {t} set {tmp} = {col}")));
                    steps.push(Step::Sql(format!("alter table {t} drop column {col} cascade")));
                    steps.push(Step::Sql(format!("alter table {t} rename column {tmp} to {col}")));
                }
            }
            Ok((steps, source.to_vec()))
        }
        "ignore" | "fail" | "append_new_columns" | "sync_all_columns" => Ok((vec![], dest.to_vec())),
        other => Err(TransformError::at(
            Location::file(&n.file),
            format!("model '{}': on_schema_change '{other}' is not one of ignore, fail, append_new_columns, sync_all_columns", n.name),
            None,
        )),
    }
}

/// The columns of `partition_by`: a column, a list of columns, or BigQuery's `{field: ...}`.
fn partition_columns(n: &Node) -> Vec<String> {
    match n.config.get("partition_by") {
        Some(J::Object(o)) => o.get("field").and_then(J::as_str).map(|f| vec![f.to_string()]).unwrap_or_default(),
        _ => n.config_list("partition_by"),
    }
}

/// Types compare equal ignoring case and, for text types, length modifiers.
fn same_type(a: &str, b: &str) -> bool {
    let norm = |t: &str| {
        let t = t.trim().to_lowercase();
        if t.starts_with("varchar") || t.starts_with("character varying") { "varchar".to_string() } else { t }
    };
    norm(a) == norm(b)
}

/// The incremental statements once the target exists: new rows staged in a temporary
/// table, then appended, or deleted-and-inserted / merged on the unique key.
pub fn incremental_steps(
    wh: &dyn Warehouse,
    n: &Node,
    target: &Relation,
    sql: &str,
    source: &[Column],
    dest: &[Column],
) -> Result<(Vec<Step>, usize), TransformError> {
    let unique_key = n.config_list("unique_key");
    let strategy = n
        .config_str("incremental_strategy")
        .unwrap_or_else(|| if unique_key.is_empty() { "append".into() } else { "delete+insert".into() });
    let (create_tmp, tmp) = wh.create_temp_table_sql(&format!("{}__dbt_tmp", target.identifier), sql);
    let mut steps = vec![Step::Sql(create_tmp)];
    let (alters, dest) = schema_change_steps(wh, n, target, source, dest)?;
    steps.extend(alters);
    let dest = dest.as_slice();
    if !unique_key.is_empty() && strategy != "append" {
        // Duplicate keys in the new rows would multiply rows in the table: refuse them.
        let keys = unique_key.join(", ");
        steps.push(Step::ExpectNoRows {
            sql: format!(
                "select {keys}, count(*) as copies\nfrom {tmp}\ngroup by {keys}\nhaving count(*) > 1\norder by copies desc\nlimit 10"
            ),
            message: format!(
                "model '{}': unique_key ({keys}) is not unique in the new rows; nothing was written. Duplicated keys:",
                n.name
            ),
        });
    }
    let cols: Vec<String> = dest.iter().map(|c| wh.quote(&c.name)).collect();
    let cols_csv = cols.join(", ");
    let insert = format!("insert into {} ({cols_csv})\n(\n    select {cols_csv}\n    from {tmp}\n)", wh.render(target));
    let predicates: Vec<String> = n.config_list("incremental_predicates");
    match strategy.as_str() {
        "append" => steps.push(Step::Sql(insert)),
        "delete+insert" => {
            if unique_key.is_empty() {
                return Err(TransformError::at(
                    Location::file(&n.file),
                    format!("model '{}': incremental_strategy 'delete+insert' needs a unique_key", n.name),
                    None,
                ));
            }
            let extra: String = predicates.iter().map(|p| format!("\n    and {p}")).collect();
            let delete = if unique_key.len() == 1 {
                let k = &unique_key[0];
                format!("delete from {}\nwhere ({k}) in (\n    select ({k})\n    from {tmp}\n){extra}", wh.render(target))
            } else {
                let on: Vec<String> = unique_key.iter().map(|k| format!("{tmp}.{k} = DBT_INCREMENTAL_TARGET.{k}")).collect();
                format!(
                    "delete from {} as DBT_INCREMENTAL_TARGET\nusing {tmp}\nwhere (\n    {}\n){extra}",
                    wh.render(target),
                    on.join("\n    and ")
                )
            };
            steps.push(Step::Sql(delete));
            steps.push(Step::Sql(insert));
        }
        "merge" => {
            if unique_key.is_empty() {
                steps.push(Step::Sql(insert));
            } else {
                let all: Vec<String> = dest.iter().map(|c| c.name.clone()).collect();
                let update: Vec<String> = if n.config.contains_key("merge_update_columns") {
                    n.config_list("merge_update_columns")
                } else {
                    let excluded: Vec<String> = n.config_list("merge_exclude_columns").iter().map(|c| c.to_lowercase()).collect();
                    all.iter().filter(|c| !excluded.contains(&c.to_lowercase())).cloned().collect()
                };
                steps.push(Step::Sql(wh.merge_sql(target, &tmp, &unique_key, &all, &update)));
            }
        }
        "insert_overwrite" => {
            // Replace whole partitions: every partition the new rows touch is emptied, then
            // the new rows are inserted (rows of other partitions stay as they are).
            let partition = partition_columns(n);
            if partition.is_empty() {
                return Err(TransformError::at(
                    Location::file(&n.file),
                    format!(
                        "model '{}': incremental_strategy 'insert_overwrite' needs partition_by (a column, a list of columns, or {{field: column}})",
                        n.name
                    ),
                    None,
                ));
            }
            let cols = partition.join(", ");
            steps.push(Step::Sql(format!(
                "delete from {}\nwhere ({cols}) in (\n    select distinct {cols}\n    from {tmp}\n)",
                wh.render(target)
            )));
            steps.push(Step::Sql(insert));
        }
        other => {
            return Err(TransformError::at(
                Location::file(&n.file),
                format!(
                    "model '{}': incremental_strategy '{other}' is not supported (use append, delete+insert, merge or insert_overwrite)",
                    n.name
                ),
                None,
            ));
        }
    }
    let main = steps.len() - 1;
    steps.push(Step::Sql(format!("drop table if exists {tmp}")));
    Ok((steps, main))
}
