//! Weir's metadata store: what Weir must remember between runs, kept apart from the
//! warehouse so that dropping a schema never loses it and a backup is one file (SQLite,
//! the default, under the project's `.weir/`) or one database (PostgreSQL, for teams).
//!
//! Both backends run the same versioned migrations and the same portable SQL; every write is
//! one statement or one transaction, so a process killed at any point leaves the store
//! consistent. Callers share one [`Store`] across threads.

mod checks;
mod intervals;
mod loads;
mod nodes;
mod pipelines;
mod registry;
mod streams;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDateTime, Utc};

pub use checks::CheckRecord;
pub use intervals::{Interval, merge, missing};
pub use loads::{LoadRun, LoadedFile};
pub use nodes::NodeRun;
pub use pipelines::{AlertDelivery, PipelineRun, RunFilter, TaskAttempt, TaskInstance, Worker};
pub use registry::{NewSchema, Placement, RegistryReference, RegistryTx, StoredSchema, SubjectVersion};

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store (SQLite {path}): {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("metadata store (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    #[error("metadata store: {0}")]
    Config(String),
    #[error("metadata store: a thread panicked while holding it")]
    Poisoned,
}

/// One processed interval of a time-partitioned model: which rows of event time
/// `[start, end)` were written, when, and by which run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedInterval {
    /// The model's unique id (`model.shop.daily_revenue`).
    pub model: String,
    /// The relation it was written to, as the warehouse renders it: the key, so that
    /// targets (dev, prod) keep separate records.
    pub relation: String,
    pub interval: Interval,
    /// The invocation id of the run that wrote it.
    pub run_id: String,
    pub processed_at: DateTime<Utc>,
    pub rows: Option<u64>,
}

/// The metadata store, safe to share between threads.
pub struct Store {
    backend: Mutex<Backend>,
    description: String,
}

enum Backend {
    Sqlite { conn: rusqlite::Connection, path: String },
    Postgres(PgClient),
}

/// The PostgreSQL client, closed outside any async runtime (see [`outside_runtime`]): its
/// drop blocks on the connection's shutdown, which panics inside one.
struct PgClient(std::mem::ManuallyDrop<postgres::Client>);

impl Drop for PgClient {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again.
        let client = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        outside_runtime(move || drop(client));
    }
}

impl std::ops::Deref for PgClient {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.0
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.0
    }
}

/// The schema, one migration per entry, applied in order and recorded in
/// `weir_migrations`; entries are never edited once released, only appended.
const MIGRATIONS: &[&str] = &[
    "create table weir_intervals (
        relation text not null,
        interval_start text not null,
        interval_end text not null,
        model text not null,
        run_id text not null,
        processed_at text not null,
        row_count bigint,
        primary key (relation, interval_start, interval_end)
    )",
    "create table weir_check_results (
        run_id text not null,
        dataset text not null,
        check_text text not null,
        metric text not null,
        value double precision,
        status text not null,
        threshold text not null,
        message text,
        samples text,
        measured_at text not null
    );
    create index weir_check_results_metric on weir_check_results (dataset, metric, measured_at)",
    "create table weir_load_runs (
        load_id text primary key,
        load_name text not null,
        destination text not null,
        status text not null,
        started_at text not null,
        finished_at text,
        rows_read bigint,
        rows_loaded bigint,
        rows_rejected bigint,
        cursor_value text,
        message text
    );
    create index weir_load_runs_destination on weir_load_runs (destination, status, finished_at);
    create index weir_load_runs_name on weir_load_runs (load_name, started_at);
    create table weir_load_files (
        destination text not null,
        path text not null,
        size bigint not null,
        modified text not null,
        sha256 text not null,
        load_id text not null,
        loaded_at text not null,
        primary key (destination, path)
    )",
    "create table weir_pipeline_runs (
        pipeline text not null,
        run_id text not null,
        run_type text not null,
        state text not null,
        interval_start text,
        interval_end text,
        params text not null,
        queued_at text not null,
        started_at text,
        finished_at text,
        message text,
        primary key (pipeline, run_id)
    );
    create index weir_pipeline_runs_interval on weir_pipeline_runs (pipeline, interval_start);
    create table weir_task_instances (
        pipeline text not null,
        run_id text not null,
        task text not null,
        state text not null,
        try_number bigint not null,
        started_at text,
        finished_at text,
        message text,
        primary key (pipeline, run_id, task)
    );
    create table weir_task_attempts (
        pipeline text not null,
        run_id text not null,
        task text not null,
        attempt bigint not null,
        state text not null,
        started_at text not null,
        finished_at text,
        exit_code bigint,
        message text,
        log_path text,
        log_tail text,
        primary key (pipeline, run_id, task, attempt)
    );
    create table weir_xcom (
        pipeline text not null,
        run_id text not null,
        task text not null,
        name text not null,
        value text not null,
        primary key (pipeline, run_id, task, name)
    );
    create table weir_asset_events (
        asset text not null,
        pipeline text not null,
        run_id text not null,
        task text not null,
        updated_at text not null
    );
    create index weir_asset_events_asset on weir_asset_events (asset, updated_at)",
    "create table weir_alert_deliveries (
        pipeline text not null,
        run_id text not null,
        task text,
        event text not null,
        channel text not null,
        status text not null,
        attempts bigint not null,
        message text,
        delivered_at text not null
    );
    create index weir_alert_deliveries_run on weir_alert_deliveries (pipeline, run_id)",
    "create table weir_workers (
        worker_id text primary key,
        kind text not null,
        host text not null,
        pid bigint not null,
        started_at text not null,
        heartbeat_at text not null,
        stopped_at text,
        stopped_by text
    );
    create table weir_pipeline_state (
        pipeline text primary key,
        paused bigint not null,
        updated_at text not null
    );
    alter table weir_pipeline_runs add column owner text;
    create index weir_pipeline_runs_state on weir_pipeline_runs (state, pipeline);
    alter table weir_task_instances add column max_tries bigint;
    alter table weir_task_attempts add column worker text;
    alter table weir_task_attempts add column pid bigint",
    "alter table weir_load_files rename column sha256 to content_hash",
    "create table weir_stream_checkpoints (
        job text not null,
        name text not null,
        document text not null,
        written_at text not null,
        primary key (job, name)
    )",
    "create table weir_registry_schemas (
        id bigint primary key,
        schema_type text not null,
        fingerprint text not null,
        schema_text text not null,
        refs text not null,
        registered_at text not null
    );
    create index weir_registry_schemas_fingerprint on weir_registry_schemas (fingerprint);
    create table weir_registry_versions (
        subject text not null,
        version bigint not null,
        schema_id bigint not null,
        deleted bigint not null,
        registered_at text not null,
        primary key (subject, version)
    );
    create index weir_registry_versions_schema on weir_registry_versions (schema_id);
    create table weir_registry_references (
        schema_id bigint not null,
        name text not null,
        subject text not null,
        version bigint not null
    );
    create index weir_registry_references_target on weir_registry_references (subject, version);
    create table weir_registry_settings (
        subject text not null,
        name text not null,
        value text not null,
        primary key (subject, name)
    )",
    "alter table weir_load_runs add column pending_files text",
    "create table weir_node_runs (
        unique_id text not null,
        invocation text not null,
        status text not null,
        started_at text not null,
        completed_at text not null,
        rows_affected bigint,
        message text,
        pipeline text,
        run_id text
    );
    create index weir_node_runs_node on weir_node_runs (unique_id, completed_at);
    create index weir_pipeline_runs_queued on weir_pipeline_runs (pipeline, queued_at)",
];

impl Store {
    /// Opens (creating and migrating if needed) the store a URL names: `sqlite:PATH`
    /// (relative to `base`), or `postgres://...` / `postgresql://...` with an optional
    /// `schema` for Weir's tables (created if missing).
    pub fn open(url: &str, base: &Path, schema: Option<&str>) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::postgres(url, schema)
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
            let mut synchronous = "normal";
            for option in options.split('&').filter(|o| !o.is_empty()) {
                synchronous = match option.split_once('=') {
                    Some(("synchronous", v)) if v.eq_ignore_ascii_case("normal") => "normal",
                    Some(("synchronous", v)) if v.eq_ignore_ascii_case("full") => "full",
                    _ => {
                        return Err(StoreError::Config(format!(
                            "'{option}' in the store URL '{url}' is not an option (known: synchronous=normal or synchronous=full)"
                        )));
                    }
                };
            }
            let path = PathBuf::from(path.trim_start_matches("//"));
            Store::sqlite_synchronous(&if path.is_absolute() { path } else { base.join(path) }, synchronous)
        } else {
            Err(StoreError::Config(format!("'{url}' is not a store URL (use sqlite:PATH or postgresql://...)")))
        }
    }

    /// A SQLite store in one file; its folder is created if missing. A commit is durable once
    /// the next checkpoint has synced the write-ahead log (SQLite's `synchronous=normal`): a
    /// power cut may lose the last commits, never the file's consistency.
    pub fn sqlite(path: &Path) -> Result<Store, StoreError> {
        Store::sqlite_synchronous(path, "normal")
    }

    /// A SQLite store whose every commit syncs the log first (`synchronous`: `full`), where
    /// losing the last commits to a power cut is not acceptable, or `normal` as above.
    fn sqlite_synchronous(path: &Path, synchronous: &str) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let err = |source| StoreError::Sqlite { path: shown.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path).map_err(err)?;
        // Several processes (a backfill and a scheduler) may share the file: wait for
        // each other's writes rather than fail, and let readers run beside a writer.
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        // Switching a new file to WAL takes it whole, and SQLite answers "locked" at once
        // (not after the busy timeout) while another process opens it too: asked again.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match conn.pragma_update(None, "journal_mode", "wal") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(err)?,
            }
        }
        conn.pragma_update(None, "synchronous", synchronous).map_err(err)?;
        let store = Store { backend: Mutex::new(Backend::Sqlite { conn, path: shown.clone() }), description: format!("sqlite:{shown}") };
        store.migrate()?;
        Ok(store)
    }

    /// A PostgreSQL store; `schema` keeps Weir's tables apart from others.
    pub fn postgres(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        let client = outside_runtime(|| -> Result<postgres::Client, StoreError> {
            let mut client = postgres::Client::connect(url, postgres::NoTls)?;
            if let Some(s) = schema {
                let quoted = format!("\"{}\"", s.replace('"', "\"\""));
                client.batch_execute(&format!("create schema if not exists {quoted}; set search_path to {quoted}"))?;
            }
            Ok(client)
        })?;
        let store =
            Store { backend: Mutex::new(Backend::Postgres(PgClient(std::mem::ManuallyDrop::new(client)))), description: redact(url) };
        store.migrate()?;
        Ok(store)
    }

    /// Writes a consistent copy of a SQLite store to `dest` while it is in use (`VACUUM
    /// INTO`: one read transaction, so writers go on and the copy is compact). PostgreSQL
    /// stores are backed up with its own tools (`weir db backup` runs pg_dump).
    pub fn backup_sqlite(&self, dest: &Path) -> Result<(), StoreError> {
        if dest.exists() {
            return Err(StoreError::Config(format!("{} exists; choose a new file for the backup", dest.display())));
        }
        let target = dest.display().to_string();
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .execute("vacuum into ?1", [target.as_str()])
                .map(drop)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(_) => Err(StoreError::Config("a PostgreSQL store is backed up with pg_dump".into())),
        })
    }

    /// The file of a SQLite store (`None` for PostgreSQL).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.description.strip_prefix("sqlite:").map(PathBuf::from)
    }

    /// Where the store is, for messages (a PostgreSQL password is not shown).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Records that `p.interval` of `p.relation` was written (replacing an earlier record
    /// of the same interval). Call it after the warehouse transaction committed: a crash in
    /// between leaves the interval unrecorded, so it is processed again, never skipped.
    pub fn record_interval(&self, p: &ProcessedInterval) -> Result<(), StoreError> {
        let (start, end) = (fmt_time(p.interval.start), fmt_time(p.interval.end));
        let at = p.processed_at.to_rfc3339();
        let rows = p.rows.map(|r| r as i64);
        let sql = "insert into weir_intervals (relation, interval_start, interval_end, model, run_id, processed_at, row_count)
                   values ($1, $2, $3, $4, $5, $6, $7)
                   on conflict (relation, interval_start, interval_end) do update set
                   model = excluded.model, run_id = excluded.run_id, processed_at = excluded.processed_at, row_count = excluded.row_count";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .execute(sql, rusqlite::params![p.relation, start, end, p.model, p.run_id, at, rows])
                .map(drop)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => {
                c.execute(sql, &[&p.relation, &start, &end, &p.model, &p.run_id, &at, &rows]).map(drop).map_err(Into::into)
            }
        })
    }

    /// Every recorded interval of a relation, by start.
    pub fn intervals(&self, relation: &str) -> Result<Vec<ProcessedInterval>, StoreError> {
        let sql = "select model, interval_start, interval_end, run_id, processed_at, row_count
                   from weir_intervals where relation = $1 order by interval_start, interval_end";
        type Row = (String, String, String, String, String, Option<i64>);
        let rows: Vec<Row> = self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows =
                    stmt.query_map([relation], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))).map_err(err)?;
                rows.collect::<Result<Vec<Row>, _>>().map_err(err)
            }
            Backend::Postgres(c) => {
                Ok(c.query(sql, &[&relation])?.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect())
            }
        })?;
        rows.into_iter()
            .map(|(model, s, e, run_id, at, count)| {
                let bad = |v: &str| StoreError::Config(format!("weir_intervals holds '{v}' for {relation}, which is not a timestamp"));
                Ok(ProcessedInterval {
                    model,
                    relation: relation.to_string(),
                    interval: Interval { start: parse_time(&s).ok_or_else(|| bad(&s))?, end: parse_time(&e).ok_or_else(|| bad(&e))? },
                    run_id,
                    processed_at: DateTime::parse_from_rfc3339(&at).map_err(|_| bad(&at))?.with_timezone(&Utc),
                    rows: count.map(|c| c as u64),
                })
            })
            .collect()
    }

    /// Forgets the intervals of a relation: all of them (the table was rebuilt or dropped),
    /// or those overlapping `within` (they are being restated). Returns how many.
    pub fn forget_intervals(&self, relation: &str, within: Option<Interval>) -> Result<u64, StoreError> {
        let (lo, hi) = match within {
            Some(w) => (fmt_time(w.start), fmt_time(w.end)),
            None => (String::new(), "~".to_string()),
        };
        // Overlap of [interval_start, interval_end) with [lo, hi); ISO text sorts as time.
        let sql = "delete from weir_intervals where relation = $1 and interval_end > $2 and interval_start < $3";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .execute(sql, rusqlite::params![relation, lo, hi])
                .map(|n| n as u64)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => c.execute(sql, &[&relation, &lo, &hi]).map_err(Into::into),
        })
    }

    /// The migrations applied, newest last (for `weir debug` and tests).
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let sql = "select count(*) from weir_migrations";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => Ok(c.query_one(sql, &[])?.get::<_, i64>(0) as usize),
        })
    }

    /// Runs one statement with portable parameters; returns the rows it changed.
    pub(crate) fn exec(&self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(params.iter().map(Val::sqlite))))
                .map(|n| n as u64)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => Ok(c.execute(sql, &params.iter().map(Val::postgres).collect::<Vec<_>>())?),
        })
    }

    /// Runs one query; each row comes back as values of the kinds `cols` names.
    pub(crate) fn select(&self, sql: &str, params: &[Val], cols: &[Col]) -> Result<Vec<Vec<Val>>, StoreError> {
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(params.iter().map(Val::sqlite)), |r| sqlite_row(r, cols)).map_err(err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(err)
            }
            Backend::Postgres(c) => {
                Ok(c.query(sql, &params.iter().map(Val::postgres).collect::<Vec<_>>())?.iter().map(|r| pg_row(r, cols)).collect())
            }
        })
    }

    /// Runs `f` in one transaction: on SQLite one that holds the write lock from its start
    /// (so read-then-write decisions cannot race another process), on PostgreSQL an
    /// ordinary one in which `f` takes row locks (`for update skip locked`) as it needs.
    pub(crate) fn transaction<T: Send>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
                let mut t = SqliteTx { tx, path: path.clone() };
                let out = f(&mut t)?;
                t.tx.commit().map_err(err)?;
                Ok(out)
            }
            Backend::Postgres(c) => {
                let mut t = PgTx(c.transaction()?);
                let out = f(&mut t)?;
                t.0.commit()?;
                Ok(out)
            }
        })
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Backend) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        let mut guard = self.backend.lock().map_err(|_| StoreError::Poisoned)?;
        let b: &mut Backend = &mut guard;
        match b {
            Backend::Postgres(_) => outside_runtime(|| f(b)),
            Backend::Sqlite { .. } => f(b),
        }
    }

    /// Applies the migrations not yet applied, each in a transaction with its record, under
    /// a lock so that two processes opening a new store at once do not both migrate it.
    fn migrate(&self) -> Result<(), StoreError> {
        let create = "create table if not exists weir_migrations (version bigint primary key, applied_at text not null)";
        let now = Utc::now().to_rfc3339();
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                // BEGIN IMMEDIATE takes the write lock up front: the other process waits.
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
                tx.execute(create, []).map_err(err)?;
                let done: i64 = tx.query_row("select count(*) from weir_migrations", [], |r| r.get(0)).map_err(err)?;
                for (v, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
                    tx.execute_batch(sql).map_err(err)?;
                    tx.execute("insert into weir_migrations values (?1, ?2)", rusqlite::params![v as i64 + 1, now]).map_err(err)?;
                }
                tx.commit().map_err(err)
            }
            Backend::Postgres(c) => {
                let mut tx = c.transaction()?;
                // One advisory lock key for Weir's migrations, held to the transaction's end.
                tx.execute("select pg_advisory_xact_lock(7365829104)", &[])?;
                tx.execute(create, &[])?;
                let done: i64 = tx.query_one("select count(*) from weir_migrations", &[])?.get(0);
                for (v, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
                    tx.batch_execute(sql)?;
                    tx.execute("insert into weir_migrations values ($1, $2)", &[&(v as i64 + 1), &now])?;
                }
                tx.commit().map_err(Into::into)
            }
        })
    }
}

/// Runs blocking PostgreSQL work where the synchronous client may block: the `postgres`
/// crate drives its own runtime and refuses to start inside another, and the orchestrator
/// calls the store from async code. On a multi-threaded runtime the worker thread steps out
/// of it for the call; on a single-threaded one the call runs on a scoped thread.
fn outside_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    }
}

/// Statements inside [`Store::transaction`], with the same portable values as outside.
pub(crate) trait Tx {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError>;
    fn select(&mut self, sql: &str, params: &[Val], cols: &[Col]) -> Result<Vec<Vec<Val>>, StoreError>;
    /// PostgreSQL takes row locks; SQLite's transaction already excludes other writers.
    fn is_postgres(&self) -> bool;
}

struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
    path: String,
}

struct PgTx<'c>(postgres::Transaction<'c>);

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        self.tx
            .execute(sql, rusqlite::params_from_iter(params.iter().map(Val::sqlite)))
            .map(|n| n as u64)
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    fn select(&mut self, sql: &str, params: &[Val], cols: &[Col]) -> Result<Vec<Vec<Val>>, StoreError> {
        let err = |source| StoreError::Sqlite { path: self.path.clone(), source };
        let mut stmt = self.tx.prepare_cached(sql).map_err(err)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter().map(Val::sqlite)), |r| sqlite_row(r, cols)).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn is_postgres(&self) -> bool {
        false
    }
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        Ok(self.0.execute(sql, &params.iter().map(Val::postgres).collect::<Vec<_>>())?)
    }

    fn select(&mut self, sql: &str, params: &[Val], cols: &[Col]) -> Result<Vec<Vec<Val>>, StoreError> {
        Ok(self.0.query(sql, &params.iter().map(Val::postgres).collect::<Vec<_>>())?.iter().map(|r| pg_row(r, cols)).collect())
    }

    fn is_postgres(&self) -> bool {
        true
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, cols: &[Col]) -> rusqlite::Result<Vec<Val>> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| match c {
            Col::Text => r.get(i).map(Val::Text),
            Col::Int => r.get(i).map(Val::Int),
        })
        .collect()
}

fn pg_row(r: &postgres::Row, cols: &[Col]) -> Vec<Val> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| match c {
            Col::Text => Val::Text(r.get(i)),
            Col::Int => Val::Int(r.get(i)),
        })
        .collect()
}

/// A statement parameter or a column value, in the subset of types both backends share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Text(Option<String>),
    Int(Option<i64>),
}

/// The kind of value a query's column is read as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Text,
    Int,
}

impl Val {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        match self {
            Val::Text(t) => t,
            Val::Int(i) => i,
        }
    }

    fn postgres(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Val::Text(t) => t,
            Val::Int(i) => i,
        }
    }

    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Val::Text(t) => t.clone(),
            Val::Int(i) => i.map(|i| i.to_string()),
        }
    }

    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => *i,
            Val::Text(t) => t.as_deref().and_then(|t| t.parse().ok()),
        }
    }
}

/// Intervals are kept as `YYYY-MM-DD HH:MM:SS` text: portable, and sorted as time.
fn fmt_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn parse_time(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()
}

/// A PostgreSQL URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((cred, host)) if cred.contains(':') => {
            format!("{scheme}://{}:***@{host}", cred.split(':').next().unwrap_or_default())
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(&format!("{s} 00:00:00"), "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn record(store: &Store, relation: &str, start: &str, end: &str, run: &str) {
        let p = ProcessedInterval {
            model: "model.p.m".into(),
            relation: relation.into(),
            interval: Interval { start: t(start), end: t(end) },
            run_id: run.into(),
            processed_at: Utc::now(),
            rows: Some(3),
        };
        store.record_interval(&p).unwrap();
    }

    #[test]
    fn sqlite_records_replaces_and_forgets_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite:.weir/weir.db", dir.path(), None).unwrap();
        assert!(dir.path().join(".weir/weir.db").exists());
        record(&store, "a", "2024-01-01", "2024-01-02", "r1");
        record(&store, "a", "2024-01-02", "2024-01-03", "r1");
        record(&store, "a", "2024-01-01", "2024-01-02", "r2");
        record(&store, "b", "2024-01-01", "2024-01-02", "r1");
        let a = store.intervals("a").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].run_id, "r2", "a rerun replaces the record");
        assert_eq!(a[0].rows, Some(3));
        // Restating the second day forgets only it.
        assert_eq!(store.forget_intervals("a", Some(Interval { start: t("2024-01-02"), end: t("2024-01-10") })).unwrap(), 1);
        assert_eq!(store.intervals("a").unwrap().len(), 1);
        assert_eq!(store.forget_intervals("a", None).unwrap(), 1);
        assert_eq!(store.intervals("b").unwrap().len(), 1);
    }

    #[test]
    fn processes_opening_a_new_file_at_once_all_get_it() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.db");
            let opened: Vec<Result<Store, StoreError>> = std::thread::scope(|s| {
                (0..6).map(|_| s.spawn(|| Store::sqlite(&path))).collect::<Vec<_>>().into_iter().map(|h| h.join().unwrap()).collect()
            });
            for store in opened {
                assert_eq!(store.unwrap().schema_version().unwrap(), MIGRATIONS.len());
            }
        }
    }

    #[test]
    fn reopening_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let first = Store::sqlite(&path).unwrap();
        record(&first, "a", "2024-01-01", "2024-01-02", "r1");
        drop(first);
        let again = Store::sqlite(&path).unwrap();
        assert_eq!(again.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(again.intervals("a").unwrap().len(), 1);
    }

    #[test]
    fn a_sqlite_url_may_ask_for_a_synced_commit() {
        let dir = tempfile::tempdir().unwrap();
        let level = |url: &str| -> Result<i64, String> {
            let store = Store::open(url, dir.path(), None).map_err(|e| e.to_string())?;
            let backend = store.backend.lock().unwrap();
            let Backend::Sqlite { conn, .. } = &*backend else { unreachable!("a SQLite URL opens SQLite") };
            Ok(conn.query_row("pragma synchronous", [], |r| r.get(0)).unwrap())
        };
        // SQLite's levels: 1 normal, 2 full.
        assert_eq!(level("sqlite:w.db"), Ok(1));
        assert_eq!(level("sqlite:w.db?synchronous=full"), Ok(2));
        assert_eq!(level("sqlite:w.db?synchronous=NORMAL"), Ok(1));
        let e = level("sqlite:w.db?synchronous=extra").unwrap_err();
        assert!(e.contains("'synchronous=extra' in the store URL") && e.contains("known: synchronous=normal"), "{e}");
        assert!(!dir.path().join("w.db?synchronous=full").exists());
    }

    #[test]
    fn bad_urls_are_refused_and_passwords_hidden() {
        let e = Store::open("mysql://x", Path::new("."), None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not a store URL"), "{e}");
        assert_eq!(redact("postgresql://u:secret@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
    }

    /// The synchronous PostgreSQL client refuses to block inside an async runtime; the store
    /// steps out of it, on both kinds of runtime, for queries and for closing the client.
    #[test]
    fn a_postgres_store_works_inside_async_runtimes() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_store_rt_test_{}", std::process::id());
        let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let multi = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        for rt in [current, multi] {
            rt.block_on(async {
                let store = Store::postgres(url, Some(&schema)).unwrap_or_else(|e| panic!("PostgreSQL at {url} is required: {e}"));
                record(&store, "a", "2024-01-01", "2024-01-02", "r1");
                assert_eq!(store.intervals("a").unwrap().len(), 1);
                drop(store);
            });
        }
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
    }

    /// The same operations on the shared PostgreSQL, in a schema of the test's own.
    #[test]
    fn postgres_store_in_its_own_schema() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_store_test_{}", std::process::id());
        let store = match Store::postgres(url, Some(&schema)) {
            Ok(s) => s,
            Err(e) => panic!("PostgreSQL at {url} is required for this test: {e}"),
        };
        record(&store, "a", "2024-01-01", "2024-01-02", "r1");
        record(&store, "a", "2024-01-01", "2024-01-02", "r2");
        let a = store.intervals("a").unwrap();
        assert_eq!((a.len(), a[0].run_id.as_str()), (1, "r2"));
        assert_eq!(Store::postgres(url, Some(&schema)).unwrap().schema_version().unwrap(), MIGRATIONS.len());
        drop(store);
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
    }
}
