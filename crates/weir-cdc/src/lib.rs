//! Change data capture: reading a database's own change log rather than querying its tables,
//! so that deletes and every intermediate state of a row are seen, and the source is not
//! scanned again and again.
//!
//! How the pieces fit, from the server to the warehouse:
//!
//! - [`replication`]: PostgreSQL's streaming replication protocol: a replication
//!   connection, its slot commands, and the stream of WAL data, with the status updates that
//!   let the server free what Weir has made durable.
//! - [`pgoutput`]: the logical replication messages in that stream (protocol versions 1
//!   and 2, streamed in-progress transactions included), decoded.
//! - [`changes`]: a micro-batch of them collapsed to each row's last committed state.
//! - [`mirror`]: merged into mirror tables with the position the batch ends at, in one
//!   transaction.
//! - [`events`]: and, when asked, every change published to the event log first, in
//!   Debezium's envelope.
//! - [`snapshot`]: a new slot's exported snapshot copied into the mirrors, so streaming
//!   goes on from exactly where the copy stands.
//! - [`incremental`]: a table read again in chunks while the stream goes on, each chunk
//!   placed where it stands in the stream (DBLog's watermarks).
//! - [`follow`]: all of it in a loop, confirming a position to the server only once the
//!   mirror holds it.
//! - [`source`]: a `mode: cdc` load of the project: its publication made or checked, caught
//!   up or followed, its slot reported and dropped.

pub mod binlog;
pub mod changes;
pub mod events;
pub mod follow;
pub mod incremental;
pub mod mirror;
pub mod pgoutput;
pub mod replication;
pub mod snapshot;
pub mod source;

pub use pgoutput::{Column, Decoder, Lsn, Message, OldRow, PgOutputError, Relation, ReplicaIdentity, Tuple, Value};
pub use replication::{ChangeSource, Config, Connection, ReplicationError, SlotCreated, WalData, WalStream};
