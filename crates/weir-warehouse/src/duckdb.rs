//! DuckDB, in-process: the embedded default. A file path (or `:memory:`) from the profile;
//! every worker thread gets its own connection to the same database instance.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use duckdb::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, IntervalMonthDayNanoType, IntervalUnit, Schema,
    TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type,
};
use duckdb::arrow::error::ArrowError;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value as J};
use weir_core::{Column, ColumnType, Datum, QueryResult, Relation, RelationKind};

use crate::{BatchFeed, Connection, FileFormat, FileScan, RecordBatch, Result, Warehouse, WarehouseError, kind_of, literal, quoted};

/// A DuckDB database opened once per process, on first use (so `weir compile` and `weir ls`
/// never pay for opening it); connections are clones of it.
///
/// A DuckDB file has one writing process at a time. Processes take turns: one that finds
/// the file held waits for it (up to the profile's `lock_timeout`, 60 s unless set), and a
/// stream job lets go of it between writes ([`Warehouse::release`]).
///
/// Weir's processes take their turn on a lock file beside the database (`<file>.lock`)
/// before DuckDB opens it, and keep it while it is open: DuckDB reads a file's headers
/// before it takes its own lock, so a process opening the file while another checkpoints it
/// could start from headers that no longer hold (and write blocks the other one uses).
pub struct DuckDb {
    root: Mutex<Option<Root>>,
    path: Option<PathBuf>,
    database: String,
    /// `set key = value` statements from the profile's `settings`, run when it opens.
    settings: Vec<String>,
    lock_timeout: std::time::Duration,
    /// One clone per open connection: the database may be let go of when only this is left.
    users: Arc<()>,
}

/// The open database and the process's turn at its file (dropped in that order: DuckDB
/// closes the file before the turn ends).
struct Root {
    conn: duckdb::Connection,
    _turn: Option<Arc<Turn>>,
}

/// A process's turn at a DuckDB file: an exclusive lock on `<file>.lock`, shared by every
/// [`DuckDb`] of the process on that file (as DuckDB's own lock is per process).
struct Turn {
    _file: std::fs::File,
}

impl Turn {
    /// Takes the turn at `db`, waiting for another process's to end for up to `timeout`.
    fn take(db: &Path, timeout: std::time::Duration) -> Result<Arc<Turn>> {
        static TURNS: Mutex<Vec<(PathBuf, std::sync::Weak<Turn>)>> = Mutex::new(Vec::new());
        // Held while waiting: another thread of this process wanting the same file waits for
        // this one's turn, then shares it.
        let mut turns = TURNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        turns.retain(|(_, t)| t.strong_count() > 0);
        if let Some(t) = turns.iter().find(|(p, _)| p == db).and_then(|(_, t)| t.upgrade()) {
            return Ok(t);
        }
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| WarehouseError::Io(format!("{}: {e}", path.display())))?;
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < timeout => {
                    std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(std::time::Duration::from_millis(500));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(WarehouseError::Connect {
                        target: db.display().to_string(),
                        message: format!(
                            "another process has held it for {:.0}s (its turn: {}); the profile's `lock_timeout` sets how long to wait",
                            timeout.as_secs_f64(),
                            path.display()
                        ),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(WarehouseError::Io(format!("{}: {e}", path.display()))),
            }
        }
        let turn = Arc::new(Turn { _file: file });
        turns.push((db.to_path_buf(), Arc::downgrade(&turn)));
        Ok(turn)
    }
}

fn err(e: duckdb::Error, sql: &str) -> WarehouseError {
    WarehouseError::query(e.to_string(), sql)
}

impl DuckDb {
    /// Reads the profile's `path` (relative paths are taken from `base_dir`, as dbt-duckdb
    /// takes them from the working directory) and `settings`; the file is opened by the first
    /// connection.
    pub fn open(fields: &Map<String, J>, base_dir: &Path) -> Result<DuckDb> {
        let path = fields.get("path").and_then(J::as_str).filter(|p| *p != ":memory:" && !p.is_empty());
        let (path, database) = match path {
            Some(p) => {
                let full = if Path::new(p).is_absolute() { PathBuf::from(p) } else { base_dir.join(p) };
                let db = full.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "memory".into());
                (Some(full), db)
            }
            None => (None, "memory".to_string()),
        };
        let mut settings = vec![];
        if let Some(J::Object(map)) = fields.get("settings") {
            for (k, v) in map {
                let value = match v {
                    J::String(s) => literal(s),
                    other => other.to_string(),
                };
                settings.push(format!("set {k} = {value}"));
            }
        }
        let lock_timeout = match fields.get("lock_timeout") {
            None | Some(J::Null) => std::time::Duration::from_secs(60),
            Some(v) => v.as_f64().filter(|s| *s >= 0.0).map(std::time::Duration::from_secs_f64).ok_or_else(|| WarehouseError::Connect {
                target: "duckdb".into(),
                message: format!("`lock_timeout` must be a number of seconds, not {v}"),
            })?,
        };
        Ok(DuckDb { root: Mutex::new(None), path, database, settings, lock_timeout, users: Arc::new(()) })
    }

    fn open_root(&self) -> Result<Root> {
        let started = std::time::Instant::now();
        let (conn, turn) = match &self.path {
            Some(full) => {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| WarehouseError::Io(format!("{}: {e}", parent.display())))?;
                }
                let turn = Turn::take(full, self.lock_timeout)?;
                // Another process (not Weir's) holds the file: wait for its turn to end.
                let mut pause = std::time::Duration::from_millis(20);
                loop {
                    match duckdb::Connection::open(full) {
                        Ok(c) => break (c, Some(turn)),
                        Err(e) if e.to_string().contains("Could not set lock") && started.elapsed() < self.lock_timeout => {
                            std::thread::sleep(pause.min(self.lock_timeout.saturating_sub(started.elapsed())));
                            pause = (pause * 2).min(std::time::Duration::from_millis(500));
                        }
                        Err(e) => {
                            let waited = if e.to_string().contains("Could not set lock") {
                                format!(
                                    " (waited {:.0}s for it; the profile's `lock_timeout` sets how long)",
                                    self.lock_timeout.as_secs_f64()
                                )
                            } else {
                                String::new()
                            };
                            return Err(WarehouseError::Connect { target: full.display().to_string(), message: format!("{e}{waited}") });
                        }
                    }
                }
            }
            None => (
                duckdb::Connection::open_in_memory()
                    .map_err(|e| WarehouseError::Connect { target: ":memory:".into(), message: e.to_string() })?,
                None,
            ),
        };
        for sql in &self.settings {
            conn.execute_batch(sql).map_err(|e| err(e, sql))?;
        }
        Ok(Root { conn, _turn: turn })
    }

    pub fn database(&self) -> &str {
        &self.database
    }
}

impl Warehouse for DuckDb {
    fn adapter_type(&self) -> &'static str {
        "duckdb"
    }

    fn snapshot_time_sql(&self) -> &'static str {
        "now()::timestamp"
    }

    fn connect(&self) -> Result<Box<dyn Connection>> {
        let mut root = self.root.lock().map_err(|_| WarehouseError::Io("duckdb connection lock poisoned".into()))?;
        if root.is_none() {
            *root = Some(self.open_root()?);
        }
        let Some(root) = root.as_ref() else { return Err(WarehouseError::Io("duckdb did not open".into())) };
        let conn = root.conn.try_clone().map_err(|e| WarehouseError::Connect { target: self.describe(), message: e.to_string() })?;
        Ok(Box::new(DuckDbConnection { conn, _user: self.users.clone() }))
    }

    fn one_writer(&self) -> bool {
        self.path.is_some()
    }

    fn release(&self) -> bool {
        let Ok(mut root) = self.root.lock() else { return false };
        if self.path.is_none() || root.is_none() || Arc::strong_count(&self.users) > 1 {
            return false;
        }
        *root = None;
        true
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("duckdb file {}", p.display()),
            None => "duckdb in memory".to_string(),
        }
    }

    fn create_schema_sql(&self, database: &str, schema: &str) -> String {
        format!("create schema if not exists {}.{}", self.quote(database), self.quote(schema))
    }

    fn create_temp_table_sql(&self, name: &str, sql: &str) -> (String, String) {
        let q = self.quote(name);
        (format!("create or replace temporary table {q} as (\n{sql}\n)"), q)
    }

    fn drop_relation_sql(&self, r: &Relation, kind: RelationKind) -> String {
        let what = if kind == RelationKind::View { "view" } else { "table" };
        format!("drop {what} if exists {} cascade", self.render(r))
    }

    fn supports_copy_from_file(&self) -> bool {
        true
    }

    fn regex_match_sql(&self, expr: &str, pattern: &str) -> String {
        format!("regexp_full_match(cast({expr} as varchar), {})", crate::literal(pattern))
    }

    fn percentile_sql(&self, expr: &str, fraction: f64) -> String {
        format!("quantile_cont({expr}, {fraction})")
    }

    /// DuckDB's own aggregate: a filtered count without the `case` that selects and merges
    /// rows for each branch.
    fn count_if_sql(&self, cond: &str) -> String {
        format!("count_if({cond})")
    }

    /// As a function of the one column rather than `IN`: DuckDB runs a function of a
    /// dictionary-compressed column once per dictionary entry, where `IN` compares every row
    /// (7 country codes over 100M rows: 0.15 s against 1.34 s). It compares as `IN` does,
    /// a column's collation included.
    fn text_in_sql(&self, text: &str, values: &[String]) -> String {
        format!("list_position([{}], {text}) is not null", values.join(", "))
    }

    fn type_sql(&self, t: &ColumnType) -> String {
        match t {
            ColumnType::Varchar => "VARCHAR".into(),
            ColumnType::Double => "DOUBLE".into(),
            ColumnType::Blob => "BLOB".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            ColumnType::List(element) if element.is_list_element() => format!("{}[]", self.type_sql(element)),
            // Another engine's struct or list of lists arrives as its text.
            ColumnType::Other(_) | ColumnType::List(_) => "VARCHAR".into(),
            other => other.to_string().to_uppercase(),
        }
    }

    fn try_cast_sql(&self, expr: &str, t: &ColumnType) -> Option<String> {
        Some(format!("try_cast({expr} as {})", self.type_sql(t)))
    }

    fn row_json_sql(&self, alias: &str) -> String {
        format!("cast(to_json({alias}) as varchar)")
    }

    fn json_object_sql(&self, pairs: &[(String, String)]) -> String {
        let args: Vec<String> = pairs.iter().map(|(k, e)| format!("{}, {e}", literal(k))).collect();
        format!("cast(json_object({}) as varchar)", args.join(", "))
    }

    fn json_field_sql(&self, record: &str, key: &str, t: &ColumnType) -> String {
        let path = literal(&format!("$.\"{}\"", key.replace('"', "\\\"")));
        match t {
            ColumnType::Other(_) | ColumnType::Json | ColumnType::List(_) => format!("json_extract({record}, {path})"),
            ColumnType::Varchar => format!("json_extract_string({record}, {path})"),
            _ => format!("try_cast(json_extract_string({record}, {path}) as {})", self.type_sql(t)),
        }
    }

    fn file_scan_sql(&self, scan: &FileScan) -> Option<String> {
        // DuckDB keeps a CSV scan's rejected lines only without `union_by_name`: with
        // rejects, each group of files with the same columns gets its own scan (and tables),
        // and the scans are unioned by name.
        if scan.format == FileFormat::Csv && scan.rejects.is_some() && scan.paths.len() > 1 {
            let parts: Vec<String> = csv_groups(scan).iter().enumerate().map(|(i, g)| csv_scan(scan, g, Some(i))).collect();
            return Some(parts.join("\nunion all by name\n"));
        }
        if scan.format == FileFormat::Csv {
            return Some(csv_scan(scan, &scan.paths, scan.rejects.as_ref().map(|_| 0)));
        }
        let mut args = vec![paths_list(&scan.paths), "union_by_name = true".to_string()];
        if let Some(col) = &scan.filename_column {
            args.push(format!("filename = {}", literal(col)));
        }
        let function = match scan.format {
            FileFormat::JsonLines => {
                args.push("format = 'newline_delimited'".into());
                // Every line takes part in type inference, so a late line of another type
                // widens the column instead of failing the load.
                args.push("sample_size = -1".into());
                "read_json"
            }
            _ => "read_parquet",
        };
        Some(format!("select * from {function}({})", args.join(", ")))
    }

    fn any_order_sql(&self) -> Option<[&'static str; 2]> {
        // Session-scoped: other connections (models built at the same time) keep their order.
        Some(["set session preserve_insertion_order = false", "reset session preserve_insertion_order"])
    }

    fn file_rejects_sql(&self, scan: &FileScan) -> Option<String> {
        let prefix = scan.rejects.as_ref().filter(|_| scan.format == FileFormat::Csv)?;
        let scans = if scan.paths.len() > 1 { csv_groups(scan).len() } else { 1 };
        let parts: Vec<String> = (0..scans)
            .map(|i| {
                let table = format!("{prefix}_{i}");
                format!(
                    "select s.file_path, e.line, e.csv_line as raw,
                            e.error_type || coalesce(' in column ' || e.column_name, '') || ': ' || e.error_message as reason
                     from {} e join {} s on e.scan_id = s.scan_id and e.file_id = s.file_id",
                    self.quote(&table),
                    self.quote(&format!("{table}_scan"))
                )
            })
            .collect();
        // DuckDB records a short row once per missing column: a bad line is one rejected row
        // with all its reasons, so that rows read = rows loaded + rows rejected.
        Some(format!(
            "select file_path || ':' || line as position, min(raw) as raw, string_agg(reason, '; ' order by reason) as reason
             from ({}) as r group by file_path, line order by file_path, line",
            parts.join("\nunion all\n")
        ))
    }

    fn known_target_keys(&self) -> &'static [&'static str] {
        &[
            "type",
            "path",
            "threads",
            "schema",
            "database",
            "extensions",
            "settings",
            "attach",
            "external_root",
            "plugins",
            "filesystems",
            "secrets",
            "module_paths",
            "use_credential_provider",
            "disable_transactions",
            "keep_open",
            "retries",
            "config_options",
            "is_ducklake",
            "lock_timeout",
        ]
    }
}

struct DuckDbConnection {
    conn: duckdb::Connection,
    _user: Arc<()>,
}

impl Connection for DuckDbConnection {
    fn execute(&mut self, sql: &str) -> Result<u64> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| err(e, sql))?;
        stmt.execute([]).map(|n| n as u64).map_err(|e| err(e, sql))
    }

    fn query(&mut self, sql: &str) -> Result<QueryResult> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| err(e, sql))?;
        let arrow = stmt.query_arrow([]).map_err(|e| err(e, sql))?;
        let schema = arrow.get_schema();
        let columns: Vec<Column> = schema.fields().iter().map(|f| Column::new(f.name().clone(), type_name(f.data_type()))).collect();
        let mut rows = vec![];
        for batch in arrow {
            let n = batch.num_rows();
            let start = rows.len();
            rows.extend((0..n).map(|_| Vec::with_capacity(columns.len())));
            for col in batch.columns() {
                append_column(col.as_ref(), &mut rows[start..]).map_err(|m| WarehouseError::query(m, sql))?;
            }
        }
        Ok(QueryResult { columns, rows })
    }

    fn list_relations(&mut self, database: &str, schemas: &[String]) -> Result<Vec<(Relation, RelationKind)>> {
        // DuckDB's own catalog functions, not `information_schema`, whose views are bound
        // from their SQL definitions on every call: 1.1 ms a call instead of 2.4 ms, measured
        // on the backfill benchmark's file (each `weir` invocation makes one or two).
        let mut filter = format!("lower(database_name) = lower({})", literal(database));
        if !schemas.is_empty() {
            let list: Vec<String> = schemas.iter().map(|s| literal(&s.to_lowercase())).collect();
            filter.push_str(&format!(" and lower(schema_name) in ({})", list.join(", ")));
        }
        let sql = format!(
            "select database_name, schema_name, table_name, 'BASE TABLE' from duckdb_tables() where {filter}
             union all
             select database_name, schema_name, view_name, 'VIEW' from duckdb_views() where not internal and {filter}"
        );
        relations_from(self.query(&sql)?)
    }

    fn columns(&mut self, r: &Relation) -> Result<Vec<Column>> {
        let sql = format!(
            "select column_name, data_type from duckdb_columns() where lower(database_name) = lower({}) and lower(schema_name) = lower({}) and lower(table_name) = lower({}) order by column_index",
            literal(&r.database),
            literal(&r.schema),
            literal(&r.identifier)
        );
        Ok(self.query(&sql)?.rows.into_iter().map(|row| Column::new(row[0].to_string(), row[1].to_string())).collect())
    }

    fn describe_query(&mut self, sql: &str) -> Result<Vec<Column>> {
        let q = format!("describe (\n{sql}\n)");
        Ok(self.query(&q)?.rows.into_iter().map(|row| Column::new(row[0].to_string(), row[1].to_string())).collect())
    }

    fn canonical_type(&mut self, declared: &str) -> Result<String> {
        let sql = format!("select typeof(cast(null as {declared}))");
        let r = self.query(&sql)?;
        Ok(r.scalar().map(|d| d.to_string()).unwrap_or_else(|| declared.to_string()))
    }

    fn copy_csv(&mut self, target: &str, columns: &[String], path: &Path, delimiter: char) -> Result<u64> {
        let cols: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
        let sql = format!(
            "copy {target} ({}) from {} (format csv, header true, delimiter {})",
            cols.join(", "),
            literal(&path.to_string_lossy()),
            literal(&delimiter.to_string())
        );
        self.execute(&sql)
    }

    fn server_version(&mut self) -> Result<String> {
        Ok(self.query("select version()")?.scalar().map(|d| format!("DuckDB {d}")).unwrap_or_default())
    }

    fn for_each_batch(&mut self, sql: &str, each: &mut dyn FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| err(e, sql))?;
        // Streamed: DuckDB hands over a chunk at a time rather than the whole result.
        for batch in stmt.stream_arrow([]).map_err(|e| err(e, sql))? {
            each(&batch.map_err(|e| err(e, sql))?)?;
        }
        Ok(())
    }

    /// DuckDB's appender: Arrow columns become DuckDB vectors with no text in between.
    fn copy_in_batches(&mut self, target: &Relation, feed: &mut BatchFeed<'_>) -> Result<u64> {
        let what = format!("appending to {}.{}.{}", target.database, target.schema, target.identifier);
        let width = self.columns(target)?.len();
        let conn = &self.conn;
        let mut app = None;
        let mut rows = 0u64;
        feed(&mut |batch| {
            rows += batch.num_rows() as u64;
            let batch = nulls_kept(batch).map_err(|e| WarehouseError::query(e.to_string(), &what))?;
            if app.is_none() {
                // Columns the batches lack take their defaults, which DuckDB writes as
                // constants: cheaper than converting the same value on every row.
                let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let opened = if names.len() < width {
                    conn.appender_with_columns_to_catalog_and_db(&target.identifier, &target.database, &target.schema, &names)
                } else {
                    conn.appender_to_catalog_and_db(&target.identifier, &target.database, &target.schema)
                };
                app = Some(opened.map_err(|e| err(e, &what))?);
            }
            match app.as_mut() {
                Some(app) => app.append_record_batch(batch).map_err(|e| err(e, &what)),
                None => Ok(()),
            }
        })?;
        if let Some(mut app) = app {
            app.flush().map_err(|e| err(e, &what))?;
        }
        Ok(rows)
    }
}

/// `batch` as DuckDB's appender should take it. The `duckdb` crate rebuilds an interval
/// column from its values alone, so a null interval would arrive as `00:00:00`; a column with
/// nulls goes as text instead (`14 months 3 days 5 microseconds`, nulls kept), which the
/// appender casts to the table's `INTERVAL`.
fn nulls_kept(batch: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let lossy = |c: &ArrayRef| matches!(c.data_type(), DataType::Interval(IntervalUnit::MonthDayNano)) && c.null_count() > 0;
    if !batch.columns().iter().any(lossy) {
        return Ok(batch.clone());
    }
    let mut fields = vec![];
    let mut columns = vec![];
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match c.as_primitive_opt::<IntervalMonthDayNanoType>().filter(|_| lossy(c)) {
            Some(intervals) => {
                let text: StringArray = intervals
                    .iter()
                    .map(|v| v.map(|v| format!("{} months {} days {} microseconds", v.months, v.days, v.nanoseconds / 1000)))
                    .collect();
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                columns.push(Arc::new(text) as ArrayRef);
            }
            None => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The files one scan reads where rejected lines are kept: those whose first line is the
/// same text (so their columns line up; DuckDB sniffs the types over the first ten and widens
/// them). One scan of a thousand small files takes a second where a thousand scans unioned
/// took ten, most of it in DuckDB's optimizer. Without every file's first line, each file is
/// scanned alone.
fn csv_groups(scan: &FileScan) -> Vec<Vec<PathBuf>> {
    if scan.first_lines.len() != scan.paths.len() {
        return scan.paths.iter().map(|p| vec![p.clone()]).collect();
    }
    let mut groups: Vec<(&str, Vec<PathBuf>)> = vec![];
    for (path, first) in scan.paths.iter().zip(&scan.first_lines) {
        match groups.iter_mut().find(|(line, _)| line == first) {
            Some((_, files)) => files.push(path.clone()),
            None => groups.push((first, vec![path.clone()])),
        }
    }
    groups.into_iter().map(|(_, files)| files).collect()
}

/// One `read_csv` over `paths`; with `rejects_at`, its failed lines go to the tables
/// `{rejects}_{rejects_at}` and `..._scan` (and the files are read by position, so they must
/// have the same columns).
fn csv_scan(scan: &FileScan, paths: &[PathBuf], rejects_at: Option<usize>) -> String {
    let mut args = vec![paths_list(paths)];
    if paths.len() > 1 && rejects_at.is_none() {
        args.push("union_by_name = true".into());
    }
    if let Some(col) = &scan.filename_column {
        args.push(format!("filename = {}", literal(col)));
    }
    let o = &scan.options;
    args.push(format!("header = {}", o.header));
    // A quoted empty field is an empty text, not a null: what was in the file.
    args.push("allow_quoted_nulls = false".into());
    for (key, value) in [("delim", &o.delimiter), ("quote", &o.quote), ("escape", &o.escape)] {
        if let Some(v) = value {
            args.push(format!("{key} = {}", literal(v)));
        }
    }
    if !o.nulls.is_empty() {
        let nulls: Vec<String> = o.nulls.iter().map(|n| literal(n)).collect();
        args.push(format!("nullstr = [{}]", nulls.join(", ")));
    }
    if !o.types.is_empty() {
        let types: Vec<String> = o.types.iter().map(|(c, t)| format!("{}: {}", literal(c), literal(t))).collect();
        args.push(format!("types = {{{}}}", types.join(", ")));
    }
    if let (Some(prefix), Some(i)) = (&scan.rejects, rejects_at) {
        let table = format!("{prefix}_{i}");
        args.push("store_rejects = true".into());
        args.push(format!("rejects_table = {}", literal(&table)));
        args.push(format!("rejects_scan = {}", literal(&format!("{table}_scan"))));
    }
    format!("select * from read_csv({})", args.join(", "))
}

fn paths_list(paths: &[PathBuf]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| literal(&p.to_string_lossy())).collect();
    format!("[{}]", quoted.join(", "))
}

pub(crate) fn relations_from(r: QueryResult) -> Result<Vec<(Relation, RelationKind)>> {
    Ok(r.rows
        .into_iter()
        .filter_map(|row| {
            let kind = kind_of(&row.get(3)?.to_string())?;
            Some((Relation::new(row[0].to_string(), row[1].to_string(), row[2].to_string()), kind))
        })
        .collect())
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

/// Appends one Arrow column to row buffers, as [`Datum`]s.
fn append_column(col: &dyn Array, rows: &mut [Vec<Datum>]) -> std::result::Result<(), String> {
    macro_rules! ints {
        ($t:ty) => {{
            let a = col.as_primitive::<$t>();
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if a.is_null(i) { Datum::Null } else { Datum::Int(a.value(i) as i64) });
            }
        }};
    }
    match col.data_type() {
        DataType::Boolean => {
            let a = col.as_boolean();
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if a.is_null(i) { Datum::Null } else { Datum::Bool(a.value(i)) });
            }
        }
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if a.is_null(i) { Datum::Null } else { Datum::Float(a.value(i) as f64) });
            }
        }
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if a.is_null(i) { Datum::Null } else { Datum::Float(a.value(i)) });
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            // Instants in UTC. Formatting them under their zone's name would need a time-zone
            // database; DuckDB's own text for them is the UTC time and `+00`.
            let utc = col.as_primitive::<TimestampMicrosecondType>().clone().with_timezone_opt(None::<String>);
            let fmt = ArrayFormatter::try_new(&utc, &FormatOptions::default()).map_err(|e| e.to_string())?;
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if col.is_null(i) { Datum::Null } else { Datum::Text(format!("{}+00", fmt.value(i))) });
            }
        }
        _ => {
            let opts = FormatOptions::default();
            let fmt = ArrayFormatter::try_new(col, &opts).map_err(|e| e.to_string())?;
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if col.is_null(i) { Datum::Null } else { Datum::Text(fmt.value(i).to_string()) });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> DuckDb {
        DuckDb::open(&Map::new(), Path::new(".")).unwrap()
    }

    /// Files with the same header are read by one scan, whatever their number, and every
    /// rejected line is still kept: a short row in the second file of a group and one in a
    /// file of its own.
    #[test]
    fn csv_files_with_the_same_header_share_one_scan_and_keep_their_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = vec![];
        let mut first_lines = vec![];
        for (i, (header, body)) in
            [("id,amount", "1,10\n"), ("id,amount,note", "2,20,x\n"), ("id,amount", "3,30\n4\n"), ("id,amount", "5,50\n")]
                .iter()
                .enumerate()
        {
            let p = dir.path().join(format!("f{i}.csv"));
            std::fs::write(&p, format!("{header}\n{body}")).unwrap();
            paths.push(p);
            first_lines.push(header.to_string());
        }
        let scan = FileScan {
            format: FileFormat::Csv,
            paths,
            options: crate::ReadOptions { header: true, ..Default::default() },
            rejects: Some("rj".into()),
            first_lines,
            ..Default::default()
        };
        let wh = memory();
        let sql = wh.file_scan_sql(&scan).unwrap();
        assert_eq!(sql.matches("read_csv(").count(), 2, "{sql}");
        let mut c = wh.connect().unwrap();
        let rows = c.query(&format!("select id, amount, note from ({sql}) order by id")).unwrap();
        let ids: Vec<String> = rows.rows.iter().map(|r| r[0].to_string()).collect();
        assert_eq!(ids, ["1", "2", "3", "5"]);
        let rejected = c.query(&wh.file_rejects_sql(&scan).unwrap()).unwrap();
        assert_eq!(rejected.rows.len(), 1);
        assert!(rejected.rows[0][0].to_string().ends_with("f2.csv:3"), "{:?}", rejected.rows);
        // Without every file's first line, each file is read alone, as before.
        let alone = FileScan { first_lines: vec![], ..scan };
        assert_eq!(wh.file_scan_sql(&alone).unwrap().matches("read_csv(").count(), 4);
    }

    #[test]
    fn queries_return_typed_values() {
        let db = memory();
        let mut c = db.connect().unwrap();
        let r = c.query("select 1 as a, 'x' as b, 2.5::double as c, null::int as d, true as e, date '2024-01-02' as f").unwrap();
        assert_eq!(
            r.rows[0],
            vec![
                Datum::Int(1),
                Datum::Text("x".into()),
                Datum::Float(2.5),
                Datum::Null,
                Datum::Bool(true),
                Datum::Text("2024-01-02".into())
            ]
        );
        assert_eq!(r.columns[0].name, "a");
        // Times with a zone come back in UTC, without a time-zone database.
        let r = c.query("select cast(timestamp '2024-01-02 03:04:05' as timestamptz) as t").unwrap();
        assert_eq!(r.rows[0], vec![Datum::Text("2024-01-02T03:04:05+00".into())]);
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_behind() {
        let db = memory();
        let mut c = db.connect().unwrap();
        c.execute("create table t as select 1 as x").unwrap();
        let stmts =
            vec!["drop table t".to_string(), "create table t as select 2 as x".to_string(), "select nonsense from nowhere".to_string()];
        assert!(c.transaction(&stmts).is_err());
        assert_eq!(c.query("select x from t").unwrap().scalar(), Some(&Datum::Int(1)));
    }

    #[test]
    fn a_file_is_let_go_of_only_when_no_connection_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut fields = Map::new();
        fields.insert("path".into(), J::String("x.duckdb".into()));
        let db = DuckDb::open(&fields, dir.path()).unwrap();
        assert!(db.one_writer());
        let mut c = db.connect().unwrap();
        c.execute("create table t as select 1 as x").unwrap();
        assert!(!db.release(), "a connection is open");
        drop(c);
        assert!(db.release());
        assert!(!db.release(), "nothing left to let go of");
        // The next connection opens the file again, with what was written.
        let rows = db.connect().unwrap().query("select x from t").unwrap().rows;
        assert_eq!(rows.len(), 1);
        let m = memory();
        drop(m.connect().unwrap());
        assert!(!m.one_writer() && !m.release(), "an in-memory database is the process's own");
        fields.insert("lock_timeout".into(), J::String("soon".into()));
        let e = DuckDb::open(&fields, dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`lock_timeout` must be a number of seconds"), "{e}");
    }

    #[test]
    fn processes_take_turns_on_the_lock_file_before_duckdb_opens() {
        let dir = tempfile::tempdir().unwrap();
        let mut fields = Map::new();
        fields.insert("path".into(), J::String("x.duckdb".into()));
        fields.insert("lock_timeout".into(), J::from(0.3));
        // Two of the process's databases on one file share its turn.
        let (a, b) = (DuckDb::open(&fields, dir.path()).unwrap(), DuckDb::open(&fields, dir.path()).unwrap());
        let held = a.connect().unwrap();
        drop(b.connect().unwrap());
        drop(held);
        assert!(a.release() && b.release());
        // Another process's turn (a lock of its own on the file) is waited for, then named.
        let other = std::fs::File::open(dir.path().join("x.duckdb.lock")).unwrap();
        other.lock().unwrap();
        let started = std::time::Instant::now();
        let e = a.connect().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("another process has held it") && e.contains("x.duckdb.lock"), "{e}");
        assert!(started.elapsed() >= std::time::Duration::from_millis(300), "it waited for `lock_timeout`");
        other.unlock().unwrap();
        a.connect().unwrap().execute("create table t as select 1 as x").unwrap();
    }

    #[test]
    fn connections_share_one_database_and_list_it() {
        let db = memory();
        db.connect().unwrap().execute("create schema s; create view s.v as select 1 as x").unwrap();
        let rels = db.connect().unwrap().list_relations("memory", &["s".to_string()]).unwrap();
        assert_eq!(rels, vec![(Relation::new("memory", "s", "v"), RelationKind::View)]);
    }

    #[test]
    fn types_are_named_as_the_engine_names_them() {
        let db = memory();
        let mut c = db.connect().unwrap();
        assert_eq!(c.canonical_type("int").unwrap(), "INTEGER");
        assert_eq!(c.canonical_type("text").unwrap(), "VARCHAR");
    }
}
