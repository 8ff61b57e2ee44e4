//! Places in user files, so every error and warning can say `file:line:col` and show the text.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a user's file. Lines and columns count from 1, as editors show them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, col: usize) -> Self {
        Location { file: file.into(), line, col }
    }

    /// A whole file, when no finer position is known.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Location { file: file.into(), line: 0, col: 0 }
    }

    /// The same place, with the file shown relative to `root` when it lies under it.
    pub fn relative_to(&self, root: &Path) -> Location {
        let file = self.file.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| self.file.clone());
        Location { file, ..*self }
    }

    /// The offending line of text with a caret under the column, read from `source`.
    pub fn snippet(&self, source: &str) -> Option<Snippet> {
        if self.line == 0 {
            return None;
        }
        let text = source.lines().nth(self.line - 1)?.to_string();
        Some(Snippet { line: self.line, col: self.col, text })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => write!(f, "{}", self.file.display()),
            (l, 0) => write!(f, "{}:{}", self.file.display(), l),
            (l, c) => write!(f, "{}:{}:{}", self.file.display(), l, c),
        }
    }
}

/// One line of a user's file with a marker under the offending column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub line: usize,
    pub col: usize,
    pub text: String,
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string();
        writeln!(f, "{} | {}", gutter, self.text)?;
        let pad = " ".repeat(gutter.len());
        if self.col > 0 { write!(f, "{} | {}^", pad, " ".repeat(self.col - 1)) } else { write!(f, "{} |", pad) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_file_line_col() {
        assert_eq!(Location::new("models/a.sql", 3, 7).to_string(), "models/a.sql:3:7");
        assert_eq!(Location::new("a.yml", 2, 0).to_string(), "a.yml:2");
        assert_eq!(Location::file("a.yml").to_string(), "a.yml");
    }

    #[test]
    fn snippet_points_at_the_column() {
        let snippet = Location::new("x", 2, 3).snippet("one\nselect *\n").unwrap();
        assert_eq!(snippet.to_string(), "2 | select *\n  |   ^");
    }
}
