//! Incremental snapshots: a captured table read again while the stream goes on, in chunks by
//! its key, with no lock and no pause (DBLog's watermark algorithm): to bring a mirror back in
//! step with its table, or to fill a table added to a source's `tables` with the rows it
//! already had, without a new snapshot of everything.
//!
//! Each chunk is read in a transaction of its own and placed into the stream at exactly the
//! point it stands for, so the mirror never goes back to an older row:
//!
//! - **PostgreSQL**: the chunk is read at a snapshot whose transactions are known
//!   (`pg_current_snapshot()`), then a watermark is written to the WAL
//!   (`pg_logical_emit_message` in a transaction of its own: no table and no write grant). A
//!   transaction the stream commits before the watermark is either one the snapshot saw,
//!   whose changes the chunk holds already, or one it did not see: before that one's changes
//!   to a row of the chunk, the chunk's row is placed (the row as it stood just before them,
//!   since a row's changes commit in the order their row locks were taken), so a TOAST value
//!   the change left unchanged is filled from the chunk. At the watermark the rest of the
//!   chunk is placed; every transaction after it is newer than the chunk. Where DBLog drops
//!   a chunk's row that the window between its two watermarks changed, the snapshot's own
//!   visibility says exactly which changes are newer.
//! - **MariaDB**: the chunk is read in a consistent snapshot whose binlog position the server
//!   gives (`binlog_snapshot_file` and `_position`): the chunk is placed exactly there.
//!
//! The tables under way and the last key placed of each are stored with the mirrors'
//! position, in each batch's transaction: a follower stopped at any moment goes on from the
//! last chunk merged. `weir cdc snapshot` asks through files in `.weir/cdc/requests/<load>/`,
//! and a captured table whose mirror does not exist (one added to `tables` since the
//! source's snapshot) is snapshotted so without being asked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::binlog::{self, Mapped, Position, Server};
use crate::changes::{ChangeError, Collapser, Key};
use crate::mirror::MirrorError;
use crate::pgoutput::{Lsn, Relation, Value};

/// Rows read per chunk.
pub const CHUNK_ROWS: usize = 20_000;

/// The prefix of the WAL messages that mark where a chunk was read.
pub const WATERMARK: &str = "weir.watermark";

/// How often the requests directory is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Transactions the stream committed lately, kept to check a chunk's snapshot against.
const RECENT: usize = 65_536;

/// How long a chunk whose snapshot came too early waits to be read again.
const RETRY: Duration = Duration::from_millis(100);

/// One table being snapshotted again: where its next chunk begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    pub schema: String,
    pub table: String,
    /// The key of the last row placed, as the source writes each value; None before the first
    /// chunk.
    pub after: Option<Vec<String>>,
    /// Rows placed so far.
    pub rows: u64,
}

impl TableSnapshot {
    pub fn new(schema: &str, table: &str) -> TableSnapshot {
        TableSnapshot { schema: schema.to_string(), table: table.to_string(), after: None, rows: 0 }
    }

    /// `schema.table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// The keys a mirror holds of a table in a chunk's range: those the chunk does not hold are
/// rows the table no longer has.
pub trait Held {
    /// The keys of `t`'s mirror after `after` and up to `upto` (None: no bound), as the
    /// source writes each value; none where the warehouse cannot order them as the source
    /// does.
    fn keys_between(&mut self, t: &Relation, after: Option<&[String]>, upto: Option<&[String]>) -> Result<Vec<Key>, MirrorError>;
}

/// A request left by `weir cdc snapshot`: its file, and the tables (schema, table) it asks for.
pub type Request = (PathBuf, Vec<(String, String)>);

/// Why an incremental snapshot could not go on.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    #[error("the incremental snapshot of {table} on {at}: {message}")]
    Source { table: String, at: String, message: String },
    #[error("{table} has no key to read it in chunks by: give it a primary key")]
    NoKey { table: String },
    #[error("the snapshot requests in {}: {message}", path.display())]
    Requests { path: PathBuf, message: String },
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Binlog(#[from] binlog::BinlogError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

/// The transactions a PostgreSQL snapshot sees: all before `xmin`, none from `xmax` on, and
/// between them all but those still running (`xip`). Compared as the server compares
/// transaction ids, modulo 2^32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    xmin: u32,
    xmax: u32,
    xip: Vec<u32>,
}

impl XidSnapshot {
    /// Whether the snapshot sees what transaction `xid` committed.
    pub fn sees(&self, xid: u32) -> bool {
        let precedes = |a: u32, b: u32| (a.wrapping_sub(b) as i32) < 0;
        if precedes(xid, self.xmin) {
            return true;
        }
        precedes(xid, self.xmax) && !self.xip.contains(&xid)
    }
}

impl FromStr for XidSnapshot {
    type Err = String;

    /// `pg_current_snapshot()`'s text: `xmin:xmax:xip,...`, each a 64-bit id whose low 32 bits
    /// are the stream's.
    fn from_str(s: &str) -> Result<XidSnapshot, String> {
        let bad = || format!("'{s}' is not a snapshot (xmin:xmax:xip,...)");
        let xid = |p: &str| p.trim().parse::<u64>().map(|v| v as u32).map_err(|_| bad());
        let mut parts = s.splitn(3, ':');
        let (Some(xmin), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        let xip = xip.split(',').filter(|p| !p.trim().is_empty()).map(xid).collect::<Result<_, _>>()?;
        Ok(XidSnapshot { xmin: xid(xmin)?, xmax: xid(xmax)?, xip })
    }
}

/// Where a chunk stands in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watermark {
    /// Read at `snapshot`, then marked by the WAL message `id` (prefix [`WATERMARK`]).
    Wal { id: String, snapshot: XidSnapshot },
    /// Read at this binlog position.
    Binlog(Position),
}

/// A chunk read and not yet placed in the stream.
#[derive(Debug, Clone)]
pub struct Chunk {
    relation: Relation,
    /// The rows in key order; None once placed.
    rows: Vec<Option<Vec<Value>>>,
    by_key: HashMap<Key, usize>,
    /// The key the chunk begins after (None: the table's start), and its last row's key,
    /// where the next chunk begins.
    after: Option<Vec<String>>,
    last: Option<Vec<String>>,
    /// Keys that changes newer than the chunk have touched before its place: the stream's
    /// word on them stands.
    spared: HashSet<Key>,
    /// Fewer rows than asked for: the table's last chunk.
    complete: bool,
    pub at: Watermark,
}

impl Chunk {
    /// A chunk of `relation`'s `rows` (in key order) after the key `after`, read at `at`;
    /// `complete` when it holds the table's last rows.
    pub fn new(relation: Relation, after: Option<Vec<String>>, rows: Vec<Vec<Value>>, complete: bool, at: Watermark) -> Chunk {
        let keys: Vec<usize> = relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let key_of = |row: &[Value]| -> Key { keys.iter().filter_map(|&i| row.get(i).cloned()).collect() };
        let last = rows.last().map(|r| key_of(r).iter().map(|v| text(v).unwrap_or_default()).collect());
        let by_key = rows.iter().enumerate().map(|(i, r)| (key_of(r), i)).collect();
        Chunk { relation, rows: rows.into_iter().map(Some).collect(), by_key, after, last, spared: HashSet::new(), complete, at }
    }

    /// Rows not placed yet.
    fn rest(&mut self) -> Vec<Vec<Value>> {
        self.rows.iter_mut().filter_map(Option::take).collect()
    }
}

/// The incremental snapshots of one follower: the tables waiting, the chunk read and not yet
/// placed, and the requests it has not taken yet.
#[derive(Debug)]
pub struct Incremental {
    queue: VecDeque<TableSnapshot>,
    chunk: Option<Chunk>,
    requests: Option<PathBuf>,
    polled: Option<Instant>,
    placed: u64,
    chunk_rows: usize,
    seq: u64,
    /// PostgreSQL: the transactions the stream committed lately, newest last.
    committed: VecDeque<u32>,
    /// A chunk read too early is read again from this time on.
    retry_at: Option<Instant>,
}

impl Incremental {
    /// Goes on with `queue` (as the mirrors stored it), taking requests from `requests`.
    pub fn new(queue: Vec<TableSnapshot>, requests: Option<PathBuf>) -> Incremental {
        Incremental {
            queue: queue.into(),
            chunk: None,
            requests,
            polled: None,
            placed: 0,
            chunk_rows: CHUNK_ROWS,
            seq: 0,
            committed: VecDeque::new(),
            retry_at: None,
        }
    }

    /// Reads chunks of `rows` instead of [`CHUNK_ROWS`].
    pub fn chunks_of(mut self, rows: usize) -> Incremental {
        self.chunk_rows = rows.max(1);
        self
    }

    /// Rows per chunk.
    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }

    /// How many tables are waiting (the first one under way).
    pub fn left(&self) -> usize {
        self.queue.len()
    }

    /// The tables waiting (the first one under way), as they stand after the last chunk
    /// placed: what the next batch stores.
    pub fn state(&self) -> Vec<TableSnapshot> {
        self.queue.iter().cloned().collect()
    }

    /// Rows placed by this follower.
    pub fn placed(&self) -> u64 {
        self.placed
    }

    /// Queues the tables not queued yet; returns them.
    pub fn add(&mut self, tables: &[(String, String)]) -> Vec<TableSnapshot> {
        let mut added = vec![];
        for (schema, table) in tables {
            if !self.queue.iter().any(|t| &t.schema == schema && &t.table == table) {
                let t = TableSnapshot::new(schema, table);
                self.queue.push_back(t.clone());
                added.push(t);
            }
        }
        added
    }

    /// The requests left since last looked (at most once a second), as the files and the
    /// tables each asks for. The caller stores the tables, then removes the files
    /// ([`Incremental::taken`]).
    pub fn asked(&mut self) -> Result<Vec<Request>, IncrementalError> {
        let Some(dir) = &self.requests else { return Ok(vec![]) };
        if self.polled.is_some_and(|p| p.elapsed() < POLL) {
            return Ok(vec![]);
        }
        self.polled = Some(Instant::now());
        read_requests(dir)
    }

    /// Forgets taken requests' files.
    pub fn taken(&self, files: &[PathBuf]) -> Result<(), IncrementalError> {
        for f in files {
            std::fs::remove_file(f).map_err(|e| IncrementalError::Requests { path: f.clone(), message: e.to_string() })?;
        }
        Ok(())
    }

    /// The table whose next chunk is to be read, when no chunk waits for its place.
    pub fn next(&self) -> Option<&TableSnapshot> {
        if self.chunk.is_some() || self.retry_at.is_some_and(|at| Instant::now() < at) { None } else { self.queue.front() }
    }

    /// PostgreSQL: the stream has committed transaction `xid`.
    pub fn committed(&mut self, xid: u32) {
        if self.committed.len() == RECENT {
            self.committed.pop_front();
        }
        self.committed.push_back(xid);
    }

    /// A name for the next watermark, unique to this follower's run.
    pub fn watermark_id(&mut self, load: &str) -> String {
        self.seq += 1;
        format!("{load}:{}:{}:{}", std::process::id(), chrono::Utc::now().timestamp_micros(), self.seq)
    }

    /// The chunk read, to be placed where it stands; false, dropping it to be read again
    /// shortly, when its snapshot does not see a transaction the stream has already
    /// committed. (A commit is in the WAL, and so in the stream, a moment before other
    /// sessions see it, longer while a synchronous standby is awaited: the chunk would hold
    /// rows older than what the mirror was given.)
    pub fn read(&mut self, chunk: Chunk) -> bool {
        if let Watermark::Wal { snapshot, .. } = &chunk.at
            && self.committed.iter().any(|&x| !snapshot.sees(x))
        {
            self.retry_at = Some(Instant::now() + RETRY);
            return false;
        }
        self.retry_at = None;
        self.chunk = Some(chunk);
        true
    }

    /// The chunk waiting for its place, if one is.
    pub fn waiting(&self) -> Option<&Chunk> {
        self.chunk.as_ref()
    }

    /// PostgreSQL: transaction `xid` (streamed: its id as the stream names it) is about to
    /// commit at `position`. If the chunk's snapshot did not see it, the chunk's rows it
    /// changes are placed first, as they stood before it; a truncate of the table places all
    /// of them (and empties them with the rest). Returns the rows placed.
    pub fn before_commit(
        &mut self,
        collapser: &mut Collapser,
        xid: u32,
        streamed: Option<u32>,
        position: &str,
    ) -> Result<u64, ChangeError> {
        let Some(chunk) = self.chunk.as_mut() else { return Ok(0) };
        let Watermark::Wal { snapshot, .. } = &chunk.at else { return Ok(0) };
        if snapshot.sees(xid) {
            return Ok(0);
        }
        let (keys, truncated) = collapser.touched(streamed, chunk.relation.oid);
        let rows: Vec<Vec<Value>> = if truncated {
            chunk.rest()
        } else {
            keys.iter().filter_map(|k| chunk.by_key.get(k).and_then(|&i| chunk.rows[i].take())).collect()
        };
        chunk.spared.extend(keys);
        let n = rows.len() as u64;
        if n > 0 {
            collapser.take_read(&chunk.relation, rows, position)?;
            self.placed += n;
        }
        Ok(n)
    }

    /// PostgreSQL: a logical message at `lsn`. The chunk's watermark places the rest of the
    /// chunk there and moves the table on; returns whether it did (the batch then ends at
    /// `lsn`, and the caller stores [`Incremental::state`] with it).
    pub fn at_message(
        &mut self,
        collapser: &mut Collapser,
        held: &mut dyn Held,
        prefix: &str,
        content: &[u8],
        lsn: Lsn,
    ) -> Result<bool, IncrementalError> {
        let ours =
            matches!(&self.chunk, Some(Chunk { at: Watermark::Wal { id, .. }, .. }) if prefix == WATERMARK && content == id.as_bytes());
        if !ours {
            return Ok(false);
        }
        self.place(collapser, held, &lsn.to_string())?;
        collapser.mark(lsn);
        Ok(true)
    }

    /// MariaDB: whether the chunk's place comes before a transaction ending at `end`
    /// (or the stream, quiet, stands at `end`, with `quiet`).
    pub fn due_before(&self, end: &Position, quiet: bool) -> bool {
        match &self.chunk {
            Some(Chunk { at: Watermark::Binlog(at), .. }) => {
                if quiet {
                    end.reached(at)
                } else {
                    !at.reached(end)
                }
            }
            _ => false,
        }
    }

    /// Places the rest of the chunk at `position` and moves its table on: to the chunk's last
    /// key, or off the queue when the chunk was its last. A row the mirror holds in the chunk's
    /// range of keys that the chunk does not (deleted while nothing followed) goes, unless
    /// a newer change touched it. Returns the rows placed.
    pub fn place(&mut self, collapser: &mut Collapser, held: &mut dyn Held, position: &str) -> Result<u64, IncrementalError> {
        let Some(mut chunk) = self.chunk.take() else { return Ok(0) };
        let upto = if chunk.complete { None } else { chunk.last.as_deref() };
        let gone: Vec<Key> = held
            .keys_between(&chunk.relation, chunk.after.as_deref(), upto)?
            .into_iter()
            .filter(|k| !chunk.by_key.contains_key(k) && !chunk.spared.contains(k))
            .collect();
        collapser.take_gone(&chunk.relation, gone);
        let rows = chunk.rest();
        let n = rows.len() as u64;
        // Even with no rows: the mirror of a table added empty is made.
        collapser.take_read(&chunk.relation, rows, position)?;
        self.placed += n;
        if let Some(front) = self.queue.front_mut() {
            front.rows += chunk.by_key.len() as u64;
            match chunk.last.take() {
                Some(last) if !chunk.complete => front.after = Some(last),
                _ => {
                    self.queue.pop_front();
                }
            }
        }
        Ok(n)
    }
}

/// Where `weir cdc snapshot` leaves its requests for the follower of `load` in the project at
/// `root`.
pub fn requests_dir(root: &Path, load: &str) -> PathBuf {
    root.join(".weir").join("cdc").join("requests").join(load)
}

/// Leaves a request to snapshot `tables` (`schema.table`) in `dir` for the follower; returns
/// its file, which the follower removes once it has stored the request.
pub fn request(dir: &Path, tables: &[String]) -> Result<PathBuf, IncrementalError> {
    let err = |path: &Path, e: std::io::Error| IncrementalError::Requests { path: path.to_path_buf(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let name = format!("{}-{}", chrono::Utc::now().timestamp_micros(), std::process::id());
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(format!("{name}.json")));
    let text = serde_json::json!({ "tables": tables }).to_string();
    std::fs::write(&tmp, text).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    Ok(path)
}

/// The requests in `dir`, oldest first.
fn read_requests(dir: &Path) -> Result<Vec<Request>, IncrementalError> {
    let err = |path: &Path, message: String| IncrementalError::Requests { path: path.to_path_buf(), message };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(err(dir, e.to_string())),
    };
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| err(&f, e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&f, e.to_string()))?;
        let tables = json["tables"]
            .as_array()
            .ok_or_else(|| err(&f, "no \"tables\" list".into()))?
            .iter()
            .filter_map(|t| t.as_str())
            .filter_map(|t| t.split_once('.').map(|(s, n)| (s.to_string(), n.to_string())))
            .collect();
        out.push((f, tables));
    }
    Ok(out)
}

/// Reads the next chunk of `t` from PostgreSQL at a snapshot of its own, then writes its
/// watermark `id` to the WAL.
pub fn read_postgres(client: &mut Client, t: &TableSnapshot, rows: usize, id: String, at: &str) -> Result<Chunk, IncrementalError> {
    let err = |e: postgres::Error| IncrementalError::Source { table: t.name(), at: at.to_string(), message: e.to_string() };
    let oid = client
        .query_opt(
            "select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2",
            &[&t.schema, &t.table],
        )
        .map_err(err)?
        .map(|r| r.get::<_, u32>(0))
        .ok_or_else(|| IncrementalError::Source { table: t.name(), at: at.to_string(), message: "there is no such table".into() })?;
    let relation = crate::snapshot::describe(client, oid, t.schema.clone(), t.table.clone()).map_err(err)?;
    let keys: Vec<&str> = relation.columns.iter().filter(|c| c.key).map(|c| c.name.as_str()).collect();
    if keys.is_empty() {
        return Err(IncrementalError::NoKey { table: t.name() });
    }
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let literal = |s: &str| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    // Named by the table's alias: the select's own columns (each cast to text) take the
    // names in `order by` otherwise, and would order as text.
    let key_list = keys.iter().map(|k| format!("t.{}", quote(k))).collect::<Vec<_>>().join(", ");
    let after = match &t.after {
        Some(values) => format!(" where ({key_list}) > ({})", values.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", ")),
        None => String::new(),
    };
    let columns: Vec<String> = relation.columns.iter().map(|c| format!("t.{}::text", quote(&c.name))).collect();
    let sql =
        format!("select {} from {}.{} t{after} order by {key_list} limit {rows}", columns.join(", "), quote(&t.schema), quote(&t.table));
    let mut tx =
        client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start().map_err(err)?;
    let snapshot: String = tx.query_one("select pg_current_snapshot()::text", &[]).map_err(err)?.get(0);
    let read = tx.query(&sql, &[]).map_err(err)?;
    tx.commit().map_err(err)?;
    let snapshot = snapshot.parse().map_err(|message| IncrementalError::Source { table: t.name(), at: at.to_string(), message })?;
    // In a transaction of its own, committed with a flush: the server decodes only what is
    // flushed, and a message outside a transaction waits for the WAL writer (up to
    // `wal_writer_delay`, 200 ms) before the stream has it.
    let mut tx = client.transaction().map_err(err)?;
    tx.batch_execute("set local synchronous_commit = on").map_err(err)?;
    tx.query_one("select pg_logical_emit_message(true, $1::text, $2::text)::text", &[&WATERMARK, &id]).map_err(err)?;
    tx.commit().map_err(err)?;
    let width = relation.columns.len();
    let values: Vec<Vec<Value>> = read
        .iter()
        .map(|r| (0..width).map(|i| r.get::<_, Option<String>>(i).map_or(Value::Null, |s| Value::Text(s.into_bytes()))).collect())
        .collect();
    let complete = values.len() < rows;
    Ok(Chunk::new(relation, t.after.clone(), values, complete, Watermark::Wal { id, snapshot }))
}

/// Reads the next chunk of `t` from MariaDB in a consistent snapshot, placed at the binlog
/// position the snapshot stands at. `id` is the table's in the stream (its place in the
/// source's tables, from 1).
pub fn read_binlog(server: &Server, id: u32, t: &TableSnapshot, rows: usize) -> Result<Chunk, IncrementalError> {
    use mysql::prelude::Queryable;
    let (mut conn, at) = server.snapshot()?;
    let mapped: Mapped = server.describe(&mut conn, id, &t.schema, &t.table)?;
    let relation = mapped.relation.clone();
    let keys: Vec<(usize, &crate::pgoutput::Column)> = relation.columns.iter().enumerate().filter(|(_, c)| c.key).collect();
    if keys.is_empty() {
        return Err(IncrementalError::NoKey { table: t.name() });
    }
    let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
    let key_list = keys.iter().map(|(_, k)| quote(&k.name)).collect::<Vec<_>>().join(", ");
    let (after, params): (String, Vec<mysql::Value>) = match &t.after {
        Some(values) => (
            format!(" where ({key_list}) > ({})", vec!["?"; values.len()].join(", ")),
            keys.iter()
                .zip(values)
                .map(|((_, c), v)| match (&c.ty, v.parse::<i64>()) {
                    (weir_core::ColumnType::Integer | weir_core::ColumnType::BigInt, Ok(n)) => mysql::Value::Int(n),
                    _ => mysql::Value::Bytes(v.clone().into_bytes()),
                })
                .collect(),
        ),
        None => (String::new(), vec![]),
    };
    let columns: Vec<String> = relation.columns.iter().map(|c| quote(&c.name)).collect();
    let sql =
        format!("select {} from {}.{}{after} order by {key_list} limit {rows}", columns.join(", "), quote(&t.schema), quote(&t.table));
    let err = |e: mysql::Error| IncrementalError::Source { table: t.name(), at: server.shown.clone(), message: e.to_string() };
    let read: Vec<mysql::Row> =
        if params.is_empty() { conn.query(&sql) } else { conn.exec(&sql, mysql::Params::Positional(params)) }.map_err(err)?;
    conn.query_drop("commit").map_err(err)?;
    let values: Vec<Vec<Value>> =
        read.into_iter().map(|r| r.unwrap().into_iter().enumerate().map(|(i, v)| binlog::text(&mapped, i, v)).collect()).collect();
    let complete = values.len() < rows;
    Ok(Chunk::new(relation, t.after.clone(), values, complete, Watermark::Binlog(at)))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(x) | Value::Binary(x) => Some(String::from_utf8_lossy(x).into_owned()),
        Value::Null | Value::Unchanged => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::RowChange;
    use crate::pgoutput::{Column, Message, OldRow, ReplicaIdentity, Tuple};

    fn relation() -> Relation {
        let col =
            |name: &str, key: bool| Column { key, name: name.into(), type_oid: 25, type_modifier: -1, ty: weir_core::ColumnType::Varchar };
        Relation {
            xid: None,
            oid: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", true), col("big", false), col("n", false)],
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    fn row(id: &str, big: &str, n: &str) -> Vec<Value> {
        vec![t(id), t(big), t(n)]
    }

    /// A chunk of rows 1, 2 and 3 read at a snapshot that saw transactions up to 100 but not
    /// 98 (still running then) nor anything from 101.
    fn incremental() -> Incremental {
        let snapshot: XidSnapshot = "95:101:98".parse().unwrap();
        let chunk = Chunk::new(
            relation(),
            None,
            vec![row("1", "toast-1", "a"), row("2", "toast-2", "a"), row("3", "toast-3", "a")],
            false,
            Watermark::Wal { id: "w1".into(), snapshot },
        );
        let mut inc = Incremental::new(vec![TableSnapshot::new("public", "t")], None);
        inc.read(chunk);
        inc
    }

    fn update(c: &mut Collapser, inc: &mut Incremental, xid: u32, id: &str, n: &str, end: u64) {
        c.take(Message::Begin { final_lsn: Lsn(end - 1), commit_time: 0, xid }).unwrap();
        let old = Some((OldRow::Key, Tuple(vec![t(id), Value::Null, Value::Null])));
        c.take(Message::Update { xid: None, relation: 7, old, new: Tuple(vec![t(id), Value::Unchanged, t(n)]) }).unwrap();
        inc.before_commit(c, xid, None, &Lsn(end).to_string()).unwrap();
        c.take(Message::Commit { commit_lsn: Lsn(end - 1), end_lsn: Lsn(end), commit_time: 0 }).unwrap();
    }

    /// A mirror holding `self`'s keys (all of them in any range).
    impl Held for Vec<Key> {
        fn keys_between(&mut self, _: &Relation, _: Option<&[String]>, _: Option<&[String]>) -> Result<Vec<Key>, MirrorError> {
            Ok(self.clone())
        }
    }

    fn rows(c: &mut Collapser) -> Vec<(Key, RowChange)> {
        c.drain().into_iter().flat_map(|t| t.rows).collect()
    }

    #[test]
    fn a_snapshot_sees_what_committed_before_it_modulo_two_to_the_32() {
        let s: XidSnapshot = "95:101:98,99".parse().unwrap();
        assert!(s.sees(94) && s.sees(97) && s.sees(100));
        assert!(!s.sees(98) && !s.sees(99) && !s.sees(101) && !s.sees(5000));
        // Ids past 2^32 (their epoch in the high bits) wrap as the stream's do.
        let s: XidSnapshot = format!("{}:{}:", (1u64 << 32) - 2, (1u64 << 32) + 3).parse().unwrap();
        assert!(s.sees(u32::MAX - 5) && s.sees(u32::MAX) && s.sees(2));
        assert!(!s.sees(3) && !s.sees(10));
        assert!("12:x:".parse::<XidSnapshot>().is_err());
    }

    #[test]
    fn a_change_the_snapshot_did_not_see_comes_after_the_chunks_row_and_is_filled_from_it() {
        let (mut c, mut inc) = (Collapser::new(), incremental());
        c.take(Message::Relation(relation())).unwrap();
        // Seen by the snapshot: older than the chunk, which is placed later, over it.
        update(&mut c, &mut inc, 97, "2", "seen", 10);
        // Not seen (running when the chunk was read): the chunk's row goes first, and fills
        // the TOAST value the update left unchanged.
        update(&mut c, &mut inc, 98, "1", "newer", 20);
        update(&mut c, &mut inc, 102, "1", "newest", 30);
        // Rows 4 and 5 the mirror holds and the table no longer has (the chunk, its last,
        // holds neither); 5 was updated by a newer transaction, so the stream's word stands.
        update(&mut c, &mut inc, 103, "5", "back", 35);
        let mut held = vec![vec![t("1")], vec![t("4")], vec![t("5")]];
        assert!(inc.at_message(&mut c, &mut held, WATERMARK, b"w1", Lsn(40)).unwrap());
        assert_eq!(c.end(), Some(Lsn(40)));
        let up = |id: &str, big: &str, n: &str| (vec![t(id)], RowChange::Upsert { values: row(id, big, n), fill_from: vec![t(id)] });
        let five = (vec![t("5")], RowChange::Upsert { values: vec![t("5"), Value::Unchanged, t("back")], fill_from: vec![t("5")] });
        assert_eq!(
            rows(&mut c),
            vec![up("2", "toast-2", "a"), up("1", "toast-1", "newest"), five, (vec![t("4")], RowChange::Delete), up("3", "toast-3", "a")]
        );
        assert_eq!(inc.placed(), 3);
        assert_eq!(inc.state(), vec![TableSnapshot { after: Some(vec!["3".into()]), rows: 3, ..TableSnapshot::new("public", "t") }]);
    }

    #[test]
    fn a_chunk_whose_snapshot_misses_a_transaction_the_stream_committed_is_read_again() {
        let mut inc = Incremental::new(vec![TableSnapshot::new("public", "t")], None);
        let chunk = |s: &str| {
            Chunk::new(relation(), None, vec![row("1", "x", "y")], false, Watermark::Wal { id: "w".into(), snapshot: s.parse().unwrap() })
        };
        inc.committed(97);
        inc.committed(98);
        // Committed in the stream, still running for the snapshot (a synchronous standby
        // awaited): the chunk would be older than what the mirror has.
        assert!(!inc.read(chunk("95:101:98")));
        assert!(inc.waiting().is_none() && inc.next().is_none(), "read again a little later");
        inc.retry_at = Some(Instant::now());
        assert!(inc.next().is_some());
        assert!(inc.read(chunk("99:101:")));
        assert!(inc.waiting().is_some());
    }

    #[test]
    fn another_watermark_is_not_the_chunks_and_the_last_chunk_ends_the_table() {
        let (mut c, mut inc) = (Collapser::new(), incremental());
        let mut held: Vec<Key> = vec![];
        assert!(!inc.at_message(&mut c, &mut held, WATERMARK, b"w0", Lsn(5)).unwrap());
        assert!(!inc.at_message(&mut c, &mut held, "other", b"w1", Lsn(5)).unwrap());
        assert!(inc.next().is_none(), "the chunk waits for its place");
        let snapshot: XidSnapshot = "1:2:".parse().unwrap();
        inc.place(&mut c, &mut held, "0/10").unwrap();
        let after = Some(vec!["3".to_string()]);
        inc.read(Chunk::new(relation(), after, vec![row("4", "x", "y")], true, Watermark::Wal { id: "w2".into(), snapshot }));
        inc.place(&mut c, &mut held, "0/20").unwrap();
        assert_eq!(inc.left(), 0);
    }

    #[test]
    fn a_truncate_the_snapshot_did_not_see_empties_the_chunk_too() {
        let (mut c, mut inc) = (Collapser::new(), incremental());
        c.take(Message::Relation(relation())).unwrap();
        c.take(Message::Begin { final_lsn: Lsn(9), commit_time: 0, xid: 120 }).unwrap();
        c.take(Message::Truncate { xid: None, relations: vec![7], cascade: false, restart_identity: false }).unwrap();
        assert_eq!(inc.before_commit(&mut c, 120, None, "0/A").unwrap(), 3);
        c.take(Message::Commit { commit_lsn: Lsn(9), end_lsn: Lsn(10), commit_time: 0 }).unwrap();
        inc.at_message(&mut c, &mut vec![], WATERMARK, b"w1", Lsn(11)).unwrap();
        let tables = c.drain();
        assert!(tables[0].truncated && tables[0].rows.is_empty(), "{tables:?}");
    }

    #[test]
    fn a_binlog_chunk_is_placed_at_its_position() {
        let at: Position = "bin.000002:500".parse().unwrap();
        let mut inc = Incremental::new(vec![TableSnapshot::new("shop", "t")], None);
        inc.read(Chunk::new(relation(), None, vec![], true, Watermark::Binlog(at)));
        let p = |s: &str| s.parse::<Position>().unwrap();
        assert!(!inc.due_before(&p("bin.000002:400"), false), "a transaction ending before it");
        assert!(!inc.due_before(&p("bin.000002:500"), false), "the one ending there");
        assert!(inc.due_before(&p("bin.000002:501"), false) && inc.due_before(&p("bin.000003:4"), false));
        assert!(!inc.due_before(&p("bin.000002:499"), true) && inc.due_before(&p("bin.000002:500"), true));
    }

    #[test]
    fn requests_are_read_oldest_first_and_forgotten_once_taken() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("pg_shop");
        assert!(read_requests(&d).unwrap().is_empty(), "no directory, no requests");
        let first = request(&d, &["public.orders".into()]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        request(&d, &["public.customers".into(), "public.orders".into()]).unwrap();
        let mut inc = Incremental::new(vec![], Some(d.clone()));
        let asked = inc.asked().unwrap();
        assert_eq!(asked[0], (first, vec![("public".into(), "orders".into())]));
        let tables: Vec<(String, String)> = asked.iter().flat_map(|(_, t)| t.clone()).collect();
        assert_eq!(inc.add(&tables).len(), 2, "each table once");
        inc.taken(&asked.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>()).unwrap();
        assert!(read_requests(&d).unwrap().is_empty());
        std::fs::write(d.join("bad.json"), "{").unwrap();
        let err = read_requests(&d).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
