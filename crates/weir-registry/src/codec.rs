//! Topics' messages in the registry's three formats, in Confluent's wire format: rows of
//! columns written under a schema made from the columns (registered, or looked up when
//! registration is off), and messages read with the schema their id names, whoever wrote
//! them. Avro readers and writers are compiled once per schema (names resolved), not per
//! message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use prost::Message as _;
pub use prost_reflect::{DynamicMessage, Value as ProtoValue};
use prost_reflect::{MessageDescriptor, ReflectMessage, SerializeOptions};
use serde_json::{Value as J, json};

use crate::{Error, Parsed, Registered, Registry, SchemaRequest, SchemaType, VersionRef};

/// How a topic's messages name their subject: Confluent's subject name strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectNaming {
    /// `<topic>-value` (and `<topic>-key`): one schema's versions per topic.
    #[default]
    Topic,
    /// The record's full name: one subject per record type, over every topic carrying it.
    Record,
    /// `<topic>-<record full name>`: several record types in one topic.
    TopicRecord,
}

impl SubjectNaming {
    /// Reads `topic`, `record` or `topic_record` (also Confluent's class names' stems).
    pub fn parse(s: &str) -> Option<SubjectNaming> {
        match s.to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "topic" | "topic_name" | "topicnamestrategy" => Some(SubjectNaming::Topic),
            "record" | "record_name" | "recordnamestrategy" => Some(SubjectNaming::Record),
            "topic_record" | "topic_record_name" | "topicrecordnamestrategy" => Some(SubjectNaming::TopicRecord),
            _ => None,
        }
    }

    /// The subject of `topic`'s values (or keys) whose record is named `record` (full name).
    pub fn subject(self, topic: &str, record: &str, key: bool) -> String {
        match self {
            SubjectNaming::Topic => format!("{topic}-{}", if key { "key" } else { "value" }),
            SubjectNaming::Record => record.to_string(),
            SubjectNaming::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

/// The id `text` has under `subject`: registered there (as its version if it already is one,
/// else as the subject's next version if its compatibility level allows it), or, with
/// `register` off, found among its versions.
fn registered(registry: &Registry, subject: &str, format: SchemaType, text: &str, register: bool) -> Result<u32, Error> {
    let req = SchemaRequest { schema: text.to_string(), schema_type: Some(format.name().into()), ..Default::default() };
    let done = if register {
        registry.register(subject, &req)?
    } else {
        registry.lookup(subject, &req, false).map_err(|e| match e {
            Error::SubjectNotFound(_) | Error::SchemaNotFound(_) => {
                Error::NotRegistered { subject: subject.to_string(), schema: text.to_string() }
            }
            e => e,
        })?
    };
    Ok(done.id as u32)
}

/// Writes JSON documents of one shape (a change event's envelope, with its nested records)
/// as Avro messages of a schema given whole, registered under a subject as [`Writer`]'s are.
pub struct DocumentWriter {
    pub id: u32,
    pub subject: String,
    schema: J,
    /// The records the schema defines, by name and by full name.
    named: HashMap<String, J>,
    writer: AvroCompiledWriter,
}

impl DocumentWriter {
    /// The writer of documents of the Avro `schema` into `subject`.
    pub fn open(registry: &Registry, subject: &str, schema: &J, register: bool) -> Result<DocumentWriter, Error> {
        let text = schema.to_string();
        let id = registered(registry, subject, SchemaType::Avro, &text, register)?;
        let parsed = Schema::parse_str(&text).map_err(|e| Error::InvalidSchema(e.to_string()))?;
        let writer = AvroCompiledWriter::try_new((parsed, vec![]), writer_of).map_err(|e| Error::InvalidSchema(e.to_string()))?;
        let mut named = HashMap::new();
        records_of(schema, &mut named);
        Ok(DocumentWriter { id, subject: subject.to_string(), schema: schema.clone(), named, writer })
    }

    /// A message: the wire header and `doc` as a datum of the schema (a missing field is
    /// null; a value that is not of its field's type is refused, with the field's path).
    pub fn write(&self, doc: &J) -> Result<Vec<u8>, String> {
        let value = avro_document(doc, &self.schema, &self.named, "")?;
        let mut out = crate::wire::header(self.id, None);
        out.extend_from_slice(&self.writer.borrow_dependent().write_value_to_vec(value).map_err(|e| e.to_string())?);
        Ok(out)
    }
}

/// Every record an Avro schema (as JSON) defines, by name and by full name.
fn records_of(ty: &J, named: &mut HashMap<String, J>) {
    match ty {
        J::Array(variants) => variants.iter().for_each(|t| records_of(t, named)),
        J::Object(o) if o.get("type").and_then(J::as_str) == Some("record") => {
            let name = o.get("name").and_then(J::as_str).unwrap_or_default();
            named.insert(name.to_string(), ty.clone());
            if let Some(ns) = o.get("namespace").and_then(J::as_str) {
                named.insert(format!("{ns}.{name}"), ty.clone());
            }
            for f in o.get("fields").and_then(J::as_array).map(Vec::as_slice).unwrap_or_default() {
                records_of(f.get("type").unwrap_or(&J::Null), named);
            }
        }
        J::Object(o) => records_of(o.get("type").unwrap_or(&J::Null), named),
        _ => {}
    }
}

/// `v` as a datum of the Avro type `ty` (as JSON: a primitive's name, a union's list, a
/// record's object, or the name of a record defined before), for a [`DocumentWriter`].
fn avro_document(v: &J, ty: &J, named: &HashMap<String, J>, path: &str) -> Result<AvroValue, String> {
    let wrong = || format!("{}: {v} is not a {ty}", if path.is_empty() { "/" } else { path });
    match ty {
        J::String(t) => match t.as_str() {
            "null" => v.is_null().then_some(AvroValue::Null).ok_or_else(wrong),
            "long" => v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()).map(AvroValue::Long).ok_or_else(wrong),
            "double" => v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()).map(AvroValue::Double).ok_or_else(wrong),
            "boolean" => v.as_bool().map(AvroValue::Boolean).ok_or_else(wrong),
            "string" => match v {
                J::String(s) => Ok(AvroValue::String(s.clone())),
                J::Null => Err(wrong()),
                other => Ok(AvroValue::String(other.to_string())),
            },
            name => {
                let record = named.get(name).cloned().ok_or_else(|| format!("{path}: no type named '{name}' before it"))?;
                avro_document(v, &record, named, path)
            }
        },
        J::Array(variants) => {
            if v.is_null() {
                let i = variants.iter().position(|t| t == "null").ok_or_else(wrong)?;
                return Ok(AvroValue::Union(i as u32, Box::new(AvroValue::Null)));
            }
            let mut last = wrong();
            for (i, t) in variants.iter().enumerate().filter(|(_, t)| *t != "null") {
                match avro_document(v, t, named, path) {
                    Ok(x) => return Ok(AvroValue::Union(i as u32, Box::new(x))),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        J::Object(o) if o.get("type").and_then(J::as_str) == Some("record") => {
            let fields = o.get("fields").and_then(J::as_array).map(Vec::as_slice).unwrap_or_default();
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                let fname = f.get("name").and_then(J::as_str).unwrap_or_default();
                let fv = v.get(fname).unwrap_or(&J::Null);
                out.push((fname.to_string(), avro_document(fv, f.get("type").unwrap_or(&J::Null), named, &format!("{path}/{fname}"))?));
            }
            Ok(AvroValue::Record(out))
        }
        J::Object(o) => avro_document(v, o.get("type").unwrap_or(&J::Null), named, path),
        _ => Err(wrong()),
    }
}

/// One column's value in a row to write, typed as its column's SQL type says.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(&'a str),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00 UTC.
    Micros(i64),
}

/// What a column of SQL type `ty` is written as, in every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Bool,
    Date,
    Timestamp,
    Text,
}

impl Kind {
    pub fn of(ty: &str) -> Kind {
        match avro_type(ty) {
            J::String(t) if t == "long" => Kind::Int,
            J::String(t) if t == "double" => Kind::Float,
            J::String(t) if t == "boolean" => Kind::Bool,
            J::Object(o) if o.get("logicalType").and_then(J::as_str) == Some("date") => Kind::Date,
            J::Object(_) => Kind::Timestamp,
            _ => Kind::Text,
        }
    }
}

/// A value as JSON: numbers as numbers, dates as `YYYY-MM-DD`, times as ISO 8601 in UTC.
pub fn json_of(field: &Field) -> J {
    match field {
        Field::Null => J::Null,
        Field::Int(n) => J::from(*n),
        Field::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Field::Bool(b) => J::Bool(*b),
        Field::Text(s) => J::String(s.to_string()),
        Field::Date(d) => J::String(date_text(*d)),
        Field::Micros(us) => J::String(micros_text(*us)),
    }
}

/// A value's text (as a warehouse prints it, or as a CSV field holds it) as a field of a
/// column of kind `kind`; `None` when the text is not one.
pub fn field_of(kind: Kind, text: &str) -> Option<Field<'_>> {
    Some(match kind {
        Kind::Int => Field::Int(text.trim().parse().ok()?),
        Kind::Float => Field::Float(text.trim().parse().ok()?),
        Kind::Bool => Field::Bool(match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => true,
            "false" | "f" | "0" => false,
            _ => return None,
        }),
        Kind::Date => {
            let day = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
            Field::Date((day - chrono::NaiveDate::default()).num_days() as i32)
        }
        Kind::Timestamp => Field::Micros(parse_timestamp(text)?),
        Kind::Text => Field::Text(text),
    })
}

/// Values as one CSV line (quoted where they need it; a null as an empty field): a record of
/// a `format: csv` topic.
pub fn csv_line<'v>(values: impl Iterator<Item = Option<&'v str>>) -> Result<Vec<u8>, String> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(vec![]);
    w.write_record(values.map(|v| v.unwrap_or(""))).map_err(|e| e.to_string())?;
    let mut line = w.into_inner().map_err(|e| e.to_string())?;
    line.pop();
    Ok(line)
}

/// An ISO 8601 / RFC 3339 time (`2026-12-02T10:00:00Z`, `2026-12-02 10:00:00.250`, with or
/// without a zone; without one it is UTC), in microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(us) = iso_utc(s.as_bytes()) {
        return Some(us);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros())
}

/// The shape nearly every event has, `YYYY-MM-DD[T ]HH:MM:SS[.f...][Z]` in UTC, read digit by
/// digit: chrono's general parser costs more than the rest of an event's decoding. Anything
/// else (an offset, a date alone) is left to chrono.
fn iso_utc(b: &[u8]) -> Option<i64> {
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let (h, m, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &b[19..];
    let mut micros = 0u32;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, c) in frac[..n].iter().enumerate().take(6) {
            micros += u32::from(c - b'0') * 10u32.pow(5 - i as u32);
        }
        rest = &frac[n..];
    }
    if !(rest.is_empty() || rest == b"Z") {
        return None;
    }
    let t = date.and_hms_micro_opt(h, m, sec, micros)?;
    Some(t.and_utc().timestamp_micros())
}

/// Writes rows of columns as messages of one schema: the schema of the columns in the
/// topic's format, registered under its subject (or, when registration is off, found there).
pub struct Writer {
    pub id: u32,
    pub subject: String,
    /// The columns' names, as written to JSON and in messages.
    columns: Vec<String>,
    encoder: Encoder,
}

/// A format's writer, with each column's place in the schema found once.
enum Encoder {
    /// The record's field names (the columns' as Avro takes them).
    Avro(Box<AvroCompiledWriter>, Vec<String>),
    Json,
    /// The message and each column's field.
    Protobuf {
        indexes: Vec<i32>,
        message: MessageDescriptor,
        fields: Vec<Option<prost_reflect::FieldDescriptor>>,
    },
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("id", &self.id).field("subject", &self.subject).finish()
    }
}

/// Where a writer's schema comes from and goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub format: SchemaType,
    pub naming: SubjectNaming,
    pub topic: &'a str,
    /// The record's simple name (its namespace or package is `weir`).
    pub record: &'a str,
    /// Keys rather than values.
    pub key: bool,
    /// Registers the schema when the subject lacks it; otherwise it must be registered.
    pub register: bool,
}

impl Writer {
    /// The writer of rows of `columns` (name, SQL type) into `target`'s subject: the schema
    /// is registered there (as its version if it already is one, else as its next version if
    /// the subject's compatibility level allows it), or, without registration, must already
    /// be one of the subject's versions.
    pub fn open(registry: &Registry, target: &Target, columns: &[(String, String)]) -> Result<Writer, Error> {
        let name = avro_name(target.record);
        let full = format!("weir.{name}");
        let subject = target.naming.subject(target.topic, &full, target.key);
        let text = match target.format {
            SchemaType::Avro => record_schema(target.record, columns).to_string(),
            SchemaType::Json => json_schema(&full, columns).to_string(),
            SchemaType::Protobuf => {
                let latest = registry.version(&subject, VersionRef::Latest, false).ok();
                proto_schema(&name, columns, latest.as_ref())
            }
        };
        let id = registered(registry, &subject, target.format, &text, target.register)?;
        let encoder = match Parsed::parse(target.format, &text, &[]).map_err(|e| Error::InvalidSchema(e.message))?.0 {
            Parsed::Avro(_) => {
                let schema = Schema::parse_str(&text).map_err(|e| Error::InvalidSchema(e.to_string()))?;
                let writer = AvroCompiledWriter::try_new((schema, vec![]), writer_of).map_err(|e| Error::InvalidSchema(e.to_string()))?;
                Encoder::Avro(Box::new(writer), columns.iter().map(|(n, _)| avro_name(n)).collect())
            }
            Parsed::Json(_) => Encoder::Json,
            Parsed::Protobuf(p) => {
                let message = p.file.messages().next().ok_or_else(|| Error::InvalidSchema("no message".into()))?;
                let fields = columns.iter().map(|(n, _)| message.get_field_by_name(&proto_name(n))).collect();
                Encoder::Protobuf { indexes: vec![0], message, fields }
            }
        };
        let columns = columns.iter().map(|(n, _)| n.clone()).collect();
        Ok(Writer { id, subject, columns, encoder })
    }

    /// A message: the wire header and the row of `fields`, one per column, in the order of
    /// the columns the writer was opened with.
    pub fn write(&self, fields: &[Field]) -> Result<Vec<u8>, String> {
        match &self.encoder {
            Encoder::Avro(w, names) => {
                let mut out = crate::wire::header(self.id, None);
                let record = names
                    .iter()
                    .zip(fields)
                    .map(|(n, f)| {
                        let v = match f {
                            Field::Null => AvroValue::Union(0, Box::new(AvroValue::Null)),
                            f => AvroValue::Union(1, Box::new(avro_of(f))),
                        };
                        (n.clone(), v)
                    })
                    .collect();
                let datum = w.borrow_dependent().write_value_to_vec(AvroValue::Record(record)).map_err(|e| e.to_string())?;
                out.extend_from_slice(&datum);
                Ok(out)
            }
            Encoder::Json => {
                let mut out = crate::wire::header(self.id, None);
                let object: serde_json::Map<String, J> = self.columns.iter().zip(fields).map(|(n, f)| (n.clone(), json_of(f))).collect();
                serde_json::to_writer(&mut out, &object).map_err(|e| e.to_string())?;
                Ok(out)
            }
            Encoder::Protobuf { indexes, message, fields: columns } => {
                let mut out = crate::wire::header(self.id, Some(indexes));
                let mut m = DynamicMessage::new(message.clone());
                for ((n, field), f) in self.columns.iter().zip(columns).zip(fields) {
                    let Some(field) = field else { continue };
                    let value = match f {
                        Field::Null => continue,
                        Field::Int(v) => ProtoValue::I64(*v),
                        Field::Float(v) => ProtoValue::F64(*v),
                        Field::Bool(v) => ProtoValue::Bool(*v),
                        Field::Text(v) => ProtoValue::String(v.to_string()),
                        Field::Date(d) => ProtoValue::String(date_text(*d)),
                        Field::Micros(us) => {
                            let prost_reflect::Kind::Message(ts) = field.kind() else { return Err(format!("{n}: not a Timestamp field")) };
                            let mut t = DynamicMessage::new(ts);
                            t.try_set_field_by_name("seconds", ProtoValue::I64(us.div_euclid(1_000_000))).map_err(|e| e.to_string())?;
                            t.try_set_field_by_name("nanos", ProtoValue::I32((us.rem_euclid(1_000_000) * 1000) as i32))
                                .map_err(|e| e.to_string())?;
                            ProtoValue::Message(t)
                        }
                    };
                    m.try_set_field(field, value).map_err(|e| format!("{n}: {e}"))?;
                }
                m.encode(&mut out).map_err(|e| e.to_string())?;
                Ok(out)
            }
        }
    }
}

/// A message read: an Avro record's fields by name, a JSON Schema message's object, or a
/// Protobuf message (its fields read by name without going through JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Avro(Vec<(String, AvroValue)>),
    Json(J),
    Protobuf(DynamicMessage),
}

/// A message read, as JSON: an Avro record's unions unwrapped, its dates and times as text
/// (as [`json_of`] writes them), bytes as arrays of numbers.
pub fn to_json(read: Read) -> J {
    fn avro(v: AvroValue) -> J {
        match v {
            AvroValue::Union(_, inner) => avro(*inner),
            AvroValue::Record(fields) => J::Object(fields.into_iter().map(|(k, v)| (k, avro(v))).collect()),
            AvroValue::Array(items) => J::Array(items.into_iter().map(avro).collect()),
            AvroValue::Map(m) => J::Object(m.into_iter().map(|(k, v)| (k, avro(v))).collect()),
            AvroValue::Date(d) => J::String(date_text(d)),
            AvroValue::TimestampMicros(us) | AvroValue::LocalTimestampMicros(us) => J::String(micros_text(us)),
            AvroValue::TimestampMillis(ms) | AvroValue::LocalTimestampMillis(ms) => J::String(micros_text(ms.saturating_mul(1000))),
            AvroValue::Uuid(u) => J::String(u.to_string()),
            other => J::try_from(other).unwrap_or(J::Null),
        }
    }
    match read {
        Read::Avro(fields) => avro(AvroValue::Record(fields)),
        Read::Json(j) => j,
        Read::Protobuf(m) => {
            let options = SerializeOptions::new().stringify_64_bit_integers(false).use_proto_field_name(true);
            let mut json = m.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or(J::Null);
            // A scalar without presence that holds its default is left out on the wire and
            // in JSON: it is that default, not missing (an `optional` one is).
            if let J::Object(fields) = &mut json {
                for f in m.descriptor().fields().filter(|f| !f.supports_presence() && !f.is_list() && !f.is_map()) {
                    let default = match f.kind() {
                        prost_reflect::Kind::Bool => J::Bool(false),
                        prost_reflect::Kind::String | prost_reflect::Kind::Bytes => J::String(String::new()),
                        prost_reflect::Kind::Message(_) => continue,
                        prost_reflect::Kind::Enum(e) => e.default_value().name().into(),
                        prost_reflect::Kind::Double | prost_reflect::Kind::Float => json!(0.0),
                        _ => json!(0),
                    };
                    fields.entry(f.name().to_string()).or_insert(default);
                }
            }
            json
        }
    }
}

/// A Protobuf field as its value, `None` when the message lacks it: an unset field with
/// presence (`optional`, a message), or no field of that name. A field without presence
/// has its default when unset, as the wire format means.
pub fn proto_field(m: &DynamicMessage, name: &str) -> Option<ProtoValue> {
    let f = m.descriptor().get_field_by_name(name)?;
    if f.supports_presence() && !m.has_field(&f) {
        return None;
    }
    Some(m.get_field(&f).into_owned())
}

/// Microseconds since the epoch of a `google.protobuf.Timestamp`, if `m` is one.
pub fn proto_micros(m: &DynamicMessage) -> Option<i64> {
    if m.descriptor().full_name() != "google.protobuf.Timestamp" {
        return None;
    }
    let seconds = m.get_field_by_name("seconds")?.as_i64()?;
    let nanos = m.get_field_by_name("nanos")?.as_i32()?;
    seconds.checked_mul(1_000_000)?.checked_add(i64::from(nanos) / 1000)
}

/// Reads messages of any of the formats, each with the schema its id names (compiled once
/// per id: an id's schema never changes).
pub struct Reader {
    registry: Registry,
    compiled: RwLock<HashMap<u32, Arc<Compiled>>>,
}

enum Compiled {
    Avro(Box<AvroCompiledReader>),
    Json,
    Protobuf(prost_reflect::FileDescriptor),
}

impl Reader {
    pub fn new(registry: Registry) -> Reader {
        Reader { registry, compiled: RwLock::new(HashMap::new()) }
    }

    /// The message `bytes` decoded with its schema.
    pub fn read(&self, bytes: &[u8]) -> Result<Read, String> {
        let (id, payload) = crate::wire::split(bytes).map_err(|e| e.to_string())?;
        match self.compiled(id)?.as_ref() {
            Compiled::Avro(r) => {
                let mut rest = payload;
                let value = r.borrow_dependent().read_value(&mut rest).map_err(|e| format!("not Avro of schema {id}: {e}"))?;
                if !rest.is_empty() {
                    return Err(format!("{} bytes left over after the record of schema {id}", rest.len()));
                }
                match value {
                    AvroValue::Record(fields) => Ok(Read::Avro(fields)),
                    other => Err(format!("schema {id} is not a record but {:?}", apache_avro::schema::SchemaKind::from(&other))),
                }
            }
            Compiled::Json => serde_json::from_slice(payload).map(Read::Json).map_err(|e| format!("not JSON (schema {id}): {e}")),
            Compiled::Protobuf(file) => {
                let (indexes, payload) = crate::wire::split_indexes(payload).map_err(|e| e.to_string())?;
                let message = message_at(file, &indexes).ok_or_else(|| format!("schema {id} has no message at indexes {indexes:?}"))?;
                DynamicMessage::decode(message, payload).map(Read::Protobuf).map_err(|e| format!("not Protobuf of schema {id}: {e}"))
            }
        }
    }

    fn compiled(&self, id: u32) -> Result<Arc<Compiled>, String> {
        if let Some(c) = self.compiled.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(c);
        }
        let found = self.registry.schema(i64::from(id), None).map_err(|e| format!("schema {id}: {e}"))?;
        let references = self.registry.references_of(&found).map_err(|e| format!("schema {id}: {e}"))?;
        let compiled = match found.schema_type {
            SchemaType::Avro => {
                let texts: Vec<&str> = references.iter().map(|(_, t)| t.as_str()).collect();
                let (main, refs) = Schema::parse_str_with_list(&found.schema, texts).map_err(|e| format!("schema {id}: {e}"))?;
                Compiled::Avro(Box::new(AvroCompiledReader::try_new((main, refs), reader_of).map_err(|e| format!("schema {id}: {e}"))?))
            }
            SchemaType::Json => Compiled::Json,
            SchemaType::Protobuf => match Parsed::parse(SchemaType::Protobuf, &found.schema, &references) {
                Ok((Parsed::Protobuf(p), _)) => Compiled::Protobuf(p.file),
                Ok(_) => return Err(format!("schema {id} is not Protobuf")),
                Err(e) => return Err(format!("schema {id}: {}", e.message)),
            },
        };
        let compiled = Arc::new(compiled);
        if let Ok(mut m) = self.compiled.write() {
            m.insert(id, compiled.clone());
        }
        Ok(compiled)
    }
}

/// The Avro record for columns of SQL types: every field nullable with a null default, so
/// that adding or dropping a column stays compatible both ways; times as `timestamp-micros`
/// and `date`; numbers as `long` and `double`; the rest as strings.
pub fn record_schema(record: &str, columns: &[(String, String)]) -> J {
    let fields: Vec<J> =
        columns.iter().map(|(name, ty)| json!({"name": avro_name(name), "type": ["null", avro_type(ty)], "default": null})).collect();
    json!({"type": "record", "name": avro_name(record), "namespace": "weir", "fields": fields})
}

/// The Avro type a column of SQL type `ty` is written as.
pub fn avro_type(ty: &str) -> J {
    let t = ty.trim().to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    match base {
        "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT" | "HUGEINT" | "UTINYINT" | "USMALLINT" | "UINTEGER" | "UBIGINT" | "INT2"
        | "INT4" | "INT8" => json!("long"),
        "DOUBLE" | "FLOAT" | "REAL" | "DECIMAL" | "NUMERIC" | "FLOAT4" | "FLOAT8" | "DOUBLE PRECISION" => json!("double"),
        "BOOLEAN" | "BOOL" => json!("boolean"),
        "DATE" => json!({"type": "int", "logicalType": "date"}),
        b if b.starts_with("TIMESTAMP") || b == "DATETIME" => json!({"type": "long", "logicalType": "timestamp-micros"}),
        _ => json!("string"),
    }
}

/// A name Avro takes: `[A-Za-z_][A-Za-z0-9_]*`, other characters as `_`.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

type DatumReader<'s> = GenericDatumReader<'s>;
type DatumWriter<'s> = GenericDatumWriter<'s>;

self_cell::self_cell!(
    /// An Avro schema (with the schemas it references) and its reader, names resolved once.
    struct AvroCompiledReader {
        owner: (Schema, Vec<Schema>),
        #[covariant]
        dependent: DatumReader,
    }
);

self_cell::self_cell!(
    /// An Avro schema and its writer, names resolved once.
    struct AvroCompiledWriter {
        owner: (Schema, Vec<Schema>),
        #[covariant]
        dependent: DatumWriter,
    }
);

/// The names of `main` and the schemas it references, resolved (those first: a schema's
/// names are resolved against the ones before it).
fn resolved((main, refs): &(Schema, Vec<Schema>)) -> apache_avro::AvroResult<ResolvedSchema<'_>> {
    ResolvedSchema::new_with_schemata(refs.iter().chain(std::iter::once(main)).collect())
}

fn reader_of(schemas: &(Schema, Vec<Schema>)) -> apache_avro::AvroResult<DatumReader<'_>> {
    GenericDatumReader::builder(&schemas.0).resolved_writer_schemata(resolved(schemas)?).build()
}

fn writer_of(schemas: &(Schema, Vec<Schema>)) -> apache_avro::AvroResult<DatumWriter<'_>> {
    GenericDatumWriter::builder(&schemas.0).resolved_schemata(resolved(schemas)?).build()
}

fn avro_of(f: &Field) -> AvroValue {
    match f {
        Field::Null => AvroValue::Null,
        Field::Int(v) => AvroValue::Long(*v),
        Field::Float(v) => AvroValue::Double(*v),
        Field::Bool(v) => AvroValue::Boolean(*v),
        Field::Text(v) => AvroValue::String(v.to_string()),
        Field::Date(d) => AvroValue::Date(*d),
        Field::Micros(us) => AvroValue::TimestampMicros(*us),
    }
}

/// The JSON Schema of a record of columns: a closed object (so adding a column is a
/// backward-compatible change under Confluent's rules) whose properties may all be null.
pub fn json_schema(title: &str, columns: &[(String, String)]) -> J {
    let properties: serde_json::Map<String, J> = columns
        .iter()
        .map(|(name, ty)| {
            let p = match Kind::of(ty) {
                Kind::Int => json!({"type": ["null", "integer"]}),
                Kind::Float => json!({"type": ["null", "number"]}),
                Kind::Bool => json!({"type": ["null", "boolean"]}),
                Kind::Date => json!({"type": ["null", "string"], "format": "date"}),
                Kind::Timestamp => json!({"type": ["null", "string"], "format": "date-time"}),
                Kind::Text => json!({"type": ["null", "string"]}),
            };
            (name.clone(), p)
        })
        .collect();
    json!({"$schema": "http://json-schema.org/draft-07/schema#", "title": title, "type": "object",
           "properties": properties, "additionalProperties": false})
}

/// The `.proto` of a record of columns: proto3 `optional` fields (so a null is told from a
/// zero), times as `google.protobuf.Timestamp`, dates as text. A column keeps the field
/// number `previous` (the subject's latest version) gave it; new columns take numbers past
/// every number it used, so no number changes meaning.
pub fn proto_schema(message: &str, columns: &[(String, String)], previous: Option<&Registered>) -> String {
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let mut next = 1;
    if let Some(prev) = previous
        && let Ok((Parsed::Protobuf(p), _)) = Parsed::parse(SchemaType::Protobuf, &prev.schema, &[])
        && let Some(m) = p.file.messages().find(|m| m.name() == message)
    {
        for f in m.fields() {
            numbers.insert(f.name().to_string(), f.number());
            next = next.max(f.number() + 1);
        }
        for r in m.reserved_ranges() {
            next = next.max(r.end);
        }
    }
    let mut fields = vec![];
    let mut timestamps = false;
    for (name, ty) in columns {
        let name = proto_name(name);
        let number = *numbers.entry(name.clone()).or_insert_with(|| {
            next += 1;
            next - 1
        });
        let (label, ty) = match Kind::of(ty) {
            Kind::Int => ("optional ", "int64"),
            Kind::Float => ("optional ", "double"),
            Kind::Bool => ("optional ", "bool"),
            Kind::Timestamp => {
                timestamps = true;
                ("", "google.protobuf.Timestamp")
            }
            Kind::Date | Kind::Text => ("optional ", "string"),
        };
        fields.push(format!("  {label}{ty} {name} = {number};\n"));
    }
    let import = if timestamps { "import \"google/protobuf/timestamp.proto\";\n\n" } else { "" };
    format!("syntax = \"proto3\";\n\npackage weir;\n\n{import}message {message} {{\n{}}}\n", fields.concat())
}

/// A field name Protobuf takes (as Avro's: letters, digits and `_`).
fn proto_name(name: &str) -> String {
    avro_name(name)
}

/// The message at `indexes` (Confluent's path through the file's messages).
fn message_at(file: &prost_reflect::FileDescriptor, indexes: &[i32]) -> Option<MessageDescriptor> {
    let (first, rest) = indexes.split_first()?;
    let mut m = file.messages().nth(usize::try_from(*first).ok()?)?;
    for i in rest {
        let child = m.child_messages().nth(usize::try_from(*i).ok()?)?;
        m = child;
    }
    Some(m)
}

fn date_text(days: i32) -> String {
    chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163).map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn micros_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(|| us.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(Arc::new(weir_store::Store::sqlite(&dir.path().join("w.db")).unwrap()));
        (dir, registry)
    }

    fn columns(cs: &[(&str, &str)]) -> Vec<(String, String)> {
        cs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    }

    fn target(format: SchemaType) -> Target<'static> {
        Target { format, naming: SubjectNaming::Topic, topic: "counts", record: "counts", key: false, register: true }
    }

    const COLUMNS: &[(&str, &str)] =
        &[("k", "VARCHAR"), ("window start", "TIMESTAMP"), ("n", "BIGINT"), ("avg", "DOUBLE"), ("ok", "BOOLEAN"), ("day", "DATE")];

    fn row() -> Vec<Field<'static>> {
        vec![Field::Text("a"), Field::Micros(1_500_000), Field::Null, Field::Float(2.5), Field::Bool(true), Field::Date(1)]
    }

    #[test]
    fn the_fast_path_reads_times_as_chrono_does() {
        for t in ["2026-12-02 10:00:00", "2026-12-02T10:00:00.5Z", "2026-12-02 10:00:00.123456789", "1969-12-31T23:59:59.999Z"] {
            let fast = iso_utc(t.as_bytes()).unwrap();
            let slow = chrono::NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
                .unwrap()
                .and_utc()
                .timestamp_micros();
            assert_eq!(fast, slow, "{t}");
        }
        assert_eq!(iso_utc(b"2026-12-02T10:00:00+01:00"), None, "offsets go to chrono");
        assert_eq!(parse_timestamp("2026-12-02T10:00:00+01:00"), parse_timestamp("2026-12-02 09:00:00"));
        assert_eq!(iso_utc(b"2026-12-02 10:00:00."), None);
    }

    #[test]
    fn documents_with_nested_records_round_trip_and_misfits_name_their_field() {
        let (_dir, registry) = registry();
        let value = json!({"type": "record", "name": "Value", "fields": [
            {"name": "id", "type": ["null", "long"], "default": null}, {"name": "note", "type": ["null", "string"], "default": null}]});
        let schema = json!({"type": "record", "name": "Envelope", "namespace": "shop.public.orders", "fields": [
            {"name": "before", "type": ["null", value], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null}]});
        let w = DocumentWriter::open(&registry, "shop.public.orders-value", &schema, true).unwrap();
        let doc = json!({"before": null, "after": {"id": 7, "note": "x"}, "op": "c", "ts_ms": 5});
        let read = Reader::new(registry.clone()).read(&w.write(&doc).unwrap()).unwrap();
        assert_eq!(to_json(read), doc);
        let e = w.write(&json!({"after": {"id": "seven"}, "op": "u"})).unwrap_err();
        assert!(e.starts_with("/after/id: \"seven\" is not a"), "{e}");
        let off = DocumentWriter::open(&registry, "other-value", &schema, false).err().unwrap();
        assert!(matches!(off, Error::NotRegistered { .. }), "{off}");
    }

    #[test]
    fn rows_round_trip_in_every_format() {
        let (_dir, registry) = registry();
        let cols = columns(COLUMNS);
        let reader = Reader::new(registry.clone());
        let expected =
            json!({"k": "a", "window start": "1970-01-01T00:00:01.500Z", "n": null, "avg": 2.5, "ok": true, "day": "1970-01-02"});
        for format in [SchemaType::Avro, SchemaType::Json, SchemaType::Protobuf] {
            let topic = format!("counts_{}", format.name().to_lowercase());
            let t = Target { topic: &topic, ..target(format) };
            let w = Writer::open(&registry, &t, &cols).unwrap();
            assert_eq!(w.subject, format!("{topic}-value"));
            let bytes = w.write(&row()).unwrap();
            assert_eq!(&bytes[..5], &[0, 0, 0, 0, w.id as u8][..], "{format:?}");
            match (format, reader.read(&bytes).unwrap()) {
                (SchemaType::Avro, Read::Avro(fields)) => {
                    let got: Vec<(&str, AvroValue)> = fields.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
                    let some = |v| AvroValue::Union(1, Box::new(v));
                    assert_eq!(
                        got,
                        vec![
                            ("k", some(AvroValue::String("a".into()))),
                            ("window_start", some(AvroValue::TimestampMicros(1_500_000))),
                            ("n", AvroValue::Union(0, Box::new(AvroValue::Null))),
                            ("avg", some(AvroValue::Double(2.5))),
                            ("ok", some(AvroValue::Boolean(true))),
                            ("day", some(AvroValue::Date(1))),
                        ]
                    );
                }
                (SchemaType::Json, Read::Json(j)) => assert_eq!(j, expected),
                (SchemaType::Protobuf, m @ Read::Protobuf(_)) => {
                    // Field names as Protobuf takes them; an unset optional field is absent.
                    let Read::Protobuf(msg) = &m else { unreachable!() };
                    assert_eq!(proto_field(msg, "n"), None);
                    let at = proto_field(msg, "window_start");
                    assert_eq!(at.as_ref().and_then(|v| v.as_message()).and_then(proto_micros), Some(1_500_000));
                    assert_eq!(
                        to_json(m),
                        json!({"k": "a", "window_start": "1970-01-01T00:00:01.500Z", "avg": 2.5, "ok": true, "day": "1970-01-02"})
                    );
                }
                (f, other) => panic!("{f:?} read as {other:?}"),
            }
            assert_eq!(Writer::open(&registry, &t, &cols).unwrap().id, w.id, "registered once");
        }
        let e = reader.read(&[0, 0, 0, 0, 9, 1]).unwrap_err();
        assert!(e.contains("schema 9"), "{e}");
    }

    #[test]
    fn without_registration_the_schema_must_be_registered() {
        let (_dir, registry) = registry();
        let cols = columns(&[("k", "VARCHAR")]);
        let off = Target { register: false, ..target(SchemaType::Avro) };
        let e = Writer::open(&registry, &off, &cols).unwrap_err();
        assert!(matches!(e, Error::NotRegistered { ref subject, .. } if subject == "counts-value"), "{e}");
        assert!(e.to_string().contains("auto-registration is off"), "{e}");
        let on = Writer::open(&registry, &target(SchemaType::Avro), &cols).unwrap();
        assert_eq!(Writer::open(&registry, &off, &cols).unwrap().id, on.id);
        // Another schema under the subject is not this one.
        let e = Writer::open(&registry, &off, &columns(&[("k", "BIGINT")])).unwrap_err();
        assert!(matches!(e, Error::NotRegistered { .. }), "{e}");
        // With registration on, a column whose type changed is refused by the subject's
        // level, naming the field.
        registry.set_compatibility(Some("counts-value"), "FULL").unwrap();
        let e = Writer::open(&registry, &target(SchemaType::Avro), &columns(&[("k", "BIGINT")])).unwrap_err();
        assert!(matches!(e, Error::Incompatible { .. }) && e.to_string().contains("/fields/k"), "{e}");
    }

    #[test]
    fn subjects_follow_the_naming_strategy() {
        let (_dir, registry) = registry();
        let cols = columns(&[("k", "VARCHAR")]);
        for (naming, key, subject) in [
            (SubjectNaming::Topic, true, "counts-key"),
            (SubjectNaming::Record, false, "weir.counts"),
            (SubjectNaming::TopicRecord, false, "counts-weir.counts"),
        ] {
            let t = Target { naming, key, ..target(SchemaType::Avro) };
            let w = Writer::open(&registry, &t, &cols).unwrap();
            assert_eq!(w.subject, subject);
            // A reader asking under its own strategy's subject finds the id all the same.
            assert_eq!(registry.schema(i64::from(w.id), Some("counts-value")).unwrap().id, i64::from(w.id));
        }
        assert_eq!(SubjectNaming::parse("TopicRecordNameStrategy"), Some(SubjectNaming::TopicRecord));
        assert_eq!(SubjectNaming::parse("record"), Some(SubjectNaming::Record));
        assert_eq!(SubjectNaming::parse("other"), None);
    }

    #[test]
    fn protobuf_columns_keep_their_field_numbers() {
        let (_dir, registry) = registry();
        registry.set_compatibility(None, "FULL_TRANSITIVE").unwrap();
        let t = target(SchemaType::Protobuf);
        Writer::open(&registry, &t, &columns(&[("a", "BIGINT"), ("b", "VARCHAR")])).unwrap();
        // A column added in the middle, then one dropped: no number changes meaning.
        Writer::open(&registry, &t, &columns(&[("a", "BIGINT"), ("c", "DOUBLE"), ("b", "VARCHAR")])).unwrap();
        Writer::open(&registry, &t, &columns(&[("c", "DOUBLE"), ("b", "VARCHAR")])).unwrap();
        let latest = registry.version("counts-value", VersionRef::Latest, false).unwrap();
        assert!(latest.schema.contains("optional double c = 3;") && latest.schema.contains("optional string b = 2;"), "{}", latest.schema);
        let w = Writer::open(&registry, &t, &columns(&[("c", "DOUBLE"), ("b", "VARCHAR"), ("d", "BIGINT")])).unwrap();
        let latest = registry.version("counts-value", VersionRef::Latest, false).unwrap();
        assert!(latest.schema.contains("optional int64 d = 4;"), "a dropped column's number is not given again: {}", latest.schema);
        let bytes = w.write(&[Field::Float(1.0), Field::Text("x"), Field::Int(7)]).unwrap();
        assert_eq!(to_json(Reader::new(registry).read(&bytes).unwrap()), json!({"b": "x", "c": 1.0, "d": 7}));
    }

    #[test]
    fn implicit_protobuf_defaults_and_avro_times_read_as_json() {
        let (_dir, registry) = registry();
        let proto = "syntax = \"proto3\";\npackage shop;\nmessage Order { int64 id = 1; string item = 2; optional int64 n = 3; }\n";
        let req = SchemaRequest { schema: proto.into(), schema_type: Some("PROTOBUF".into()), ..Default::default() };
        let id = registry.register("o-value", &req).unwrap().id as u32;
        // An empty payload: every field at its default.
        let bytes = crate::wire::header(id, Some(&[0]));
        let got = Reader::new(registry.clone()).read(&bytes).unwrap();
        let Read::Protobuf(m) = &got else { panic!("{got:?}") };
        assert_eq!((proto_field(m, "id"), proto_field(m, "n")), (Some(ProtoValue::I64(0)), None));
        assert_eq!(to_json(got), json!({"id": 0, "item": ""}), "zeros are zeros, an unset optional is absent");
        let avro = Read::Avro(vec![
            ("at".into(), AvroValue::Union(1, Box::new(AvroValue::TimestampMillis(1_500)))),
            ("day".into(), AvroValue::Date(365)),
            ("n".into(), AvroValue::Union(0, Box::new(AvroValue::Null))),
        ]);
        assert_eq!(to_json(avro), json!({"at": "1970-01-01T00:00:01.500Z", "day": "1971-01-01", "n": null}));
    }

    #[test]
    fn avro_records_with_references_are_read() {
        let (_dir, registry) = registry();
        let inner = r#"{"type": "record", "name": "Inner", "namespace": "shop", "fields": [{"name": "x", "type": "long"}]}"#;
        registry.register("inner", &SchemaRequest { schema: inner.into(), ..Default::default() }).unwrap();
        let outer = r#"{"type": "record", "name": "Outer", "namespace": "shop", "fields": [{"name": "i", "type": "shop.Inner"}]}"#;
        let req = SchemaRequest {
            schema: outer.into(),
            references: vec![crate::Reference { name: "shop.Inner".into(), subject: "inner".into(), version: 1 }],
            ..Default::default()
        };
        let id = registry.register("outer", &req).unwrap().id as u32;
        let mut bytes = crate::wire::header(id, None);
        bytes.push(14); // x = 7, zig-zag
        let got = Reader::new(registry).read(&bytes).unwrap();
        let inner = AvroValue::Record(vec![("x".into(), AvroValue::Long(7))]);
        assert_eq!(got, Read::Avro(vec![("i".into(), inner)]));
    }
}
