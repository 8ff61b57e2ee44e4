//! Errors of reading the asset graph; each names the file, node or selector it is about.

use weir_core::Location;
use weir_project::ProjectError;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Project(#[from] ProjectError),

    /// A mistake in one of the project's files, at its place, with the offending line.
    #[error("{location}: {message}{}", snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default())]
    At { location: Location, message: String, snippet: Option<String> },

    /// The graph itself is wrong (a dependency cycle), or an artifact could not be made.
    #[error("{0}")]
    Graph(String),

    /// A selector that does not parse or names nothing known.
    #[error("{0}")]
    Selection(String),

    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl GraphError {
    pub fn at(location: Location, message: impl Into<String>, source: Option<&str>) -> Self {
        let snippet = source.and_then(|s| location.snippet(s)).map(|s| s.to_string());
        GraphError::At { location, message: message.into(), snippet }
    }

    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        GraphError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}
