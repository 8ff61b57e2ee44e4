//! The warehouse seam: where SQL runs and tables live.
//!
//! [`Warehouse`] opens [`Connection`]s (one per worker thread) and knows its engine's SQL
//! dialect; code above this crate never names an engine. Engine-specific SQL lives in the
//! adapters ([`duckdb`], [`postgres`]), the way dbt's `adapter.dispatch` keeps it per adapter.

pub mod batches;
mod cache;
pub mod duckdb;
pub mod pgcopy;
pub mod postgres;

pub use cache::RelationCache;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
pub use weir_core::files::{FileFormat, ReadOptions};
use weir_core::{Column, ColumnType, QueryResult, Relation, RelationKind};

/// An error from the warehouse, with the statement that caused it.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("{message}")]
    Query { message: String, sql: String },
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("invalid {adapter} target: {message}")]
    Config { adapter: String, message: String },
    #[error("{0}")]
    Io(String),
}

impl WarehouseError {
    pub fn query(message: impl Into<String>, sql: &str) -> Self {
        WarehouseError::Query { message: message.into(), sql: sql.to_string() }
    }

    /// The SQL that failed, when there was one.
    pub fn sql(&self) -> Option<&str> {
        match self {
            WarehouseError::Query { sql, .. } => Some(sql),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, WarehouseError>;

/// A warehouse engine: opens connections and writes its dialect of DDL.
pub trait Warehouse: Send + Sync {
    /// The adapter name dbt uses (`duckdb`, `postgres`): macro dispatch prefixes by it.
    fn adapter_type(&self) -> &'static str;

    /// A new connection for one worker thread.
    fn connect(&self) -> Result<Box<dyn Connection>>;

    /// A human description of where it connects (no secrets), for `weir debug`.
    fn describe(&self) -> String;

    /// Whether one process at a time may write the database (a DuckDB file): a long-running
    /// writer (a stream job) then closes its connections when idle and calls [`release`].
    ///
    /// [`release`]: Warehouse::release
    fn one_writer(&self) -> bool {
        false
    }

    /// Lets go of the database until the next `connect`, so other processes can take their
    /// turn. Refused (false) while a connection of this process is open, and where there is
    /// nothing to let go of.
    fn release(&self) -> bool {
        false
    }

    /// An identifier quoted for this engine.
    fn quote(&self, ident: &str) -> String {
        quoted(ident)
    }

    /// A relation's full quoted name.
    fn render(&self, r: &Relation) -> String {
        if r.database.is_empty() {
            format!("{}.{}", self.quote(&r.schema), self.quote(&r.identifier))
        } else {
            format!("{}.{}.{}", self.quote(&r.database), self.quote(&r.schema), self.quote(&r.identifier))
        }
    }

    fn create_schema_sql(&self, database: &str, schema: &str) -> String;

    fn create_table_as_sql(&self, r: &Relation, sql: &str) -> String {
        format!("create table {} as (\n{}\n)", self.render(r), sql)
    }

    fn create_view_as_sql(&self, r: &Relation, sql: &str) -> String {
        format!("create view {} as (\n{}\n)", self.render(r), sql)
    }

    /// A session-scoped table for an incremental run's new rows, and its name as referenced.
    /// The time a snapshot stamps versions with (dbt's `snapshot_get_time`): a timestamp
    /// without time zone.
    fn snapshot_time_sql(&self) -> &'static str;

    fn create_temp_table_sql(&self, name: &str, sql: &str) -> (String, String) {
        let q = self.quote(name);
        (format!("create temporary table {q} as (\n{sql}\n)"), q)
    }

    fn drop_relation_sql(&self, r: &Relation, kind: RelationKind) -> String {
        let what = if kind == RelationKind::View { "view" } else { "table" };
        format!("drop {what} if exists {} cascade", self.render(r))
    }

    /// `merge into` for the incremental `merge` strategy; both engines support it.
    fn merge_sql(&self, target: &Relation, source: &str, unique_key: &[String], columns: &[String], update_columns: &[String]) -> String {
        let on: Vec<String> =
            unique_key.iter().map(|k| format!("DBT_INTERNAL_DEST.{k} = DBT_INTERNAL_SOURCE.{k}", k = self.quote(k))).collect();
        let sets: Vec<String> = update_columns.iter().map(|c| format!("{c} = DBT_INTERNAL_SOURCE.{c}", c = self.quote(c))).collect();
        let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
        let vals: Vec<String> = columns.iter().map(|c| format!("DBT_INTERNAL_SOURCE.{}", self.quote(c))).collect();
        let mut sql = format!(
            "merge into {} as DBT_INTERNAL_DEST\nusing {} as DBT_INTERNAL_SOURCE\non ({})\n",
            self.render(target),
            source,
            if on.is_empty() { "false".to_string() } else { on.join(" and ") }
        );
        if !sets.is_empty() {
            sql.push_str(&format!("when matched then update set\n    {}\n", sets.join(",\n    ")));
        }
        sql.push_str(&format!("when not matched then insert ({})\nvalues ({})", cols.join(", "), vals.join(", ")));
        sql
    }

    /// Seed loading: a CSV file straight into an existing table.
    fn supports_copy_from_file(&self) -> bool {
        false
    }

    /// Whether the text of `expr` matches `pattern` as a whole (data-quality `valid regex`).
    fn regex_match_sql(&self, expr: &str, pattern: &str) -> String;

    /// The continuous `fraction` percentile of `expr` as an aggregate.
    fn percentile_sql(&self, expr: &str, fraction: f64) -> String;

    /// How many rows satisfy `cond`, as an aggregate (0 on no rows; a null condition does
    /// not count).
    fn count_if_sql(&self, cond: &str) -> String;

    /// Whether `text`, a non-null value of a text column, is one of `values` (quoted string
    /// literals), as a condition: data-quality checks' valid and missing values.
    fn text_in_sql(&self, text: &str, values: &[String]) -> String {
        format!("{text} in ({})", values.join(", "))
    }

    /// Engine-specific settings users may put in a target, for warnings on unknown keys.
    fn known_target_keys(&self) -> &'static [&'static str];

    /// How this engine spells a column type in DDL.
    fn type_sql(&self, t: &ColumnType) -> String;

    /// `expr` cast to `t`, or null where it does not fit, when the engine can test that in
    /// SQL (loads then reject or null such values instead of failing).
    fn try_cast_sql(&self, _expr: &str, _t: &ColumnType) -> Option<String> {
        None
    }

    /// A row of the table aliased `alias` as JSON text (rejected rows are kept so).
    fn row_json_sql(&self, alias: &str) -> String;

    /// A JSON object of `(key, expression)` pairs, as text (schema-on-read records).
    fn json_object_sql(&self, pairs: &[(String, String)]) -> String;

    /// The field `key` of the JSON text `record`, as `t` (null where it does not fit, when
    /// the engine can test that); lists and structs stay JSON.
    fn json_field_sql(&self, record: &str, key: &str, t: &ColumnType) -> String;

    /// A query reading files in place, when the engine can (DuckDB's `read_csv`,
    /// `read_json`, `read_parquet`); loads then never move the data through Weir.
    fn file_scan_sql(&self, _scan: &FileScan) -> Option<String> {
        None
    }

    /// Statements that let this connection's next writes store rows in whatever order the
    /// engine's parallel readers produce them, and that put the order back. DuckDB writes an
    /// unordered bulk insert to disk as it goes; an ordered one is written whole again when
    /// the table is made durable.
    fn any_order_sql(&self) -> Option<[&'static str; 2]> {
        None
    }

    /// The columns of a failed-row table a [`FileScan`] with `rejects` filled, as
    /// `(position, raw text, reason)` expressions over it, when the engine records them.
    fn file_rejects_sql(&self, _scan: &FileScan) -> Option<String> {
        None
    }
}

/// Files for the engine to read itself, with the options users give loads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileScan {
    pub format: FileFormat,
    pub paths: Vec<PathBuf>,
    pub options: ReadOptions,
    /// A name for the engine's tables of lines it could not read; `None` fails on the first.
    pub rejects: Option<String>,
    /// The column naming each row's file.
    pub filename_column: Option<String>,
    /// CSV: the first line of each of `paths`, so that files with the same columns can be
    /// read by one scan where rejected lines are kept; empty when not known.
    pub first_lines: Vec<String>,
}

/// One session with the warehouse. Not shared between threads.
pub trait Connection: Send {
    /// Runs one statement or a `;`-separated script; returns rows affected by the last one.
    fn execute(&mut self, sql: &str) -> Result<u64>;

    /// Runs a query and returns its rows.
    fn query(&mut self, sql: &str) -> Result<QueryResult>;

    /// Runs statements in one transaction: all of them take effect, or none does.
    fn transaction(&mut self, statements: &[String]) -> Result<u64> {
        self.execute("begin")?;
        let mut affected = 0;
        for stmt in statements {
            match self.execute(stmt) {
                Ok(n) => affected = n,
                Err(e) => {
                    let _ = self.execute("rollback");
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.execute("commit") {
            let _ = self.execute("rollback");
            return Err(e);
        }
        Ok(affected)
    }

    /// Every table and view in `database`, restricted to `schemas` when given: one catalog
    /// query feeds the relation cache for a whole run.
    fn list_relations(&mut self, database: &str, schemas: &[String]) -> Result<Vec<(Relation, RelationKind)>>;

    /// The columns of a table or view, in order.
    fn columns(&mut self, relation: &Relation) -> Result<Vec<Column>>;

    /// The columns a query would return, without running it.
    fn describe_query(&mut self, sql: &str) -> Result<Vec<Column>>;

    /// The engine's own name for a type as a user wrote it (`int` -> `INTEGER`), so
    /// contracts compare types the way the engine sees them.
    fn canonical_type(&mut self, declared: &str) -> Result<String>;

    /// Loads a CSV file (with a header row) into an existing table.
    fn copy_csv(&mut self, target: &str, columns: &[String], path: &Path, delimiter: char) -> Result<u64>;

    /// `select version()` or the like, for `weir debug`.
    fn server_version(&mut self) -> Result<String>;

    /// Streams a query's result as Arrow record batches, as the engine produces them: typed
    /// rows for another engine's binary bulk path, with no text in between. Engines that
    /// cannot say they cannot.
    fn for_each_batch(&mut self, sql: &str, each: &mut dyn FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
        let _ = (sql, each);
        Err(WarehouseError::Io("this engine does not stream Arrow batches".into()))
    }

    /// Writes the batches `feed` hands over into an existing table through the engine's
    /// binary bulk path (DuckDB's appender, PostgreSQL's binary `COPY`). Each batch holds the
    /// table's columns, in order, typed as the table's columns are (the caller casts); on
    /// DuckDB it may hold fewer (matched by name), and the others take their defaults.
    /// Returns the rows written.
    fn copy_in_batches(&mut self, target: &Relation, feed: &mut BatchFeed<'_>) -> Result<u64> {
        let _ = (target, feed);
        Err(WarehouseError::Io("this engine does not take Arrow batches".into()))
    }
}

/// Arrow, as the engines exchange typed rows (the version DuckDB's crate is built with).
pub use ::duckdb::arrow;
pub use ::duckdb::arrow::record_batch::RecordBatch;

/// A source of record batches: called once with the sink each batch goes to.
pub type BatchFeed<'a> = dyn FnMut(&mut dyn FnMut(&RecordBatch) -> Result<()>) -> Result<()> + 'a;

/// Opens the warehouse a profile target names.
pub fn open(adapter_type: &str, fields: &Map<String, J>, base_dir: &Path) -> Result<Box<dyn Warehouse>> {
    match adapter_type {
        "duckdb" => Ok(Box::new(duckdb::DuckDb::open(fields, base_dir)?)),
        "postgres" => Ok(Box::new(postgres::Postgres::from_fields(fields)?)),
        other => Err(WarehouseError::Config { adapter: other.to_string(), message: "unsupported adapter".into() }),
    }
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An identifier in double quotes, as both engines read it (for connections, which have no
/// [`Warehouse::quote`] at hand).
pub(crate) fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn kind_of(table_type: &str) -> Option<RelationKind> {
    match table_type.to_uppercase().as_str() {
        "BASE TABLE" | "TABLE" => Some(RelationKind::Table),
        "VIEW" => Some(RelationKind::View),
        _ => None,
    }
}
