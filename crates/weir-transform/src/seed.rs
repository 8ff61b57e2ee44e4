//! Seed CSV files: column types inferred the way dbt infers them (agate's type tester with
//! dbt's settings), so a seed gives the same table under Weir as under dbt.
//!
//! For each column the first type that parses every non-null value wins, in dbt's order:
//! number, date, datetime, ISO datetime, boolean, text. Numbers become `integer` unless a value
//! has decimals (then `float8`); a column with no values at all is `integer`, as in dbt.

use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};

use crate::error::TransformError;

/// A seed file's header and inferred SQL types.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedSchema {
    pub columns: Vec<String>,
    pub types: Vec<String>,
    pub rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number { decimals: bool },
    Date,
    DateTime,
    IsoDateTime,
    Boolean,
    Text,
}

/// Reads the CSV at `path` and infers each column's type.
pub fn infer(path: &Path, delimiter: u8) -> Result<SeedSchema, TransformError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_path(path)
        .map_err(|e| TransformError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let headers = reader.headers().map_err(|e| TransformError::Io { path: path.display().to_string(), message: e.to_string() })?.clone();
    let columns: Vec<String> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect();
    // Candidate kinds still possible per column, narrowed as values are read.
    let mut possible: Vec<[bool; 6]> = vec![[true; 6]; columns.len()];
    let mut decimals = vec![false; columns.len()];
    let mut rows = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(i as u64 + 2);
            TransformError::at(weir_core::Location::new(path, line as usize, 0), format!("malformed CSV row: {e}"), None)
        })?;
        rows += 1;
        for (c, value) in record.iter().enumerate() {
            let v = value.trim();
            if v.is_empty() || v.eq_ignore_ascii_case("null") {
                continue;
            }
            let p = &mut possible[c];
            if p[0] {
                match parse_number(v) {
                    Some(has_decimals) => decimals[c] |= has_decimals,
                    None => p[0] = false,
                }
            }
            p[1] = p[1] && NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
            p[2] = p[2] && NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S").is_ok();
            p[3] = p[3] && parse_iso_datetime(v);
            p[4] = p[4] && (v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"));
        }
    }
    let types = possible
        .iter()
        .zip(&decimals)
        .map(|(p, &d)| {
            let kind = if p.iter().take(5).all(|x| *x) {
                // No values at all: agate's first type (dbt's Integer) wins.
                return "integer".to_string();
            } else if p[0] {
                Kind::Number { decimals: d }
            } else if p[1] {
                Kind::Date
            } else if p[2] {
                Kind::DateTime
            } else if p[3] {
                Kind::IsoDateTime
            } else if p[4] {
                Kind::Boolean
            } else {
                Kind::Text
            };
            sql_type(kind).to_string()
        })
        .collect();
    Ok(SeedSchema { columns, types, rows })
}

fn sql_type(k: Kind) -> &'static str {
    match k {
        Kind::Number { decimals: false } => "integer",
        Kind::Number { decimals: true } => "float8",
        Kind::Date => "date",
        Kind::DateTime | Kind::IsoDateTime => "timestamp without time zone",
        Kind::Boolean => "boolean",
        Kind::Text => "text",
    }
}

/// Python `Decimal()` after agate strips currency symbols and group separators.
/// Returns whether the number has digits after the decimal point.
fn parse_number(v: &str) -> Option<bool> {
    let s: String = v.chars().filter(|c| !matches!(c, ',' | '$' | '€' | '£' | '¥')).collect();
    let s = s.trim();
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if body.is_empty() {
        return None;
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits_ok = |d: &str| d.chars().all(|c| c.is_ascii_digit());
    if !digits_ok(int) || !frac.is_none_or(digits_ok) || (int.is_empty() && frac.is_none_or(str::is_empty)) {
        return None;
    }
    let exp: i64 = match exponent {
        Some(e) => e.strip_prefix('+').unwrap_or(e).parse().ok()?,
        None => 0,
    };
    let frac_len = frac.map(str::len).unwrap_or(0) as i64;
    Some(frac_len - exp > 0)
}

/// ISO 8601 date-times with a `T` (what `isodate.parse_datetime` accepts).
fn parse_iso_datetime(v: &str) -> bool {
    let Some((date, time)) = v.split_once('T') else { return false };
    if NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
        return false;
    }
    let time = time.trim_end_matches('Z');
    let time = match time.rfind(['+', '-']) {
        Some(i) if i > 0 => &time[..i],
        _ => time,
    };
    ["%H:%M:%S%.f", "%H:%M:%S", "%H:%M"].iter().any(|f| chrono::NaiveTime::parse_from_str(time, f).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer_text(text: &str) -> SeedSchema {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, text).unwrap();
        infer(&p, b',').unwrap()
    }

    #[test]
    fn infers_types_like_dbt() {
        let s = infer_text(
            "id,amount,day,at,iso,flag,name,empty,mixed\n1,1.50,2024-01-02,2024-01-02 10:00:00,2024-01-02T10:00:00Z,true,a,,1\n2,2,2024-01-03,2024-01-03 11:00:00,2024-01-03T11:00:00,False,b,,x\n",
        );
        assert_eq!(
            s.types,
            [
                "integer",
                "float8",
                "date",
                "timestamp without time zone",
                "timestamp without time zone",
                "boolean",
                "text",
                "integer",
                "text"
            ]
        );
        assert_eq!(s.rows, 2);
    }

    #[test]
    fn nulls_do_not_decide_a_type() {
        let s = infer_text("a,b\nnull,\n3,x\n");
        assert_eq!(s.types, ["integer", "text"]);
    }

    #[test]
    fn numbers_follow_pythons_decimal() {
        assert_eq!(parse_number("1,000"), Some(false));
        assert_eq!(parse_number("-2.50"), Some(true));
        assert_eq!(parse_number("1e3"), Some(false));
        assert_eq!(parse_number("1.5e-1"), Some(true));
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number("."), None);
    }
}
