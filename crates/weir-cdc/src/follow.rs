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

use std::time::{Duration, Instant};

use crate::changes::{ChangeError, Collapser};
use crate::mirror::{Applied, Mirror, MirrorError};
use crate::pgoutput::{Decoder, Lsn, PgOutputError};
use crate::replication::{ChangeSource, Config, Connection, ReplicationError};
use crate::snapshot::{self, SnapshotError};

/// What to follow and how often to merge.
#[derive(Debug, Clone)]
pub struct Follow {
    pub slot: String,
    pub publication: String,
    /// A batch is merged once it holds this many messages...
    pub batch_messages: usize,
    /// ...or has waited this long since the last merge.
    pub batch_wait: Duration,
}

/// How far a follower has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The position the mirror holds everything up to.
    pub position: Option<Lsn>,
    pub batches: u64,
    pub applied: Applied,
    /// Whether this run began with a snapshot, and the rows it copied.
    pub snapshotted: bool,
    pub snapshot_rows: u64,
}

impl Progress {
    /// One line for people: the snapshot, what was merged, and where the mirrors stand.
    pub fn summary(&self) -> String {
        let a = self.applied;
        let snapshot = if self.snapshotted { format!("snapshot of {} row(s), then ", self.snapshot_rows) } else { String::new() };
        format!(
            "{snapshot}{} upserted, {} deleted, {} truncate(s) in {} batch(es); mirrors at {}",
            a.upserted,
            a.deleted,
            a.truncated,
            self.batches,
            self.position.map_or("-".into(), |l| l.to_string())
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
    let options = [("proto_version", "2"), ("publication_names", follow.publication.as_str()), ("streaming", "on"), ("messages", "true")];
    let mut stream = conn.start(&follow.slot, from, &options)?;
    let (mut decoder, mut collapser) = (Decoder::new(), Collapser::new());
    let mut progress = Progress {
        position: Some(from).filter(|l| l.0 > 0),
        snapshotted: copied.is_some(),
        snapshot_rows: copied.map_or(0, |c| c.tables.iter().map(|(_, n)| n).sum()),
        ..Progress::default()
    };
    let (mut pending, mut last_merge) = (0usize, Instant::now());
    loop {
        let wait = follow.batch_wait.saturating_sub(last_merge.elapsed()).max(Duration::from_millis(1));
        if let Some(wal) = stream.recv(wait)? {
            let message = decoder.decode(&wal.data).map_err(|source| FollowError::Decode { at: wal.start, source })?;
            collapser.take(message)?;
            pending += 1;
        }
        let due = pending >= follow.batch_messages || last_merge.elapsed() >= follow.batch_wait;
        if due && let Some(end) = collapser.end() {
            let applied = mirror.apply(&collapser.drain(), end)?;
            stream.confirm(end)?;
            progress.position = Some(end);
            progress.batches += 1;
            progress.applied.upserted += applied.upserted;
            progress.applied.deleted += applied.deleted;
            progress.applied.truncated += applied.truncated;
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
