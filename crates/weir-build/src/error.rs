//! Errors of a build: an executor's, passed on as it said it, or the walk's own.

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Graph(#[from] weir_graph::GraphError),

    #[error(transparent)]
    Transform(#[from] weir_transform::TransformError),

    #[error(transparent)]
    Quality(#[from] weir_quality::QualityError),

    #[error(transparent)]
    Connect(#[from] weir_connect::ConnectError),

    #[error(transparent)]
    Stream(#[from] weir_stream::StreamError),

    #[error(transparent)]
    Cdc(#[from] weir_cdc::source::SourceError),

    #[error(transparent)]
    Project(#[from] weir_project::ProjectError),

    #[error("{0}")]
    Warehouse(#[from] weir_warehouse::WarehouseError),

    /// A node cannot be handed to its executor (a check without its dataset, a load without
    /// the metadata store), or the walk itself broke.
    #[error("{0}")]
    Walk(String),
}
