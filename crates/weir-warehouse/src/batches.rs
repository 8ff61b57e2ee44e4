//! Typed rows that Weir decodes itself (PostgreSQL's binary `COPY`, MySQL's result rows) on
//! their way to a destination's binary bulk path as Arrow record batches.
//!
//! Decoding runs on a thread of its own, a batch or two ahead of the destination's append
//! (on the caller's thread, which owns the destination's connection): each side is about half
//! the work, so a load takes the longer of the two rather than their sum.

use std::sync::mpsc::{SyncSender, sync_channel};

use crate::RecordBatch;

/// Rows per record batch: a few megabytes, whatever the table's size.
pub const BATCH_ROWS: usize = 65_536;

/// A decoded batch with the rows and bytes read up to its end.
pub type Decoded = (RecordBatch, u64, u64);

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The read could not start (a bad query, a refused connection).
    Start(String),
    /// The source went away after `rows` rows.
    Lost { rows: u64, message: String },
    /// A value the destination's column cannot hold, named with its column.
    Value(String),
    /// The destination refused a batch.
    Sink(crate::WarehouseError),
}

/// Runs `decode` on a thread of its own, handing each batch it sends to `emit` in order and
/// telling `tell` the rows and bytes read so far. `decode` returns the rows and bytes it read
/// and what else it found; it stops early, without an error, when a send fails (the
/// destination refused a batch, whose error is the one returned).
pub fn ahead<T: Send>(
    decode: impl FnOnce(&SyncSender<Decoded>) -> Result<(u64, u64, T), ReadError> + Send,
    tell: &mut dyn FnMut(u64, u64),
    emit: &mut dyn FnMut(&RecordBatch) -> crate::Result<()>,
) -> Result<(u64, T), ReadError> {
    let (sender, batches) = sync_channel::<Decoded>(AHEAD);
    std::thread::scope(|scope| {
        let decoding = scope.spawn(move || decode(&sender));
        let mut sunk = None;
        for (batch, rows, bytes) in batches.iter() {
            if let Err(e) = emit(&batch) {
                sunk = Some(e);
                // Dropping the receiver stops the decoder at its next batch.
                break;
            }
            tell(rows, bytes);
        }
        drop(batches);
        let decoded = decoding.join().map_err(|_| ReadError::Value("internal: the decoding thread panicked".into()))?;
        match sunk {
            Some(e) => Err(ReadError::Sink(e)),
            None => decoded.map(|(rows, bytes, found)| {
                tell(rows, bytes);
                (rows, found)
            }),
        }
    })
}

/// Batches decoded ahead of the destination: enough to keep both threads busy, few enough
/// that memory stays a few batches whatever the table's size.
const AHEAD: usize = 2;
