//! Errors of the model executor; each names the node or file it is about.

use weir_core::Location;
use weir_project::ProjectError;
use weir_warehouse::WarehouseError;

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Project(#[from] ProjectError),

    #[error("{0}")]
    Warehouse(#[from] WarehouseError),

    #[error("{location}: {message}{}", snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default())]
    At { location: Location, message: String, snippet: Option<String> },

    #[error("{0}")]
    Graph(String),

    /// The data broke a rule the run relies on (duplicate merge keys, ...); the message names
    /// the model and shows the offending values.
    #[error("{0}")]
    Data(String),

    #[error(transparent)]
    Store(#[from] weir_store::StoreError),

    #[error(transparent)]
    Asset(#[from] weir_graph::GraphError),

    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl TransformError {
    pub fn at(location: Location, message: impl Into<String>, source: Option<&str>) -> Self {
        let snippet = source.and_then(|s| location.snippet(s)).map(|s| s.to_string());
        TransformError::At { location, message: message.into(), snippet }
    }

    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        TransformError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}
