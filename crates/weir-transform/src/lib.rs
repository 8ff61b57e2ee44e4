//! The transformation layer: a dbt project parsed into a graph of models, seeds, tests,
//! snapshots and sources; selection over it; compilation; materializations in the warehouse;
//! and dbt-compatible artifacts.
//!
//! It runs SQL only through [`weir_warehouse::Warehouse`] and never names an engine.

pub mod artifacts;
pub mod compile;
pub mod error;
pub mod freshness;
pub mod graph;
pub mod materialize;
pub mod microbatch;
pub mod node;
pub mod parse;
pub mod run;
pub mod seed;
pub mod select;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod unit;

pub use error::TransformError;
pub use graph::Graph;
pub use node::{Node, ResourceType};
pub use parse::{Flags, Manifest, parse};
pub use run::{Backfill, Command, NodeResult, Reporter, RunOptions, RunOutcome, Status};
pub use select::Selector;
pub use session::Session;
pub use state::PriorState;
