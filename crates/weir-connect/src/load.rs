//! Running one load: extract into a stage table of the destination, then evolve, write and
//! record in one transaction of the destination, then record in the metadata store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use postgres::types::Kind as PgKind;
use weir_core::{ColumnType, Datum, Relation, RelationKind};
use weir_graph::loads::{DatabaseSource, Engine, FileSource, Load, SchemaContract, Source, WriteDisposition};
use weir_store::{LoadRun, LoadedFile, Store, redact};
use weir_warehouse::postgres::pg_message;
use weir_warehouse::{Connection, FileFormat, FileScan, RecordBatch, Warehouse, WarehouseError, literal};

use crate::ConnectError;
use crate::files::{self, Rejected};
use crate::http::{self, HttpSource};
use crate::mysql::{self as my, MysqlSource};
use crate::quotes;
use crate::topic::{self, Encoder, TopicOut};
use weir_warehouse::batches::ReadError;
use weir_warehouse::pgcopy::{self, undomained};

/// The columns every loaded row gets.
pub const LOAD_ID: &str = "_weir_load_id";
pub const LOADED_AT: &str = "_weir_loaded_at";
/// The file a row of a file load came from (relative to the project).
pub const SOURCE_FILE: &str = "_weir_source_file";
/// A schema-on-read load's whole record, as JSON text.
pub const RECORD: &str = "_weir_record";
/// Rows that could not be loaded, with the reason, in the destination schema.
pub const REJECTED_TABLE: &str = "_weir_rejected";
/// The destination's own record of committed loads, written in the load's transaction.
pub const LOADS_TABLE: &str = "_weir_loads";

/// How a load is run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The project root: relative globs start there.
    pub root: PathBuf,
    /// The database of the active target, where the raw schema lives.
    pub database: String,
    /// Start over: forget the high-water mark and loaded files, and replace the table.
    pub full_refresh: bool,
    /// Told what the load is doing, for progress bars.
    pub progress: Option<ProgressFn>,
    /// Where a load with `to: topic` publishes its rows.
    pub topic: Option<Arc<TopicOut>>,
}

/// What a running load reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Rows (or API records) and bytes extracted so far.
    Extracting { rows: u64, bytes: u64 },
    /// Extraction is done: the destination is writing this many staged rows.
    Writing { rows: u64 },
    /// The load is over, committed or not.
    Done,
}

/// What a [`ProgressFn`] calls: the load's name and where it stands.
pub type ProgressListener = dyn Fn(&str, Progress) + Send + Sync;

/// A listener for [`Progress`], given the load's name.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<ProgressListener>);

impl std::fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// What one load did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub load: String,
    pub load_id: String,
    pub destination: Relation,
    /// The topic the rows were published to, for a load with `to: topic` (its destination
    /// is then only where its stage and rejected rows were).
    pub topic: Option<String>,
    /// Rows the source gave (loaded + rejected).
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// Files read, and files left out as already loaded.
    pub files_loaded: usize,
    pub files_skipped: usize,
    /// Nothing new in the source: no transaction was made.
    pub up_to_date: bool,
    /// The destination table was gone (dropped, or its database file deleted) while the
    /// metadata store still held what had been loaded into it: that state was forgotten and
    /// the load read its source from the start.
    pub started_over: bool,
    pub cursor: Option<String>,
    /// Schema changes made (`added column raw.orders.note varchar`).
    pub schema_changes: Vec<String>,
    /// The first rejected rows, for the report.
    pub rejected_sample: Vec<Rejected>,
    pub elapsed: Duration,
}

impl LoadReport {
    /// One line for people: what was read, loaded and rejected, and what changed.
    pub fn summary(&self) -> String {
        let table = match &self.topic {
            Some(topic) => format!("topic '{topic}'"),
            None => format!("{}.{}", self.destination.schema, self.destination.identifier),
        };
        let over = if self.started_over { format!("; started over: {table} was not in the destination") } else { String::new() };
        if self.up_to_date {
            return format!(
                "{table} is up to date: nothing new in the source ({} file{} already loaded){over}",
                self.files_skipped,
                plural(self.files_skipped)
            );
        }
        let what = if self.topic.is_some() { "event" } else { "row" };
        let mut s = format!("{} {what}{} into {table}", self.rows_loaded, plural(self.rows_loaded as usize));
        if self.files_loaded > 0 {
            s.push_str(&format!(" from {} file{}", self.files_loaded, plural(self.files_loaded)));
        }
        if self.files_skipped > 0 {
            s.push_str(&format!(" ({} already loaded)", self.files_skipped));
        }
        if self.rows_rejected > 0 {
            s.push_str(&format!(
                "; {} rejected (see {}.{REJECTED_TABLE} where load_id = '{}')",
                self.rows_rejected, self.destination.schema, self.load_id
            ));
        }
        if let Some(c) = &self.cursor {
            s.push_str(&format!("; cursor at {c}"));
        }
        for change in &self.schema_changes {
            s.push_str(&format!("; {change}"));
        }
        s.push_str(&over);
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Runs one load against the warehouse, recording it in the store.
pub fn run_load(wh: &dyn Warehouse, load: &Load, store: &Store, opts: &LoadOptions) -> Result<LoadReport, ConnectError> {
    let started = Instant::now();
    let target = Relation::new(&opts.database, &load.schema, &load.table);
    let topic = match (&load.topic, &opts.topic) {
        (None, _) => None,
        (Some(name), Some(out)) if *name == out.name => Some(out.as_ref()),
        (Some(name), _) => {
            return Err(ConnectError::Topic {
                topic: name.clone(),
                message: format!("load '{}' was run without its topic's event log", load.name),
            });
        }
    };
    // The store's records of a topic load are the topic's, not a table's.
    let key = topic.map_or_else(|| wh.render(&target), |t| t.destination());
    let wh_err = |source: WarehouseError| ConnectError::Warehouse { load: load.name.clone(), source };
    let mut conn = wh.connect().map_err(wh_err)?;
    conn.execute(&wh.create_schema_sql(&opts.database, &load.schema)).map_err(wh_err)?;
    match topic {
        Some(out) => settle_published(out, load, &key, store)?,
        None => settle(wh, conn.as_mut(), load, &target, store)?,
    }
    if opts.full_refresh {
        store.reset_load_state(&key)?;
    }
    let run = LoadRun {
        load_id: uuid::Uuid::new_v4().to_string(),
        load_name: load.name.clone(),
        destination: key.clone(),
        status: "running".into(),
        started_at: Utc::now(),
        finished_at: None,
        rows_read: None,
        rows_loaded: None,
        rows_rejected: None,
        cursor: None,
        message: None,
    };
    store.begin_load(&run)?;
    let stage = target.with_identifier(format!("_weir_stage_{}", load.table));
    let mut job = Job {
        wh,
        conn: conn.as_mut(),
        load,
        opts,
        target: &target,
        stage: &stage,
        load_id: &run.load_id,
        loaded_at: run.started_at.naive_utc(),
        stage_has_meta: false,
        target_existed: false,
        topic,
        key: &key,
        run: &run,
    };
    let outcome = job.run(store);
    job.progress(Progress::Done);
    // The stage is scratch space: gone whatever happened (a killed run's is dropped by the next).
    let _ = job.conn.execute(&wh.drop_relation_sql(&stage, RelationKind::Table));
    let finished = |status: &str, message: Option<String>, r: Option<&LoadReport>, files: &[LoadedFile]| {
        let done = LoadRun {
            status: status.into(),
            finished_at: Some(Utc::now()),
            rows_read: r.map(|r| r.rows_read),
            rows_loaded: r.map(|r| r.rows_loaded),
            rows_rejected: r.map(|r| r.rows_rejected),
            cursor: r.and_then(|r| r.cursor.clone()),
            message,
            ..run.clone()
        };
        store.finish_load(&done, files)
    };
    match outcome {
        Ok((mut report, files)) => {
            let note = (!report.schema_changes.is_empty()).then(|| report.schema_changes.join("; "));
            finished("committed", note, Some(&report), &files)?;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        Err(e) => {
            finished("failed", Some(e.to_string()), None, &[])?;
            Err(e)
        }
    }
}

/// Creates a destination schema's bookkeeping tables (and the schema) if they are not there.
/// Loads running in parallel into one schema would each create them in their own
/// transaction, and DuckDB fails all but one of those ("write-write conflict"): a run
/// creates them once before its loads start.
pub fn prepare_destination(wh: &dyn Warehouse, conn: &mut dyn Connection, database: &str, schema: &str) -> Result<(), WarehouseError> {
    conn.execute(&wh.create_schema_sql(database, schema))?;
    for sql in bookkeeping_sql(wh, database, schema) {
        conn.execute(&sql)?;
    }
    Ok(())
}

/// The rejected-rows table and the destination's record of committed loads. Tables an
/// older Weir created keep their text `load_id`, which takes the same values.
fn bookkeeping_sql(wh: &dyn Warehouse, database: &str, schema: &str) -> [String; 2] {
    let text = wh.type_sql(&ColumnType::Varchar);
    let uuid = wh.type_sql(&ColumnType::Uuid);
    let big = wh.type_sql(&ColumnType::BigInt);
    let ts = wh.type_sql(&ColumnType::Timestamp);
    let table = |name: &str| wh.render(&Relation::new(database, schema, name));
    [
        format!(
            "create table if not exists {} (load_id {uuid}, load_name {text}, position {text}, raw {text}, reason {text}, rejected_at {ts})",
            table(REJECTED_TABLE),
        ),
        format!(
            "create table if not exists {} (load_id {uuid} primary key, load_name {text}, destination {text}, write_disposition {text},
             rows_read {big}, rows_loaded {big}, rows_rejected {big}, cursor_value {text}, files {text}, schema_changes {text}, committed_at {ts})",
            table(LOADS_TABLE),
        ),
    ]
}

/// Settles the runs of a load into a topic that a killed process left unsettled: committed
/// (with what it had prepared) if the topic's log holds its mark, failed otherwise.
fn settle_published(out: &TopicOut, load: &Load, key: &str, store: &Store) -> Result<(), ConnectError> {
    let unsettled = store.unsettled_loads(key)?;
    if unsettled.is_empty() {
        return Ok(());
    }
    // The log is asked once: the last mark is the only run that can have published.
    let last = topic::last_mark(out, &load.name)?;
    for id in unsettled {
        let run = match store.prepared_load(&id)? {
            Some((run, files)) if topic::is_mark_of(last, &id) => {
                let message = format!("settled from topic '{}' after an interrupted run", out.name);
                let run = LoadRun { status: "committed".into(), finished_at: Some(Utc::now()), message: Some(message), ..run };
                store.finish_load(&run, &files)?;
                continue;
            }
            _ => LoadRun::failed(&id, &load.name, key, "interrupted before it published: none of its events were kept"),
        };
        store.finish_load(&run, &[])?;
    }
    Ok(())
}

/// Settles runs a killed process left `running`: committed if the destination recorded
/// them in its transaction, failed (having written nothing) otherwise.
fn settle(wh: &dyn Warehouse, conn: &mut dyn Connection, load: &Load, target: &Relation, store: &Store) -> Result<(), ConnectError> {
    let key = wh.render(target);
    let unsettled = store.unsettled_loads(&key)?;
    if unsettled.is_empty() {
        return Ok(());
    }
    let loads_table = target.with_identifier(LOADS_TABLE);
    let exists = relation_exists(conn, &loads_table).map_err(|source| ConnectError::Warehouse { load: load.name.clone(), source })?;
    for id in unsettled {
        let row = if exists {
            // Compared as text: the column is a `uuid` (text in tables an older Weir made), and
            // the store may hold an id that is no UUID.
            let sql = format!(
                "select rows_read, rows_loaded, rows_rejected, cursor_value, files from {} where cast(load_id as {}) = {}",
                wh.render(&loads_table),
                wh.type_sql(&ColumnType::Varchar),
                literal(&id)
            );
            conn.query(&sql).map_err(|source| ConnectError::Warehouse { load: load.name.clone(), source })?.rows.into_iter().next()
        } else {
            None
        };
        let mut run = LoadRun::failed(&id, &load.name, &key, "interrupted before it committed: nothing of it was kept");
        let mut files = vec![];
        if let Some(row) = row {
            let n = |d: &Datum| d.to_string().parse::<u64>().ok();
            run.status = "committed".into();
            run.message = Some("settled from the destination's record after an interrupted run".into());
            run.rows_read = n(&row[0]);
            run.rows_loaded = n(&row[1]);
            run.rows_rejected = n(&row[2]);
            run.cursor = (!matches!(row[3], Datum::Null)).then(|| row[3].to_string());
            files = LoadedFile::parse_list(&row[4].to_string()).unwrap_or_default();
        }
        store.finish_load(&run, &files)?;
    }
    Ok(())
}

struct Job<'a> {
    wh: &'a dyn Warehouse,
    conn: &'a mut dyn Connection,
    load: &'a Load,
    opts: &'a LoadOptions,
    target: &'a Relation,
    stage: &'a Relation,
    load_id: &'a str,
    /// `_weir_loaded_at` of every row, whichever way it is written: when the load started.
    loaded_at: NaiveDateTime,
    /// Whether extraction writes the load's two columns into the stage as it fills it (see
    /// `run`); the stage's other columns are the source's.
    stage_has_meta: bool,
    /// Whether the destination table was there when the run started (nothing but the run's
    /// own transaction creates it).
    target_existed: bool,
    /// Where a load with `to: topic` publishes, instead of writing the destination table.
    topic: Option<&'a TopicOut>,
    /// What the store keeps the load's state under.
    key: &'a str,
    run: &'a LoadRun,
}

/// What extraction put in the stage table.
#[derive(Default)]
struct Extracted {
    rejected: Vec<Rejected>,
    /// Files read, with their records; files only refreshed.
    files: Vec<LoadedFile>,
    refresh: Vec<LoadedFile>,
    files_skipped: usize,
    /// Files whose earlier rows this load replaces (changed files under append).
    replaces_files: Vec<String>,
    /// Nothing new to load.
    nothing: bool,
    /// The source has no rows at all: a replace leaves the destination empty.
    empty: bool,
}

impl Extracted {
    /// Rows extracted from a database or an API (no files), with those rejected on the way.
    fn rows(rejected: Vec<Rejected>) -> Extracted {
        Extracted { rejected, ..Default::default() }
    }
}

impl Job<'_> {
    fn run(&mut self, store: &Store) -> Result<(LoadReport, Vec<LoadedFile>), ConnectError> {
        self.exec(&self.wh.drop_relation_sql(self.stage, RelationKind::Table))?;
        let key = self.key.to_string();
        self.target_existed = self.topic.is_none() && relation_exists(self.conn, self.target).map_err(|e| self.wh_err(e))?;
        // The store's state (files loaded, the high-water mark) describes rows in the
        // destination table. With the table gone, it would make the run skip everything and
        // call the missing table up to date; the run starts over instead. A topic keeps its
        // events whatever happens to tables.
        let started_over = self.topic.is_none()
            && !self.target_existed
            && !self.opts.full_refresh
            && (store.load_cursor(&key)?.is_some() || !store.loaded_files(&key)?.is_empty());
        if started_over {
            store.reset_load_state(&key)?;
        }
        // Where the stage may become the destination, on DuckDB, the load's two columns are
        // written as the stage fills (in the files' scan, or as defaults of the appended
        // batches). Added to the finished table afterwards, every row's values are held in
        // memory and DuckDB rewrites the table at its next checkpoint: 1.0-1.4 s of a 1 GB
        // CSV's load against 0.5-0.7 s in the scan; 660 MB against 220 MB at the peak of a
        // 10M-row PostgreSQL load, in the same time.
        self.stage_has_meta = self.wh.adapter_type() == "duckdb"
            && self.topic.is_none()
            && self.load.schema_on_read.is_none()
            && self.load.write_disposition != WriteDisposition::Merge
            && (self.load.write_disposition == WriteDisposition::Replace || self.opts.full_refresh || !self.target_existed);
        let extracted = match &self.load.source {
            Source::Files(f) => self.extract_files(f, store, &key)?,
            Source::Database(db @ DatabaseSource { engine: Engine::Postgres, .. }) => self.extract_postgres(db, store, &key)?,
            Source::Database(db @ DatabaseSource { engine: Engine::Mysql, .. }) => self.extract_mysql(db, store, &key)?,
            Source::Http(h) => self.extract_http(h, store, &key)?,
        };
        let mut report = LoadReport {
            load: self.load.name.clone(),
            load_id: self.load_id.to_string(),
            destination: self.target.clone(),
            topic: self.topic.map(|t| t.name.clone()),
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            files_loaded: extracted.files.len(),
            files_skipped: extracted.files_skipped + extracted.refresh.len(),
            up_to_date: extracted.nothing,
            started_over,
            cursor: None,
            schema_changes: vec![],
            rejected_sample: vec![],
            elapsed: Duration::ZERO,
        };
        if extracted.nothing {
            report.cursor = store.load_cursor(&key)?;
            return Ok((report, extracted.refresh));
        }
        if let Some(out) = self.topic {
            return self.publish(out, extracted, report, store);
        }
        if extracted.empty {
            // No rows, so no columns to stage: the destination keeps its columns and loses its
            // rows, in one transaction with the run's record.
            if self.target_existed {
                let mut statements = self.bookkeeping_tables().to_vec();
                statements.push(format!("delete from {}", self.wh.render(self.target)));
                statements.push(self.record_load(&report, &[]));
                self.conn.transaction(&statements).map_err(|e| self.wh_err(e))?;
            }
            return Ok((report, vec![]));
        }
        let rejected = extracted.rejected;
        let staged = self.count(&format!("select count(*) from {}", self.wh.render(self.stage)))?;
        report.rows_read = staged + rejected.len() as u64;
        self.progress(Progress::Writing { rows: staged });
        let mut statements = vec![];
        let target_exists = self.target_existed;
        let replace = self.load.write_disposition == WriteDisposition::Replace || self.opts.full_refresh;
        let mut stage_cols = self.conn.columns(self.stage).map_err(|e| self.wh_err(e))?;
        if self.stage_has_meta {
            stage_cols.retain(|c| c.name != LOAD_ID && c.name != LOADED_AT);
        }
        // The columns written: (name in the target, expression over the stage).
        let mut columns: Vec<(String, String)> = stage_cols.iter().map(|c| (c.name.clone(), self.wh.quote(&c.name))).collect();
        // Filters on the stage's rows: those that break the contract or the key are rejected.
        let mut reject_rules: Vec<(String, String)> = vec![];
        let mut view_statements = vec![];
        if let Some(view) = &self.load.schema_on_read {
            columns = self.record_columns(&stage_cols);
            if target_exists {
                let target_cols = self.conn.columns(self.target).map_err(|e| self.wh_err(e))?;
                if !target_cols.iter().any(|c| c.name.eq_ignore_ascii_case(RECORD)) {
                    return Err(self.data(format!(
                        "{}.{} exists without a {RECORD} column; `weir load {} --full-refresh` rebuilds it schema-on-read",
                        self.load.schema, self.load.table, self.load.name
                    )));
                }
            }
            let (statements, changes) = self.typed_view(view, &stage_cols)?;
            view_statements = statements;
            report.schema_changes = changes;
        } else if target_exists {
            let target_cols = self.conn.columns(self.target).map_err(|e| self.wh_err(e))?;
            let plan = self.evolve(&stage_cols, &target_cols)?;
            statements.extend(plan.statements);
            report.schema_changes = plan.changes;
            reject_rules.extend(plan.reject);
            columns = plan.columns;
        }
        if self.load.write_disposition == WriteDisposition::Merge {
            for k in &self.load.primary_key {
                if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)) {
                    return Err(self.data(format!("primary_key column '{k}' is not among the source's columns ({})", names(&columns))));
                }
                reject_rules.push((format!("{} is null", self.wh.quote(k)), format!("primary key column {k} is null")));
            }
        }
        // Rows that break a rule are copied to the rejected table and left out.
        let accept = if reject_rules.is_empty() {
            "true".to_string()
        } else {
            reject_rules.iter().map(|(cond, _)| format!("not coalesce({cond}, false)")).collect::<Vec<_>>().join(" and ")
        };
        // A row breaking several rules is rejected once, for the first.
        let mut earlier: Vec<String> = vec![];
        for (cond, reason) in &reject_rules {
            let only = earlier.iter().map(|e| format!(" and not coalesce({e}, false)")).collect::<String>();
            let cond_once = format!("coalesce({cond}, false){only}");
            let sql = format!("select count(*) from {} where {cond_once}", self.stage_rows());
            let n = self.count(&sql)?;
            if n > 0 {
                statements.push(self.reject_from_stage(&cond_once, reason));
                report.rows_rejected += n;
            }
            earlier.push(cond.clone());
        }
        let source_rows = if self.load.write_disposition == WriteDisposition::Merge {
            self.dedupe(&accept)?
        } else {
            format!("select * from {} as s where {accept}", self.stage_rows())
        };
        let col_list: Vec<String> = columns.iter().map(|(c, _)| self.wh.quote(c)).collect();
        let exprs: Vec<String> = columns.iter().map(|(c, e)| format!("{e} as {}", self.wh.quote(c))).collect();
        let meta = self.meta_sql();
        let select = format!("select {}, {meta} from ({source_rows}) as s", exprs.join(", "));
        let target_sql = self.wh.render(self.target);
        // When the stage holds exactly the rows and columns the destination gets (no rule
        // rejects rows, no schema change, nothing merged), the stage becomes the destination
        // instead of being copied into it: one write of the data, not two. On DuckDB the stage
        // has the load's two columns already (see `stage_has_meta`); on PostgreSQL they are
        // added with a default, which it keeps in the catalog rather than in every row.
        // DuckDB binds views by name, so a destination it replaces can be swapped too;
        // PostgreSQL binds them to the table, so there only a new one is.
        let identity = columns.len() == stage_cols.len()
            && columns.iter().zip(&stage_cols).all(|((n, e), c)| *n == c.name && *e == self.wh.quote(&c.name));
        let swap = self.load.schema_on_read.is_none()
            && self.load.write_disposition != WriteDisposition::Merge
            && reject_rules.is_empty()
            && statements.is_empty()
            && identity
            && (!target_exists || (replace && self.wh.adapter_type() == "duckdb" && self.same_columns(&stage_cols)?));
        if swap {
            let stage_sql = self.wh.render(self.stage);
            if target_exists {
                // Views over the destination are bound by name and see the new table.
                statements.push(format!("drop table {target_sql}"));
            }
            let (uuid, timestamp) = (self.wh.type_sql(&ColumnType::Uuid), self.wh.type_sql(&ColumnType::Timestamp));
            let added = [(LOAD_ID, uuid, self.load_id_sql()), (LOADED_AT, timestamp, self.loaded_at_sql())];
            for (col, ty, value) in added {
                let col = self.wh.quote(col);
                if !self.stage_has_meta {
                    statements.push(format!("alter table {stage_sql} add column {col} {ty} default {value}"));
                }
                // A stage the appender filled has them as defaults too; the destination keeps none.
                statements.push(format!("alter table {stage_sql} alter column {col} drop default"));
            }
            statements.push(format!("alter table {stage_sql} rename to {}", self.wh.quote(&self.target.identifier)));
        } else if !target_exists {
            statements.push(self.wh.create_table_as_sql(self.target, &select));
        } else {
            if replace {
                statements.push(format!("delete from {target_sql}"));
            } else if !extracted.replaces_files.is_empty() {
                let list: Vec<String> = extracted.replaces_files.iter().map(|f| literal(f)).collect();
                statements.push(format!("delete from {target_sql} where {} in ({})", self.wh.quote(SOURCE_FILE), list.join(", ")));
            }
            if self.load.write_disposition == WriteDisposition::Merge && !replace {
                let on: Vec<String> = self.load.primary_key.iter().map(|k| format!("n.{k} = t.{k}", k = self.wh.quote(k))).collect();
                statements.push(format!(
                    "delete from {target_sql} as t where exists (select 1 from ({source_rows}) as n where {})",
                    on.join(" and ")
                ));
            }
            let mut all_cols = col_list.clone();
            all_cols.push(self.wh.quote(LOAD_ID));
            all_cols.push(self.wh.quote(LOADED_AT));
            statements.push(format!("insert into {target_sql} ({}) {select}", all_cols.join(", ")));
        }
        let loaded_rows_sql = format!("select count(*) from ({source_rows}) as s");
        report.rows_loaded = self.count(&loaded_rows_sql)?;
        rejected.iter().take(5).for_each(|r| report.rejected_sample.push(r.clone()));
        report.rows_rejected += rejected.len() as u64;
        statements.extend(self.rejected_rows(&rejected));
        report.cursor = match &self.load.incremental {
            Some(inc) => {
                let q = format!("select cast(max({}) as varchar) from ({source_rows}) as s", self.wh.quote(&inc.cursor));
                let r = self.conn.query(&q).map_err(|e| self.wh_err(e))?;
                match r.scalar() {
                    Some(Datum::Null) | None => store.load_cursor(&self.wh.render(self.target))?.filter(|_| !replace),
                    Some(d) => Some(d.to_string()),
                }
            }
            None => None,
        };
        if report.rows_rejected > 0 && report.rejected_sample.is_empty() {
            report.rejected_sample = self.sample_rejects(&reject_rules)?;
        }
        statements.extend(view_statements);
        statements.splice(0..0, self.bookkeeping_tables());
        statements.push(self.record_load(&report, &extracted.files));
        self.conn.transaction(&statements).map_err(|e| self.wh_err(e))?;
        let mut files = extracted.files;
        files.extend(extracted.refresh);
        Ok((report, files))
    }

    /// Publishes the stage's rows as events of the topic ([`topic`]): the topic's declared
    /// columns (else the source's) keyed by the primary key (else the topic's key), the
    /// newest row of each key under `merge`. Rows that do not fit go to the rejected table
    /// first; the store learns what the run is about to commit; the events then go to the
    /// topic in one commit with the run's mark.
    fn publish(
        &mut self,
        out: &TopicOut,
        extracted: Extracted,
        mut report: LoadReport,
        store: &Store,
    ) -> Result<(LoadReport, Vec<LoadedFile>), ConnectError> {
        let mut files = extracted.files;
        files.extend(extracted.refresh);
        let mut rejected = extracted.rejected;
        if extracted.empty {
            report.cursor = store.load_cursor(self.key)?;
            return Ok((report, files));
        }
        let stage_cols = self.conn.columns(self.stage).map_err(|e| self.wh_err(e))?;
        // DuckDB's structs, lists and maps are read as their JSON.
        let duck = self.wh.adapter_type() == "duckdb";
        let nested = |ty: &str| {
            let t = ty.to_ascii_uppercase();
            duck && (t.starts_with("STRUCT") || t.starts_with("MAP") || t.starts_with("UNION") || t.ends_with(']'))
        };
        let select = |c: &weir_core::Column| {
            let q = self.wh.quote(&c.name);
            if nested(&c.data_type) { format!("cast(to_json({q}) as varchar)") } else { q }
        };
        let declared = out.declared.as_ref().map(|t| t.columns.as_slice()).unwrap_or_default();
        let mut columns: Vec<(String, String, bool)> = vec![];
        let mut exprs: Vec<String> = vec![];
        if declared.is_empty() {
            for c in stage_cols.iter().filter(|c| c.name != SOURCE_FILE) {
                columns.push((c.name.clone(), c.data_type.clone(), nested(&c.data_type)));
                exprs.push(select(c));
            }
        } else {
            for (name, ty) in declared {
                let c = stage_cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)).ok_or_else(|| ConnectError::Topic {
                    topic: out.name.clone(),
                    message: format!(
                        "it declares column '{name}', which the source does not have (it has {})",
                        names_of_columns(&stage_cols)
                    ),
                })?;
                columns.push((name.clone(), ty.clone(), nested(&c.data_type)));
                exprs.push(select(c));
            }
        }
        let keys = match (&self.load.primary_key[..], out.declared.as_ref().and_then(|t| t.key.clone())) {
            ([], Some(k)) => vec![k],
            (keys, _) => keys.to_vec(),
        };
        let source_rows = if self.load.write_disposition == WriteDisposition::Merge {
            self.dedupe("true")?
        } else {
            format!("select * from {} as s", self.stage_rows())
        };
        let staged = self.count(&format!("select count(*) from {}", self.wh.render(self.stage)))?;
        report.rows_read = staged + rejected.len() as u64;
        self.progress(Progress::Writing { rows: staged });
        let mut encoder = Encoder::open(out, columns, &keys)?;
        let sql = format!("select {} from ({source_rows}) as s", exprs.join(", "));
        let mut row = 0u64;
        if duck {
            let mut failed = None;
            let read = self.conn.for_each_batch(&sql, &mut |batch| match encoder.add(batch, row) {
                Ok(bad) => {
                    rejected.extend(bad);
                    row += batch.num_rows() as u64;
                    Ok(())
                }
                Err(e) => {
                    failed = Some(e.clone());
                    Err(WarehouseError::query(e, &sql))
                }
            });
            if let Some(message) = failed {
                return Err(ConnectError::Topic { topic: out.name.clone(), message });
            }
            read.map_err(|e| self.wh_err(e))?;
        } else {
            let result = self.conn.query(&sql).map_err(|e| self.wh_err(e))?;
            for values in result.rows {
                let texts: Vec<Option<String>> = values.iter().map(|d| (!matches!(d, Datum::Null)).then(|| d.to_string())).collect();
                rejected.extend(encoder.add_row(&texts, row));
                row += 1;
            }
        }
        report.rows_rejected = rejected.len() as u64;
        rejected.iter().take(5).for_each(|r| report.rejected_sample.push(r.clone()));
        report.cursor = match &self.load.incremental {
            Some(inc) => {
                let q = format!("select cast(max({}) as varchar) from ({source_rows}) as s", self.wh.quote(&inc.cursor));
                match self.conn.query(&q).map_err(|e| self.wh_err(e))?.scalar() {
                    Some(Datum::Null) | None => store.load_cursor(self.key)?,
                    Some(d) => Some(d.to_string()),
                }
            }
            None => None,
        };
        // Rejected rows are kept before anything is published: a run that fails after this
        // keeps them under its id, and the next run reads their rows again.
        if !rejected.is_empty() {
            let mut statements = self.bookkeeping_tables().to_vec();
            statements.extend(self.rejected_rows(&rejected));
            self.conn.transaction(&statements).map_err(|e| self.wh_err(e))?;
        }
        let (commit, published) = encoder.commit(out, self.load_id)?;
        report.rows_loaded = published;
        if published == 0 {
            return Ok((report, files));
        }
        let prepared = LoadRun {
            rows_read: Some(report.rows_read),
            rows_loaded: Some(report.rows_loaded),
            rows_rejected: Some(report.rows_rejected),
            cursor: report.cursor.clone(),
            ..self.run.clone()
        };
        store.prepare_load(&prepared, &files)?;
        out.log
            .commit(&topic::group(&self.load.name), &commit)
            .map_err(|e| ConnectError::Topic { topic: out.name.clone(), message: e.to_string() })?;
        Ok((report, files))
    }

    fn extract_files(&mut self, f: &FileSource, store: &Store, key: &str) -> Result<Extracted, ConnectError> {
        let found = files::expand(&self.opts.root, &f.path).map_err(|m| self.source(m))?;
        if found.is_empty() {
            return Err(self.source(format!("no file matches '{}' (under {})", f.path, self.opts.root.display())));
        }
        let loaded = if self.opts.full_refresh { vec![] } else { store.loaded_files(key)? };
        let changes = files::changed(&found, &loaded).map_err(|m| self.source(m))?;
        let replace = self.load.write_disposition == WriteDisposition::Replace || self.opts.full_refresh;
        let mut out = Extracted {
            rejected: vec![],
            files: vec![],
            refresh: changes.refresh,
            files_skipped: changes.unchanged,
            replaces_files: vec![],
            nothing: changes.load.is_empty(),
            empty: false,
        };
        if out.nothing {
            return Ok(out);
        }
        // A replace rewrites the table from every file; otherwise only new and changed ones.
        let to_read: Vec<files::Found> = if replace {
            out.files_skipped = 0;
            let refreshed: Vec<LoadedFile> = std::mem::take(&mut out.refresh);
            let mut records: Vec<LoadedFile> = changes.load.iter().map(|(_, r)| r.clone()).collect();
            for fnd in &found {
                if !records.iter().any(|r| r.path == fnd.shown) {
                    let same = loaded.iter().chain(refreshed.iter()).find(|l| l.path == fnd.shown).cloned();
                    records.push(match same {
                        Some(l) => LoadedFile { size: fnd.size, modified: fnd.modified.clone(), ..l },
                        // Hashed while it loads, below.
                        None => LoadedFile {
                            path: fnd.shown.clone(),
                            size: fnd.size,
                            modified: fnd.modified.clone(),
                            content_hash: String::new(),
                        },
                    });
                }
            }
            out.files = records;
            found.clone()
        } else {
            out.replaces_files =
                changes.load.iter().filter(|(f, _)| loaded.iter().any(|l| l.path == f.shown)).map(|(f, _)| f.shown.clone()).collect();
            out.files = changes.load.iter().map(|(_, r)| r.clone()).collect();
            changes.load.into_iter().map(|(f, _)| f).collect()
        };
        // JSON lines are checked first: the engine would fail on a bad line, or skip it unseen.
        let mut paths: Vec<PathBuf> = vec![];
        let mut renamed: Vec<(String, String)> = vec![];
        let mut keep_alive = vec![];
        for fnd in &to_read {
            if f.format == FileFormat::JsonLines {
                let (bad, clean) = files::check_json_lines(&fnd.path, &fnd.shown).map_err(|m| self.source(m))?;
                out.rejected.extend(bad);
                if let Some(clean) = clean {
                    paths.push(clean.path().to_path_buf());
                    renamed.push((clean.path().to_string_lossy().into_owned(), fnd.shown.clone()));
                    keep_alive.push(clean);
                    continue;
                }
            }
            paths.push(fnd.path.clone());
        }
        let source_file = self.source_file_sql(&renamed);
        let rejects_name = format!("weir_rejects_{}", self.load_id.replace('-', ""));
        // Files with the same header share one scan (DuckDB's multi-file reader); without a
        // header, all of them.
        let first_lines = match (f.format, f.options.header) {
            (FileFormat::Csv, true) => {
                to_read.iter().map(|fnd| files::first_line(&fnd.path)).collect::<Result<_, _>>().map_err(|m| self.source(m))?
            }
            (FileFormat::Csv, false) => vec![String::new(); paths.len()],
            _ => vec![],
        };
        let scan = FileScan {
            format: f.format,
            paths,
            options: f.options.clone(),
            rejects: Some(rejects_name.clone()),
            filename_column: Some(SOURCE_FILE.to_string()),
            first_lines,
        };
        let bytes: u64 = to_read.iter().map(|f| f.size).sum();
        self.progress(Progress::Extracting { rows: 0, bytes });
        // New files are hashed (for their records) while the engine reads them.
        let unhashed: Vec<(usize, PathBuf)> = out
            .files
            .iter()
            .enumerate()
            .filter(|(_, r)| r.content_hash.is_empty())
            .filter_map(|(i, r)| Some((i, to_read.iter().find(|f| f.shown == r.path)?.path.clone())))
            .collect();
        // CSV files are also scanned for a quote left open (see `quotes`), which the engine
        // would misread: both on one thread beside the engine's scan.
        let dialect = (f.format == FileFormat::Csv)
            .then(|| quotes::Dialect::of(f.options.delimiter.as_deref(), f.options.quote.as_deref(), f.options.escape.as_deref()))
            .flatten();
        let beside = || -> Result<_, String> {
            let hashed = unhashed.iter().map(|(i, p)| files::hash(p).map(|h| (*i, h))).collect::<Result<Vec<_>, _>>()?;
            let mut open = vec![];
            if let Some(d) = dialect {
                for (i, fnd) in to_read.iter().enumerate() {
                    if let Some(u) = quotes::unterminated_quote(&fnd.path, d)? {
                        open.push((i, u));
                    }
                }
            }
            Ok((hashed, open))
        };
        let (mut staged, beside) = std::thread::scope(|scope| {
            let beside = scope.spawn(beside);
            let staged = self.stage_files(&scan, Some(&source_file));
            (staged, beside.join())
        });
        let (hashed, open) = beside.map_err(|_| self.source("hashing the files failed".into()))?.map_err(|m| self.source(m))?;
        for (i, h) in hashed {
            out.files[i].content_hash = h;
        }
        if !open.is_empty() {
            // Read again, with each broken file cut where its broken record starts; that
            // record is rejected whole. Whatever the first read made of them is dropped.
            self.exec(&self.wh.drop_relation_sql(self.stage, RelationKind::Table))?;
            let mut paths = scan.paths.clone();
            for (i, u) in open {
                let fnd = &to_read[i];
                let (clean, raw) = quotes::split(&fnd.path, u.record_start).map_err(|m| self.source(m))?;
                let reason = format!(
                    "unterminated quote: the quote opened at line {}, column {} is never closed, so by the CSV rules everything \
                     from line {} to the end of the file is one record",
                    u.quote_line, u.quote_column, u.line
                );
                out.rejected.push(Rejected { position: format!("{}:{}", fnd.shown, u.line), raw, reason });
                paths[i] = clean.path().to_path_buf();
                renamed.push((clean.path().to_string_lossy().into_owned(), fnd.shown.clone()));
                keep_alive.push(clean);
            }
            let source_file = self.source_file_sql(&renamed);
            let scan = FileScan { paths, rejects: Some(format!("{rejects_name}_again")), ..scan };
            staged = self.stage_files(&scan, Some(&source_file));
        }
        out.rejected.extend(staged?);
        // Rows and rejected lines name their file relative to the project, wherever it was
        // read from (a cut copy by the original's name).
        let shown: Vec<(String, String)> =
            renamed.iter().cloned().chain(to_read.iter().map(|f| (f.path.to_string_lossy().into_owned(), f.shown.clone()))).collect();
        for r in &mut out.rejected {
            if let Some((from, to)) = shown.iter().find(|(from, _)| r.position.starts_with(from.as_str())) {
                r.position = format!("{to}{}", &r.position[from.len()..]);
            }
        }
        out.rejected.sort_by(|a, b| position_key(&a.position).cmp(&position_key(&b.position)));
        drop(keep_alive);
        Ok(out)
    }

    /// The expression that names each row's file relative to the project, wherever it was
    /// read from, and a cleaned or cut copy by the original's name.
    fn source_file_sql(&self, renamed: &[(String, String)]) -> String {
        let prefix = format!("{}/", self.opts.root.to_string_lossy().trim_end_matches('/'));
        let col = self.wh.quote(SOURCE_FILE);
        let mut whens: Vec<String> =
            renamed.iter().map(|(from, to)| format!("when {col} = {} then {}", literal(from), literal(to))).collect();
        whens.push(format!("when starts_with({col}, {}) then substr({col}, {})", literal(&prefix), prefix.chars().count() + 1));
        format!("case {} else {col} end", whens.join(" "))
    }

    /// Whether the destination has exactly the stage's columns (and the load's two): then
    /// replacing it by the stage changes nothing but its rows.
    fn same_columns(&mut self, stage_cols: &[weir_core::Column]) -> Result<bool, ConnectError> {
        let target_cols = self.conn.columns(self.target).map_err(|e| self.wh_err(e))?;
        let mut want: Vec<String> = stage_cols.iter().map(|c| c.name.to_lowercase()).collect();
        want.extend([LOAD_ID.to_string(), LOADED_AT.to_string()]);
        let have: Vec<String> = target_cols.iter().map(|c| c.name.to_lowercase()).collect();
        Ok(have == want)
    }

    /// Reads files into the stage: in place where the destination can read them, else
    /// through an embedded DuckDB and the destination's bulk path. `source_file` rewrites the
    /// file name column as rows are read (both readers are DuckDB). Returns the lines
    /// the reader rejected.
    fn stage_files(&mut self, scan: &FileScan, source_file: Option<&str>) -> Result<Vec<Rejected>, ConnectError> {
        let mut rejected = vec![];
        let named = |sql: String| match source_file {
            Some(expr) => format!("select * replace ({expr} as {}) from ({sql}) as _weir_scan", self.wh.quote(SOURCE_FILE)),
            None => sql,
        };
        match self.wh.file_scan_sql(scan).map(named) {
            Some(mut sql) => {
                if self.stage_has_meta {
                    sql = format!("select *, {} from ({sql}) as _weir_rows", self.meta_sql());
                }
                // The engine reads the files in place, in any order unless the load says, or
                // unless the rows become events: a topic is read in the order it was written.
                let any_order = self.wh.any_order_sql().filter(|_| !self.load.preserve_order && self.topic.is_none());
                if let Some([set, _]) = any_order {
                    self.exec(set)?;
                }
                let created = self.exec(&self.wh.create_table_as_sql(self.stage, &sql));
                if let Some([_, reset]) = any_order {
                    self.exec(reset)?;
                }
                created?;
                if let Some(rejects) = self.wh.file_rejects_sql(scan) {
                    rejected.extend(self.read_rejects(&rejects)?);
                }
            }
            None => {
                // An embedded DuckDB reads them, and the destination's bulk path takes the rows.
                // (Only a destination that is not DuckDB gets here, so the stage has no load columns.)
                let reader = weir_warehouse::duckdb::DuckDb::open(&Default::default(), &self.opts.root).map_err(|e| self.wh_err(e))?;
                let mut rconn = reader.connect().map_err(|e| self.wh_err(e))?;
                let sql = reader
                    .file_scan_sql(scan)
                    .map(named)
                    .ok_or_else(|| self.source("the embedded reader cannot read these files".into()))?;
                let cols = rconn.describe_query(&sql).map_err(|e| self.wh_err(e))?;
                let typed: Vec<(String, ColumnType)> = cols.iter().map(|c| (c.name.clone(), ColumnType::parse(&c.data_type))).collect();
                self.create_stage(&typed)?;
                // Typed rows go over the destination's binary bulk path.
                let exprs: Vec<String> = typed.iter().map(|(n, t)| binary_expr(&reader.quote(n), t)).collect();
                let rows = format!("select {} from ({sql}) as _weir_rows", exprs.join(", "));
                let mut feed = |emit: &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>| rconn.for_each_batch(&rows, emit);
                self.conn.copy_in_batches(self.stage, &mut feed).map_err(|e| self.wh_err(e))?;
                if let Some(rejects) = reader.file_rejects_sql(scan) {
                    let rows = rconn.query(&rejects).map_err(|e| self.wh_err(e))?;
                    rejected.extend(rows.rows.into_iter().map(|r| rejected_of(&r)));
                }
            }
        }
        Ok(rejected)
    }

    /// The load's two columns, as a select list.
    fn meta_sql(&self) -> String {
        format!("{} as {}, {} as {}", self.load_id_sql(), self.wh.quote(LOAD_ID), self.loaded_at_sql(), self.wh.quote(LOADED_AT))
    }

    /// The run's id as the destination's `uuid`. DuckDB stores a column holding one 16-byte
    /// value as a constant, where it would hash the same text again on every row: 3-4% of
    /// an 18M-row CSV's load (bench/README.md).
    fn load_id_sql(&self) -> String {
        format!("cast({} as {})", literal(self.load_id), self.wh.type_sql(&ColumnType::Uuid))
    }

    fn loaded_at_sql(&self) -> String {
        format!("cast({} as timestamp)", literal(&timestamp_text(self.loaded_at)))
    }

    /// The stage's rows as extraction read them, without the load's two columns where
    /// staging wrote them: rules, merges and rejected rows see the source's columns only.
    fn stage_rows(&self) -> String {
        let stage = self.wh.render(self.stage);
        if self.stage_has_meta {
            format!("(select * exclude ({}, {}) from {stage})", self.wh.quote(LOAD_ID), self.wh.quote(LOADED_AT))
        } else {
            stage
        }
    }

    fn extract_postgres(&mut self, db: &DatabaseSource, store: &Store, key: &str) -> Result<Extracted, ConnectError> {
        let url = &db.url;
        let mut client =
            postgres::Client::connect(url, postgres::NoTls).map_err(|e| self.source(format!("cannot connect to {}: {e}", redact(url))))?;
        // Times leave the source in UTC, whatever the server's zone.
        client.batch_execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'").map_err(|e| self.source(pg_message(&e)))?;
        let base = base_query(db);
        let stmt = client.prepare(&base).map_err(|e| self.source(format!("{}\n  in: {base}", pg_message(&e))))?;
        let typed = pg_columns(&mut client, &stmt).map_err(|e| self.source(pg_message(&e)))?;
        let mut sql = format!("select * from ({base}) as _weir_source");
        if let Some((cursor, from, cursor_type)) = self.cursor_start(&typed, store, key)? {
            let pg = pg_type_name(&cursor_type);
            let start = match (&self.load.incremental.as_ref().and_then(|i| i.lookback.clone()), is_numeric(&cursor_type)) {
                (None, _) => format!("cast({} as {pg})", literal(&from)),
                (Some(l), true) => format!("(cast({} as {pg}) - {})", literal(&from), self.numeric_lookback(l, &cursor)?),
                (Some(l), false) => format!("(cast({} as {pg}) - interval {})", literal(&from), literal(l)),
            };
            sql.push_str(&format!(" where \"{}\" > {start}", cursor.replace('"', "\"\"")));
        }
        let types: Vec<postgres::types::Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        drop(client);
        let plan = pgcopy::plan(&types, &typed);
        self.create_stage(&plan.stage)?;
        let copy = format!("copy ({}) to stdout with (format binary)", plan.select(&sql));
        self.stage_batches(url, &sql, |tell, emit| pgcopy::read(url, "", &copy, &plan, tell, emit).map(|_| vec![]))
    }

    /// Stages the record batches `read` decodes from the source at `url` (running `sql`)
    /// through the destination's binary bulk path, with progress; returns the rows `read`
    /// rejected on the way. A source that stops is reported as the source's doing.
    fn stage_batches(
        &mut self,
        url: &str,
        sql: &str,
        read: impl FnOnce(
            &mut dyn FnMut(u64, u64),
            &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>,
        ) -> Result<Vec<Rejected>, ReadError>,
    ) -> Result<Extracted, ConnectError> {
        let progress = self.opts.progress.clone();
        let name = self.load.name.clone();
        let mut tell = |rows: u64, bytes: u64| {
            if let Some(p) = &progress {
                (p.0)(&name, Progress::Extracting { rows, bytes });
            }
        };
        let mut read = Some(read);
        let mut rejected = vec![];
        // Why reading stopped, when it was the source's doing rather than the destination's.
        let mut stopped: Option<ReadError> = None;
        let mut feed = |emit: &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>| {
            let Some(read) = read.take() else { return Ok(()) };
            match read(&mut tell, emit) {
                Ok(r) => {
                    rejected = r;
                    Ok(())
                }
                Err(ReadError::Sink(e)) => Err(e),
                Err(other) => {
                    stopped = Some(other);
                    Err(WarehouseError::Io("the source stopped".into()))
                }
            }
        };
        let copied = self.conn.copy_in_batches(self.stage, &mut feed);
        match stopped {
            Some(ReadError::Start(m)) => Err(self.source(format!("{m}\n  in: {sql}"))),
            Some(ReadError::Lost { rows, message }) => Err(self.lost_source(url, rows, &message)),
            Some(ReadError::Value(m)) => Err(self.data(format!("a value of the source does not fit its column {m}"))),
            Some(ReadError::Sink(_)) | None => {
                copied.map_err(|e| self.wh_err(e))?;
                Ok(Extracted::rows(rejected))
            }
        }
    }

    /// A source that went away mid-stream: nothing reached the destination.
    fn lost_source(&self, url: &str, rows: u64, error: &str) -> ConnectError {
        self.source(format!("lost the source {} after about {rows} rows: {error}", redact(url)))
    }

    fn extract_mysql(&mut self, db: &DatabaseSource, store: &Store, key: &str) -> Result<Extracted, ConnectError> {
        let mut source = MysqlSource::connect(&db.url).map_err(|m| self.source(m))?;
        let base = base_query(db);
        let typed = source.columns(&base).map_err(|m| self.source(m))?;
        let mut sql = format!("select * from ({base}) as _weir_source");
        if let Some((cursor, from, cursor_type)) = self.cursor_start(&typed, store, key)? {
            let cast = format!("cast({} as {})", literal(&from), my::cast_type(&cursor_type));
            let start = match self.load.incremental.as_ref().and_then(|i| i.lookback.clone()) {
                None => cast,
                Some(l) if is_numeric(&cursor_type) => format!("({cast} - {})", self.numeric_lookback(&l, &cursor)?),
                Some(l) => {
                    let interval = my::interval_sql(&l).ok_or_else(|| {
                        self.source(format!("lookback '{l}' must be a number and a unit (30 minutes, 2 hours, 1 day) for MySQL"))
                    })?;
                    format!("({cast} - {interval})")
                }
            };
            sql.push_str(&format!(" where `{}` > {start}", cursor.replace('`', "``")));
        }
        self.create_stage(&typed)?;
        let key = self.load.primary_key.clone();
        self.stage_batches(&db.url, &sql, |tell, emit| source.read(&sql, &key, tell, emit))
    }

    fn extract_http(&mut self, src: &HttpSource, store: &Store, key: &str) -> Result<Extracted, ConnectError> {
        let mut extra = vec![];
        if let Some(inc) = &self.load.incremental {
            let mark = if self.opts.full_refresh { None } else { store.load_cursor(key)? };
            if let (Some(param), Some(from)) = (&inc.param, mark.or_else(|| inc.initial_value.clone())) {
                let from = match &inc.lookback {
                    Some(l) => http::mark_before(&from, l).map_err(|m| self.source(m))?,
                    None => from,
                };
                extra.push((param.clone(), from));
            }
        }
        let progress = self.opts.progress.clone();
        let name = self.load.name.clone();
        let mut tell = move |_pages: u64, rows: u64, bytes: u64| {
            if let Some(p) = &progress {
                (p.0)(&name, Progress::Extracting { rows, bytes });
            }
        };
        let fetched = http::fetch(src, &extra, &mut tell).map_err(|m| self.source(m))?;
        if fetched.records == 0 {
            // An incremental API with nothing past the mark has nothing new; any other API that
            // answers no records under replace has no rows, as dlt's replace takes it.
            let replace = self.load.write_disposition == WriteDisposition::Replace || self.opts.full_refresh;
            if replace && (self.load.incremental.is_none() || self.opts.full_refresh) {
                return Ok(Extracted { empty: true, ..Extracted::rows(vec![]) });
            }
            return Ok(Extracted { nothing: true, ..Extracted::rows(vec![]) });
        }
        let scan = FileScan {
            format: FileFormat::JsonLines,
            paths: vec![fetched.file.path().to_path_buf()],
            options: Default::default(),
            rejects: None,
            filename_column: None,
            first_lines: vec![],
        };
        let rejected = self.stage_files(&scan, None)?;
        Ok(Extracted::rows(rejected))
    }

    /// The incremental cursor's column, the value extraction starts after (the high-water
    /// mark, or the initial value on a first run), and the cursor's type.
    fn cursor_start(
        &self,
        typed: &[(String, ColumnType)],
        store: &Store,
        key: &str,
    ) -> Result<Option<(String, String, ColumnType)>, ConnectError> {
        let Some(inc) = &self.load.incremental else { return Ok(None) };
        let Some((_, cursor_type)) = typed.iter().find(|(n, _)| n == &inc.cursor) else {
            return Err(self.source(format!("incremental cursor '{}' is not a column of the source ({})", inc.cursor, names_of(typed))));
        };
        let mark = if self.opts.full_refresh { None } else { store.load_cursor(key)? };
        Ok(mark.or_else(|| inc.initial_value.clone()).map(|from| (inc.cursor.clone(), from, cursor_type.clone())))
    }

    fn numeric_lookback(&self, lookback: &str, cursor: &str) -> Result<f64, ConnectError> {
        lookback.parse().map_err(|_| self.source(format!("lookback '{lookback}' must be a number for the numeric cursor '{cursor}'")))
    }

    fn progress(&self, p: Progress) {
        if let Some(f) = &self.opts.progress {
            (f.0)(&self.load.name, p);
        }
    }

    fn create_stage(&mut self, typed: &[(String, ColumnType)]) -> Result<(), ConnectError> {
        let mut cols: Vec<String> = typed.iter().map(|(n, t)| format!("{} {}", self.wh.quote(n), self.wh.type_sql(t))).collect();
        if self.stage_has_meta {
            let uuid = self.wh.type_sql(&ColumnType::Uuid);
            cols.push(format!("{} {uuid} default {}", self.wh.quote(LOAD_ID), self.load_id_sql()));
            cols.push(format!(
                "{} {} default {}",
                self.wh.quote(LOADED_AT),
                self.wh.type_sql(&ColumnType::Timestamp),
                self.loaded_at_sql()
            ));
        }
        self.exec(&format!("create table {} ({})", self.wh.render(self.stage), cols.join(", ")))
    }

    /// Compares the stage's columns with the target's and decides, under the load's schema
    /// contract, what changes, what is rejected and which columns are written.
    fn evolve(&self, stage: &[weir_core::Column], target: &[weir_core::Column]) -> Result<Plan, ConnectError> {
        let mut plan = Plan { columns: vec![], statements: vec![], changes: vec![], reject: vec![] };
        let target_sql = self.wh.render(self.target);
        for weir_core::Column { name, data_type } in stage {
            let st = ColumnType::parse(data_type);
            let place = format!("{}.{}.{name}", self.load.schema, self.load.table);
            match target.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
                None => match self.load.schema_contract {
                    SchemaContract::Evolve => {
                        // The stage is in the destination: a type the shared names lack
                        // (a struct, a list of structs) is spelled as the engine spelled it.
                        let ddl = if st.is_shared() { self.wh.type_sql(&st) } else { data_type.clone() };
                        plan.statements.push(format!("alter table {target_sql} add column {} {ddl}", self.wh.quote(name)));
                        plan.changes.push(format!("added column {place} {st}"));
                        plan.columns.push((name.clone(), self.wh.quote(name)));
                    }
                    SchemaContract::Freeze => {
                        return Err(self.data(format!(
                            "new column {name} ({st}) is not in {}.{} and schema_contract is freeze",
                            self.load.schema, self.load.table
                        )));
                    }
                    SchemaContract::DiscardRow => {
                        plan.reject
                            .push((format!("{} is not null", self.wh.quote(name)), format!("column {name} is not in the destination")));
                    }
                    SchemaContract::DiscardValue => plan.changes.push(format!("dropped values of new column {name}")),
                },
                Some(col) => {
                    let tt = ColumnType::parse(&col.data_type);
                    if st.fits_in(&tt) {
                        plan.columns.push((col.name.clone(), self.wh.quote(name)));
                        continue;
                    }
                    match self.load.schema_contract {
                        SchemaContract::Evolve => {
                            let wide = tt.widen(&st);
                            plan.statements.push(self.alter_type_sql(&col.name, &wide));
                            plan.changes.push(format!("widened column {place} from {tt} to {wide}"));
                            plan.columns.push((col.name.clone(), self.wh.quote(name)));
                        }
                        SchemaContract::Freeze => {
                            return Err(self.data(format!(
                                "column {place} is {tt} in the destination but {st} in the source, and schema_contract is freeze"
                            )));
                        }
                        SchemaContract::DiscardRow | SchemaContract::DiscardValue => {
                            let Some(cast) = self.wh.try_cast_sql(&self.wh.quote(name), &tt) else {
                                return Err(self.data(format!(
                                    "column {place} is {tt} in the destination but {st} in the source; {} cannot test values against a type, so schema_contract {} is not possible here (use evolve or freeze)",
                                    self.wh.adapter_type(),
                                    self.load.schema_contract.as_str()
                                )));
                            };
                            let q = self.wh.quote(name);
                            if self.load.schema_contract == SchemaContract::DiscardRow {
                                plan.reject.push((format!("{q} is not null and {cast} is null"), format!("value of {name} is not a {tt}")));
                                plan.columns.push((col.name.clone(), cast));
                            } else {
                                plan.changes.push(format!("values of {place} that are not {tt} become null"));
                                plan.columns.push((col.name.clone(), cast));
                            }
                        }
                    }
                }
            }
        }
        Ok(plan)
    }

    /// A schema-on-read load's columns: the primary key, the whole record as JSON, and the
    /// source file where there is one.
    fn record_columns(&self, stage: &[weir_core::Column]) -> Vec<(String, String)> {
        let q = |n: &str| self.wh.quote(n);
        let fields: Vec<(String, String)> = stage.iter().filter(|c| c.name != SOURCE_FILE).map(|c| (c.name.clone(), q(&c.name))).collect();
        let mut cols: Vec<(String, String)> = self
            .load
            .primary_key
            .iter()
            .filter_map(|k| stage.iter().find(|c| c.name.eq_ignore_ascii_case(k)))
            .map(|c| (c.name.clone(), q(&c.name)))
            .collect();
        cols.push((RECORD.to_string(), self.wh.json_object_sql(&fields)));
        if stage.iter().any(|c| c.name == SOURCE_FILE) {
            cols.push((SOURCE_FILE.to_string(), q(SOURCE_FILE)));
        }
        cols
    }

    /// The typed view over a schema-on-read table: every field seen so far (the view's
    /// own columns, widened by this load's), read out of the record. Returns the statements
    /// and the changes made.
    fn typed_view(&mut self, view: &str, stage: &[weir_core::Column]) -> Result<(Vec<String>, Vec<String>), ConnectError> {
        let rel = self.target.with_identifier(view);
        let meta = [LOAD_ID, LOADED_AT, SOURCE_FILE];
        let mut fields: Vec<(String, ColumnType)> = vec![];
        let existed = relation_exists(self.conn, &rel).map_err(|e| self.wh_err(e))?;
        if existed {
            for c in self.conn.columns(&rel).map_err(|e| self.wh_err(e))? {
                if !meta.contains(&c.name.as_str()) {
                    fields.push((c.name, ColumnType::parse(&c.data_type)));
                }
            }
        }
        let mut changes = vec![];
        let shown = format!("{}.{view}", self.load.schema);
        for c in stage.iter().filter(|c| !meta.contains(&c.name.as_str())) {
            let t = ColumnType::parse(&c.data_type);
            match fields.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&c.name)) {
                Some((name, old)) if !t.fits_in(old) => {
                    let wide = old.widen(&t);
                    changes.push(format!("widened {shown}.{name} from {old} to {wide}"));
                    *old = wide;
                }
                Some(_) => {}
                None => {
                    if existed {
                        changes.push(format!("added {shown}.{} {t}", c.name));
                    }
                    fields.push((c.name.clone(), t));
                }
            }
        }
        let record = self.wh.quote(RECORD);
        let mut exprs: Vec<String> =
            fields.iter().map(|(n, t)| format!("{} as {}", self.wh.json_field_sql(&record, n, t), self.wh.quote(n))).collect();
        exprs.extend([LOAD_ID, LOADED_AT].iter().map(|c| self.wh.quote(c)));
        if stage.iter().any(|c| c.name == SOURCE_FILE) {
            exprs.push(self.wh.quote(SOURCE_FILE));
        }
        let select = format!("select {} from {}", exprs.join(", "), self.wh.render(self.target));
        Ok((vec![self.wh.drop_relation_sql(&rel, RelationKind::View), self.wh.create_view_as_sql(&rel, &select)], changes))
    }

    fn alter_type_sql(&self, column: &str, to: &ColumnType) -> String {
        let q = self.wh.quote(column);
        let t = self.wh.type_sql(to);
        format!("alter table {} alter column {q} type {t} using cast({q} as {t})", self.wh.render(self.target))
    }

    /// The merge's source rows: one per key. With a cursor the newest wins; without one,
    /// duplicate keys fail the load, since which row is right cannot be known.
    fn dedupe(&mut self, accept: &str) -> Result<String, ConnectError> {
        let stage = format!("{} as s", self.stage_rows());
        let keys: Vec<String> = self.load.primary_key.iter().map(|k| self.wh.quote(k)).collect();
        let keys = keys.join(", ");
        match &self.load.incremental {
            Some(inc) => Ok(format!(
                "select * from (select *, row_number() over (partition by {keys} order by {} desc) as _weir_rank from {stage} where {accept}) as d where _weir_rank = 1",
                self.wh.quote(&inc.cursor)
            )),
            None => {
                let sql = format!(
                    "select {keys}, count(*) as n from {stage} where {accept} group by {keys} having count(*) > 1 order by n desc limit 5"
                );
                let dups = self.conn.query(&sql).map_err(|e| self.wh_err(e))?;
                if !dups.rows.is_empty() {
                    let shown: Vec<String> = dups
                        .rows
                        .iter()
                        .map(|r| {
                            let n = r.len();
                            let key: Vec<String> = r[..n - 1].iter().map(|d| d.to_string()).collect();
                            format!("({}) x{}", key.join(", "), r[n - 1])
                        })
                        .collect();
                    return Err(self.data(format!(
                        "primary key ({}) is not unique in the new data, so merge cannot tell which row is right: {}",
                        self.load.primary_key.join(", "),
                        shown.join(", ")
                    )));
                }
                Ok(format!("select * from {stage} where {accept}"))
            }
        }
    }

    /// Copies the stage rows matching `cond` to the rejected table, each as JSON text.
    fn reject_from_stage(&self, cond: &str, reason: &str) -> String {
        let position = match &self.load.source {
            Source::Files(_) => format!("r.{}", self.wh.quote(SOURCE_FILE)),
            Source::Database(_) | Source::Http(_) => "null".to_string(),
        };
        format!(
            "insert into {} (load_id, load_name, position, raw, reason, rejected_at) select {}, {}, {position}, {}, {}, {} from {} as r where {cond}",
            self.wh.render(&self.target.with_identifier(REJECTED_TABLE)),
            self.load_id_sql(),
            literal(&self.load.name),
            self.wh.row_json_sql("r"),
            literal(reason),
            literal(&now_text()),
            self.stage_rows(),
        )
    }

    fn rejected_rows(&self, rejected: &[Rejected]) -> Vec<String> {
        let table = self.wh.render(&self.target.with_identifier(REJECTED_TABLE));
        let at = literal(&now_text());
        let id = self.load_id_sql();
        rejected
            .chunks(500)
            .map(|chunk| {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|r| {
                        format!(
                            "({id}, {}, {}, {}, {}, {at})",
                            literal(&self.load.name),
                            literal(&r.position),
                            literal(&r.raw),
                            literal(&r.reason)
                        )
                    })
                    .collect();
                format!("insert into {table} (load_id, load_name, position, raw, reason, rejected_at) values {}", values.join(", "))
            })
            .collect()
    }

    fn sample_rejects(&mut self, rules: &[(String, String)]) -> Result<Vec<Rejected>, ConnectError> {
        let mut out = vec![];
        for (cond, reason) in rules {
            let sql = format!("select * from {} as s where {cond} limit 5", self.stage_rows());
            let rows = self.conn.query(&sql).map_err(|e| self.wh_err(e))?;
            for row in rows.rows {
                let raw: Vec<String> = rows.columns.iter().zip(&row).map(|(c, d)| format!("{}={d}", c.name)).collect();
                out.push(Rejected { position: String::new(), raw: raw.join(", "), reason: reason.clone() });
            }
        }
        out.truncate(5);
        Ok(out)
    }

    fn bookkeeping_tables(&self) -> [String; 2] {
        bookkeeping_sql(self.wh, &self.target.database, &self.target.schema)
    }

    fn record_load(&self, r: &LoadReport, files: &[LoadedFile]) -> String {
        format!(
            "insert into {} values ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            self.wh.render(&self.target.with_identifier(LOADS_TABLE)),
            self.load_id_sql(),
            literal(&self.load.name),
            literal(&self.target.identifier),
            literal(self.load.write_disposition.as_str()),
            r.rows_read,
            r.rows_loaded,
            r.rows_rejected,
            r.cursor.as_deref().map(literal).unwrap_or_else(|| "null".into()),
            literal(&LoadedFile::list_json(files)),
            literal(&r.schema_changes.join("; ")),
            literal(&now_text()),
        )
    }

    fn read_rejects(&mut self, sql: &str) -> Result<Vec<Rejected>, ConnectError> {
        let rows = self.conn.query(sql).map_err(|e| self.wh_err(e))?;
        Ok(rows.rows.into_iter().map(|r| rejected_of(&r)).collect())
    }

    fn count(&mut self, sql: &str) -> Result<u64, ConnectError> {
        let r = self.conn.query(sql).map_err(|e| self.wh_err(e))?;
        Ok(r.scalar().and_then(|d| d.to_string().parse().ok()).unwrap_or(0))
    }

    fn exec(&mut self, sql: &str) -> Result<(), ConnectError> {
        self.conn.execute(sql).map(drop).map_err(|e| self.wh_err(e))
    }

    fn wh_err(&self, source: WarehouseError) -> ConnectError {
        ConnectError::Warehouse { load: self.load.name.clone(), source }
    }

    fn source(&self, message: String) -> ConnectError {
        ConnectError::Source { load: self.load.name.clone(), message }
    }

    fn data(&self, message: String) -> ConnectError {
        ConnectError::Data { load: self.load.name.clone(), message }
    }
}

/// What schema evolution decided.
struct Plan {
    /// The columns written: their names in the target, and expressions over the stage.
    columns: Vec<(String, String)>,
    statements: Vec<String>,
    changes: Vec<String>,
    /// Conditions on stage rows that reject them, with the reason.
    reject: Vec<(String, String)>,
}

/// A `file:line` position's file and line, for rejected lines in the files' order.
fn position_key(position: &str) -> (&str, u64) {
    match position.rsplit_once(':') {
        Some((file, line)) => (file, line.parse().unwrap_or(0)),
        None => (position, 0),
    }
}

fn rejected_of(row: &[Datum]) -> Rejected {
    let text = |i: usize| row.get(i).map(|d| d.to_string()).unwrap_or_default();
    Rejected { position: text(0), raw: text(1), reason: text(2) }
}

fn relation_exists(conn: &mut dyn Connection, r: &Relation) -> Result<bool, WarehouseError> {
    Ok(conn
        .list_relations(&r.database, std::slice::from_ref(&r.schema))?
        .iter()
        .any(|(x, _)| x.identifier.eq_ignore_ascii_case(&r.identifier)))
}

fn names(cols: &[(String, String)]) -> String {
    cols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

fn names_of_columns(cols: &[weir_core::Column]) -> String {
    cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn names_of(cols: &[(String, ColumnType)]) -> String {
    cols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

fn now_text() -> String {
    timestamp_text(Utc::now().naive_utc())
}

fn timestamp_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A query's columns with their full PostgreSQL types: the driver knows `numeric` but not
/// `numeric(12,2)`, so columns read straight from a table are looked up in the catalog. A
/// domain is typed as the type it is over (through domains over domains), with that type's
/// modifier: `create domain price as numeric(10,2)` arrives as `decimal(10,2)`.
fn pg_columns(client: &mut postgres::Client, stmt: &postgres::Statement) -> Result<Vec<(String, ColumnType)>, postgres::Error> {
    const DECLARED: &str = "with recursive t(typ, typmod, dims, depth) as (
            select atttypid, atttypmod, attndims::int4, 0 from pg_attribute where attrelid = $1 and attnum = $2
            union all
            select d.typbasetype, d.typtypmod, t.dims, t.depth + 1 from t join pg_type d on d.oid = t.typ where d.typtype = 'd'
        )
        select format_type(typ, typmod), dims from t order by depth desc limit 1";
    let mut out = Vec::with_capacity(stmt.columns().len());
    for c in stmt.columns() {
        let declared = match (c.table_oid(), c.column_id()) {
            (Some(table), Some(column)) => {
                client.query_opt(DECLARED, &[&table, &column])?.map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
            }
            _ => None,
        };
        let ct = match (declared, undomained(c.type_()).kind()) {
            // A column declared with more dimensions (`integer[][]`) keeps its text: a list
            // holds one.
            (Some((name, dims)), _) if dims > 1 => ColumnType::Other(name),
            (Some((name, _)), _) => ColumnType::parse(&name),
            // A query's array (`_int4` to the protocol) is a list of its element's type.
            (None, PgKind::Array(element)) => ColumnType::List(Box::new(ColumnType::parse(undomained(element).name()))),
            (None, _) => ColumnType::parse(undomained(c.type_()).name()),
        };
        out.push((c.name().to_string(), ct));
    }
    Ok(out)
}

/// `select * from` a source's table, or its query as written.
fn base_query(db: &DatabaseSource) -> String {
    match (&db.table, &db.query) {
        (Some(t), _) => format!("select * from {t}"),
        (_, Some(q)) => q.trim().trim_end_matches(';').to_string(),
        // The spec requires one of them.
        (None, None) => String::new(),
    }
}

/// The DuckDB expression a column `q` (quoted) of type `t` takes on its way to a binary bulk
/// path, so that its Arrow type is the binary form of the stage column [`Job::create_stage`]
/// made for it. A UUID goes as its 16 bytes, which is what a binary `uuid` value is.
fn binary_expr(q: &str, t: &ColumnType) -> String {
    match t {
        ColumnType::Uuid => format!("unhex(replace(cast({q} as VARCHAR), '-', '')) as {q}"),
        _ => format!("cast({q} as {}) as {q}", binary_type(t)),
    }
}

/// The DuckDB type of [`binary_expr`]'s cast.
fn binary_type(t: &ColumnType) -> String {
    match t {
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Integer => "INTEGER".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Double => "DOUBLE".into(),
        ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        // A list the destination holds as a list goes as an Arrow list of its elements.
        ColumnType::List(element) if element.is_list_element() => format!("{}[]", binary_type(element)),
        // text, json and the text of other lists and structs: the same bytes in binary.
        ColumnType::Varchar | ColumnType::Json | ColumnType::Other(_) | ColumnType::List(_) => "VARCHAR".into(),
        ColumnType::Uuid => "UUID".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::TimestampTz => "TIMESTAMPTZ".into(),
        ColumnType::Blob => "BLOB".into(),
        ColumnType::Interval => "INTERVAL".into(),
    }
}

fn is_numeric(t: &ColumnType) -> bool {
    matches!(t, ColumnType::Integer | ColumnType::BigInt | ColumnType::Double | ColumnType::Decimal { .. })
}

/// The PostgreSQL spelling of a cursor's type, for the literal it is compared with.
fn pg_type_name(t: &ColumnType) -> String {
    match t {
        ColumnType::Double => "double precision".into(),
        ColumnType::Varchar | ColumnType::Other(_) | ColumnType::List(_) => "text".into(),
        ColumnType::Decimal { .. } => "numeric".into(),
        other => other.to_string(),
    }
}
