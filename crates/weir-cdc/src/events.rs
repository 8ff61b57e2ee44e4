//! Change events on the event log, in Debezium's envelope: every committed change of a
//! captured table as one event on the topic `<load>.<schema>.<table>`, so stream jobs and
//! other readers see each change, not only the mirror's last state.
//!
//! An event's key is the row's primary key as a JSON object (`{"id": 7}`); its value is
//! Debezium's envelope without the schema part (`before`, `after`, `source`, `op`, `ts_ms`,
//! `transaction`), as Debezium's JSON converter writes it with `schemas.enable=false`. Values
//! are JSON numbers for integers and floats, booleans for booleans, and text for the rest:
//! decimals as their digits at the mirror's scale (Debezium's `decimal.handling.mode=string`),
//! times as ISO 8601 (UTC with `Z` for `timestamptz`), JSON as its text: the same text for a
//! row read by the snapshot (Arrow) as by the stream. The snapshot's rows are `r` events.
//!
//! **Exactly once.** The events of a micro-batch are appended to all their topics in one
//! atomic commit of the log, before the mirrors' warehouse transaction. Each event names
//! the position its transaction committed at; a follower starting again finishes a commit a
//! crash broke off, reads the last event of each topic and skips every transaction at or
//! before the latest of them, so a batch merged again after a crash is not published twice.
//! A snapshot broken off is taken again from the start and its `r` events published again, as
//! Debezium does; a snapshot taken again begins each topic that holds events with a `t`.
//!
//! **Avro.** A topic declared `format: avro` holds the same envelope as Avro messages in
//! Confluent's wire format, under schemas made from the table (`<topic>-value`: `Envelope`
//! with `before` and `after` of the record `Value`, Debezium's `Source` block and
//! `transaction`; `<topic>-key`: the record `Key` of the key columns), registered in the
//! project's schema registry and evolving with the table under the subject's compatibility
//! level: a change of the table that readers could not follow stops the follower with the
//! rule it breaks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value as J, json};
use weir_core::ColumnType;
use weir_log::{Commit, Log, LogError, Output, Record, TopicSpec};
use weir_registry::Registry;
use weir_registry::codec::{DocumentWriter, Reader, avro_name, to_json};
use weir_warehouse::RecordBatch;
use weir_warehouse::arrow::array::ArrayRef;
use weir_warehouse::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::binlog::Position;
use crate::changes::{HistoryRow, Key, RowChange, TableChanges};
use crate::pgoutput::{Lsn, Relation, Value};

/// Why change events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("publishing change events to '{topic}': {source}")]
    Log { topic: String, source: LogError },
    #[error("formatting the snapshot's rows of {table} as events: {message}")]
    Format { table: String, message: String },
    /// An Avro topic's events do not fit the schema registry: a schema it refuses (a change
    /// readers could not follow), or one not registered while registration is off.
    #[error("change events of '{topic}' in the schema registry: {message}")]
    Schema { topic: String, message: String },
}

/// Which database the events come from: Debezium's connector name and how a position is
/// written in `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connector {
    /// `connector: postgresql`, `db`: the database; positions are WAL positions (`lsn`).
    Postgres { database: String },
    /// `connector: mariadb`; positions are binlog `file`, `pos` and `gtid`.
    Mariadb,
}

/// A source's change events, published to its topics on `log`.
pub struct Publisher {
    log: Arc<dyn Log>,
    /// The load: the topics' prefix and `source.name`.
    name: String,
    connector: Connector,
    /// Topics declared in `streams/*.yml`, made with their partitions and retention.
    declared: Vec<TopicSpec>,
    /// Topics known to exist, with their partitions.
    made: HashMap<String, u32>,
    /// The position of the last transaction on the log: `None` until the log is read, then
    /// `Some(None)` when it holds none.
    last: Option<Option<At>>,
    /// Where the snapshot being taken stands, for its `r` events.
    snapshot: Option<String>,
    /// The project whose `.weir/cdc/topics/` describes each topic for the stream jobs that
    /// read it, and the columns last described per topic.
    root: Option<std::path::PathBuf>,
    described: HashMap<String, Vec<(String, String)>>,
    /// Topics written as Avro through the schema registry.
    avro: Option<AvroEvents>,
}

/// Change events written as Avro, for topics declared `format: avro`.
struct AvroEvents {
    registry: Registry,
    reader: Reader,
    /// The topics, and whether their schemas are registered (else they must be already).
    topics: HashMap<String, bool>,
    /// Each topic's writers of values and keys, with the columns they were made for.
    writers: HashMap<String, TopicWriters>,
}

/// A topic's writers of values and keys, and the columns (name, type) they were made for.
type TopicWriters = (Vec<(String, String)>, DocumentWriter, DocumentWriter);

/// A position as the source orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    Lsn(Lsn),
    Binlog(Position),
}

impl At {
    /// Whether this position is at or past `other`.
    fn reached(&self, other: &At) -> bool {
        match (self, other) {
            (At::Lsn(a), At::Lsn(b)) => a >= b,
            (At::Binlog(a), At::Binlog(b)) => a.reached(b),
            _ => false,
        }
    }
}

impl Publisher {
    pub fn new(log: Arc<dyn Log>, name: &str, connector: Connector, declared: Vec<TopicSpec>) -> Publisher {
        Publisher {
            log,
            name: name.to_string(),
            connector,
            declared,
            made: HashMap::new(),
            last: None,
            snapshot: None,
            root: None,
            described: HashMap::new(),
            avro: None,
        }
    }

    /// Writes the events of `topics` (with whether each registers its schemas) as Avro
    /// through `registry`.
    pub fn with_avro(mut self, registry: Registry, topics: Vec<(String, bool)>) -> Publisher {
        if !topics.is_empty() {
            let reader = Reader::new(registry.clone());
            self.avro = Some(AvroEvents { registry, reader, topics: topics.into_iter().collect(), writers: HashMap::new() });
        }
        self
    }

    /// Each topic's columns, key and partitions are also described in the project at `root`
    /// ([`weir_graph::streams::changelog_file`]), for stream jobs that read it with `cdc()`.
    pub fn describing_in(mut self, root: &std::path::Path) -> Publisher {
        self.root = Some(root.to_path_buf());
        self
    }

    /// A snapshot begins at `position`: the source's events start again with its rows, and
    /// what the log holds from before is not compared with what follows.
    pub fn snapshot_at(&mut self, position: &str) {
        self.snapshot = Some(position.to_string());
        self.last = Some(None);
    }

    /// Publishes a snapshot's rows of `t` as `r` events; `rows` are the source's text of each
    /// value, in `t`'s column order.
    pub fn snapshot_rows(&mut self, t: &Relation, rows: &[(Key, RowChange)]) -> Result<(), EventsError> {
        let values = rows.iter().filter_map(|(_, c)| match c {
            RowChange::Upsert { values, .. } => Some(values.iter().map(text).collect::<Vec<_>>()),
            RowChange::Delete => None,
        });
        let records: Vec<Record> = values.map(|v| self.read_event(t, &v)).collect();
        self.append(t, records)
    }

    /// Publishes a snapshot's batch of `t`'s rows (typed Arrow, in `t`'s column order) as `r`
    /// events.
    pub fn snapshot_batch(&mut self, t: &Relation, batch: &RecordBatch) -> Result<(), EventsError> {
        let format = |e: weir_warehouse::arrow::error::ArrowError| EventsError::Format { table: table_name(t), message: e.to_string() };
        let options = FormatOptions::default();
        let columns: Vec<ArrayRef> = batch.columns().iter().map(weir_warehouse::batches::without_zone).collect();
        let formatters =
            columns.iter().map(|a| ArrayFormatter::try_new(a.as_ref(), &options)).collect::<Result<Vec<_>, _>>().map_err(format)?;
        let mut records = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let values: Vec<Option<String>> =
                columns.iter().zip(&formatters).map(|(a, f)| (!a.is_null(row)).then(|| f.value(row).to_string())).collect();
            records.push(self.read_event(t, &values));
        }
        self.append(t, records)
    }

    /// Publishes the committed changes of a micro-batch, every table's in one atomic commit,
    /// skipping the transactions the log already holds. `unchanged` gives the values the
    /// source left unchanged (TOAST), as the mirror holds them, by table and key. Returns the
    /// events published.
    pub fn publish(&mut self, tables: &[TableChanges], unchanged: &[HashMap<Key, Vec<Option<String>>>]) -> Result<u64, EventsError> {
        let last = self.last()?;
        let processed = now_ms();
        let mut outputs = vec![];
        let mut newest: Option<At> = None;
        for (i, t) in tables.iter().enumerate() {
            let (topic, partitions) = self.ensure(&t.relation)?;
            // Each record placed here, so that a truncate goes to every partition in its turn.
            let mut records: Vec<Vec<Record>> = vec![vec![]; partitions as usize];
            // Debezium's `data_collection_order`: the change's place among its table's in
            // its transaction.
            let mut order: BTreeMap<&str, u64> = BTreeMap::new();
            for h in &t.history {
                let at = self.at(&h.position);
                if let (Some(last), Some(at)) = (&last, &at)
                    && last.reached(at)
                {
                    continue;
                }
                let place = order.entry(h.position.as_str()).or_insert(0);
                *place += 1;
                let filled = unchanged.get(i).and_then(|m| m.get(&h.fill_from));
                let record = self.change_event(&t.relation, h, filled, *place, processed);
                let record = self.encoded(&t.relation, &topic, record)?;
                match &record.key {
                    Some(key) => records[weir_log::partition_for(key, partitions) as usize].push(record),
                    None => records.iter_mut().for_each(|r| r.push(record.clone())),
                }
                if let Some(at) = at
                    && newest.as_ref().is_none_or(|n| at.reached(n))
                {
                    newest = Some(at);
                }
            }
            for (p, records) in records.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                outputs.push(Output { topic: topic.clone(), partition: Some(p as u32), records });
            }
        }
        let count = outputs.iter().map(|o| o.records.len() as u64).sum();
        if count == 0 {
            return Ok(0);
        }
        self.log
            .commit(&self.group(), &Commit { outputs, positions: Default::default() })
            .map_err(|source| EventsError::Log { topic: format!("{}.*", self.name), source })?;
        if newest.is_some() {
            self.last = Some(newest);
        }
        Ok(count)
    }

    /// The position of the last transaction on the log: the latest position named by the
    /// last event of each of the source's topics.
    fn last(&mut self) -> Result<Option<At>, EventsError> {
        if let Some(last) = &self.last {
            return Ok(last.clone());
        }
        // A commit a crash broke off is settled first (its journal applied, or its Kafka
        // transaction aborted): what it wrote is on the log and counts, or is gone.
        let group_err = |source| EventsError::Log { topic: format!("{}.*", self.name), source };
        self.log.claim(&self.group()).map_err(group_err)?;
        self.log.positions(&self.group()).map_err(group_err)?;
        let prefix = format!("{}.", self.name);
        let topics = self.log.topics().map_err(|source| EventsError::Log { topic: format!("{prefix}*"), source })?;
        let mut latest: Option<At> = None;
        for info in topics.iter().filter(|t| t.spec.name.starts_with(&prefix)) {
            for p in info.partitions.iter().filter(|p| p.end > p.start) {
                // The last offsets may hold no event (Kafka's transaction markers): look
                // further back until one is found.
                let mut back = 1;
                let last = loop {
                    let from = p.end.saturating_sub(back).max(p.start);
                    let records = self
                        .log
                        .read(&info.spec.name, p.partition, from, back as usize)
                        .map_err(|source| EventsError::Log { topic: info.spec.name.clone(), source })?;
                    if records.last().is_some() || from == p.start {
                        break records.into_iter().next_back();
                    }
                    back *= 4;
                };
                let at = last.and_then(|r| self.position_of(&r.value));
                if let Some(at) = at
                    && latest.as_ref().is_none_or(|l| at.reached(l))
                {
                    latest = Some(at);
                }
            }
        }
        self.last = Some(latest.clone());
        Ok(latest)
    }

    /// The consumer group the source's commits to the log are made in (with no positions: the
    /// events name theirs).
    fn group(&self) -> String {
        format!("cdc.{}", self.name)
    }

    /// Makes `t`'s topic if it does not exist yet, and describes it as `t` stands; returns
    /// its name and partitions.
    fn ensure(&mut self, t: &Relation) -> Result<(String, u32), EventsError> {
        let topic = weir_graph::loads::Cdc::topic_of(&self.name, &t.namespace, &t.name);
        if let Some(partitions) = self.made.get(&topic).copied() {
            self.describe(t, &topic, partitions)?;
            return Ok((topic, partitions));
        }
        let err = |source| EventsError::Log { topic: topic.clone(), source };
        let info = match self.log.describe(&topic) {
            Ok(info) => info,
            Err(LogError::UnknownTopic(_)) => {
                let spec = self.declared.iter().find(|s| s.name == topic).cloned().unwrap_or_else(|| TopicSpec::new(&topic, 1));
                self.log.create_topic(&spec).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        let partitions = (info.partitions.len() as u32).max(1);
        self.made.insert(topic.clone(), partitions);
        self.describe(t, &topic, partitions)?;
        Ok((topic, partitions))
    }

    /// Writes the description of `topic` when `t`'s columns are not the ones last described.
    fn describe(&mut self, t: &Relation, topic: &str, partitions: u32) -> Result<(), EventsError> {
        let Some(root) = &self.root else { return Ok(()) };
        let columns: Vec<(String, String)> = t.columns.iter().map(|c| (c.name.clone(), c.ty.to_string())).collect();
        if self.described.get(topic) == Some(&columns) {
            return Ok(());
        }
        let key: Vec<String> = t.columns.iter().filter(|c| c.key).map(|c| c.name.clone()).collect();
        let path = weir_graph::streams::changelog_file(root, topic);
        let text = weir_graph::streams::changelog_json(topic, partitions, &columns, &key).to_string();
        let failed = |e: String| EventsError::Log {
            topic: topic.to_string(),
            source: LogError::Io { path: path.display().to_string(), message: e },
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        }
        weir_log::write_atomically(&path, text.as_bytes()).map_err(|e| failed(e.to_string()))?;
        self.described.insert(topic.to_string(), columns);
        Ok(())
    }

    /// A snapshot's copy of `t` begins. A topic that already holds events gets a `t` event
    /// in each partition: the table starts again from this snapshot, so a reader replaying
    /// the topic by key drops the rows the snapshot no longer has.
    pub fn snapshot_table(&mut self, t: &Relation) -> Result<(), EventsError> {
        let (topic, partitions) = self.ensure(t)?;
        let err = |source| EventsError::Log { topic: topic.clone(), source };
        let info = self.log.describe(&topic).map_err(err)?;
        if info.partitions.iter().any(|p| p.end > 0) {
            let restart = self.restart_event(t);
            let restart = [self.encoded(t, &topic, restart)?];
            for p in 0..partitions {
                self.log.append(&topic, Some(p), &restart).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Appends a snapshot's `records` to `t`'s topic (they need no commit of their own, being
    /// published again if the snapshot is).
    fn append(&mut self, t: &Relation, records: Vec<Record>) -> Result<(), EventsError> {
        if records.is_empty() {
            return Ok(());
        }
        let (topic, _) = self.ensure(t)?;
        let records = records.into_iter().map(|r| self.encoded(t, &topic, r)).collect::<Result<Vec<_>, _>>()?;
        self.log.append(&topic, None, &records).map_err(|source| EventsError::Log { topic, source })?;
        Ok(())
    }

    /// A record of `t`'s `topic` as the topic holds them: as it is (JSON), or its key and
    /// value written as Avro under the schemas of `t` as it stands now (registered when the
    /// table changed since the last event).
    fn encoded(&mut self, t: &Relation, topic: &str, record: Record) -> Result<Record, EventsError> {
        let Some(avro) = &mut self.avro else { return Ok(record) };
        let Some(&register) = avro.topics.get(topic) else { return Ok(record) };
        let err = |message: String| EventsError::Schema { topic: topic.to_string(), message };
        let columns: Vec<(String, String)> = t.columns.iter().map(|c| (c.name.clone(), c.ty.to_string())).collect();
        if avro.writers.get(topic).is_none_or(|(made_for, ..)| *made_for != columns) {
            let (value, key) = envelope_schemas(&self.connector, topic, t).map_err(err)?;
            let value =
                DocumentWriter::open(&avro.registry, &format!("{topic}-value"), &value, register).map_err(|e| err(e.to_string()))?;
            let key = DocumentWriter::open(&avro.registry, &format!("{topic}-key"), &key, register).map_err(|e| err(e.to_string()))?;
            avro.writers.insert(topic.to_string(), (columns, value, key));
        }
        let Some((_, values, keys)) = avro.writers.get(topic) else { return Ok(record) };
        let json = |bytes: &[u8]| serde_json::from_slice::<J>(bytes).map_err(|e| err(e.to_string()));
        let value = values.write(&json(&record.value)?).map_err(err)?;
        let key = match &record.key {
            Some(k) => Some(keys.write(&json(k)?).map_err(err)?),
            None => None,
        };
        Ok(Record { key, value, timestamp: record.timestamp, headers: record.headers })
    }

    fn at(&self, position: &str) -> Option<At> {
        match self.connector {
            Connector::Postgres { .. } => position.parse().ok().map(At::Lsn),
            Connector::Mariadb => position.parse().ok().map(At::Binlog),
        }
    }

    /// The position an event's `source` names.
    fn position_of(&self, value: &[u8]) -> Option<At> {
        let event: J = match (&self.avro, value.first()) {
            // Confluent's wire format begins with a zero byte, which JSON never does.
            (Some(avro), Some(0)) => to_json(avro.reader.read(value).ok()?),
            _ => serde_json::from_slice(value).ok()?,
        };
        let source = event.get("source")?;
        match self.connector {
            Connector::Postgres { .. } => source.get("lsn")?.as_u64().map(|n| At::Lsn(Lsn(n))),
            Connector::Mariadb => Some(At::Binlog(Position {
                file: source.get("file")?.as_str()?.to_string(),
                offset: source.get("pos")?.as_u64()?,
                gtid: source.get("gtid").and_then(J::as_str).unwrap_or_default().to_string(),
            })),
        }
    }

    /// Debezium's `source` block for a change of `t` at `position`, committed at `ts_ms`.
    fn source(&self, t: &Relation, position: Option<&str>, ts_ms: i64, snapshot: &str) -> J {
        let mut s = Map::new();
        s.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        let snapshot = json!(snapshot);
        match &self.connector {
            Connector::Postgres { database } => {
                s.insert("connector".into(), json!("postgresql"));
                s.insert("name".into(), json!(self.name));
                s.insert("ts_ms".into(), json!(ts_ms));
                s.insert("snapshot".into(), snapshot);
                s.insert("db".into(), json!(database));
                s.insert("schema".into(), json!(t.namespace));
                s.insert("table".into(), json!(t.name));
                let lsn = position.and_then(|p| p.parse::<Lsn>().ok()).map(|l| l.0);
                s.insert("lsn".into(), json!(lsn));
            }
            Connector::Mariadb => {
                s.insert("connector".into(), json!("mariadb"));
                s.insert("name".into(), json!(self.name));
                s.insert("ts_ms".into(), json!(ts_ms));
                s.insert("snapshot".into(), snapshot);
                s.insert("db".into(), json!(t.namespace));
                s.insert("table".into(), json!(t.name));
                let at = position.and_then(|p| p.parse::<Position>().ok());
                s.insert("file".into(), json!(at.as_ref().map(|a| a.file.clone())));
                s.insert("pos".into(), json!(at.as_ref().map(|a| a.offset)));
                s.insert("gtid".into(), json!(at.as_ref().map(|a| a.gtid.clone()).filter(|g| !g.is_empty())));
            }
        }
        J::Object(s)
    }

    /// A snapshot row's `r` event.
    fn read_event(&self, t: &Relation, values: &[Option<String>]) -> Record {
        let now = now_ms();
        let after = row(t, values);
        let value = json!({
            "before": null,
            "after": after,
            "source": self.source(t, self.snapshot.as_deref(), now, "true"),
            "op": "r",
            "ts_ms": now,
            "transaction": null,
        });
        Record { key: Some(key(t, values)), value: value.to_string().into_bytes(), timestamp: now, headers: vec![] }
    }

    /// The `t` event a snapshot taken again begins a topic with.
    fn restart_event(&self, t: &Relation) -> Record {
        let now = now_ms();
        let value = json!({
            "before": null,
            "after": null,
            "source": self.source(t, self.snapshot.as_deref(), now, "true"),
            "op": "t",
            "ts_ms": now,
            "transaction": null,
        });
        Record { key: None, value: value.to_string().into_bytes(), timestamp: now, headers: vec![] }
    }

    /// A committed change's event; `filled`: the mirror's values where the source left the
    /// change's unchanged.
    fn change_event(&self, t: &Relation, h: &HistoryRow, filled: Option<&Vec<Option<String>>>, place: u64, processed: i64) -> Record {
        let ts_ms = h.commit_time.div_euclid(1000);
        let values: Vec<Option<String>> = h
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Unchanged => filled.and_then(|f| f.get(i).cloned().flatten()).or_else(|| Some(UNAVAILABLE.to_string())),
                v => text(v),
            })
            .collect();
        let before_values: Option<Vec<Option<String>>> = h.before.as_ref().map(|b| b.iter().map(text).collect());
        let (before, after) = match h.op {
            'd' => (row(t, &values), J::Null),
            't' => (J::Null, J::Null),
            _ => (before_values.as_deref().map_or(J::Null, |b| row(t, b)), row(t, &values)),
        };
        let value = json!({
            "before": before,
            "after": after,
            // A row an incremental snapshot read, as Debezium marks it.
            "source": self.source(t, Some(&h.position), ts_ms, if h.op == 'r' { "incremental" } else { "false" }),
            "op": h.op.to_string(),
            "ts_ms": processed,
            // A row read by an incremental snapshot belongs to no transaction of the source.
            "transaction": if h.op == 'r' { J::Null } else { json!({"id": h.position, "total_order": h.seq, "data_collection_order": place}) },
        });
        let key = (h.op != 't').then(|| key(t, &values));
        Record { key, value: value.to_string().into_bytes(), timestamp: ts_ms, headers: vec![] }
    }
}

/// What Debezium writes for a value the source did not send and Weir could not find (a TOAST
/// value of a row the mirror does not hold).
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// A row's values as a JSON object of its columns.
fn row(t: &Relation, values: &[Option<String>]) -> J {
    let mut m = Map::new();
    for (c, v) in t.columns.iter().zip(values) {
        m.insert(c.name.clone(), v.as_deref().map_or(J::Null, |v| json_value(&c.ty, v)));
    }
    J::Object(m)
}

/// A row's key as the event's key: its key columns as a JSON object.
fn key(t: &Relation, values: &[Option<String>]) -> Vec<u8> {
    let mut m = Map::new();
    for (c, v) in t.columns.iter().zip(values).filter(|(c, _)| c.key) {
        m.insert(c.name.clone(), v.as_deref().map_or(J::Null, |v| json_value(&c.ty, v)));
    }
    J::Object(m).to_string().into_bytes()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(x) | Value::Binary(x) => Some(String::from_utf8_lossy(x).into_owned()),
        Value::Null | Value::Unchanged => None,
    }
}

/// The Avro schemas of `t`'s change events on `topic`: the envelope (values), and the record
/// of the key columns (keys). Columns are `long`, `double`, `boolean`, or `string` (the
/// JSON envelope's text: decimals, times, UUIDs, JSON), nullable in `Value`.
fn envelope_schemas(connector: &Connector, topic: &str, t: &Relation) -> Result<(J, J), String> {
    let namespace: Vec<String> = topic.split('.').map(avro_name).collect();
    let namespace = namespace.join(".");
    let avro_type = |ty: &ColumnType| match ty {
        ColumnType::Integer | ColumnType::BigInt => "long",
        ColumnType::Double => "double",
        ColumnType::Boolean => "boolean",
        _ => "string",
    };
    for c in &t.columns {
        if avro_name(&c.name) != c.name {
            return Err(format!("column '{}' of {} is not a name Avro takes (letters, digits, _)", c.name, table_name(t)));
        }
    }
    let fields: Vec<J> = t.columns.iter().map(|c| json!({"name": c.name, "type": ["null", avro_type(&c.ty)], "default": null})).collect();
    let key_fields: Vec<J> = t.columns.iter().filter(|c| c.key).map(|c| json!({"name": c.name, "type": avro_type(&c.ty)})).collect();
    let text = |name: &str| json!({"name": name, "type": "string"});
    let maybe = |name: &str, ty: &str| json!({"name": name, "type": ["null", ty], "default": null});
    let mut source = vec![
        text("version"),
        text("connector"),
        text("name"),
        json!({"name": "ts_ms", "type": "long"}),
        maybe("snapshot", "string"),
        text("db"),
    ];
    let source_namespace = match connector {
        Connector::Postgres { .. } => {
            source.extend([text("schema"), text("table"), maybe("lsn", "long")]);
            "io.debezium.connector.postgresql"
        }
        Connector::Mariadb => {
            source.extend([text("table"), maybe("file", "string"), maybe("pos", "long"), maybe("gtid", "string")]);
            "io.debezium.connector.mariadb"
        }
    };
    let value = json!({"type": "record", "name": "Value", "namespace": namespace, "fields": fields});
    let envelope = json!({"type": "record", "name": "Envelope", "namespace": namespace, "fields": [
        {"name": "before", "type": ["null", value], "default": null},
        {"name": "after", "type": ["null", format!("{namespace}.Value")], "default": null},
        {"name": "source", "type": {"type": "record", "name": "Source", "namespace": source_namespace, "fields": source}},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": null},
        {"name": "transaction", "type": ["null", {"type": "record", "name": "block", "namespace": "event", "fields": [
            {"name": "id", "type": "string"}, {"name": "total_order", "type": "long"}, {"name": "data_collection_order", "type": "long"}]}],
         "default": null},
    ]});
    let key = json!({"type": "record", "name": "Key", "namespace": namespace, "fields": key_fields});
    Ok((envelope, key))
}

fn table_name(t: &Relation) -> String {
    format!("{}.{}", t.namespace, t.name)
}

/// A value's JSON, from the source's text of it (PostgreSQL's text output, MariaDB's values
/// as [`crate::binlog`] writes them, or Arrow's display of a snapshot's): numbers and
/// booleans as JSON's own, times in ISO 8601, the rest as text.
pub fn json_value(ty: &ColumnType, text: &str) -> J {
    match ty {
        ColumnType::Integer | ColumnType::BigInt => text.parse::<i64>().map_or_else(|_| json!(text), |n| json!(n)),
        ColumnType::Double => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => json!(f),
            _ => json!(text),
        },
        ColumnType::Boolean => match text {
            "t" | "true" | "1" => J::Bool(true),
            "f" | "false" | "0" => J::Bool(false),
            _ => json!(text),
        },
        // Written to the scale the column has in the mirror, as Arrow shows a snapshot's value
        // (an unconstrained numeric's `3.14159` as the mirror's `3.1415900000`).
        ColumnType::Decimal { scale, .. } => json!(to_scale(text, usize::from(*scale))),
        ColumnType::Timestamp => json!(whole_fraction(&text.replacen(' ', "T", 1))),
        ColumnType::TimestampTz => json!(whole_fraction(&utc(text).unwrap_or_else(|| text.to_string()))),
        ColumnType::Time => json!(whole_fraction(text)),
        // Arrow shows a snapshot's UUID as its 32 hex digits; the server writes it with dashes.
        ColumnType::Uuid if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            json!(format!("{}-{}-{}-{}-{}", &text[..8], &text[8..12], &text[12..16], &text[16..20], &text[20..]))
        }
        _ => json!(text),
    }
}

/// A decimal's digits with `scale` of them after the point, zeros added where it has fewer
/// (never cut: a value with more is written as it is).
fn to_scale(text: &str, scale: usize) -> String {
    if scale == 0 || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
        return text.to_string();
    }
    let have = text.find('.').map_or(0, |dot| text.len() - dot - 1);
    let point = if text.contains('.') { "" } else { "." };
    format!("{text}{point}{}", "0".repeat(scale.saturating_sub(have)))
}

/// A time's fraction of a second without its trailing zeros (`10:00:00.120` as `10:00:00.12`,
/// `.000` gone), so a snapshot's value (Arrow writes three, six or nine digits) and the
/// stream's (the server writes what it needs) are the same text, as are their keys.
fn whole_fraction(text: &str) -> String {
    let Some(dot) = text.find('.') else { return text.to_string() };
    let digits = text[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
    let kept = text[dot + 1..dot + 1 + digits].trim_end_matches('0');
    let point = if kept.is_empty() { "" } else { "." };
    format!("{}{point}{kept}{}", &text[..dot], &text[dot + 1 + digits..])
}

/// A time with a zone (`2026-12-02 10:00:00.5+01`, `2026-12-02T09:00:00.5Z`) in UTC, as
/// `2026-12-02T09:00:00.5Z`; a time without one is taken as UTC.
fn utc(text: &str) -> Option<String> {
    let t = text.replacen(' ', "T", 1);
    let parsed = chrono::DateTime::parse_from_rfc3339(&t)
        .or_else(|_| chrono::DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|d| d.naive_utc())
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(format!("{}Z", parsed.format("%Y-%m-%dT%H:%M:%S%.f")))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::{Column, ReplicaIdentity};
    use weir_log::EmbeddedLog;

    fn relation() -> Relation {
        let col = |name: &str, key: bool, ty: ColumnType| Column { key, name: name.into(), type_oid: 0, type_modifier: -1, ty };
        Relation {
            xid: None,
            oid: 1,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", true, ColumnType::Integer), col("note", false, ColumnType::Varchar)],
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    /// A batch of one transaction at `position`: an insert of row `id`.
    fn batch(position: &str, id: &str) -> Vec<TableChanges> {
        let h = HistoryRow {
            op: 'c',
            values: vec![t(id), t("n")],
            fill_from: vec![t(id)],
            before: None,
            position: position.into(),
            commit_time: 1_000_000,
            seq: 1,
        };
        vec![TableChanges { relation: relation(), truncated: false, rows: vec![], history: vec![h] }]
    }

    fn events(log: &EmbeddedLog) -> Vec<J> {
        log.read("shop.public.orders", 0, 0, 100).unwrap().iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect()
    }

    #[test]
    fn a_batch_merged_again_is_not_published_again_even_by_a_new_publisher() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let pg = || Connector::Postgres { database: "shop".into() };
        let mut p = Publisher::new(log.clone(), "shop", pg(), vec![]);
        assert_eq!(p.publish(&batch("0/10", "1"), &[]).unwrap(), 1);
        assert_eq!(p.publish(&batch("0/10", "1"), &[]).unwrap(), 0, "the same transaction again");
        // A follower started again after a crash between the log's commit and the merge's.
        let mut again = Publisher::new(log.clone(), "shop", pg(), vec![]);
        assert_eq!(again.publish(&batch("0/10", "1"), &[]).unwrap(), 0);
        assert_eq!(again.publish(&batch("0/20", "2"), &[]).unwrap(), 1);
        let e = events(&log);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1]["after"], json!({"id": 2, "note": "n"}));
        assert_eq!((e[1]["op"].as_str(), e[1]["source"]["lsn"].as_u64()), (Some("c"), Some(0x20)));
        assert_eq!(e[1]["transaction"], json!({"id": "0/20", "total_order": 1, "data_collection_order": 1}));
        // A new snapshot starts the events again.
        again.snapshot_at("0/30");
        assert_eq!(again.publish(&batch("0/10", "3"), &[]).unwrap(), 1);
    }

    #[test]
    fn avro_events_hold_the_envelope_and_tell_a_new_publisher_where_they_stand() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let registry = Registry::new(Arc::new(weir_store::Store::sqlite(&dir.path().join("w.db")).unwrap()));
        let pg = || Connector::Postgres { database: "shop".into() };
        let avro = || vec![("shop.public.orders".to_string(), true)];
        let mut p = Publisher::new(log.clone(), "shop", pg(), vec![]).with_avro(registry.clone(), avro());
        assert_eq!(p.publish(&batch("0/10", "1"), &[]).unwrap(), 1);
        let mut again = Publisher::new(log.clone(), "shop", pg(), vec![]).with_avro(registry.clone(), avro());
        assert_eq!(again.publish(&batch("0/10", "1"), &[]).unwrap(), 0, "read back from the Avro event");
        assert_eq!(again.publish(&batch("0/20", "2"), &[]).unwrap(), 1);
        let reader = Reader::new(registry.clone());
        let records = log.read("shop.public.orders", 0, 0, 100).unwrap();
        assert_eq!(records.len(), 2);
        let value = to_json(reader.read(&records[1].value).unwrap());
        assert_eq!((&value["after"], &value["op"], &value["source"]["lsn"]), (&json!({"id": 2, "note": "n"}), &json!("c"), &json!(0x20)));
        assert_eq!(to_json(reader.read(records[1].key.as_deref().unwrap()).unwrap()), json!({"id": 2}));
        // Registration off: a subject without the schema stops the publisher, naming it.
        let other =
            Publisher::new(log.clone(), "shop2", pg(), vec![]).with_avro(registry.clone(), vec![("shop2.public.orders".into(), false)]);
        let mut other = other;
        let e = other.publish(&batch("0/10", "1"), &[]).unwrap_err().to_string();
        assert!(e.contains("shop2.public.orders-value"), "{e}");
    }

    /// A log whose commits a crash breaks off after their journal is written: they are
    /// finished only when the group is next touched, as the embedded log recovers them.
    struct Interrupted {
        inner: EmbeddedLog,
        broken: std::sync::Mutex<Vec<(String, Commit)>>,
    }

    impl Log for Interrupted {
        fn create_topic(&self, spec: &TopicSpec) -> Result<weir_log::TopicInfo, LogError> {
            self.inner.create_topic(spec)
        }
        fn topics(&self) -> Result<Vec<weir_log::TopicInfo>, LogError> {
            self.inner.topics()
        }
        fn describe(&self, topic: &str) -> Result<weir_log::TopicInfo, LogError> {
            self.inner.describe(topic)
        }
        fn append(&self, topic: &str, partition: Option<u32>, records: &[Record]) -> Result<Vec<(u32, u64)>, LogError> {
            self.inner.append(topic, partition, records)
        }
        fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<weir_log::StoredRecord>, LogError> {
            self.inner.read(topic, partition, offset, max)
        }
        fn groups(&self) -> Result<Vec<String>, LogError> {
            self.inner.groups()
        }
        fn positions(&self, group: &str) -> Result<weir_log::Positions, LogError> {
            for (g, c) in std::mem::take(&mut *self.broken.lock().unwrap()) {
                self.inner.commit(&g, &c)?;
            }
            self.inner.positions(group)
        }
        fn commit(&self, group: &str, commit: &Commit) -> Result<(), LogError> {
            self.broken.lock().unwrap().push((group.to_string(), commit.clone()));
            Err(LogError::Invalid("killed".into()))
        }
        fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
            self.inner.apply_retention(now_ms)
        }
    }

    #[test]
    fn a_commit_a_crash_broke_off_is_finished_before_the_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Interrupted { inner: EmbeddedLog::open(dir.path()).unwrap(), broken: Default::default() });
        let pg = || Connector::Postgres { database: "shop".into() };
        assert!(Publisher::new(log.clone(), "shop", pg(), vec![]).publish(&batch("0/10", "1"), &[]).is_err());
        // Started again: the broken commit is there once finished, so it is not made twice.
        let mut again = Publisher::new(log.clone(), "shop", pg(), vec![]);
        assert_eq!(again.publish(&batch("0/10", "1"), &[]).unwrap(), 0);
        assert_eq!(events(&log.inner).len(), 1);
    }

    #[test]
    fn binlog_positions_are_read_back_from_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let mut p = Publisher::new(log.clone(), "shop", Connector::Mariadb, vec![]);
        assert_eq!(p.publish(&batch("bin.000002:400 gtid 0-1-7", "1"), &[]).unwrap(), 1);
        let mut again = Publisher::new(log.clone(), "shop", Connector::Mariadb, vec![]);
        assert_eq!(again.publish(&batch("bin.000002:400 gtid 0-1-7", "1"), &[]).unwrap(), 0);
        assert_eq!(again.publish(&batch("bin.000001:900", "1"), &[]).unwrap(), 0, "an earlier file");
        assert_eq!(again.publish(&batch("bin.000003:4", "2"), &[]).unwrap(), 1);
        let e = events(&log);
        assert_eq!((e[0]["source"]["file"].as_str(), e[0]["source"]["pos"].as_u64()), (Some("bin.000002"), Some(400)));
        assert_eq!(e[0]["source"]["gtid"].as_str(), Some("0-1-7"));
    }

    #[test]
    fn values_become_json_as_debeziums_string_modes_write_them() {
        assert_eq!(json_value(&ColumnType::BigInt, "42"), json!(42));
        assert_eq!(json_value(&ColumnType::Double, "1.5"), json!(1.5));
        assert_eq!(json_value(&ColumnType::Double, "NaN"), json!("NaN"));
        assert_eq!(json_value(&ColumnType::Boolean, "t"), json!(true));
        assert_eq!(json_value(&ColumnType::Boolean, "false"), json!(false));
        assert_eq!(json_value(&ColumnType::Decimal { precision: 10, scale: 2 }, "12.50"), json!("12.50"));
        assert_eq!(json_value(&ColumnType::Decimal { precision: 38, scale: 4 }, "3.14"), json!("3.1400"));
        assert_eq!(json_value(&ColumnType::Decimal { precision: 38, scale: 2 }, "-7"), json!("-7.00"));
        assert_eq!(json_value(&ColumnType::Decimal { precision: 38, scale: 2 }, "NaN"), json!("NaN"));
        assert_eq!(json_value(&ColumnType::Timestamp, "2026-12-02 10:00:00.25"), json!("2026-12-02T10:00:00.25"));
        assert_eq!(json_value(&ColumnType::TimestampTz, "2026-12-02 10:00:00.25+01"), json!("2026-12-02T09:00:00.25Z"));
        // A snapshot's values as Arrow shows them, and the stream's as the server writes them:
        // the same text, so a row's key is the same in both.
        assert_eq!(
            json_value(&ColumnType::Timestamp, "2026-12-02T10:00:00.120"),
            json_value(&ColumnType::Timestamp, "2026-12-02 10:00:00.12")
        );
        assert_eq!(json_value(&ColumnType::Timestamp, "2026-12-02T10:00:00.000"), json!("2026-12-02T10:00:00"));
        assert_eq!(json_value(&ColumnType::Time, "10:00:00.500000"), json!("10:00:00.5"));
        assert_eq!(
            json_value(&ColumnType::Uuid, "0123456789abcdef0123456789abcdef"),
            json_value(&ColumnType::Uuid, "01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(json_value(&ColumnType::TimestampTz, "2026-12-02T10:00:00Z"), json!("2026-12-02T10:00:00Z"));
        assert_eq!(json_value(&ColumnType::TimestampTz, "infinity"), json!("infinity"));
    }
}
