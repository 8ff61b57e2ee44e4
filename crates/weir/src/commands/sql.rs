//! `weir sql SQL`: runs SQL against the target with the project's Jinja (`ref`, `source`,
//! `var`), prints what the last statement returned, and optionally writes those rows as
//! JSON for scripts (pipelines' `sql` tasks read them from there).

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as J};
use weir_core::{Datum, QueryResult};
use weir_transform::compile::compile;
use weir_transform::session::ExecHost;

use crate::cli::{Global, LogFormat};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, sql: &str, json_out: Option<&Path>, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("sql", false, false))?;
    let session = ws.session(out, &Default::default())?;
    let host = ExecHost::new(session.clone(), Arc::new(Mutex::new(None)));
    let compiled = compile(&host, &super::compile::inline_node(&ws, sql))?;
    let mut conn = session.warehouse.connect()?;
    // One statement comes back with its rows; a script of several runs as one, without rows.
    let body = compiled.trim().trim_end_matches(';').trim();
    let result = if body.contains(';') {
        let affected = conn.execute(body)?;
        out.info(format!("OK: ran the script ({affected} rows affected by its last statement)"));
        QueryResult::default()
    } else {
        let r = conn.query(body)?;
        match out.format {
            LogFormat::Json => println!("{}", serde_json::json!({"columns": r.columns, "rows": r.rows})),
            LogFormat::Text if r.columns.is_empty() => out.info("OK"),
            LogFormat::Text => println!("{}", r.to_grid()),
        }
        r
    };
    if let Some(path) = json_out {
        let rows: Vec<J> = result
            .rows
            .iter()
            .map(|row| J::Object(result.columns.iter().zip(row).map(|(c, d)| (c.name.clone(), datum_json(d))).collect::<Map<_, _>>()))
            .collect();
        std::fs::write(path, J::Array(rows).to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(0)
}

fn datum_json(d: &Datum) -> J {
    match d {
        Datum::Null => J::Null,
        Datum::Bool(b) => J::Bool(*b),
        Datum::Int(i) => J::from(*i),
        Datum::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        Datum::Text(t) => J::String(t.clone()),
    }
}
