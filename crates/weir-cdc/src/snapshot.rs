//! The initial snapshot: a new slot's exported snapshot read table by table into the mirrors,
//! so that the mirrors hold exactly the source as it stood at the slot's consistent point,
//! and streaming goes on from exactly there.
//!
//! The tables are the publication's. Each is read in one repeatable-read transaction that
//! takes the slot's snapshot (the replication connection that made the slot runs nothing
//! else meanwhile, which keeps the snapshot valid). A mirror with hard deletes whose columns
//! are the table's is replaced in one transaction by the loads' path: PostgreSQL's binary
//! `COPY` decoded into typed Arrow batches for the warehouse's bulk path, a table with an
//! integer key read over two connections at once (each a range of the key, each taking the
//! snapshot: an exported snapshot can be taken by many). Otherwise (soft
//! deletes keep rows the source no longer has; a mirror with columns of its own) the table is
//! read as PostgreSQL's text of each value and merged in chunks. The position is stored only
//! once every table is in: a snapshot cut short by a crash is taken again from the start.

use postgres::{Client, NoTls};

use postgres::types::Type;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use weir_core::ColumnType;

use weir_warehouse::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use weir_warehouse::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use weir_warehouse::batches::{self, ReadError as CopyError};
use weir_warehouse::pgcopy;
use weir_warehouse::{RecordBatch, WarehouseError};

use crate::binlog::{self, BinlogError, Position, Server};
use crate::changes::{Key, RowChange, TableChanges};
use crate::mirror::{Mirror, MirrorError};
use crate::pgoutput::{Column, Relation, ReplicaIdentity, Value, column_type};
use crate::replication::{Config, SlotCreated};

/// Rows merged into a mirror at a time.
const CHUNK: usize = 50_000;

/// Connections a table's snapshot is read over at once, each a range of its key.
const READERS: i64 = 2;

/// Tables with fewer keys than this between their least and greatest are read whole.
const SPLIT_FROM: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading the snapshot of {at}: {message}")]
    Source { at: String, message: String },
    #[error("{0} has no primary key: give it one (or REPLICA IDENTITY FULL) so that its mirror's rows can be matched")]
    NoKey(String),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
}

/// What the snapshot copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Per table (`schema.table`), its rows.
    pub tables: Vec<(String, u64)>,
}

/// Copies `publication`'s tables at `slot`'s exported snapshot into `mirror`, then stores the
/// slot's consistent point as the mirror's position.
pub fn copy(config: &Config, publication: &str, slot: &SlotCreated, mirror: &mut Mirror) -> Result<Copied, SnapshotError> {
    let at = format!("postgres://{}@{}:{}/{}", config.user, config.host, config.port, config.database);
    let err = |e: postgres::Error| SnapshotError::Source { at: at.clone(), message: e.to_string() };
    let Some(snapshot) = &slot.snapshot else {
        return Err(SnapshotError::Source { at, message: format!("slot '{}' exported no snapshot", slot.name) });
    };
    let mut client = client(config).map_err(err)?;
    mirror.snapshot_at(&slot.consistent_point.to_string());
    let tables = client
        .query("select c.oid, n.nspname, c.relname from pg_publication_tables p join pg_namespace n on n.nspname = p.schemaname join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename where p.pubname = $1 order by 2, 3", &[&publication])
        .map_err(err)?;
    let mut copied = Copied::default();
    for t in tables {
        let relation = describe(&mut client, t.get::<_, u32>(0), t.get(1), t.get(2)).map_err(err)?;
        let name = format!("{}.{}", relation.namespace, relation.name);
        if !relation.columns.iter().any(|c| c.key) {
            return Err(SnapshotError::NoKey(name));
        }
        mirror.snapshot_table(&relation)?;
        let ranges = ranges(&mut client, &relation).map_err(err)?;
        let binary = mirror.replace(&relation, &mut |sink| copy_ranges(config, snapshot, &relation, &ranges, sink))?;
        let rows = match binary {
            Some(rows) => rows,
            None => read(&mut client, snapshot, &relation, mirror).map_err(|e| match e {
                ReadError::Source(e) => err(e),
                ReadError::Mirror(e) => SnapshotError::Mirror(e),
            })?,
        };
        copied.tables.push((name, rows));
    }
    mirror.apply(&[], slot.consistent_point)?;
    Ok(copied)
}

/// An ordinary connection to the source (not a replication one), to read its tables.
pub(crate) fn client(config: &Config) -> Result<Client, postgres::Error> {
    let mut pg = postgres::Config::new();
    pg.host(&config.host).port(config.port).user(&config.user).dbname(&config.database).application_name("weir snapshot");
    if let Some(p) = &config.password {
        pg.password(p);
    }
    pg.connect(NoTls)
}

/// The ranges of `relation`'s key its snapshot is read in, each as a `where` clause (empty:
/// the whole table): a key of one integer column is split evenly between its least and
/// greatest value (the first and last ranges open, so bounds read outside the snapshot miss
/// no row of it); any other key, or a small table, is one range.
fn ranges(client: &mut Client, relation: &Relation) -> Result<Vec<String>, postgres::Error> {
    let keys: Vec<&Column> = relation.columns.iter().filter(|c| c.key).collect();
    let [key] = keys.as_slice() else { return Ok(vec![String::new()]) };
    if !matches!(key.ty, ColumnType::Integer | ColumnType::BigInt) {
        return Ok(vec![String::new()]);
    }
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let k = quote(&key.name);
    let row = client.query_one(
        &format!("select min({k})::bigint, max({k})::bigint from {}.{}", quote(&relation.namespace), quote(&relation.name)),
        &[],
    )?;
    let (Some(least), Some(greatest)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(vec![String::new()]);
    };
    let span = i128::from(greatest) - i128::from(least);
    if span < i128::from(SPLIT_FROM) {
        return Ok(vec![String::new()]);
    }
    let bounds: Vec<i64> = (1..READERS).map(|i| (i128::from(least) + span * i128::from(i) / i128::from(READERS)) as i64).collect();
    let mut out = vec![format!("{k} < {}", bounds[0])];
    out.extend(bounds.windows(2).map(|w| format!("{k} >= {} and {k} < {}", w[0], w[1])));
    out.push(format!("{k} >= {}", bounds[bounds.len() - 1]));
    Ok(out)
}

/// Reads one table at the snapshot over one connection per range (see [`ranges`]), at once,
/// handing every batch to `sink` on this thread.
fn copy_ranges(
    config: &Config,
    snapshot: &str,
    relation: &Relation,
    ranges: &[String],
    sink: &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>,
) -> weir_warehouse::Result<()> {
    if ranges.len() <= 1 {
        return copy_binary(config, snapshot, relation, ranges.first().map_or("", String::as_str), sink);
    }
    let (sender, batches) = std::sync::mpsc::sync_channel::<RecordBatch>(ranges.len() * 2);
    std::thread::scope(|scope| {
        let readers: Vec<_> = ranges
            .iter()
            .map(|range| {
                let sender = sender.clone();
                scope.spawn(move || {
                    let mut send =
                        |b: &RecordBatch| sender.send(b.clone()).map_err(|_| WarehouseError::Io("the mirror stopped taking rows".into()));
                    copy_binary(config, snapshot, relation, range, &mut send)
                })
            })
            .collect();
        drop(sender);
        let mut outcome = Ok(());
        for batch in batches.iter() {
            if let Err(e) = sink(&batch) {
                outcome = Err(e);
                break;
            }
        }
        // The readers find the channel closed and stop; the mirror's error is the one told.
        drop(batches);
        for reader in readers {
            let read = reader.join().unwrap_or_else(|_| Err(WarehouseError::Io("a snapshot reader stopped".into())));
            if outcome.is_ok() {
                outcome = read;
            }
        }
        outcome
    })
}

/// Reads one table (the rows `range` selects, all when empty) at the snapshot as
/// PostgreSQL's binary `COPY`, decoded into typed Arrow batches of the mirror's column types
/// (the loads' path), handing each to `sink`. A column the mirror keeps as text crosses as
/// the server's text of it.
fn copy_binary(
    config: &Config,
    snapshot: &str,
    relation: &Relation,
    range: &str,
    sink: &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>,
) -> weir_warehouse::Result<()> {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let typed: Vec<(String, ColumnType)> = relation.columns.iter().map(|c| (c.name.clone(), c.ty.clone())).collect();
    let types: Vec<Type> = relation
        .columns
        .iter()
        .zip(&typed)
        .map(|(c, (_, t))| if *t == ColumnType::Varchar { Type::TEXT } else { Type::from_oid(c.type_oid).unwrap_or(Type::TEXT) })
        .collect();
    let columns: Vec<String> =
        typed.iter().map(|(name, t)| if *t == ColumnType::Varchar { format!("{}::text", quote(name)) } else { quote(name) }).collect();
    let plan = pgcopy::plan(&types, &typed);
    let filter = if range.is_empty() { String::new() } else { format!(" where {range}") };
    let copy = format!(
        "copy (select {} from {}.{}{filter}) to stdout (format binary)",
        columns.join(", "),
        quote(&relation.namespace),
        quote(&relation.name)
    );
    let setup =
        format!("begin transaction isolation level repeatable read read only; set transaction snapshot '{}'", snapshot.replace('\'', "''"));
    let at = format!("{}.{}", relation.namespace, relation.name);
    pgcopy::read(&url(config), &setup, &copy, &plan, &mut |_, _| {}, sink).map(|_| ()).map_err(|e| match e {
        CopyError::Sink(e) => e,
        CopyError::Start(m) | CopyError::Value(m) => WarehouseError::Io(format!("reading {at} at the snapshot: {m}")),
        CopyError::Lost { rows, message } => WarehouseError::Io(format!("reading {at} at the snapshot, after {rows} rows: {message}")),
    })
}

/// The connection string of `config` for tokio-postgres (`key=value` pairs, quoted).
fn url(config: &Config) -> String {
    let v = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut url = format!(
        "host={} port={} user={} dbname={} application_name='weir snapshot'",
        v(&config.host),
        config.port,
        v(&config.user),
        v(&config.database)
    );
    if let Some(p) = &config.password {
        url.push_str(&format!(" password={}", v(p)));
    }
    url
}

enum ReadError {
    Source(postgres::Error),
    Mirror(MirrorError),
}

/// Reads one table at the snapshot into its mirror, emptied first.
fn read(client: &mut Client, snapshot: &str, relation: &Relation, mirror: &mut Mirror) -> Result<u64, ReadError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(ReadError::Source)?;
    tx.batch_execute(&format!("set transaction snapshot '{}'", snapshot.replace('\'', "''"))).map_err(ReadError::Source)?;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let columns: Vec<String> = relation.columns.iter().map(|c| format!("{}::text", quote(&c.name))).collect();
    let sql = format!("select {} from {}.{}", columns.join(", "), quote(&relation.namespace), quote(&relation.name));
    let mut rows = tx.query_raw(&sql, std::iter::empty::<&str>()).map_err(ReadError::Source)?;
    let mut chunk: Vec<(Key, RowChange)> = vec![];
    let (mut total, mut first) = (0u64, true);
    loop {
        let row = fallible_iterator::FallibleIterator::next(&mut rows).map_err(ReadError::Source)?;
        if let Some(row) = &row {
            let values: Vec<Value> = (0..relation.columns.len())
                .map(|i| row.get::<_, Option<String>>(i).map_or(Value::Null, |s| Value::Text(s.into_bytes())))
                .collect();
            let key: Key = relation.columns.iter().zip(&values).filter(|(c, _)| c.key).map(|(_, v)| v.clone()).collect();
            chunk.push((key.clone(), RowChange::Upsert { values, fill_from: key }));
            total += 1;
        }
        if chunk.len() >= CHUNK || (row.is_none() && (first || !chunk.is_empty())) {
            let changes = TableChanges { relation: relation.clone(), truncated: first, rows: std::mem::take(&mut chunk), history: vec![] };
            mirror.load(&[changes]).map_err(ReadError::Mirror)?;
            first = false;
        }
        if row.is_none() {
            break;
        }
    }
    drop(rows);
    tx.commit().map_err(ReadError::Source)?;
    Ok(total)
}

/// Copies `tables` from a MariaDB server's consistent snapshot into `mirror` (over the text
/// protocol, in chunks merged as a snapshot's), then stores the binlog position the snapshot
/// stands at as the mirror's, and returns it: the stream goes on from exactly there.
pub fn copy_binlog(server: &Server, tables: &[(String, String)], mirror: &mut Mirror) -> Result<(Copied, Position), SnapshotError> {
    use mysql::prelude::Queryable;
    let (conn, at) = server.snapshot()?;
    mirror.snapshot_at(&at.to_string());
    let mut conn = Some(conn);
    let shown = server.shown.clone();
    let mut copied = Copied::default();
    for (i, (schema, table)) in tables.iter().enumerate() {
        let c = conn
            .as_mut()
            .ok_or_else(|| SnapshotError::Source { at: shown.clone(), message: "the snapshot's connection was lost".into() })?;
        let mapped = server.describe(c, i as u32 + 1, schema, table)?;
        mirror.snapshot_table(&mapped.relation)?;
        let mut rows = 0u64;
        // The loads' path: typed Arrow batches appended to the emptied mirror in one
        // transaction, decoded on a thread of their own ahead of the append.
        let binary = mirror.replace(&mapped.relation, &mut |sink| {
            let Some(c) = conn.take() else { return Err(WarehouseError::Io("the snapshot's connection was lost".into())) };
            let read = batches::ahead(|sender| typed(c, &mapped, schema, table, sender), &mut |_, _| {}, sink);
            match read {
                Ok((n, back)) => {
                    (rows, conn) = (n, Some(back));
                    Ok(())
                }
                Err(CopyError::Sink(e)) => Err(e),
                Err(CopyError::Start(m) | CopyError::Value(m)) => {
                    Err(WarehouseError::Io(format!("reading {schema}.{table} at the snapshot: {m}")))
                }
                Err(CopyError::Lost { rows, message }) => {
                    Err(WarehouseError::Io(format!("reading {schema}.{table} at the snapshot, after {rows} rows: {message}")))
                }
            }
        })?;
        let c =
            conn.take().ok_or_else(|| SnapshotError::Source { at: shown.clone(), message: "the snapshot's connection was lost".into() })?;
        conn = Some(match binary {
            Some(_) => c,
            // Soft deletes, or a mirror with columns of its own: merged in chunks instead.
            None => {
                let (c, n) = merged(c, &mapped, schema, table, mirror)?;
                rows = n;
                c
            }
        });
        copied.tables.push((format!("{schema}.{table}"), rows));
    }
    if let Some(mut c) = conn {
        c.query_drop("commit").map_err(|e| SnapshotError::Source { at: shown.clone(), message: e.to_string() })?;
    }
    mirror.apply_at(&[], &at.to_string())?;
    Ok((copied, at))
}

/// The select that reads a table's columns in the mirror's order.
fn select(mapped: &binlog::Mapped, schema: &str, table: &str) -> String {
    let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
    let columns: Vec<String> = mapped.relation.columns.iter().map(|c| quote(&c.name)).collect();
    format!("select {} from {}.{}", columns.join(", "), quote(schema), quote(table))
}

/// Reads one table over the text protocol into record batches of its mirror's column types
/// (each value first as the text the stream gives it, [`binlog::text`]); returns the rows,
/// the bytes and the connection.
fn typed(
    mut conn: mysql::Conn,
    mapped: &binlog::Mapped,
    schema: &str,
    table: &str,
    sender: &SyncSender<batches::Decoded>,
) -> Result<(u64, u64, mysql::Conn), CopyError> {
    use mysql::prelude::Queryable;
    let columns = &mapped.relation.columns;
    let schema_ref = Arc::new(Schema::new(columns.iter().map(|c| Field::new(&c.name, arrow_type(&c.ty), true)).collect::<Vec<_>>()));
    let (mut rows, mut bytes) = (0u64, 0u64);
    {
        let mut result = conn.query_iter(select(mapped, schema, table)).map_err(|e| CopyError::Start(e.to_string()))?;
        let mut builders: Vec<Builder> = columns.iter().map(|c| Builder::new(&c.ty)).collect();
        let mut in_batch = 0;
        for row in result.iter().into_iter().flatten() {
            let row = row.map_err(|e| CopyError::Lost { rows, message: e.to_string() })?;
            for (i, (v, b)) in row.unwrap().into_iter().zip(builders.iter_mut()).enumerate() {
                let text = binlog::text(mapped, i, v);
                if let Value::Text(t) = &text {
                    bytes += t.len() as u64;
                }
                b.push(&text).map_err(|why| CopyError::Value(format!("{schema}.{table}.{}: {why}", columns[i].name)))?;
            }
            rows += 1;
            in_batch += 1;
            if in_batch == batches::BATCH_ROWS {
                let batch = finish(&schema_ref, &mut builders)?;
                in_batch = 0;
                if sender.send((batch, rows, bytes)).is_err() {
                    // The mirror refused a batch; its error is the one reported.
                    break;
                }
            }
        }
        if in_batch > 0 {
            let _ = sender.send((finish(&schema_ref, &mut builders)?, rows, bytes));
        }
    }
    Ok((rows, bytes, conn))
}

fn finish(schema: &Arc<Schema>, builders: &mut [Builder]) -> Result<RecordBatch, CopyError> {
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| CopyError::Value(e.to_string()))
}

/// The Arrow type a mirror column of `ty` is appended as.
fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Integer => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Double => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
        _ => DataType::Utf8,
    }
}

/// One column's values on their way into an Arrow array.
enum Builder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder, u8, u8),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Text(StringBuilder),
}

impl Builder {
    fn new(ty: &ColumnType) -> Builder {
        match ty {
            ColumnType::Boolean => Builder::Bool(BooleanBuilder::new()),
            ColumnType::Integer => Builder::Int32(Int32Builder::new()),
            ColumnType::BigInt => Builder::Int64(Int64Builder::new()),
            ColumnType::Double => Builder::Double(Float64Builder::new()),
            ColumnType::Decimal { precision, scale } => Builder::Decimal(
                Decimal128Builder::new().with_precision_and_scale(*precision, *scale as i8).unwrap_or_default(),
                *precision,
                *scale,
            ),
            ColumnType::Date => Builder::Date(Date32Builder::new()),
            ColumnType::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            ColumnType::Time => Builder::Time(Time64MicrosecondBuilder::new()),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    /// Appends a value given as the text the warehouse would cast, or says why it is not one.
    fn push(&mut self, value: &Value) -> Result<(), String> {
        let Value::Text(raw) = value else {
            self.append_null();
            return Ok(());
        };
        if let Builder::Text(b) = self {
            b.append_value(String::from_utf8_lossy(raw));
            return Ok(());
        }
        let text = std::str::from_utf8(raw).map_err(|e| format!("is not UTF-8 text ({e})"))?;
        let not = |what: &str| format!("'{text}' is not {what}");
        match self {
            Builder::Bool(b) => b.append_value(matches!(text, "1" | "true")),
            Builder::Int32(b) => b.append_value(text.parse().map_err(|_| not("an integer"))?),
            Builder::Int64(b) => b.append_value(text.parse().map_err(|_| not("a bigint"))?),
            Builder::Double(b) => b.append_value(text.parse().map_err(|_| not("a number"))?),
            Builder::Decimal(b, precision, scale) => b.append_value(batches::decimal(text, *precision, *scale)?),
            Builder::Date(b) => b.append_value(batches::days(text).ok_or_else(|| not("a date"))?),
            Builder::Timestamp(b) => {
                let micros =
                    text.split_once(' ').and_then(|(d, t)| Some(i64::from(batches::days(d)?) * 86_400_000_000 + batches::time_of_day(t)?));
                b.append_value(micros.ok_or_else(|| not("a timestamp"))?)
            }
            Builder::Time(b) => {
                b.append_value(batches::time_of_day(text).ok_or_else(|| not("a time of day (a TIME past 24 hours or negative has none)"))?)
            }
            Builder::Text(_) => {}
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Double(b) => b.append_null(),
            Builder::Decimal(b, ..) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Decimal(b, ..) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// Reads one table as text into the mirror in merged chunks (soft deletes, or a mirror with
/// columns of its own), the reading on a thread of its own; returns the connection and the
/// rows read.
fn merged(
    conn: mysql::Conn,
    mapped: &binlog::Mapped,
    schema: &str,
    table: &str,
    mirror: &mut Mirror,
) -> Result<(mysql::Conn, u64), SnapshotError> {
    let (sender, chunks) = std::sync::mpsc::sync_channel::<Vec<(Key, RowChange)>>(1);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_rows(conn, mapped, schema, table, sender));
        let mut first = true;
        for rows in chunks.iter() {
            let changes = TableChanges { relation: mapped.relation.clone(), truncated: first, rows, history: vec![] };
            if let Err(e) = mirror.load(&[changes]) {
                drop(chunks);
                let _ = reader.join();
                return Err(SnapshotError::Mirror(e));
            }
            first = false;
        }
        let (conn, total) = reader
            .join()
            .map_err(|_| SnapshotError::Source { at: format!("{schema}.{table}"), message: "the snapshot reader stopped".into() })??;
        if first {
            // An empty table: its mirror is emptied all the same.
            mirror.load(&[TableChanges { relation: mapped.relation.clone(), truncated: true, rows: vec![], history: vec![] }])?;
        }
        Ok((conn, total))
    })
}

/// Reads one table over the text protocol in the snapshot's transaction, sending its rows in
/// chunks of [`CHUNK`] as upserts; returns the connection and the rows read.
fn read_rows(
    mut conn: mysql::Conn,
    mapped: &binlog::Mapped,
    schema: &str,
    table: &str,
    chunks: std::sync::mpsc::SyncSender<Vec<(Key, RowChange)>>,
) -> Result<(mysql::Conn, u64), SnapshotError> {
    use mysql::prelude::Queryable;
    let err = |e: mysql::Error| SnapshotError::Source { at: format!("{schema}.{table}"), message: e.to_string() };
    let relation = &mapped.relation;
    let sql = select(mapped, schema, table);
    let keys: Vec<usize> = relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
    let (mut chunk, mut total) = (Vec::with_capacity(CHUNK), 0u64);
    {
        let mut result = conn.query_iter(sql).map_err(err)?;
        for row in result.iter().into_iter().flatten() {
            let values: Vec<Value> = row.map_err(err)?.unwrap().into_iter().enumerate().map(|(i, v)| binlog::text(mapped, i, v)).collect();
            let key: Key = keys.iter().filter_map(|&k| values.get(k).cloned()).collect();
            chunk.push((key.clone(), RowChange::Upsert { values, fill_from: key }));
            total += 1;
            if chunk.len() == CHUNK && chunks.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
                // The mirror failed; its error is the one to report.
                break;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.send(chunk);
    }
    Ok((conn, total))
}

/// A table as the catalog describes it, keyed as pgoutput keys its changes: by its replica
/// identity (the primary key by default, another unique index, or every column when FULL).
pub(crate) fn describe(client: &mut Client, oid: u32, namespace: String, name: String) -> Result<Relation, postgres::Error> {
    let rows = client.query(
        "select a.attname::text, a.atttypid, a.atttypmod,
                case c.relreplident when 'f' then true
                                    when 'i' then coalesce(a.attnum = any(ri.indkey), false)
                                    else coalesce(a.attnum = any(pk.indkey), false) end
         from pg_attribute a join pg_class c on c.oid = a.attrelid
         left join pg_index pk on pk.indrelid = a.attrelid and pk.indisprimary
         left join pg_index ri on ri.indrelid = a.attrelid and ri.indisreplident
         where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped order by a.attnum",
        &[&oid],
    )?;
    let columns = rows
        .iter()
        .map(|r| {
            let (type_oid, type_modifier) = (r.get(1), r.get(2));
            Column { name: r.get(0), type_oid, type_modifier, key: r.get(3), ty: column_type(type_oid, type_modifier) }
        })
        .collect();
    Ok(Relation { xid: None, oid, namespace, name, replica_identity: ReplicaIdentity::Default, columns })
}
