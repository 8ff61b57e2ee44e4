//! Events read from the log as rows of the columns a job reads, each value checked against
//! its declared type. An event that is not JSON, holds a value of the wrong type or has no
//! event time is not a row: it is refused with the reason, to be kept in the rejected table.
//!
//! Only the fields a job reads are materialised; the rest of each event is skipped as it is
//! parsed (serde's `IgnoredAny`), which is most of the cost of a wide event.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use weir_log::RecordRef;
use weir_registry::SchemaType;
use weir_registry::codec::{ProtoValue, Read, Reader, parse_timestamp};

use chrono::{DateTime, NaiveDate};
use serde::Deserialize;
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
#[derive(Clone)]
pub struct Decoder {
    names: Vec<String>,
    kinds: Vec<Kind>,
    types: Vec<String>,
    time: Option<usize>,
    /// Events are in Confluent's wire format (`format: avro`, `json_schema`, `protobuf`),
    /// read with the schemas their ids name.
    registry: Option<(Arc<Reader>, SchemaType)>,
    /// Events are CSV lines (`format: csv`): where each column read is among a line's
    /// fields (the topic's declared columns, in order).
    csv: Option<Vec<Option<usize>>>,
    /// The columns read from a record's headers (by their names) rather than its value.
    headers: Vec<usize>,
}

impl Decoder {
    /// A decoder of `columns` (name, declared type), with `time` the event-time column.
    pub fn new(columns: &[(String, String)], time: Option<&str>) -> Decoder {
        Decoder {
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            kinds: columns.iter().map(|(_, t)| Kind::of(t)).collect(),
            types: columns.iter().map(|(_, t)| t.clone()).collect(),
            time: time.and_then(|t| columns.iter().position(|(n, _)| n == t)),
            registry: None,
            csv: None,
            headers: vec![],
        }
    }

    /// The same decoder, the columns among `headers` (name, type) read from each record's
    /// headers: the header of the column's name, as text; a record without it gives null.
    pub fn with_headers(mut self, headers: &[(String, String)]) -> Decoder {
        self.headers = self.names.iter().enumerate().filter(|(_, n)| headers.iter().any(|(h, _)| h == *n)).map(|(i, _)| i).collect();
        self
    }

    /// The row of record `r` (its value, and its headers for the header columns) and its
    /// event time.
    pub fn decode_record(&self, r: &RecordRef) -> Result<(Vec<Cell>, i64), String> {
        let mut scratch = Scratch::default();
        let ts = self.decode_record_into(r, &mut scratch)?;
        Ok((scratch.cells, ts))
    }

    /// As [`Decoder::decode_record`], the row left in `scratch.cells`.
    pub fn decode_record_into<'de>(&self, r: &RecordRef<'de>, scratch: &mut Scratch<'de>) -> Result<i64, String> {
        let ts = self.decode_into(r.value, scratch)?;
        if self.headers.is_empty() {
            return Ok(ts);
        }
        let headers = r.headers();
        for &i in &self.headers {
            let name = &self.names[i];
            let cell = match headers.iter().rev().find(|(h, _)| h == name) {
                None => Cell::Null,
                Some((_, v)) => {
                    let text = std::str::from_utf8(v).map_err(|_| format!("header {name}: not UTF-8 text"))?;
                    text_cell(text, self.kinds[i])
                        .ok_or_else(|| format!("header {name}: expected {}, got {}", self.types[i], short(&J::from(text))))?
                }
            };
            if let Some(slot) = scratch.cells.get_mut(i) {
                *slot = cell;
            }
        }
        Ok(ts)
    }

    /// The same decoder for CSV lines whose fields are `declared` (the topic's columns, in
    /// order); a column read that is not declared is null.
    pub fn with_csv(mut self, declared: &[(String, String)]) -> Decoder {
        self.csv = Some(self.names.iter().map(|n| declared.iter().position(|(d, _)| d == n)).collect());
        self
    }

    /// The same decoder for events of a registry format, their schemas read by `reader`.
    pub fn with_registry(mut self, reader: Arc<Reader>, format: SchemaType) -> Decoder {
        self.registry = Some((reader, format));
        self
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The row of `value` and its event time (0 when the job reads no event time).
    pub fn decode(&self, value: &[u8]) -> Result<(Vec<Cell>, i64), String> {
        let mut scratch = Scratch::default();
        let ts = self.decode_into(value, &mut scratch)?;
        Ok((scratch.cells, ts))
    }

    /// As [`Decoder::decode`], the row left in `scratch.cells`: a decoder taking event after
    /// event of one buffer reuses the same room for each.
    pub fn decode_into<'de>(&self, value: &'de [u8], scratch: &mut Scratch<'de>) -> Result<i64, String> {
        if let Some(at) = &self.csv {
            return self.decode_csv(at, value, &mut scratch.cells);
        }
        let value = match &self.registry {
            // A JSON Schema message's payload is the JSON object: read as any other.
            Some((_, SchemaType::Json)) => weir_registry::wire::split(value).map_err(|e| e.to_string())?.1,
            Some((reader, _)) => return self.decode_read(reader.read(value)?, &mut scratch.cells),
            None => value,
        };
        let mut de = serde_json::Deserializer::from_slice(value);
        scratch.raw.clear();
        scratch.raw.resize_with(self.names.len(), || None);
        Fields { names: &self.names, out: &mut scratch.raw }.deserialize(&mut de).map_err(|e| format!("not a JSON object: {e}"))?;
        de.end().map_err(|e| format!("not one JSON object: {e}"))?;
        let cells = &mut scratch.cells;
        cells.clear();
        for (i, v) in scratch.raw.iter_mut().enumerate() {
            let cell = match v.take() {
                None | Some(Raw::Null) => Cell::Null,
                Some(v) => cell(&v, self.kinds[i])
                    .ok_or_else(|| format!("{}: expected {}, got {}", self.names[i], self.types[i], short(&v.json())))?,
            };
            cells.push(cell);
        }
        self.event_time(cells)
    }
}

impl Decoder {
    /// A decoded row's event time in milliseconds (0 when the job reads none), or why it has none.
    fn event_time(&self, cells: &[Cell]) -> Result<i64, String> {
        match self.time {
            None => Ok(0),
            Some(t) => match cells[t] {
                Cell::Time(us) => Ok(us.div_euclid(1000)),
                _ => Err(format!("no event time: '{}' is missing or null", self.names[t])),
            },
        }
    }

    /// A CSV line's fields as the row of the columns read; an empty field is null.
    fn decode_csv(&self, at: &[Option<usize>], value: &[u8], cells: &mut Vec<Cell>) -> Result<i64, String> {
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(value.len().max(64)).from_reader(value);
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).map_err(|e| format!("not a CSV line: {e}"))? {
            return Err("an empty line, not a CSV line".into());
        }
        cells.clear();
        for (i, p) in at.iter().enumerate() {
            let field = p.and_then(|p| record.get(p)).unwrap_or_default();
            let cell = match std::str::from_utf8(field) {
                Ok("") => Cell::Null,
                Ok(text) => text_cell(text, self.kinds[i])
                    .ok_or_else(|| format!("{}: expected {}, got '{}'", self.names[i], self.types[i], text))?,
                Err(_) => return Err(format!("{}: not UTF-8 text", self.names[i])),
            };
            cells.push(cell);
        }
        self.event_time(cells)
    }

    /// A decoded message's fields as the row of the columns read, by name; a field the
    /// message lacks is null, as a JSON event's missing field is.
    fn decode_read(&self, read: Read, cells: &mut Vec<Cell>) -> Result<i64, String> {
        cells.clear();
        match read {
            Read::Avro(fields) => {
                for (i, name) in self.names.iter().enumerate() {
                    let v = fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                    let cell = match v.map(unwrap_union) {
                        None | Some(AvroValue::Null) => Cell::Null,
                        Some(v) => avro_cell(v, self.kinds[i]).ok_or_else(|| format!("{name}: expected {}, got {v:?}", self.types[i]))?,
                    };
                    cells.push(cell);
                }
            }
            Read::Json(J::Object(fields)) => {
                for (i, name) in self.names.iter().enumerate() {
                    let cell = match fields.get(name).map(Raw::of) {
                        None | Some(Raw::Null) => Cell::Null,
                        Some(v) => cell(&v, self.kinds[i])
                            .ok_or_else(|| format!("{name}: expected {}, got {}", self.types[i], short(&v.json())))?,
                    };
                    cells.push(cell);
                }
            }
            Read::Json(other) => return Err(format!("not an object: {}", short(&other))),
            Read::Protobuf(m) => {
                for (i, name) in self.names.iter().enumerate() {
                    let cell = match weir_registry::codec::proto_field(&m, name) {
                        None => Cell::Null,
                        Some(v) => proto_cell(&v, self.kinds[i]).ok_or_else(|| format!("{name}: expected {}, got {v:?}", self.types[i]))?,
                    };
                    cells.push(cell);
                }
            }
        }
        self.event_time(cells)
    }
}

/// A CSV field's text read as `kind`, if it is one (times as text or milliseconds since
/// the epoch, as JSON events' are).
fn text_cell(text: &str, kind: Kind) -> Option<Cell> {
    let t = text.trim();
    Some(match kind {
        Kind::Int => Cell::Int(t.parse().ok()?),
        Kind::Float => Cell::Float(t.parse().ok()?),
        Kind::Bool => Cell::Bool(match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => true,
            "false" | "f" | "0" | "no" => false,
            _ => return None,
        }),
        Kind::Text | Kind::Any => Cell::Text(text.to_string()),
        Kind::Timestamp => Cell::Time(parse_timestamp(t).or_else(|| t.parse::<i64>().ok()?.checked_mul(1000))?),
        Kind::Date => Cell::Time(NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()),
    })
}

/// A Protobuf value read as `kind`, if it is one.
fn proto_cell(v: &ProtoValue, kind: Kind) -> Option<Cell> {
    let int = |v: &ProtoValue| match v {
        ProtoValue::I32(n) => Some(i64::from(*n)),
        ProtoValue::I64(n) => Some(*n),
        ProtoValue::U32(n) => Some(i64::from(*n)),
        ProtoValue::U64(n) => i64::try_from(*n).ok(),
        ProtoValue::EnumNumber(n) => Some(i64::from(*n)),
        _ => None,
    };
    Some(match (kind, v) {
        (Kind::Int, v) => Cell::Int(int(v)?),
        (Kind::Float, ProtoValue::F64(f)) => Cell::Float(*f),
        (Kind::Float, ProtoValue::F32(f)) => Cell::Float(f64::from(*f)),
        (Kind::Float, v) => Cell::Float(int(v)? as f64),
        (Kind::Bool, ProtoValue::Bool(b)) => Cell::Bool(*b),
        (Kind::Text, ProtoValue::String(s)) => Cell::Text(s.clone()),
        (Kind::Text, ProtoValue::Bool(b)) => Cell::Text(b.to_string()),
        (Kind::Text, ProtoValue::F64(f)) => Cell::Text(f.to_string()),
        (Kind::Text, v) => Cell::Text(int(v)?.to_string()),
        (Kind::Timestamp | Kind::Date, ProtoValue::Message(m)) => Cell::Time(weir_registry::codec::proto_micros(m)?),
        (Kind::Timestamp, ProtoValue::String(s)) => Cell::Time(parse_timestamp(s)?),
        (Kind::Date, ProtoValue::String(s)) => {
            Cell::Time(NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
        }
        (Kind::Timestamp | Kind::Date, v) => Cell::Time(int(v)?.checked_mul(1000)?),
        (Kind::Any, ProtoValue::Message(m)) => Cell::Text(weir_registry::codec::to_json(Read::Protobuf(m.clone())).to_string()),
        _ => return None,
    })
}

fn unwrap_union(v: &AvroValue) -> &AvroValue {
    match v {
        AvroValue::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// An Avro value read as `kind`, if it is one.
fn avro_cell(v: &AvroValue, kind: Kind) -> Option<Cell> {
    const DAY_US: i64 = 86_400_000_000;
    Some(match (kind, v) {
        (Kind::Int, AvroValue::Int(n)) => Cell::Int(i64::from(*n)),
        (Kind::Int, AvroValue::Long(n)) => Cell::Int(*n),
        (Kind::Float, AvroValue::Int(n)) => Cell::Float(f64::from(*n)),
        (Kind::Float, AvroValue::Long(n)) => Cell::Float(*n as f64),
        (Kind::Float, AvroValue::Float(f)) => Cell::Float(f64::from(*f)),
        (Kind::Float, AvroValue::Double(f)) => Cell::Float(*f),
        (Kind::Text, AvroValue::String(s) | AvroValue::Enum(_, s)) => Cell::Text(s.clone()),
        (Kind::Text, AvroValue::Uuid(u)) => Cell::Text(u.to_string()),
        (Kind::Text, AvroValue::Int(n)) => Cell::Text(n.to_string()),
        (Kind::Text, AvroValue::Long(n)) => Cell::Text(n.to_string()),
        (Kind::Bool, AvroValue::Boolean(b)) => Cell::Bool(*b),
        (Kind::Timestamp | Kind::Date, AvroValue::TimestampMicros(us) | AvroValue::LocalTimestampMicros(us)) => Cell::Time(*us),
        (Kind::Timestamp | Kind::Date, AvroValue::TimestampMillis(ms) | AvroValue::LocalTimestampMillis(ms)) => {
            Cell::Time(ms.checked_mul(1000)?)
        }
        (Kind::Timestamp | Kind::Date, AvroValue::TimestampNanos(ns) | AvroValue::LocalTimestampNanos(ns)) => {
            Cell::Time(ns.div_euclid(1000))
        }
        (Kind::Timestamp | Kind::Date, AvroValue::Date(d)) => Cell::Time(i64::from(*d).checked_mul(DAY_US)?),
        // A plain long as a time is milliseconds since the epoch, as a JSON number is.
        (Kind::Timestamp | Kind::Date, AvroValue::Long(ms)) => Cell::Time(ms.checked_mul(1000)?),
        (Kind::Timestamp | Kind::Date, AvroValue::String(s)) => Cell::Time(parse_timestamp(s)?),
        (Kind::Any, v) => Cell::Text(format!("{v:?}")),
        _ => return None,
    })
}

/// Room a decoder reuses from one event to the next: the fields as parsed (borrowed from the
/// events' buffer, `'de`) and the row.
#[derive(Default)]
pub struct Scratch<'de> {
    raw: Vec<Option<Raw<'de>>>,
    pub cells: Vec<Cell>,
}

/// `v` read as `kind`, if it is one.
fn cell(v: &Raw, kind: Kind) -> Option<Cell> {
    Some(match (kind, v) {
        (Kind::Int, Raw::I64(n)) => Cell::Int(*n),
        (Kind::Int, Raw::U64(n)) => Cell::Int(i64::try_from(*n).ok()?),
        (Kind::Int, Raw::F64(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Cell::Int(*f as i64),
        (Kind::Float, Raw::I64(n)) => Cell::Float(*n as f64),
        (Kind::Float, Raw::U64(n)) => Cell::Float(*n as f64),
        (Kind::Float, Raw::F64(f)) => Cell::Float(*f),
        (Kind::Float, Raw::Str(s)) => Cell::Float(s.trim().parse().ok()?),
        (Kind::Text, Raw::Str(s)) => Cell::Text(s.to_string()),
        (Kind::Text, Raw::I64(_) | Raw::U64(_) | Raw::F64(_) | Raw::Bool(_)) => Cell::Text(v.json().to_string()),
        (Kind::Bool, Raw::Bool(b)) => Cell::Bool(*b),
        (Kind::Timestamp, Raw::Str(s)) => Cell::Time(parse_timestamp(s)?),
        (Kind::Timestamp | Kind::Date, Raw::I64(n)) => Cell::Time(n.checked_mul(1000)?),
        (Kind::Timestamp | Kind::Date, Raw::U64(n)) => Cell::Time(i64::try_from(*n).ok()?.checked_mul(1000)?),
        (Kind::Date, Raw::Str(s)) => {
            Cell::Time(NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
        }
        (Kind::Any, v) => Cell::Text(v.json().to_string()),
        _ => return None,
    })
}

/// A field's value as parsed, its text borrowed from the event where it can be.
enum Raw<'de> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'de, str>),
    /// An object or a list.
    Other(J),
}

impl<'a> Raw<'a> {
    /// A parsed JSON value, its text borrowed.
    fn of(v: &'a J) -> Raw<'a> {
        match v {
            J::Null => Raw::Null,
            J::Bool(b) => Raw::Bool(*b),
            J::Number(n) => {
                n.as_i64().map(Raw::I64).or_else(|| n.as_u64().map(Raw::U64)).unwrap_or(Raw::F64(n.as_f64().unwrap_or(f64::NAN)))
            }
            J::String(s) => Raw::Str(Cow::Borrowed(s)),
            other => Raw::Other(other.clone()),
        }
    }

    fn json(&self) -> J {
        match self {
            Raw::Null => J::Null,
            Raw::Bool(b) => J::Bool(*b),
            Raw::I64(n) => J::from(*n),
            Raw::U64(n) => J::from(*n),
            Raw::F64(f) => J::from(*f),
            Raw::Str(s) => J::String(s.to_string()),
            Raw::Other(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw<'de>, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw<'de>, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Raw<'de>, E> {
                Ok(Raw::I64(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Raw<'de>, E> {
                Ok(Raw::U64(n))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Raw<'de>, E> {
                Ok(Raw::F64(f))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'de>, E> {
                Ok(Raw::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw<'de>, E> {
                Ok(Raw::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Raw<'de>, E> {
                Ok(Raw::Str(Cow::Owned(s)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
                J::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Raw::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Raw<'de>, A::Error> {
                J::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Raw::Other)
            }
        }
        d.deserialize_any(V)
    }
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

/// The named fields of one JSON object, in the order named, into `out` (one place per
/// name); the rest skipped.
struct Fields<'n, 's, 'de> {
    names: &'n [String],
    out: &'s mut Vec<Option<Raw<'de>>>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key_seed(Field { names: self.names })? {
            match field {
                Some(i) => self.out[i] = Some(map.next_value::<Raw<'de>>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A field's name as the place of a column read, or none: matched where it lies in the
/// event, never copied out of it.
struct Field<'n> {
    names: &'n [String],
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.names.iter().position(|n| n == name))
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
        assert!(d.decode(br#"{"at": "2026-13-02 10:00:00"}"#).is_err(), "month 13");
    }

    #[test]
    fn csv_lines_are_read_by_the_declared_order() {
        // Declared in another order than read, with a column the job does not read.
        let declared: Vec<(String, String)> = [("at", "timestamp"), ("skip", "varchar"), ("country", "varchar"), ("id", "bigint")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let d = decoder().with_csv(&declared);
        let (cells, ts) = d.decode(b"2026-12-02T10:00:01.5Z,x,\"Bonn, DE\",7").unwrap();
        assert_eq!(cells, vec![Cell::Int(7), Cell::Null, Cell::Text("Bonn, DE".into()), Cell::Time(1_796_205_601_500_000)]);
        assert_eq!(ts, 1_796_205_601_500);
        let (cells, _) = d.decode(b"1796205601500,,,").unwrap();
        assert_eq!(cells, vec![Cell::Null, Cell::Null, Cell::Null, Cell::Time(1_796_205_601_500_000)], "empty fields are nulls");
        assert_eq!(d.decode(b"2026-12-02 10:00:00,,DE,seven").unwrap_err(), "id: expected bigint, got 'seven'");
        assert!(d.decode(b"").unwrap_err().contains("empty line"));
        assert!(d.decode(b",x,DE,1").unwrap_err().contains("no event time"));
    }
}
