//! Small query results: what `run_query`, `show`, tests and the catalog return. Bulk data moves
//! as Arrow batches inside the warehouse adapters and never goes through this type.

use serde::Serialize;
use std::fmt;

/// A column name and the engine's own spelling of its type (`INTEGER`, `character varying`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    pub data_type: String,
}

impl Column {
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        Column { name: name.into(), data_type: data_type.into() }
    }
}

/// One value of a small result. Decimals, dates and other types without a variant here are
/// carried as the engine's text rendering, which is what users see and compare anyway.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Datum {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Datum::Int(i) => Some(*i),
            Datum::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            Datum::Bool(b) => Some(i64::from(*b)),
            Datum::Text(t) => t.trim().parse().ok(),
            Datum::Null | Datum::Float(_) => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Datum::Bool(b) => Some(*b),
            Datum::Int(i) => Some(*i != 0),
            Datum::Text(t) => match t.as_str() {
                "t" | "true" => Some(true),
                "f" | "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Null => write!(f, "NULL"),
            Datum::Bool(b) => write!(f, "{b}"),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Float(x) => write!(f, "{x}"),
            Datum::Text(t) => write!(f, "{t}"),
        }
    }
}

/// Rows and their columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Datum>>,
}

impl QueryResult {
    /// The first column of the first row, for `select count(*) ...` style queries.
    pub fn scalar(&self) -> Option<&Datum> {
        self.rows.first().and_then(|r| r.first())
    }

    /// A plain-text grid for the terminal, as `weir show` prints it.
    pub fn to_grid(&self) -> String {
        let headers: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(Datum::to_string).collect()).collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in &cells {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |vals: &[String]| -> String {
            let parts: Vec<String> = vals.iter().zip(&widths).map(|(v, w)| format!(" {v:<w$} ")).collect();
            format!("|{}|", parts.join("|"))
        };
        let rule = format!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
        let mut out = vec![line(&headers), rule];
        out.extend(cells.iter().map(|r| line(r)));
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_aligns_columns() {
        let r = QueryResult {
            columns: vec![Column::new("id", "INTEGER"), Column::new("name", "VARCHAR")],
            rows: vec![vec![Datum::Int(1), Datum::Text("alice".into())], vec![Datum::Int(22), Datum::Null]],
        };
        assert_eq!(r.to_grid(), "| id | name  |\n|----+-------|\n| 1  | alice |\n| 22 | NULL  |");
    }

    #[test]
    fn datum_reads_counts_from_any_engine_rendering() {
        assert_eq!(Datum::Text("42".into()).as_i64(), Some(42));
        assert_eq!(Datum::Float(3.0).as_i64(), Some(3));
        assert_eq!(Datum::Text("t".into()).as_bool(), Some(true));
    }
}
