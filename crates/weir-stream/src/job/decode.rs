//! Events read from the log as rows of the columns a job reads, each value checked against
//! its declared type. An event that is not JSON, holds a value of the wrong type or has no
//! event time is not a row: it is refused with the reason, to be kept in the rejected table.
//!
//! Only the fields a job reads are materialised; the rest of each event is skipped as it is
//! parsed (serde's `IgnoredAny`), which is most of the cost of a wide event.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value as J;

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A timestamp or date, in microseconds since the epoch (UTC).
    Time(i64),
}

/// How a declared column type is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Text,
    Bool,
    Timestamp,
    Date,
    /// JSON, lists, structs: kept as JSON text.
    Any,
}

impl Kind {
    pub fn of(ty: &str) -> Kind {
        let t = ty.trim().to_ascii_lowercase();
        let base = t.split('(').next().unwrap_or("").trim();
        match base {
            "tinyint" | "smallint" | "int" | "integer" | "bigint" | "hugeint" | "int2" | "int4" | "int8" | "utinyint" | "usmallint"
            | "uinteger" | "ubigint" => Kind::Int,
            "double" | "float" | "real" | "decimal" | "numeric" | "float4" | "float8" | "double precision" => Kind::Float,
            "varchar" | "text" | "string" | "char" | "bpchar" | "uuid" => Kind::Text,
            "boolean" | "bool" => Kind::Bool,
            "date" => Kind::Date,
            b if b.starts_with("timestamp") || b == "datetime" => Kind::Timestamp,
            _ => Kind::Any,
        }
    }
}

/// A row and its event time (milliseconds), or why the event is refused.
pub struct Decoder {
    names: Vec<String>,
    kinds: Vec<Kind>,
    types: Vec<String>,
    time: Option<usize>,
}

impl Decoder {
    /// A decoder of `columns` (name, declared type), with `time` the event-time column.
    pub fn new(columns: &[(String, String)], time: Option<&str>) -> Decoder {
        Decoder {
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            kinds: columns.iter().map(|(_, t)| Kind::of(t)).collect(),
            types: columns.iter().map(|(_, t)| t.clone()).collect(),
            time: time.and_then(|t| columns.iter().position(|(n, _)| n == t)),
        }
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The row of `value` and its event time (0 when the job reads no event time).
    pub fn decode(&self, value: &[u8]) -> Result<(Vec<Cell>, i64), String> {
        let mut de = serde_json::Deserializer::from_slice(value);
        let raw = Fields { names: &self.names }.deserialize(&mut de).map_err(|e| format!("not a JSON object: {e}"))?;
        de.end().map_err(|e| format!("not one JSON object: {e}"))?;
        let mut cells = Vec::with_capacity(raw.len());
        for (i, v) in raw.into_iter().enumerate() {
            let cell = match v {
                None | Some(J::Null) => Cell::Null,
                Some(v) => {
                    cell(&v, self.kinds[i]).ok_or_else(|| format!("{}: expected {}, got {}", self.names[i], self.types[i], short(&v)))?
                }
            };
            cells.push(cell);
        }
        let ts = match self.time {
            None => 0,
            Some(t) => match cells[t] {
                Cell::Time(us) => us.div_euclid(1000),
                _ => return Err(format!("no event time: '{}' is missing or null", self.names[t])),
            },
        };
        Ok((cells, ts))
    }
}

/// `v` read as `kind`, if it is one.
fn cell(v: &J, kind: Kind) -> Option<Cell> {
    Some(match (kind, v) {
        (Kind::Int, J::Number(n)) => {
            Cell::Int(n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))?)
        }
        (Kind::Float, J::Number(n)) => Cell::Float(n.as_f64()?),
        (Kind::Float, J::String(s)) => Cell::Float(s.trim().parse().ok()?),
        (Kind::Text, J::String(s)) => Cell::Text(s.clone()),
        (Kind::Text, J::Number(_) | J::Bool(_)) => Cell::Text(v.to_string()),
        (Kind::Bool, J::Bool(b)) => Cell::Bool(*b),
        (Kind::Timestamp, J::String(s)) => Cell::Time(parse_timestamp(s)?),
        (Kind::Timestamp | Kind::Date, J::Number(n)) => Cell::Time(n.as_i64()?.checked_mul(1000)?),
        (Kind::Date, J::String(s)) => {
            Cell::Time(NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
        }
        (Kind::Any, v) => Cell::Text(v.to_string()),
        _ => return None,
    })
}

/// An ISO 8601 / RFC 3339 time (`2026-12-02T10:00:00Z`, `2026-12-02 10:00:00.250`, with or
/// without a zone; without one it is UTC), in microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros())
}

/// Microseconds as `2026-12-02 10:00:00.250000`, the text both warehouses cast to a timestamp.
pub fn format_micros(us: i64) -> String {
    match DateTime::from_timestamp_micros(us) {
        Some(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => us.to_string(),
    }
}

fn short(v: &J) -> String {
    let t = v.to_string();
    if t.chars().count() > 60 { format!("{}...", t.chars().take(60).collect::<String>()) } else { t }
}

/// The named fields of one JSON object, in the order named; the rest skipped.
struct Fields<'n> {
    names: &'n [String],
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Vec<Option<J>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Vec<Option<J>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.names.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => out[i] = Some(map.next_value::<J>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let cols: Vec<(String, String)> = [("id", "bigint"), ("amount", "decimal(10,2)"), ("country", "varchar"), ("at", "timestamp")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Decoder::new(&cols, Some("at"))
    }

    #[test]
    fn reads_the_columns_and_the_event_time() {
        let (cells, ts) =
            decoder().decode(br#"{"id": 7, "extra": {"deep": [1, 2]}, "amount": "20.50", "at": "2026-12-02T10:00:01.5Z"}"#).unwrap();
        assert_eq!(cells, vec![Cell::Int(7), Cell::Float(20.5), Cell::Null, Cell::Time(1_796_205_601_500_000)]);
        assert_eq!(ts, 1_796_205_601_500);
        let (_, ts) = decoder().decode(br#"{"at": 1796205601500}"#).unwrap();
        assert_eq!(ts, 1_796_205_601_500, "a number is epoch milliseconds");
        assert_eq!(format_micros(1_796_205_601_500_000), "2026-12-02 10:00:01.500000");
    }

    #[test]
    fn refuses_with_the_reason() {
        let d = decoder();
        assert_eq!(d.decode(br#"{"id": "seven", "at": "2026-12-02 10:00:00"}"#).unwrap_err(), r#"id: expected bigint, got "seven""#);
        assert!(d.decode(br#"{"id": 1}"#).unwrap_err().contains("no event time: 'at'"));
        assert!(d.decode(b"{oops").unwrap_err().starts_with("not a JSON object"));
        assert!(d.decode(br#"[1, 2]"#).unwrap_err().starts_with("not a JSON object"));
        assert!(d.decode(br#"{"at": "yesterday"}"#).unwrap_err().contains("expected timestamp"));
    }
}
