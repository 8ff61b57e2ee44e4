//! Loads into topics (`to: topic`): the extracted rows become events of a topic, in the
//! topic's format (JSON, CSV, or a schema registry's Avro, JSON Schema or Protobuf), published
//! in one atomic commit of its event log (one Kafka transaction on Kafka). The commit also
//! moves the load's consumer group (`weir-load.<name>`) to a mark naming the run, so that a
//! run a crash broke off is known afterwards to have published or not: its high-water mark
//! and files advance exactly when its events were published.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value as J};
use weir_graph::streams::{Format, Topic};
use weir_log::{Commit, Log, Output, Record, TopicSpec};
use weir_registry::Registry;
use weir_registry::codec::{Field, Kind, Target, Writer, csv_line, field_of, json_of};
use weir_warehouse::RecordBatch;
use weir_warehouse::arrow::array::{Array, ArrayRef};
use weir_warehouse::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::ConnectError;
use crate::files::Rejected;

/// Where a load with `to: topic` publishes: the topic's event log and declaration, and the
/// schema registry its registry formats are written through.
pub struct TopicOut {
    pub log: Arc<dyn Log>,
    /// As `streams/*.yml` declares it; `None` for a topic made on first use (JSON, one
    /// partition).
    pub declared: Option<Topic>,
    pub name: String,
    pub registry: Option<Registry>,
    /// Whether a schema is registered when the subject has none that fits.
    pub auto_register: bool,
}

impl std::fmt::Debug for TopicOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicOut").field("name", &self.name).field("format", &self.format().name()).finish()
    }
}

impl TopicOut {
    /// The topic `name` of the project in `root`, on the event log `streams/*.yml` puts it on.
    pub fn in_project(root: &Path, name: &str) -> Result<TopicOut, ConnectError> {
        let declared = weir_graph::streams::read_topics(root)?;
        let logs = weir_graph::logs::project_logs(root, &declared)?;
        let log = logs.for_topic(name).map_err(|e| ConnectError::Topic { topic: name.to_string(), message: e.to_string() })?;
        let declared = declared.into_iter().find(|t| t.name == name);
        Ok(TopicOut { log, declared, name: name.to_string(), registry: None, auto_register: false })
    }

    /// Writes the topic's registry formats through `registry`, registering schemas when
    /// `auto_register` (the topic's own `auto_register` comes first).
    pub fn with_registry(mut self, registry: Registry, auto_register: bool) -> TopicOut {
        self.registry = Some(registry);
        self.auto_register = auto_register;
        self
    }

    pub fn format(&self) -> Format {
        self.declared.as_ref().map_or(Format::Json, |t| t.format)
    }

    /// What the load's store records are kept under: the topic, so that two loads into it
    /// keep apart from tables.
    pub fn destination(&self) -> String {
        format!("topic:{}", self.name)
    }
}

/// The consumer group whose committed position carries a load's mark.
pub(crate) fn group(load: &str) -> String {
    format!("weir-load.{load}")
}

/// The position, under no topic, that a load's commit moves to its run's [`mark`].
const MARK: &str = "weir.load";

/// A run's mark: the first 64 bits of its id.
fn mark(load_id: &str) -> u64 {
    let hex: String = load_id.chars().filter(char::is_ascii_hexdigit).take(16).collect();
    u64::from_str_radix(&hex, 16).unwrap_or(0)
}

/// The mark of the run of `load` that published last, if one did; a crash may have broken a
/// run off before or after its commit. What a broken-off commit left is settled first (a
/// Kafka transaction aborted, the embedded log's journal applied).
pub(crate) fn last_mark(out: &TopicOut, load: &str) -> Result<Option<u64>, ConnectError> {
    let err = |e: weir_log::LogError| ConnectError::Topic { topic: out.name.clone(), message: e.to_string() };
    out.log.claim(&group(load)).map_err(err)?;
    let positions = out.log.positions(&group(load)).map_err(err)?;
    Ok(positions.get(&(MARK.to_string(), 0)).copied())
}

/// Whether `last` ([`last_mark`]) is the mark of the run `load_id`.
pub(crate) fn is_mark_of(last: Option<u64>, load_id: &str) -> bool {
    last == Some(mark(load_id))
}

/// A load's rows as the topic's records: each row's values typed by its column's SQL type
/// (the topic's declared columns, else the source's), keyed by the key columns.
pub(crate) struct Encoder {
    /// The columns written: name, SQL type, kind, and whether the warehouse gives the value
    /// as JSON text (a struct, list or map).
    columns: Vec<(String, String, Kind, bool)>,
    keys: Vec<usize>,
    value: Value,
    partitions: u32,
    /// Records per partition, and the next partition of a record with no key.
    pub(crate) records: Vec<Vec<Record>>,
    next: u32,
    now_ms: i64,
}

enum Value {
    Json,
    Csv,
    Registry(Box<Writer>),
}

impl Encoder {
    /// An encoder for `columns` (name, SQL type, nested) keyed by `keys`, making the topic
    /// on first use and registering (or finding) its schema.
    pub(crate) fn open(out: &TopicOut, columns: Vec<(String, String, bool)>, keys: &[String]) -> Result<Encoder, ConnectError> {
        let err = |message: String| ConnectError::Topic { topic: out.name.clone(), message };
        let format = out.format();
        let value = match format {
            Format::Json => Value::Json,
            Format::Csv => Value::Csv,
            Format::Raw | Format::Changelog => {
                return Err(err(format!(
                    "it is `format: {}`; a load writes rows, as json, csv, avro, json_schema or protobuf",
                    format.name()
                )));
            }
            Format::Avro | Format::JsonSchema | Format::Protobuf => {
                let (Some(schema_type), Some(decl)) = (format.schema_type(), out.declared.as_ref()) else {
                    return Err(err(format!("`format: {}` needs the topic's declaration", format.name())));
                };
                let registry = out.registry.as_ref().ok_or_else(|| {
                    err(format!(
                        "`format: {}` is written through the project's schema registry, which needs the metadata store",
                        format.name()
                    ))
                })?;
                let target = Target {
                    format: schema_type,
                    naming: decl.subject_strategy,
                    topic: &out.name,
                    record: &out.name,
                    key: false,
                    register: decl.auto_register.unwrap_or(out.auto_register),
                };
                let typed: Vec<(String, String)> = columns.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect();
                Value::Registry(Box::new(Writer::open(registry, &target, &typed).map_err(|e| err(e.to_string()))?))
            }
        };
        let keys = keys
            .iter()
            .map(|k| {
                columns.iter().position(|(c, ..)| c.eq_ignore_ascii_case(k)).ok_or_else(|| {
                    err(format!("its key column '{k}' is not among the columns written ({})", names(columns.iter().map(|(c, ..)| c))))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = match &out.declared {
            Some(t) => t.spec(),
            None => match out.log.describe(&out.name) {
                Ok(info) => info.spec,
                Err(_) => TopicSpec::new(&out.name, 1),
            },
        };
        let info = out.log.create_topic(&spec).map_err(|e| err(e.to_string()))?;
        let partitions = (info.partitions.len() as u32).max(1);
        Ok(Encoder {
            columns: columns.into_iter().map(|(n, t, nested)| (n.clone(), t.clone(), Kind::of(&t), nested)).collect(),
            keys,
            value,
            partitions,
            records: vec![vec![]; partitions as usize],
            next: 0,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
    }

    /// Encodes a batch of rows (its columns in the encoder's order); a row whose value does
    /// not fit its column is returned rejected, numbered from `first_row`.
    pub(crate) fn add(&mut self, batch: &RecordBatch, first_row: u64) -> Result<Vec<Rejected>, String> {
        let options = FormatOptions::default();
        // Times with a zone are formatted as the same instants in UTC (Arrow knows no zone's rules).
        let arrays: Vec<ArrayRef> = batch.columns().iter().map(weir_warehouse::batches::without_zone).collect();
        let formatters = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut rejected = vec![];
        let mut texts: Vec<Option<String>> = Vec::with_capacity(arrays.len());
        for row in 0..batch.num_rows() {
            texts.clear();
            texts.extend(arrays.iter().zip(&formatters).map(|(a, f)| (!a.is_null(row)).then(|| f.value(row).to_string())));
            rejected.extend(self.add_row(&texts, first_row + row as u64));
        }
        Ok(rejected)
    }

    /// Encodes one row, given as its values' text (`row` counts from 0); a row whose value
    /// does not fit its column is returned rejected.
    pub(crate) fn add_row(&mut self, texts: &[Option<String>], row: u64) -> Option<Rejected> {
        match self.record(texts) {
            Ok(record) => {
                self.push(record);
                None
            }
            Err(reason) => Some(Rejected { position: format!("row {}", row + 1), raw: self.raw(texts), reason }),
        }
    }

    /// The commit of everything encoded: the records in their partitions, and the group
    /// moved past them (where each partition ends after them, given where they begin) and to
    /// the run's mark.
    pub(crate) fn commit(self, out: &TopicOut, load_id: &str) -> Result<(Commit, u64), ConnectError> {
        let err = |e: weir_log::LogError| ConnectError::Topic { topic: out.name.clone(), message: e.to_string() };
        let info = out.log.describe(&out.name).map_err(err)?;
        let mut commit = Commit::default();
        let mut count = 0;
        for (p, records) in self.records.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let end = info.partitions.get(p).map_or(0, |i| i.end);
            count += records.len() as u64;
            commit.positions.insert((out.name.clone(), p as u32), end + records.len() as u64);
            commit.outputs.push(Output { topic: out.name.clone(), partition: Some(p as u32), records });
        }
        commit.positions.insert((MARK.to_string(), 0), mark(load_id));
        Ok((commit, count))
    }

    fn push(&mut self, record: Record) {
        let p = match &record.key {
            Some(key) => weir_log::partition_for(key, self.partitions),
            None => {
                self.next = (self.next + 1) % self.partitions;
                self.next
            }
        };
        self.records[p as usize].push(record);
    }

    fn record(&self, texts: &[Option<String>]) -> Result<Record, String> {
        let mut fields = Vec::with_capacity(texts.len());
        for ((name, ty, kind, _), text) in self.columns.iter().zip(texts) {
            fields.push(match text {
                None => Field::Null,
                Some(t) => field_of(*kind, t).ok_or_else(|| format!("column {name}: '{t}' is not a {ty}"))?,
            });
        }
        let key = match self.keys.as_slice() {
            [] => None,
            [k] => match &texts[*k] {
                None => return Err(format!("key column {} is null", self.columns[*k].0)),
                Some(t) => Some(t.clone().into_bytes()),
            },
            keys => {
                let mut object = Map::new();
                for &k in keys {
                    if texts[k].is_none() {
                        return Err(format!("key column {} is null", self.columns[k].0));
                    }
                    object.insert(self.columns[k].0.clone(), json_of(&fields[k]));
                }
                Some(J::Object(object).to_string().into_bytes())
            }
        };
        let value = match &self.value {
            Value::Json => {
                let mut object = Map::with_capacity(fields.len());
                for ((name, _, _, nested), field) in self.columns.iter().zip(&fields) {
                    let v = match field {
                        Field::Text(t) if *nested => serde_json::from_str(t).unwrap_or_else(|_| J::String(t.to_string())),
                        f => json_of(f),
                    };
                    object.insert(name.clone(), v);
                }
                J::Object(object).to_string().into_bytes()
            }
            Value::Csv => csv_line(texts.iter().map(|t| t.as_deref()))?,
            Value::Registry(writer) => writer.write(&fields)?,
        };
        Ok(Record { key, value, timestamp: self.now_ms, headers: vec![] })
    }

    /// A rejected row as JSON text, its values as the warehouse gave them.
    fn raw(&self, texts: &[Option<String>]) -> String {
        let object: Map<String, J> =
            self.columns.iter().zip(texts).map(|((name, ..), t)| (name.clone(), t.clone().map_or(J::Null, J::String))).collect();
        J::Object(object).to_string()
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_mark_is_its_ids_first_64_bits() {
        assert_eq!(mark("0123abcd-ef01-4567-89ab-cdef01234567"), 0x0123_abcd_ef01_4567);
        assert_ne!(mark("0123abcd-ef01-4567-89ab-cdef01234567"), mark("0123abcd-ef01-4568-89ab-cdef01234567"));
    }
}
