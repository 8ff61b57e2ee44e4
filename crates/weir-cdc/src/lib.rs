//! Change data capture: reading a database's own change log rather than querying its tables,
//! so that deletes and every intermediate state of a row are seen, and the source is not
//! scanned again and again.
//!
//! [`pgoutput`] decodes PostgreSQL's logical replication messages (the `pgoutput` plugin,
//! protocol versions 1 and 2, streamed in-progress transactions included), whatever carries
//! them: the streaming replication protocol, or `pg_logical_slot_get_binary_changes()`.
//! [`changes`] collapses a micro-batch of them to the last state of each row, what a mirror
//! table merges, and [`mirror`] merges them into the warehouse with the position they end
//! at. [`replication`] is that protocol: a replication connection, its slot commands, and the
//! stream of WAL data with the status updates that let the server free what Weir holds.

pub mod changes;
pub mod mirror;
pub mod pgoutput;
pub mod replication;

pub use pgoutput::{Column, Decoder, Lsn, Message, OldRow, PgOutputError, Relation, ReplicaIdentity, Tuple, Value};
pub use replication::{ChangeSource, Config, Connection, ReplicationError, SlotCreated, WalData, WalStream};
