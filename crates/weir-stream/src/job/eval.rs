//! The stateless part of a job, per micro-batch: which events the filter keeps, each kept
//! event's group key and aggregate arguments, or a projection's output row.
//!
//! When every key and argument is a bare column and nothing is filtered, they are read
//! straight from the decoded rows. Anything else is SQL in the warehouse's dialect, so it is
//! run by an in-process DuckDB over the batch: the rows are appended to a staging table of
//! text columns, cast to the topic's declared types in a CTE named after nothing but the
//! columns, and the job's expressions are selected from it. A table joined to the stream is
//! held in that DuckDB too (`__weir_dim`), loaded from the warehouse and loaded again as it
//! changes; each event takes its first matching row.

use std::borrow::Cow;
use std::sync::Arc;

use duckdb::vtab::arrow::{ArrowBatchRegistration, ArrowVTab};
use duckdb::{Connection, appender_params_from_iter};

use super::decode::{Cell, Kind, format_micros};
use crate::plan::{Output, Plan, Shape};
use crate::{Agg, StreamError};

/// A row's values as text (`None` for null), as the sink writes them.
pub type Row = Vec<Option<String>>;

/// One kept event's place in the batch, group key and aggregate arguments.
pub struct Keyed {
    pub index: usize,
    pub key: String,
    pub args: Vec<Option<f64>>,
}

pub enum Evaluator {
    Direct(Direct),
    Sql(Box<SqlEval>),
}

/// Keys and arguments read straight from the row's columns: needs nothing but the row, so
/// it runs on the threads that decode.
#[derive(Clone)]
pub struct Direct {
    keys: Vec<usize>,
    args: Vec<Option<usize>>,
    distinct: Vec<bool>,
    kinds: Vec<Kind>,
}

impl Direct {
    /// A row's group key and aggregate arguments.
    pub fn key(&self, row: &[Cell]) -> (String, Vec<Option<f64>>) {
        let (mut key, mut args) = (vec![], vec![]);
        self.key_into(row, &mut key, &mut args);
        (String::from_utf8(key).unwrap_or_default(), args)
    }

    /// As [`Direct::key`], the key's text (as [`key_text`] writes it) appended to `key` and
    /// the arguments to `args`: nothing allocated per row.
    pub fn key_into(&self, row: &[Cell], key: &mut Vec<u8>, args: &mut Vec<Option<f64>>) {
        key.push(b'[');
        for (n, k) in self.keys.iter().enumerate() {
            if n > 0 {
                key.push(b',');
            }
            match text_ref(&row[*k], self.kinds[*k]) {
                // Writing to a vector does not fail.
                Some(t) => serde_json::to_writer(&mut *key, t.as_ref()).unwrap_or_default(),
                None => key.extend_from_slice(b"null"),
            }
        }
        key.push(b']');
        args.extend(
            self.args
                .iter()
                .zip(&self.distinct)
                .map(|(a, d)| a.and_then(|i| if *d { distinct_value(&row[i], self.kinds[i]) } else { number(&row[i]) })),
        );
    }

    /// Arguments per row.
    pub fn width(&self) -> usize {
        self.args.len()
    }

    #[cfg(test)]
    pub(crate) fn of(keys: Vec<usize>, args: Vec<Option<usize>>, kinds: Vec<Kind>) -> Direct {
        Direct { distinct: vec![false; args.len()], keys, args, kinds }
    }
}

pub struct SqlEval {
    conn: Connection,
    query: String,
    stages: Vec<Stage>,
    kinds: Vec<Kind>,
    distinct: Vec<bool>,
    keys: usize,
}

impl Evaluator {
    /// The evaluator of `plan` over rows of `plan.columns`; with the SQL types of its keys
    /// (a stateful job) or of its output columns (a stateless one).
    pub fn new(plan: &Plan, table: Option<&[(String, String)]>) -> Result<(Evaluator, Vec<String>), StreamError> {
        // The rows are events, or in a join of two streams pairs: the first stream's columns
        // then the second's.
        let columns: Vec<(String, String)> = plan.columns.iter().chain(plan.stream_join.iter().flat_map(|j| &j.columns)).cloned().collect();
        let kinds: Vec<Kind> = columns.iter().map(|(_, t)| Kind::of(t)).collect();
        let distinct: Vec<bool> = plan.aggs.iter().map(|a| a.agg == Agg::CountDistinct).collect();
        let index = |c: &str| plan.columns.iter().position(|(n, _)| n == c);
        if plan.is_direct() {
            let keys: Vec<usize> = plan.keys.iter().filter_map(|k| k.column.as_deref().and_then(index)).collect();
            let types = keys.iter().map(|i| plan.columns[*i].1.clone()).collect();
            let args = plan.aggs.iter().map(|a| a.arg.as_ref().and_then(|s| s.column.as_deref()).and_then(index)).collect();
            return Ok((Evaluator::Direct(Direct { keys, args, distinct, kinds }), types));
        }
        let conn = Connection::open_in_memory().map_err(sql_err)?;
        let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        // Each column staged in the type its cells hold; a decimal as its text, so that the
        // cast to it is exact.
        let stages: Vec<Stage> = columns.iter().zip(&kinds).map(|((_, t), k)| Stage::of(t, *k)).collect();
        // Each micro-batch is scanned where it lies, an Arrow batch passed to `arrow(?)`.
        conn.register_table_function::<ArrowVTab>("arrow").map_err(sql_err)?;
        let casts = |range: std::ops::Range<usize>| -> String {
            range.map(|i| format!(", CAST(c{i} AS {}) AS {}", columns[i].1, quote(&columns[i].0))).collect()
        };
        let n = plan.columns.len();
        let cte = match &plan.stream_join {
            Some(j) => format!(
                "WITH __weir_raw AS (SELECT * FROM arrow(?)), {} AS (SELECT __i{} FROM __weir_raw), {} AS (SELECT __i{} FROM __weir_raw)",
                quote(&j.stream_alias),
                casts(0..n),
                quote(&j.alias),
                casts(n..columns.len())
            ),
            None => format!("WITH events AS (SELECT __i{} FROM arrow(?))", casts(0..n)),
        };
        let filter = plan.filter.as_ref().map(|f| format!(" WHERE {f}")).unwrap_or_default();
        // The events, and the table joined to them: one row per event, its first match; or
        // the pairs, each row its two events side by side, kept when the `on` holds.
        let (from, first_match) = match (&plan.join, table, &plan.stream_join) {
            (_, _, Some(j)) => {
                let (l, r) = (quote(&j.stream_alias), quote(&j.alias));
                (format!("{l} JOIN {r} ON {l}.__i = {r}.__i AND ({})", j.on), String::new())
            }
            (Some(j), Some(columns), None) => {
                let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{} {t}", quote(n))).collect();
                conn.execute_batch(&format!("CREATE TABLE __weir_dim ({})", typed.join(", "))).map_err(sql_err)?;
                let s = quote(&j.stream_alias);
                (
                    format!("events AS {s} {}JOIN __weir_dim AS {} ON {}", if j.left { "LEFT " } else { "" }, quote(&j.alias), j.on),
                    format!(" QUALIFY row_number() OVER (PARTITION BY {s}.__i) = 1"),
                )
            }
            _ => ("events".to_string(), String::new()),
        };
        // Each row's place in the batch, from the stream's side of a join.
        let stream_alias = plan.stream_join.as_ref().map(|j| &j.stream_alias).or(plan.join.as_ref().map(|j| &j.stream_alias));
        let index = stream_alias.map_or_else(|| "__i".to_string(), |a| format!("{}.__i", quote(a)));
        let (exprs, typed): (Vec<String>, Vec<String>) = if plan.shape == Shape::Stateless {
            let outs: Vec<String> =
                plan.outputs.iter().filter_map(|(_, o)| if let Output::Expr(s) = o { Some(s.sql.clone()) } else { None }).collect();
            (outs.iter().map(|e| format!("CAST(({e}) AS VARCHAR)")).collect(), outs)
        } else {
            let keys: Vec<String> = plan.keys.iter().map(|k| k.sql.clone()).collect();
            let mut exprs: Vec<String> = keys.iter().map(|k| format!("CAST(({k}) AS VARCHAR)")).collect();
            for (a, d) in plan.aggs.iter().zip(&distinct) {
                exprs.push(match (&a.arg, d) {
                    (None, _) => "CAST(NULL AS DOUBLE)".into(),
                    (Some(s), true) => format!("CAST(({}) AS VARCHAR)", s.sql),
                    (Some(s), false) => format!("CAST(({}) AS DOUBLE)", s.sql),
                });
            }
            (exprs, keys)
        };
        // The SQL types of what is written: DuckDB says, from the expressions over the casts.
        let mut types = vec![];
        if !typed.is_empty() {
            let probe = format!(
                "{cte} SELECT {} FROM {from}",
                typed.iter().enumerate().map(|(i, e)| format!("({e}) AS e{i}")).collect::<Vec<_>>().join(", ")
            );
            let mut stmt = conn.prepare(&format!("DESCRIBE {probe}")).map_err(sql_err)?;
            let none = ArrowBatchRegistration::new(staged(&stages, &kinds, &[])?);
            let mut rows = stmt.query([&none]).map_err(sql_err)?;
            while let Some(r) = rows.next().map_err(sql_err)? {
                types.push(r.get::<_, String>(1).map_err(sql_err)?);
            }
        }
        let query = format!(
            "{cte} SELECT {index}{}{} FROM {from}{filter}{first_match}",
            if exprs.is_empty() { "" } else { ", " },
            exprs.join(", ")
        );
        // Mistakes in the SQL show now, before any event is read.
        conn.prepare(&query).map_err(sql_err)?;
        let eval = SqlEval { conn, query, stages, kinds, distinct, keys: plan.keys.len() };
        Ok((Evaluator::Sql(Box::new(eval)), types))
    }

    /// Replaces the joined table's rows (values as text, in its columns' order).
    pub fn load_table(&mut self, rows: &[Vec<Option<String>>]) -> Result<(), StreamError> {
        let Evaluator::Sql(e) = self else { return Ok(()) };
        let conn = &e.conn;
        let width = conn
            .prepare("SELECT * FROM __weir_dim LIMIT 0")
            .and_then(|mut st| {
                st.execute([])?;
                Ok(st.column_count())
            })
            .map_err(sql_err)?;
        let staged: Vec<String> = (0..width).map(|i| format!("c{i} VARCHAR")).collect();
        conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE __weir_dim_raw ({})", staged.join(", "))).map_err(sql_err)?;
        {
            let mut app = conn.appender("__weir_dim_raw").map_err(sql_err)?;
            for row in rows {
                app.append_row(appender_params_from_iter(row.iter().take(width))).map_err(sql_err)?;
            }
            app.flush().map_err(sql_err)?;
        }
        let cast: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
        conn.execute_batch(&format!(
            "BEGIN; DELETE FROM __weir_dim; INSERT INTO __weir_dim SELECT {} FROM __weir_dim_raw; DROP TABLE __weir_dim_raw; COMMIT;",
            cast.join(", ")
        ))
        .map_err(sql_err)
    }

    /// The direct reader of keys, when no SQL is needed.
    pub fn direct(&self) -> Option<&Direct> {
        match self {
            Evaluator::Direct(d) => Some(d),
            Evaluator::Sql(_) => None,
        }
    }

    /// Each kept row's key and arguments.
    pub fn keyed(&mut self, rows: &[&[Cell]]) -> Result<Vec<Keyed>, StreamError> {
        match self {
            Evaluator::Direct(d) => Ok(rows
                .iter()
                .enumerate()
                .map(|(index, row)| {
                    let (key, args) = d.key(row);
                    Keyed { index, key, args }
                })
                .collect()),
            Evaluator::Sql(e) => {
                let (nkeys, distinct) = (e.keys, e.distinct.clone());
                e.run(rows, |index, r| {
                    let parts: Vec<Option<String>> = (0..nkeys).map(|i| r.get::<_, Option<String>>(i + 1)).collect::<Result<_, _>>()?;
                    let mut args = vec![];
                    for (j, d) in distinct.iter().enumerate() {
                        let at = nkeys + 1 + j;
                        args.push(if *d {
                            r.get::<_, Option<String>>(at)?.map(|t| hashed(t.as_bytes()))
                        } else {
                            r.get::<_, Option<f64>>(at)?
                        });
                    }
                    Ok(Keyed { index, key: key_text(&parts), args })
                })
            }
        }
    }

    /// Each kept row's output values as text (a stateless job).
    pub fn project(&mut self, rows: &[&[Cell]], width: usize) -> Result<Vec<(usize, Row)>, StreamError> {
        match self {
            Evaluator::Direct(_) => Err(StreamError::Job("a projection always runs as SQL".into())),
            Evaluator::Sql(e) => {
                e.run(rows, |index, r| Ok((index, (0..width).map(|i| r.get::<_, Option<String>>(i + 1)).collect::<Result<_, _>>()?)))
            }
        }
    }
}

impl SqlEval {
    fn run<T>(&mut self, rows: &[&[Cell]], each: impl Fn(usize, &duckdb::Row) -> Result<T, duckdb::Error>) -> Result<Vec<T>, StreamError> {
        // The batch goes in as typed columns, one Arrow batch: no text per value, and no
        // table to write it to and empty again.
        let batch = ArrowBatchRegistration::new(staged(&self.stages, &self.kinds, rows)?);
        let mut out = vec![];
        let mut stmt = self.conn.prepare_cached(&self.query).map_err(sql_err)?;
        let mut result = stmt.query([&batch]).map_err(sql_err)?;
        while let Some(r) = result.next().map_err(sql_err)? {
            let index: i64 = r.get(0).map_err(sql_err)?;
            out.push(each(index as usize, r).map_err(sql_err)?);
        }
        Ok(out)
    }
}

/// `rows` as the Arrow batch the query scans: `__i` (each row's place), then per column its
/// cells in the type they are staged in.
fn staged(stages: &[Stage], kinds: &[Kind], rows: &[&[Cell]]) -> Result<duckdb::arrow::record_batch::RecordBatch, StreamError> {
    use duckdb::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..rows.len() as i64))];
    let mut fields = vec![Field::new("__i", DataType::Int64, false)];
    for (i, (stage, kind)) in stages.iter().zip(kinds).enumerate() {
        let cells = rows.iter().map(|r| &r[i]);
        let (array, ty): (ArrayRef, DataType) = match stage {
            Stage::Int => {
                (Arc::new(cells.map(|c| if let Cell::Int(v) = c { Some(*v) } else { None }).collect::<Int64Array>()), DataType::Int64)
            }
            Stage::Float => (Arc::new(cells.map(number).collect::<Float64Array>()), DataType::Float64),
            Stage::Bool => {
                (Arc::new(cells.map(|c| if let Cell::Bool(b) = c { Some(*b) } else { None }).collect::<BooleanArray>()), DataType::Boolean)
            }
            Stage::Time => (
                Arc::new(cells.map(|c| if let Cell::Time(us) = c { Some(*us) } else { None }).collect::<TimestampMicrosecondArray>()),
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            Stage::Text => (Arc::new(cells.map(|c| text(c, *kind)).collect::<StringArray>()), DataType::Utf8),
        };
        columns.push(array);
        fields.push(Field::new(format!("c{i}"), ty, true));
    }
    duckdb::arrow::record_batch::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| StreamError::Sql(format!("staging a batch: {e}")))
}

/// How a column is staged for DuckDB: in the type its cells hold.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Int,
    Float,
    Bool,
    Time,
    Text,
}

impl Stage {
    fn of(declared: &str, kind: Kind) -> Stage {
        let decimal = matches!(declared.trim().to_ascii_lowercase().split('(').next(), Some("decimal" | "numeric"));
        match kind {
            Kind::Int => Stage::Int,
            Kind::Float if !decimal => Stage::Float,
            Kind::Bool => Stage::Bool,
            Kind::Timestamp | Kind::Date => Stage::Time,
            Kind::Float | Kind::Text | Kind::Any => Stage::Text,
        }
    }
}

fn sql_err(e: duckdb::Error) -> StreamError {
    StreamError::Sql(e.to_string())
}

/// A cell as text, borrowed when it is text already.
pub(super) fn text_ref(c: &Cell, kind: Kind) -> Option<Cow<'_, str>> {
    match c {
        Cell::Text(s) => Some(Cow::Borrowed(s)),
        other => text(other, kind).map(Cow::Owned),
    }
}

/// A cell as text: what a key holds and what the staging table takes.
pub fn text(c: &Cell, kind: Kind) -> Option<String> {
    match c {
        Cell::Null => None,
        Cell::Bool(b) => Some(b.to_string()),
        Cell::Int(i) => Some(i.to_string()),
        Cell::Float(f) => Some(f.to_string()),
        Cell::Text(s) => Some(s.clone()),
        Cell::Time(us) if kind == Kind::Date => Some(format_micros(*us)[..10].to_string()),
        Cell::Time(us) => Some(format_micros(*us)),
    }
}

fn number(c: &Cell) -> Option<f64> {
    match c {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(f) => Some(*f),
        Cell::Bool(b) => Some(f64::from(u8::from(*b))),
        Cell::Time(us) => Some(*us as f64),
        Cell::Null | Cell::Text(_) => None,
    }
}

/// What `count(distinct x)` tells apart: numbers by value, anything else by a stable hash
/// of its text (FNV-1a, the same in every build, since checkpoints keep it).
fn distinct_value(c: &Cell, kind: Kind) -> Option<f64> {
    match c {
        Cell::Int(_) | Cell::Float(_) => number(c),
        other => text(other, kind).map(|t| hashed(t.as_bytes())),
    }
}

fn hashed(bytes: &[u8]) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    f64::from_bits(h)
}

/// A group key as the state holds it: the JSON array of its parts' texts.
pub fn key_text<T: serde::Serialize>(parts: &[Option<T>]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

/// A key's parts back from [`key_text`].
pub fn key_parts(key: &str) -> Vec<Option<String>> {
    serde_json::from_str(key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_in_place_is_the_key_text() {
        let d = Direct {
            keys: vec![0, 1, 2],
            args: vec![Some(1), None],
            distinct: vec![false, false],
            kinds: vec![Kind::Text, Kind::Int, Kind::Date],
        };
        for row in [
            vec![Cell::Text("k1".into()), Cell::Int(7), Cell::Time(86_400_000_000)],
            vec![Cell::Text("quo\"te \\ é \n".into()), Cell::Null, Cell::Null],
            vec![Cell::Null, Cell::Int(-3), Cell::Time(0)],
        ] {
            let parts: Vec<Option<Cow<str>>> = d.keys.iter().map(|k| text_ref(&row[*k], d.kinds[*k])).collect();
            let (key, args) = d.key(&row);
            assert_eq!(key, key_text(&parts));
            assert_eq!(key_parts(&key).len(), 3);
            assert_eq!(args, vec![number(&row[1]), None]);
        }
    }
}
