//! The asset graph as data: every node of a project (models, seeds, snapshots, tests, unit
//! tests, analyses, sources, saved queries, and Weir's own loads and checks), what each depends
//! on, dbt's selection syntax over them, and the comparison with an earlier run's manifest
//! (`state:modified`, `--defer`).
//!
//! A node kind has two halves. Its declaration lives here: read from the project's files
//! ([`parse`]; [`loads`] and [`checks`] for Weir's own YAML), placed in the graph with its
//! dependencies and the relation it writes. Its executor lives in a crate of its own
//! (`weir-transform`, `weir-connect`, `weir-quality`), and `weir-build` hands each node to it.
//! The event log's topics, declared in `streams/*.yml`, are read here too ([`streams`]), and
//! the stream jobs of `streams/*.sql` ([`stream_jobs`]).
//! This crate runs nothing and opens no connection: `weir parse`, `weir ls` and selection need
//! nothing else.

pub mod artifacts;
pub mod checks;
pub mod dag;
pub mod error;
pub mod lineage;
pub mod loads;
pub mod logs;
pub mod node;
pub mod parse;
pub mod select;
pub mod state;
pub mod stream_jobs;
pub mod streams;

pub use dag::Graph;
pub use error::GraphError;
pub use node::{Node, ResourceType, Status};
pub use parse::{Flags, Manifest, parse};
pub use select::Selector;
pub use state::PriorState;
