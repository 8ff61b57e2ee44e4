//! Following a slot into mirror tables: a new mirror first takes the slot's snapshot, then
//! the stream is read from where the mirror's last batch ended, cut into micro-batches (by changes or by time, always at a commit), each merged
//! with its position in one warehouse transaction, and only then confirmed to the server.
//!
//! While the source's tables are quiet, the position follows what the server has read (its
//! keepalives say), so a slot does not hold back WAL that only other tables wrote.
//!
//! Exactly once: the server is told a position only once the mirror holds everything up to
//! it, and a restart asks for the stream from the mirror's own position, so a transaction
//! merged before a crash is skipped by the server even when the crash came before the
//! confirmation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binlog::{self, BinlogError, Position, Read, Server};
use crate::changes::{ChangeError, Collapser};
use crate::incremental::{self, Incremental, IncrementalError};
use crate::mirror::{Applied, Mirror, MirrorError};
use crate::pgoutput::{Decoder, Lsn, Message, PgOutputError};
use crate::replication::{ChangeSource, Config, Connection, ReplicationError, WalStream};
use crate::snapshot::{self, SnapshotError};

/// What to follow and how often to merge.
#[derive(Debug, Clone, Default)]
pub struct Follow {
    pub slot: String,
    pub publication: String,
    /// A batch is merged once it holds this many messages...
    pub batch_messages: usize,
    /// ...or has waited this long since the last merge.
    pub batch_wait: Duration,
    /// The captured tables, as (schema, table): one whose mirror does not exist yet is
    /// snapshotted incrementally.
    pub tables: Vec<(String, String)>,
    /// Where `weir cdc snapshot` leaves its requests, if anywhere.
    pub requests: Option<PathBuf>,
    /// Rows an incremental snapshot reads per chunk (0: [`incremental::CHUNK_ROWS`]).
    pub chunk_rows: usize,
}

/// What to follow from a MariaDB binlog, and how often to merge.
#[derive(Debug, Clone, Default)]
pub struct BinlogFollow {
    /// The name of the lock a follower holds while it runs.
    pub lock: String,
    /// The captured tables, as (database, table).
    pub tables: Vec<(String, String)>,
    pub batch_messages: usize,
    pub batch_wait: Duration,
    /// Where `weir cdc snapshot` leaves its requests, if anywhere.
    pub requests: Option<PathBuf>,
    /// Rows an incremental snapshot reads per chunk (0: [`incremental::CHUNK_ROWS`]).
    pub chunk_rows: usize,
}

/// How far a follower has come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The position the mirror holds everything up to (PostgreSQL's WAL)...
    pub position: Option<Lsn>,
    /// ...or a MariaDB binlog's.
    pub binlog: Option<Position>,
    pub batches: u64,
    pub applied: Applied,
    /// Whether this run began with a snapshot, and the rows it copied.
    pub snapshotted: bool,
    pub snapshot_rows: u64,
    /// Tables an incremental snapshot still has to read (the first one under way), and the
    /// rows it has placed in this run.
    pub incremental_tables: usize,
    pub incremental_rows: u64,
}

impl Progress {
    /// Where the mirrors stand, as the source writes positions.
    pub fn at(&self) -> Option<String> {
        self.position.map(|l| l.to_string()).or_else(|| self.binlog.as_ref().map(Position::to_string))
    }

    /// One line for people: the snapshot, what was merged, and where the mirrors stand.
    pub fn summary(&self) -> String {
        let a = self.applied;
        let snapshot = if self.snapshotted { format!("snapshot of {} row(s), then ", self.snapshot_rows) } else { String::new() };
        let incremental = match (self.incremental_tables, self.incremental_rows) {
            (0, 0) => String::new(),
            (0, rows) => format!("; incremental snapshot done, {rows} row(s) read"),
            (tables, rows) => format!("; incremental snapshot: {rows} row(s) read, {tables} table(s) to go"),
        };
        format!(
            "{snapshot}{} upserted, {} deleted, {} truncate(s) in {} batch(es); mirrors at {}{incremental}",
            a.upserted,
            a.deleted,
            a.truncated,
            self.batches,
            self.at().unwrap_or_else(|| "-".into())
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("the change at WAL position {at}: {source}")]
    Decode { at: Lsn, source: PgOutputError },
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error(transparent)]
    Incremental(#[from] IncrementalError),
}

/// Follows `follow.slot` into `mirror` until `stop` says so (asked after every merge and
/// whenever the stream is quiet). A mirror with no position yet begins with a new slot and
/// the snapshot it exports; a slot of that name left from a snapshot never finished is
/// dropped first.
pub fn follow(
    config: &Config,
    follow: &Follow,
    mirror: &mut Mirror,
    stop: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Progress, FollowError> {
    let mut conn = Connection::connect(config)?;
    let mut copied = None;
    let from = match mirror.position()? {
        Some(p) => p,
        None => {
            conn.drop_slot_if_exists(&follow.slot, Duration::from_secs(10))?;
            let slot = conn.create_slot(&follow.slot)?;
            copied = Some(snapshot::copy(config, &follow.publication, &slot, mirror)?);
            slot.consistent_point
        }
    };
    let mut incremental = resume(mirror, follow.requests.clone(), follow.chunk_rows, &follow.tables, copied.is_none())?;
    let options = [("proto_version", "2"), ("publication_names", follow.publication.as_str()), ("streaming", "on"), ("messages", "true")];
    let mut stream = conn.start(&follow.slot, from, &options)?;
    let (mut decoder, mut collapser) = (Decoder::new(), collapser(mirror));
    let mut progress = Progress {
        position: Some(from).filter(|l| l.0 > 0),
        snapshotted: copied.is_some(),
        snapshot_rows: copied.map_or(0, |c| c.tables.iter().map(|(_, n)| n).sum()),
        incremental_tables: incremental.left(),
        ..Progress::default()
    };
    let (mut pending, mut last_merge) = (0usize, Instant::now());
    // The connection chunks are read over, and the transaction being read.
    let (mut reader, mut xid): (Option<postgres::Client>, u32) = (None, 0);
    let at = format!("postgres://{}@{}:{}/{}", config.user, config.host, config.port, config.database);
    loop {
        take_requests(&mut incremental, mirror, &follow.tables)?;
        if let Some(t) = incremental.next().cloned() {
            let client = match &mut reader {
                Some(c) => c,
                None => reader.insert(snapshot::client(config).map_err(|e| IncrementalError::Source {
                    table: t.name(),
                    at: at.clone(),
                    message: e.to_string(),
                })?),
            };
            let id = incremental.watermark_id(&follow.slot);
            let chunk = incremental::read_postgres(client, &t, incremental.chunk_rows(), id, &at)?;
            // Read too early (see `Incremental::read`), it is read again shortly.
            incremental.read(chunk);
        }
        let wait = follow.batch_wait.saturating_sub(last_merge.elapsed()).max(Duration::from_millis(1));
        if let Some(wal) = stream.recv(wait)? {
            let message = decoder.decode(&wal.data).map_err(|source| FollowError::Decode { at: wal.start, source })?;
            // An incremental snapshot's chunk takes its place in the stream.
            let placed = match &message {
                Message::Begin { xid: x, .. } => {
                    xid = *x;
                    0
                }
                Message::Commit { end_lsn, .. } => {
                    incremental.committed(xid);
                    incremental.before_commit(&mut collapser, xid, None, &end_lsn.to_string())?
                }
                Message::StreamCommit { xid: x, end_lsn, .. } => {
                    incremental.committed(*x);
                    incremental.before_commit(&mut collapser, *x, Some(*x), &end_lsn.to_string())?
                }
                Message::Message { prefix, content, lsn, .. } => {
                    let before = incremental.placed();
                    if incremental.at_message(&mut collapser, mirror, prefix, content, *lsn)? {
                        mirror.stage_incremental(incremental.state());
                    }
                    incremental.placed() - before
                }
                _ => 0,
            };
            pending += placed as usize;
            (progress.incremental_tables, progress.incremental_rows) = (incremental.left(), incremental.placed());
            // A table described again (a column added or dropped): what was collapsed under
            // its old columns is merged first.
            if matches!(message, Message::Relation(_))
                && let Some(end) = collapser.end()
            {
                merge_wal(mirror, &mut collapser, &mut stream, end, &mut progress)?;
                (pending, last_merge) = (0, Instant::now());
            }
            collapser.take(message)?;
            pending += 1;
        }
        let due = pending >= follow.batch_messages || last_merge.elapsed() >= follow.batch_wait;
        if due && let Some(end) = collapser.end() {
            merge_wal(mirror, &mut collapser, &mut stream, end, &mut progress)?;
            (pending, last_merge) = (0, Instant::now());
            if stop(&progress) {
                return Ok(progress);
            }
        } else if due {
            last_merge = Instant::now();
            if !collapser.in_transaction() {
                // Nothing of ours held: the position moves to what the server has read, so
                // a slot whose tables are quiet keeps no WAL that only other tables wrote.
                let sent = stream.sent();
                if sent.0 > 0 && progress.position.is_none_or(|p| sent > p) {
                    mirror.apply(&[], sent)?;
                    stream.confirm(sent)?;
                    progress.position = Some(sent);
                }
                stream.ask()?;
                // Quiet: other processes may have a DuckDB file until changes come again.
                mirror.release();
                if stop(&progress) {
                    return Ok(progress);
                }
            }
        }
    }
}

/// A collapser for `mirror`, keeping every change when the mirror keeps a history or
/// publishes events.
fn collapser(mirror: &Mirror) -> Collapser {
    if mirror.wants_every_change() { Collapser::with_history() } else { Collapser::new() }
}

/// Merges what `collapser` holds committed with the WAL position it ends at, then confirms
/// that position to the server.
fn merge_wal(
    mirror: &mut Mirror,
    collapser: &mut Collapser,
    stream: &mut WalStream,
    end: Lsn,
    progress: &mut Progress,
) -> Result<(), FollowError> {
    let applied = mirror.apply(&collapser.drain(), end)?;
    stream.confirm(end)?;
    progress.position = Some(end);
    count(progress, applied);
    Ok(())
}

fn count(progress: &mut Progress, applied: Applied) {
    progress.batches += 1;
    progress.applied.upserted += applied.upserted;
    progress.applied.deleted += applied.deleted;
    progress.applied.truncated += applied.truncated;
}

/// Follows a MariaDB binlog into `mirror` as [`follow`] does a slot: a mirror with no
/// position first takes a consistent snapshot; then each micro-batch of committed changes is
/// merged with the binlog position it ends at, in one transaction, and a restart reads again
/// from there. `stop` is asked once before reading, after every merge, and while quiet.
pub fn follow_binlog(
    server: &Server,
    follow: &BinlogFollow,
    mirror: &mut Mirror,
    stop: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Progress, FollowError> {
    // Held until this returns: a second follower of the source finds it taken.
    let _lock = server.lock(&follow.lock)?;
    let mut progress = Progress::default();
    let from = match mirror.position_text()? {
        Some(text) => text.parse::<Position>().map_err(|m| BinlogError::Setup(format!("the mirrors' stored position: {m}")))?,
        None => {
            let (copied, at) = snapshot::copy_binlog(server, &follow.tables, mirror)?;
            progress.snapshotted = true;
            progress.snapshot_rows = copied.tables.iter().map(|(_, n)| n).sum();
            at
        }
    };
    let mut incremental = resume(mirror, follow.requests.clone(), follow.chunk_rows, &follow.tables, !progress.snapshotted)?;
    progress.binlog = Some(from.clone());
    progress.incremental_tables = incremental.left();
    if stop(&progress) {
        return Ok(progress);
    }
    let receiver = server.read(&from, &follow.tables)?;
    let mut collapser = collapser(mirror);
    // The end of the last transaction taken, and where the stream stood when last quiet.
    let (mut last, mut quiet): (Option<Position>, Option<Position>) = (None, None);
    // Where the stream has been read to: the end of the last transaction, or quiet there.
    let mut read_to = from.clone();
    let (mut pending, mut last_merge) = (0usize, Instant::now());
    loop {
        take_requests(&mut incremental, mirror, &follow.tables)?;
        if let Some(t) = incremental.next().cloned() {
            // The table's number in the stream: its place among the captured tables.
            let id = follow.tables.iter().position(|(s, n)| *s == t.schema && *n == t.table).map_or(0, |i| i as u32 + 1);
            incremental.read(incremental::read_binlog(server, id, &t, incremental.chunk_rows())?);
            // The stream may stand at the chunk's place already.
            if incremental.due_before(&read_to, true) {
                pending += incremental.place(&mut collapser, mirror, &read_to.to_string())? as usize;
                mirror.stage_incremental(incremental.state());
                last = Some(read_to.clone());
            }
        }
        let wait = follow.batch_wait.saturating_sub(last_merge.elapsed()).max(Duration::from_millis(1));
        match binlog::receive(&receiver, wait)? {
            Some(Read::Message(message)) => {
                // A table's columns changed: what was collapsed under the old ones goes first.
                if matches!(message, Message::Relation(_))
                    && let Some(end) = last.take()
                {
                    merge(mirror, &mut collapser, end, &mut progress)?;
                    (pending, last_merge) = (0, Instant::now());
                }
                collapser.take(message)?;
                pending += 1;
            }
            Some(Read::Commit(at, time)) => {
                // A chunk read before this transaction committed goes first.
                if incremental.due_before(&at, false) {
                    pending += incremental.place(&mut collapser, mirror, &read_to.to_string())? as usize;
                    mirror.stage_incremental(incremental.state());
                }
                collapser.commit_at(at.to_string(), time)?;
                // ...or right after it, read where it ends.
                if incremental.due_before(&at, true) {
                    pending += incremental.place(&mut collapser, mirror, &at.to_string())? as usize;
                    mirror.stage_incremental(incremental.state());
                }
                read_to = at.clone();
                last = Some(at);
                pending += 1;
            }
            Some(Read::Quiet(at)) => {
                if incremental.due_before(&at, true) {
                    pending += incremental.place(&mut collapser, mirror, &at.to_string())? as usize;
                    mirror.stage_incremental(incremental.state());
                    last = Some(at.clone());
                }
                read_to = at.clone();
                quiet = Some(at);
            }
            None => {}
        }
        (progress.incremental_tables, progress.incremental_rows) = (incremental.left(), incremental.placed());
        let due = pending >= follow.batch_messages || last_merge.elapsed() >= follow.batch_wait;
        if due && let Some(end) = last.take() {
            merge(mirror, &mut collapser, end, &mut progress)?;
            (pending, last_merge) = (0, Instant::now());
            if stop(&progress) {
                return Ok(progress);
            }
        } else if due {
            last_merge = Instant::now();
            if !collapser.in_transaction() {
                // Nothing of ours held: the position moves to where the server's binlog ends.
                if let Some(at) = quiet.take()
                    && progress.binlog.as_ref().is_none_or(|p| !p.reached(&at))
                {
                    mirror.apply_at(&[], &at.to_string())?;
                    progress.binlog = Some(at);
                }
                mirror.release();
                if stop(&progress) {
                    return Ok(progress);
                }
            }
        }
    }
}

/// The incremental snapshots a follower goes on with: those the mirrors store as under way,
/// and (`known`: the mirrors had a position, so every table was snapshotted once) each of
/// `tables` whose mirror does not exist, stored as under way now.
fn resume(
    mirror: &mut Mirror,
    requests: Option<PathBuf>,
    chunk_rows: usize,
    tables: &[(String, String)],
    known: bool,
) -> Result<Incremental, FollowError> {
    let mut incremental = Incremental::new(mirror.incremental()?, requests);
    if chunk_rows > 0 {
        incremental = incremental.chunks_of(chunk_rows);
    }
    if known {
        let mut missing = vec![];
        for (schema, table) in tables {
            if !mirror.has_mirror(schema, table)? {
                missing.push((schema.clone(), table.clone()));
            }
        }
        let added = incremental.add(&missing);
        mirror.add_incremental(&added)?;
    }
    // Requests left while no follower ran count from the start.
    take_requests(&mut incremental, mirror, tables)?;
    Ok(incremental)
}

/// Takes the requests `weir cdc snapshot` left (of `tables`, the captured ones): stored as
/// under way, then their files removed.
fn take_requests(incremental: &mut Incremental, mirror: &mut Mirror, tables: &[(String, String)]) -> Result<(), FollowError> {
    let asked = incremental.asked()?;
    if asked.is_empty() {
        return Ok(());
    }
    let wanted: Vec<(String, String)> = asked.iter().flat_map(|(_, t)| t.iter().filter(|t| tables.contains(t)).cloned()).collect();
    let added = incremental.add(&wanted);
    mirror.add_incremental(&added)?;
    mirror.stage_incremental(incremental.state());
    incremental.taken(&asked.into_iter().map(|(f, _)| f).collect::<Vec<_>>())?;
    Ok(())
}

/// Merges what `collapser` holds committed, with the position it ends at.
fn merge(mirror: &mut Mirror, collapser: &mut Collapser, end: Position, progress: &mut Progress) -> Result<(), FollowError> {
    let applied = mirror.apply_at(&collapser.drain(), &end.to_string())?;
    progress.binlog = Some(end);
    count(progress, applied);
    Ok(())
}
