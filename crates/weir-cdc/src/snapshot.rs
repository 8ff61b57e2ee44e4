//! The initial snapshot: a new slot's exported snapshot read table by table into the mirrors,
//! so that the mirrors hold exactly the source as it stood at the slot's consistent point,
//! and streaming goes on from exactly there.
//!
//! The tables are the publication's. Each is read in one repeatable-read transaction that
//! takes the slot's snapshot (the replication connection that made the slot runs nothing
//! else meanwhile, which keeps the snapshot valid). A mirror with hard deletes whose columns
//! are the table's is replaced in one transaction by the loads' path: PostgreSQL's binary
//! `COPY` decoded into typed Arrow batches for the warehouse's bulk path. Otherwise (soft
//! deletes keep rows the source no longer has; a mirror with columns of its own) the table is
//! read as PostgreSQL's text of each value and merged in chunks. The position is stored only
//! once every table is in: a snapshot cut short by a crash is taken again from the start.

use postgres::{Client, NoTls};

use postgres::types::Type;
use weir_core::ColumnType;
use weir_warehouse::batches::ReadError as CopyError;
use weir_warehouse::pgcopy;
use weir_warehouse::{RecordBatch, WarehouseError};

use crate::binlog::{self, BinlogError, Position, Server};
use crate::changes::{Key, RowChange, TableChanges};
use crate::mirror::{Mirror, MirrorError};
use crate::pgoutput::{Column, Relation, ReplicaIdentity, Value, column_type};
use crate::replication::{Config, SlotCreated};

/// Rows merged into a mirror at a time.
const CHUNK: usize = 50_000;

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
    let mut pg = postgres::Config::new();
    pg.host(&config.host).port(config.port).user(&config.user).dbname(&config.database).application_name("weir snapshot");
    if let Some(p) = &config.password {
        pg.password(p);
    }
    let mut client = pg.connect(NoTls).map_err(err)?;
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
        let binary = mirror.replace(&relation, &mut |sink| copy_binary(config, snapshot, &relation, sink))?;
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

/// Reads one table at the snapshot as PostgreSQL's binary `COPY`, decoded into typed Arrow
/// batches of the mirror's column types (the loads' path), handing each to `sink`. A column
/// the mirror keeps as text crosses as the server's text of it.
fn copy_binary(
    config: &Config,
    snapshot: &str,
    relation: &Relation,
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
    let copy = format!(
        "copy (select {} from {}.{}) to stdout (format binary)",
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
            let changes = TableChanges { relation: relation.clone(), truncated: first, rows: std::mem::take(&mut chunk) };
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
    let (mut conn, at) = server.snapshot()?;
    let err = |e: mysql::Error| SnapshotError::Source { at: server.shown.clone(), message: e.to_string() };
    let mut copied = Copied::default();
    for (i, (schema, table)) in tables.iter().enumerate() {
        let mapped = server.describe(&mut conn, i as u32 + 1, schema, table)?;
        let relation = &mapped.relation;
        let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
        let columns: Vec<String> = relation.columns.iter().map(|c| quote(&c.name)).collect();
        let sql = format!("select {} from {}.{}", columns.join(", "), quote(schema), quote(table));
        let keys: Vec<usize> = relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let (mut chunk, mut total, mut first) = (Vec::<(Key, RowChange)>::new(), 0u64, true);
        let mut result = conn.query_iter(sql).map_err(err)?;
        let mut rows = result.iter().into_iter().flatten();
        loop {
            let row = rows.next().transpose().map_err(err)?;
            if let Some(row) = row {
                let values: Vec<Value> = row.unwrap().into_iter().enumerate().map(|(i, v)| binlog::text(&mapped, i, v)).collect();
                let key: Key = keys.iter().map(|&k| values[k].clone()).collect();
                chunk.push((key.clone(), RowChange::Upsert { values, fill_from: key }));
                total += 1;
                if chunk.len() < CHUNK {
                    continue;
                }
            }
            let done = chunk.len() < CHUNK;
            if first || !chunk.is_empty() {
                let changes = TableChanges { relation: relation.clone(), truncated: first, rows: std::mem::take(&mut chunk) };
                mirror.load(&[changes])?;
                first = false;
            }
            if done {
                break;
            }
        }
        drop(rows);
        drop(result);
        copied.tables.push((format!("{schema}.{table}"), total));
    }
    conn.query_drop("commit").map_err(err)?;
    mirror.apply_at(&[], &at.to_string())?;
    Ok((copied, at))
}

/// A table as the catalog describes it, keyed as pgoutput keys its changes: by its replica
/// identity (the primary key by default, another unique index, or every column when FULL).
fn describe(client: &mut Client, oid: u32, namespace: String, name: String) -> Result<Relation, postgres::Error> {
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
