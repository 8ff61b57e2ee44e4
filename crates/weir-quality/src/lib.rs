//! Data-quality checks: `checks/*.yml` read into typed checks (`weir_graph::checks`), measured against
//! the warehouse with one scan per table ([`measure`]), judged against their thresholds and
//! their own history, and recorded in the metadata store.
//!
//! This executor knows nothing of the rest of the graph: `weir-build` resolves each suite's
//! dataset to a relation, runs the suite at the right moment (after the asset it checks) and
//! lets a failure block what is downstream.

pub mod measure;

pub use measure::{Bound, Outcome, SuiteOutcome, Verdict, measure, validate};
use weir_core::Location;
pub use weir_graph::checks::{Check, Metric, Suite, parse_file};

/// Why a check could not be read or measured.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("{location}: {message}{}", snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default())]
    Invalid { location: Location, message: String, snippet: Option<String> },
    #[error(transparent)]
    Project(#[from] weir_project::ProjectError),
    /// A suite's declaration is wrong (see `weir_graph::checks`).
    #[error(transparent)]
    Declaration(#[from] weir_graph::GraphError),
    #[error(transparent)]
    Warehouse(#[from] weir_warehouse::WarehouseError),
    #[error(transparent)]
    Store(#[from] weir_store::StoreError),
}
