//! The warehouse sink: a job's results as a table of the project's warehouse (DuckDB or
//! PostgreSQL), with the input positions, the late events and the rejected events written in
//! the same transaction.
//!
//! A window's row is upserted on its key and window: a result that may already be there (an
//! update within the lateness, a session that grew, anything emitted again while a restarted
//! job replays from its checkpoint) deletes the row it replaces first; a first result is
//! inserted. A session deletes every row of its key that it covers, so the sessions it
//! absorbed go with it. Late and rejected events are keyed by their offset, and a restart
//! forgets those past its checkpoint before reading them again, so none is kept twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_core::{ColumnType, Relation};
use weir_warehouse::{Connection, Warehouse, literal};

use crate::StreamError;

/// Per partition: events read, counted in windows (or written), late, rejected, filtered out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub counted: u64,
    pub late: u64,
    pub rejected: u64,
    pub filtered: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.counted += o.counted;
        self.late += o.late;
        self.rejected += o.rejected;
        self.filtered += o.filtered;
    }
}

/// Per topic and partition: the next offset to read and the counts so far.
pub type Positions = BTreeMap<(String, u32), (u64, Counts)>;

/// An event kept aside: late (with the watermark it missed) or rejected.
#[derive(Debug, Clone)]
pub struct Aside {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub event: String,
    pub reason: String,
    /// Late events: their event time and the watermark, in milliseconds.
    pub times: Option<(i64, i64)>,
}

/// One transaction's worth of writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows to upsert (each value as text, in the table's column order), and whether a row
    /// for its key and window may already be there.
    pub rows: Vec<(Vec<Option<String>>, bool)>,
    /// Rows to delete, by their key columns (the others are not read): a changelog's rows
    /// gone at the source, or groups left empty.
    pub deleted: Vec<Vec<Option<String>>>,
    pub late: Vec<Aside>,
    pub rejected: Vec<Aside>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.deleted.is_empty() && self.late.is_empty() && self.rejected.is_empty()
    }
}

/// How a job's rows are keyed in its table.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Output columns and their SQL types (as DuckDB names them).
    pub columns: Vec<(String, String)>,
    /// The columns that are group keys.
    pub keys: Vec<usize>,
    /// The window's start and end columns, for a windowed job.
    pub window: Option<(usize, usize)>,
    /// Whether windows are sessions (a row may cover others).
    pub session: bool,
    /// Whether rows are only ever appended (a projection).
    pub append: bool,
}

pub struct Sink {
    wh: Arc<dyn Warehouse>,
    /// Open while the job writes; closed when it is idle on a database one process writes at
    /// a time, so `weir build` and others can take their turn.
    conn: Option<Box<dyn Connection>>,
    pub table: Relation,
    /// DuckDB's: a temporary table of text columns the rows are appended to (DuckDB's
    /// appender, no SQL text per row), then cast into the table by one statement.
    stage: Option<Relation>,
    layout: Layout,
    types: Vec<String>,
    job: String,
    /// The topics it reads (two for a join of streams).
    topics: Vec<String>,
    positions: Relation,
    late: Relation,
    rejected: Relation,
    /// Where the rows go.
    rows_to: RowsTo,
    /// The one partition it commits positions for, when it is a worker's task (the job's
    /// other partitions' are other tasks').
    pub partition: Option<u32>,
    owners: Relation,
    /// A worker's task's claim on its partition: every commit checks it is still the
    /// partition's latest, in the commit's own transaction.
    claim: Option<Claim>,
}

/// A task's claim on one partition of a job's input, a number greater than every claim
/// before it: its commits are refused once another task claimed the partition since.
#[derive(Debug, Clone)]
struct Claim {
    topic: String,
    partition: u32,
    epoch: i64,
}

/// Where a job's rows go: the table, Redis (written here, before the transaction), or a
/// topic (written by the job with its checkpoint, after the transaction).
enum RowsTo {
    Table,
    Redis(Box<super::redis::RedisSink>),
    Topic,
}

/// The bookkeeping tables beside a job's table, shared by every job of the schema.
pub const POSITIONS: &str = "_weir_stream_positions";
pub const LATE: &str = "_weir_late_events";
pub const REJECTED: &str = "_weir_rejected_events";
/// Which worker's task owns each partition of a job's input, by the number of its claim. Kept
/// through `weir stream reset`, so no claim's number ever comes back.
pub const OWNERS: &str = "_weir_stream_owners";

impl Sink {
    /// Opens the sink, making its schema, its table and the bookkeeping tables when missing;
    /// a table that exists with other columns is refused (the job's SQL changed them).
    pub fn open(
        wh: Arc<dyn Warehouse>,
        table: Relation,
        layout: Layout,
        results: &weir_graph::stream_jobs::Sink,
        job: &str,
        topics: &[String],
    ) -> Result<Sink, StreamError> {
        let rows_to = match results {
            weir_graph::stream_jobs::Sink::Table => RowsTo::Table,
            weir_graph::stream_jobs::Sink::Redis { url, key_prefix, ttl_ms } => {
                RowsTo::Redis(Box::new(super::redis::RedisSink::open(url, key_prefix, *ttl_ms, &layout)?))
            }
            weir_graph::stream_jobs::Sink::Topic { .. } => RowsTo::Topic,
        };
        let table_rows = matches!(rows_to, RowsTo::Table);
        // Jobs opened at once in one process (`weir build`, `weir serve`) share the
        // bookkeeping tables: one makes them while the others wait (DuckDB refuses two
        // transactions creating the same table).
        static DDL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _ddl = DDL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut conn = wh.connect()?;
        let beside = |name: &str| Relation::new(table.database.clone(), table.schema.clone(), name);
        let (positions, late, rejected, owners) = (beside(POSITIONS), beside(LATE), beside(REJECTED), beside(OWNERS));
        let types: Vec<String> = layout.columns.iter().map(|(_, t)| wh.type_sql(&ColumnType::parse(t))).collect();
        conn.execute(&wh.create_schema_sql(&table.database, &table.schema))?;
        // The rows' table, when they go to one; the bookkeeping tables below, whatever the sink.
        let existing = if table_rows { conn.columns(&table).unwrap_or_default() } else { vec![] };
        if table_rows && existing.is_empty() {
            let cols: Vec<String> = layout.columns.iter().zip(&types).map(|((n, _), t)| format!("{} {t}", wh.quote(n))).collect();
            conn.execute(&format!("create table if not exists {} ({})", wh.render(&table), cols.join(", ")))?;
        } else if table_rows {
            let have: Vec<String> = existing.iter().map(|c| c.name.to_ascii_lowercase()).collect();
            let want: Vec<String> = layout.columns.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
            if have != want {
                return Err(StreamError::Job(format!(
                    "{} has columns ({}) but the job writes ({}): run `weir stream reset {job}` to start it over",
                    wh.render(&table),
                    have.join(", "),
                    want.join(", ")
                )));
            }
        }
        let q = |s: &str| wh.quote(s);
        let (part, off) = (q("partition"), q("offset"));
        conn.execute(&format!(
            "create table if not exists {} (job varchar, topic varchar, {part} integer, {off} bigint, events_read bigint, counted bigint, \
             late bigint, rejected bigint, filtered bigint, watermark bigint, committed_at timestamp)",
            wh.render(&positions)
        ))?;
        conn.execute(&format!(
            "create table if not exists {} (job varchar, topic varchar, {part} integer, {off} bigint, event_time timestamp, \
             watermark timestamp, reason varchar, event varchar, recorded_at timestamp)",
            wh.render(&late)
        ))?;
        conn.execute(&format!(
            "create table if not exists {} (job varchar, topic varchar, {part} integer, {off} bigint, reason varchar, event varchar, \
             recorded_at timestamp)",
            wh.render(&rejected)
        ))?;
        conn.execute(&format!(
            "create table if not exists {} (job varchar, topic varchar, {part} integer, epoch bigint, member varchar, \
             claimed_at timestamp, committed_at timestamp, primary key (job, topic, {part}))",
            wh.render(&owners)
        ))?;
        let stage = (wh.adapter_type() == "duckdb" && table_rows)
            .then(|| Relation::new("temp", "main", format!("__weir_stage_{}", job.replace(['.', '-'], "_"))));
        let mut sink = Sink {
            wh,
            conn: None,
            table,
            stage,
            layout,
            types,
            job: job.to_string(),
            topics: topics.to_vec(),
            positions,
            late,
            rejected,
            rows_to,
            partition: None,
            owners,
            claim: None,
        };
        sink.prepare(conn)?;
        Ok(sink)
    }

    /// The output columns and keys it writes.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The warehouse it writes to.
    pub fn warehouse(&self) -> &dyn Warehouse {
        self.wh.as_ref()
    }

    /// Claims `partition` of `topic` for a worker's task (named `member`, for people): from
    /// now on only this sink commits the partition's positions and rows. A task that held it
    /// before (a worker that missed a rebalance, paused or cut off) has its next commit
    /// refused, in that commit's transaction, so the results stay exactly once. The claim's
    /// number is greater than every one before, and than the time in milliseconds, so a
    /// warehouse started over gives none that came before.
    pub fn claim(&mut self, topic: &str, partition: u32, member: &str, now_ms: i64) -> Result<(), StreamError> {
        let (owners, job, t, part) = (self.wh.render(&self.owners), literal(&self.job), literal(topic), self.wh.quote("partition"));
        let at = format!("job = {job} and topic = {t} and {part} = {partition}");
        let now = time_literal(now_ms);
        let conn = self.conn()?;
        conn.execute("begin")?;
        let claimed = conn
            .execute(&format!(
                "insert into {owners} (job, topic, {part}, epoch, member, claimed_at) select {job}, {t}, {partition}, 0, '', {now} \
                 where not exists (select 1 from {owners} where {at})"
            ))
            .and_then(|_| {
                conn.execute(&format!(
                    "update {owners} set epoch = greatest(epoch + 1, {now_ms}), member = {}, claimed_at = {now} where {at}",
                    literal(member)
                ))
            })
            .and_then(|_| conn.query(&format!("select epoch from {owners} where {at}")))
            .and_then(|r| {
                conn.execute("commit")?;
                Ok(r)
            });
        let epoch = match claimed {
            Ok(r) => r.rows.first().and_then(|r| r.first()).and_then(|d| d.as_i64()),
            Err(e) => {
                let _ = conn.execute("rollback");
                self.conn = None;
                return Err(e.into());
            }
        };
        let epoch = epoch.ok_or_else(|| StreamError::Job(format!("{owners}: the claim on {topic} partition {partition} was not kept")))?;
        if let RowsTo::Redis(r) = &mut self.rows_to {
            r.fence(&self.job, topic, partition, epoch)?;
        }
        self.partition = Some(partition);
        self.claim = Some(Claim { topic: topic.to_string(), partition, epoch });
        Ok(())
    }

    /// Closes the sink's connection and lets go of the database, where one process writes
    /// it at a time; the next write opens it again (waiting its turn).
    pub fn release(&mut self) {
        if self.wh.one_writer() {
            self.conn = None;
            self.wh.release();
        }
    }

    /// The open connection, opened again after [`Sink::release`].
    fn conn(&mut self) -> Result<&mut Box<dyn Connection>, StreamError> {
        if self.conn.is_none() {
            let conn = self.wh.connect()?;
            self.prepare(conn)?;
        }
        self.conn.as_mut().ok_or_else(|| StreamError::Job("the sink's connection did not open".into()))
    }

    /// Makes `conn` the sink's, with its staging table (temporary, so each connection's own).
    fn prepare(&mut self, mut conn: Box<dyn Connection>) -> Result<(), StreamError> {
        if let Some(stage) = &self.stage {
            let cols: Vec<String> = (0..self.types.len()).map(|i| format!("c{i} varchar")).collect();
            conn.execute(&format!("create or replace temp table {} ({})", self.wh.quote(&stage.identifier), cols.join(", ")))?;
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// The positions (and counts) last committed with the job's rows, by topic and
    /// partition, and the watermark they were committed under (every window closed by then
    /// may be in the table). A worker's task's: its partition's.
    pub fn committed(&mut self) -> Result<(Positions, Option<i64>), StreamError> {
        let q = |s: &str| self.wh.quote(s);
        let topics: Vec<String> = self.topics.iter().map(|t| literal(t)).collect();
        let only = self.partition.map_or(String::new(), |p| format!(" and {} = {p}", q("partition")));
        let sql = format!(
            "select topic, {}, {}, events_read, counted, late, rejected, filtered, watermark from {} where job = {} and topic in ({}){only}",
            q("partition"),
            q("offset"),
            self.wh.render(&self.positions),
            literal(&self.job),
            topics.join(", ")
        );
        let result = self.conn()?.query(&sql)?;
        let (mut out, mut watermark) = (BTreeMap::new(), None);
        for r in result.rows {
            let n = |i: usize| r.get(i).and_then(|d| d.as_i64()).unwrap_or(0).max(0) as u64;
            let counts = Counts { read: n(3), counted: n(4), late: n(5), rejected: n(6), filtered: n(7) };
            let topic = r.first().map(|d| d.to_string()).unwrap_or_default();
            out.insert((topic, n(1) as u32), (n(2), counts));
            watermark = watermark.max(r.get(8).and_then(|d| d.as_i64()));
        }
        Ok((out, watermark))
    }

    /// Forgets the late and rejected events at or past `positions`: a restarted job reads
    /// them again from there.
    pub fn forget_after(&mut self, positions: &BTreeMap<(String, u32), u64>) -> Result<(), StreamError> {
        let mut statements = vec![];
        for rel in [&self.late, &self.rejected] {
            for ((topic, p), o) in positions {
                statements.push(format!(
                    "delete from {} where job = {} and topic = {} and {} = {p} and {} >= {o}",
                    self.wh.render(rel),
                    literal(&self.job),
                    literal(topic),
                    self.wh.quote("partition"),
                    self.wh.quote("offset")
                ));
            }
        }
        self.conn()?.transaction(&statements)?;
        Ok(())
    }

    /// Writes `batch` and moves the job's positions to `positions`, in one transaction.
    /// With a Redis sink, the rows are written there first (idempotently); with a topic
    /// sink, the job writes them after; the transaction holds the rest.
    pub fn commit(&mut self, batch: &Batch, positions: &Positions, watermark: Option<i64>, now_ms: i64) -> Result<(), StreamError> {
        let rows: &[(Vec<Option<String>>, bool)] = match &mut self.rows_to {
            RowsTo::Redis(r) => {
                r.write(&batch.rows)?;
                &[]
            }
            RowsTo::Topic => &[],
            RowsTo::Table => &batch.rows,
        };
        let mut statements = vec![];
        if matches!(self.rows_to, RowsTo::Table) {
            statements.extend(self.delete_statements(batch.deleted.iter()));
        }
        statements.extend(self.row_statements(rows));
        let now = time_literal(now_ms);
        let q = |s: &str| self.wh.quote(s);
        let job = literal(&self.job);
        for (rel, asides, late) in [(&self.late, &batch.late, true), (&self.rejected, &batch.rejected, false)] {
            for chunk in asides.chunks(500) {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|a| {
                        let times = match (late, a.times) {
                            (false, _) => String::new(),
                            (true, Some((ts, wm))) => format!("{}, {}, ", time_literal(ts), time_literal(wm)),
                            (true, None) => "null, null, ".to_string(),
                        };
                        format!(
                            "({job}, {}, {}, {}, {times}{}, {}, {now})",
                            literal(&a.topic),
                            a.partition,
                            a.offset,
                            literal(&a.reason),
                            literal(&a.event)
                        )
                    })
                    .collect();
                let cols = if late { "event_time, watermark, reason, event, recorded_at" } else { "reason, event, recorded_at" };
                statements.push(format!(
                    "insert into {} (job, topic, {}, {}, {cols}) values {}",
                    self.wh.render(rel),
                    q("partition"),
                    q("offset"),
                    values.join(", ")
                ));
            }
        }
        let only = self.partition.map_or(String::new(), |p| format!(" and {} = {p}", q("partition")));
        statements.push(format!("delete from {} where job = {job}{only}", self.wh.render(&self.positions)));
        if !positions.is_empty() {
            let values: Vec<String> = positions
                .iter()
                .map(|((topic, p), (o, c))| {
                    let wm = watermark.map_or("null".to_string(), |w| w.to_string());
                    format!(
                        "({job}, {}, {p}, {o}, {}, {}, {}, {}, {}, {wm}, {now})",
                        literal(topic),
                        c.read,
                        c.counted,
                        c.late,
                        c.rejected,
                        c.filtered
                    )
                })
                .collect();
            statements.push(format!(
                "insert into {} (job, topic, {}, {}, events_read, counted, late, rejected, filtered, watermark, committed_at) values {}",
                self.wh.render(&self.positions),
                q("partition"),
                q("offset"),
                values.join(", ")
            ));
        }
        self.transaction(rows, &statements, &now)
    }

    /// The deletes of the rows with the keys (and windows) of `rows`.
    fn delete_statements<'r>(&self, rows: impl Iterator<Item = &'r Vec<Option<String>>>) -> Vec<String> {
        let rows: Vec<&Vec<Option<String>>> = rows.collect();
        if rows.is_empty() {
            return vec![];
        }
        let table = self.wh.render(&self.table);
        let cols: Vec<String> = self.layout.columns.iter().map(|(n, _)| self.wh.quote(n)).collect();
        let value = |row: &[Option<String>], i: usize| match &row[i] {
            Some(t) => format!("cast({} as {})", literal(t), self.types[i]),
            None => "null".to_string(),
        };
        let mut on: Vec<usize> = self.layout.keys.clone();
        if let Some((s, e)) = self.layout.window {
            on.extend([s, e]);
        }
        if on.is_empty() {
            // One running result for the whole stream: the table holds one row.
            return vec![format!("delete from {table}")];
        }
        let mut statements = vec![];
        for chunk in rows.chunks(500) {
            let values: Vec<String> =
                chunk.iter().map(|r| format!("({})", on.iter().map(|i| value(r, *i)).collect::<Vec<_>>().join(", "))).collect();
            let names: Vec<String> = (0..on.len()).map(|i| format!("v{i}")).collect();
            let mut conds: Vec<String> =
                self.layout.keys.iter().enumerate().map(|(j, k)| format!("t.{} is not distinct from v.v{j}", cols[*k])).collect();
            if let Some((s, e)) = self.layout.window {
                let n = self.layout.keys.len();
                if self.layout.session {
                    conds.push(format!("t.{} >= v.v{n} and t.{} <= v.v{}", cols[s], cols[e], n + 1));
                } else {
                    conds.push(format!("t.{} = v.v{n} and t.{} = v.v{}", cols[s], cols[e], n + 1));
                }
            }
            statements.push(format!(
                "delete from {table} t where exists (select 1 from (values {}) as v({}) where {})",
                values.join(", "),
                names.join(", "),
                conds.join(" and ")
            ));
        }
        statements
    }

    /// The deletes and inserts that upsert `rows`.
    fn row_statements(&self, rows: &[(Vec<Option<String>>, bool)]) -> Vec<String> {
        let table = self.wh.render(&self.table);
        let cols: Vec<String> = self.layout.columns.iter().map(|(n, _)| self.wh.quote(n)).collect();
        let value = |row: &[Option<String>], i: usize| match &row[i] {
            Some(t) => format!("cast({} as {})", literal(t), self.types[i]),
            None => "null".to_string(),
        };
        let replacing = rows.iter().filter(|(_, may)| *may && !self.layout.append).map(|(r, _)| r);
        let mut statements = self.delete_statements(replacing);
        if let Some(stage) = &self.stage {
            // The rows are in the staging table already (appended as text): one statement
            // casts them in, however many there are.
            if !rows.is_empty() {
                let cast: Vec<String> = self.types.iter().enumerate().map(|(i, t)| format!("cast(c{i} as {t})")).collect();
                statements.push(format!(
                    "insert into {table} ({}) select {} from {}",
                    cols.join(", "),
                    cast.join(", "),
                    self.wh.render(stage)
                ));
                statements.push(format!("delete from {}", self.wh.render(stage)));
            }
            return statements;
        }
        for chunk in rows.chunks(1000) {
            let values: Vec<String> =
                chunk.iter().map(|(r, _)| format!("({})", (0..cols.len()).map(|i| value(r, i)).collect::<Vec<_>>().join(", "))).collect();
            statements.push(format!("insert into {table} ({}) values {}", cols.join(", "), values.join(", ")));
        }
        statements
    }

    /// Runs `statements` in one transaction, after appending `rows` to the staging table in
    /// it when there is one, and (a worker's task) after checking its claim still holds.
    fn transaction(&mut self, rows: &[(Vec<Option<String>>, bool)], statements: &[String], now: &str) -> Result<(), StreamError> {
        let stage = self.stage.clone().filter(|_| !rows.is_empty());
        let batch = match &stage {
            Some(_) => Some(self.text_batch(rows)?),
            None => None,
        };
        let guard = self.claim.as_ref().map(|c| self.guard(c, now));
        let conn = self.conn()?;
        conn.execute("begin")?;
        let result = (|| {
            if let Some((sql, _)) = &guard
                && conn.execute(sql)? == 0
            {
                return Ok(false);
            }
            if let (Some(stage), Some(batch)) = (&stage, &batch) {
                let mut feed = |each: &mut dyn FnMut(&weir_warehouse::RecordBatch) -> weir_warehouse::Result<()>| each(batch);
                conn.copy_in_batches(stage, &mut feed)?;
            }
            for s in statements {
                conn.execute(s)?;
            }
            conn.execute("commit").map(|_| true)
        })();
        match (result, guard) {
            (Ok(true), _) | (Ok(false), None) => Ok(()),
            (Ok(false), Some((_, refused))) => {
                let _ = conn.execute("rollback");
                Err(refused)
            }
            (Err(e), _) => {
                let _ = conn.execute("rollback");
                // A connection whose transaction failed is opened afresh for the retry.
                self.conn = None;
                Err(e.into())
            }
        }
    }

    /// The statement that keeps a claim's commit to the claim's owner (it touches no row once
    /// another task claimed the partition; on PostgreSQL it waits for a claim under way), and
    /// the error when it is refused.
    fn guard(&self, c: &Claim, now: &str) -> (String, StreamError) {
        let sql = format!(
            "update {} set committed_at = {now} where job = {} and topic = {} and {} = {} and epoch = {}",
            self.wh.render(&self.owners),
            literal(&self.job),
            literal(&c.topic),
            self.wh.quote("partition"),
            c.partition,
            c.epoch
        );
        (sql, StreamError::Moved { job: self.job.clone(), topic: c.topic.clone(), partition: c.partition })
    }

    /// `rows` as one Arrow batch of text columns, for the staging table.
    fn text_batch(&self, rows: &[(Vec<Option<String>>, bool)]) -> Result<weir_warehouse::RecordBatch, StreamError> {
        use weir_warehouse::arrow::array::{ArrayRef, StringArray};
        use weir_warehouse::arrow::datatypes::{DataType, Field, Schema};
        let width = self.types.len();
        let columns: Vec<ArrayRef> =
            (0..width).map(|i| Arc::new(rows.iter().map(|(r, _)| r[i].as_deref()).collect::<StringArray>()) as ArrayRef).collect();
        let schema = Schema::new((0..width).map(|i| Field::new(format!("c{i}"), DataType::Utf8, true)).collect::<Vec<_>>());
        weir_warehouse::RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| StreamError::Job(e.to_string()))
    }

    /// Drops the job's table (or its Redis keys) and forgets its positions, late and
    /// rejected events.
    pub fn reset(wh: &dyn Warehouse, table: &Relation, results: &weir_graph::stream_jobs::Sink, job: &str) -> Result<(), StreamError> {
        if let weir_graph::stream_jobs::Sink::Redis { url, key_prefix, .. } = results {
            super::redis::RedisSink::reset(url, key_prefix, job)?;
        }
        let mut conn = wh.connect()?;
        let beside = |name: &str| Relation::new(table.database.clone(), table.schema.clone(), name);
        let mut statements = vec![];
        if *results == weir_graph::stream_jobs::Sink::Table {
            statements.push(format!("drop table if exists {}", wh.render(table)));
        }
        for name in [POSITIONS, LATE, REJECTED] {
            let rel = beside(name);
            if !conn.columns(&rel).unwrap_or_default().is_empty() {
                statements.push(format!("delete from {} where job = {}", wh.render(&rel), literal(job)));
            }
        }
        conn.transaction(&statements)?;
        Ok(())
    }
}

fn time_literal(ms: i64) -> String {
    format!("cast({} as timestamp)", literal(&super::decode::format_micros(ms.saturating_mul(1000))))
}
