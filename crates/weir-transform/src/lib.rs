//! The model executor: models, seeds, snapshots, data tests and unit tests of a dbt project,
//! compiled (Jinja rendered against real relations, ephemeral models inlined) and
//! materialized in the warehouse as views, tables, incremental and microbatch models, with
//! their hooks; plus `weir source freshness`.
//!
//! It takes nodes of the asset graph (`weir-graph`) one at a time from `weir-build`, which
//! decides when each runs. It runs SQL only through [`weir_warehouse::Warehouse`] and never
//! names an engine, and it knows no other executor.

pub mod compile;
pub mod error;
pub mod freshness;
pub mod lineage;
pub mod materialize;
pub mod microbatch;
pub mod run;
pub mod seed;
pub mod session;
pub mod snapshot;
pub mod unit;

pub use error::TransformError;
pub use run::{Backfill, ExecOptions, HookRun, RunReport, run_node, run_project_hooks};
pub use session::Session;
