//! The load executor: a load declared in `loads/*.yml` (read by `weir_graph::loads`) names a
//! source (files, a PostgreSQL or MySQL table or query, an HTTP JSON API) and a table of the
//! warehouse's raw layer; [`run_load`] moves the rows there, whole or not at all.
//!
//! Every load stages what it extracted in a table of the destination first, through the
//! engines' own bulk paths (DuckDB reads files in place; database rows go as typed Arrow
//! batches to DuckDB's appender or PostgreSQL's binary `COPY`; an API's records are spooled
//! as JSON lines). Everything after that is SQL in the destination, in one transaction: the
//! schema evolves under the load's contract, rows that do not fit go to `_weir_rejected` with the reason, the rows are
//! appended, replaced or merged with `_weir_load_id` and `_weir_loaded_at`, and the load is
//! recorded in `_weir_loads`. The metadata store then learns the new high-water mark and the
//! files read; a run killed in between is settled from `_weir_loads` on the next run. A load
//! with `to: topic` publishes the staged rows as events instead ([`topic`]).

pub mod files;
pub mod http;
pub mod load;
mod mysql;
pub mod quotes;
pub mod topic;

pub use load::{LoadOptions, LoadReport, Progress, ProgressFn, prepare_destination, run_load};
use weir_core::Location;
pub use weir_graph::loads::{DatabaseSource, Engine, Load, SchemaContract, Source, WriteDisposition, parse_file};

/// Why a load could not be read or run.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{location}: {message}{}", snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default())]
    Invalid { location: Location, message: String, snippet: Option<String> },
    /// The source failed (a file, a database, a query), named with the load.
    #[error("load '{load}': {message}")]
    Source { load: String, message: String },
    /// The data broke a rule of the load (its schema contract, its primary key).
    #[error("load '{load}': {message}")]
    Data { load: String, message: String },
    #[error("load '{load}': {source}")]
    Warehouse { load: String, source: weir_warehouse::WarehouseError },
    #[error(transparent)]
    Project(#[from] weir_project::ProjectError),
    /// The load's declaration is wrong (see `weir_graph::loads`).
    #[error(transparent)]
    Declaration(#[from] weir_graph::GraphError),
    #[error(transparent)]
    Store(#[from] weir_store::StoreError),
    /// The topic a load publishes to (`to: topic`) could not take its events.
    #[error("topic '{topic}': {message}")]
    Topic { topic: String, message: String },
}
