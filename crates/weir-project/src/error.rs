//! Errors and warnings of project loading. Each carries the place in the user's files so the
//! binary can print `file:line:col`, the message, and the offending line.

use std::fmt;
use std::path::PathBuf;

use weir_core::Location;

/// Why a project could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{location}: invalid YAML: {message}{}", show(snippet))]
    Yaml { location: Location, message: String, snippet: Option<String> },

    #[error("{location}: {message}{}", show(snippet))]
    Invalid { location: Location, message: String, snippet: Option<String> },

    #[error("{location}: {message}{}", show(snippet))]
    Jinja { location: Location, message: String, snippet: Option<String> },

    #[error("{0}")]
    Profile(String),
}

fn show(snippet: &Option<String>) -> String {
    snippet.as_ref().map(|s| format!("\n{s}")).unwrap_or_default()
}

impl ProjectError {
    pub fn invalid(location: Location, message: impl Into<String>) -> Self {
        ProjectError::Invalid { location, message: message.into(), snippet: None }
    }

    /// An invalid value, with the offending line read from `source`.
    pub fn invalid_at(location: Location, message: impl Into<String>, source: &str) -> Self {
        let snippet = location.snippet(source).map(|s| s.to_string());
        ProjectError::Invalid { location, message: message.into(), snippet }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProjectError::Io { path: path.into(), source }
    }
}

/// Something suspicious that does not stop the run, such as a misspelled config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// The known name closest to a misspelled one, for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_known_key() {
        assert_eq!(closest("materialised", ["materialized", "schema"]), Some("materialized"));
        assert_eq!(closest("zzz", ["materialized", "schema"]), None);
    }
}
