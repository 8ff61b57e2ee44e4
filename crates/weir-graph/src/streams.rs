//! `streams/*.yml`: the topics of the event log, declared as users write them, read into
//! typed [`Topic`]s that remember where they were written, so a mistake is reported as
//! `file:line:col` before anything is produced or consumed.
//!
//! ```yaml
//! topics:
//!   - name: orders
//!     partitions: 4
//!     key: customer_id
//!     format: json          # or csv, raw; avro, json_schema, protobuf: Confluent's wire format
//!     subject_strategy: topic   # or record, topic_record: where those formats' schemas go
//!     auto_register: true   # register a sink's schema (off by default on prod targets)
//!     columns: {order_id: bigint, customer_id: bigint, amount: 'decimal(10,2)', ordered_at: timestamp}
//!     event_time: ordered_at
//!     watermark: ordered_at - interval '5 seconds'
//!     retention: 7d
//!     log: kafka            # on the cluster weir.yml's `kafka:` names; embedded by default
//! ```

use std::path::Path;

use weir_core::Location;
use weir_core::duration::parse_duration;
use weir_project::yaml::{self, Node, Value};
use weir_registry::SchemaType;
use weir_registry::codec::SubjectNaming;

use crate::GraphError;

/// One topic of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
    pub description: Option<String>,
    pub location: Location,
    pub partitions: u32,
    /// The column whose value keys each event: events with the same key keep their order.
    pub key: Option<String>,
    pub format: Format,
    /// Where the schemas of a registry format's messages are registered: Confluent's subject
    /// name strategies (`topic`, `record`, `topic_record`).
    pub subject_strategy: SubjectNaming,
    /// Whether a job writing the topic registers its schema (`None`: as the target says).
    pub auto_register: Option<bool>,
    /// Columns and their SQL types, when declared: events are JSON objects with them.
    pub columns: Vec<(String, String)>,
    /// The column holding each event's time.
    pub event_time: Option<String>,
    /// How far behind the greatest event time seen the watermark trails.
    pub watermark: Option<Watermark>,
    /// How long records are kept (milliseconds), and how many bytes a partition keeps.
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    /// A changelog's primary key: the columns each row is known by.
    pub primary_key: Vec<String>,
    /// Which event log holds it.
    pub log: weir_log::Backend,
    /// Columns read from each record's headers rather than its value, with their types: the
    /// header of the column's name, its value as text (UTF-8); a record without it, null.
    pub headers: Vec<(String, String)>,
}

/// How events are written in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per record.
    Json,
    /// Bytes as they came.
    Raw,
    /// One CSV line per record (no header): the topic's columns in their declared order, an
    /// empty field a null.
    Csv,
    /// Avro records in Confluent's wire format, each with the id of its schema in the
    /// project's schema registry; read by the topic's column names, written under the
    /// topic's subject (`<topic>-value`).
    Avro,
    /// JSON objects in Confluent's wire format, their schemas JSON Schemas in the registry.
    JsonSchema,
    /// Protobuf messages in Confluent's wire format (schema id, message indexes).
    Protobuf,
    /// A table's change events in Debezium's envelope (`before`, `after`, `op`), keyed by the
    /// row's primary key, as a cdc source publishes them: read as a changelog.
    Changelog,
}

impl Format {
    /// The schema type a format's messages carry, if they carry one.
    pub fn schema_type(self) -> Option<SchemaType> {
        match self {
            Format::Avro => Some(SchemaType::Avro),
            Format::JsonSchema => Some(SchemaType::Json),
            Format::Protobuf => Some(SchemaType::Protobuf),
            Format::Json | Format::Raw | Format::Csv | Format::Changelog => None,
        }
    }

    /// The name `format:` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Raw => "raw",
            Format::Csv => "csv",
            Format::Avro => "avro",
            Format::JsonSchema => "json_schema",
            Format::Protobuf => "protobuf",
            Format::Changelog => "changelog",
        }
    }
}

/// `watermark: <column> - interval '<amount>'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub column: String,
    pub delay_ms: i64,
}

impl Topic {
    /// What the event log makes the topic with.
    pub fn spec(&self) -> weir_log::TopicSpec {
        weir_log::TopicSpec {
            name: self.name.clone(),
            partitions: self.partitions,
            retention: weir_log::Retention { ms: self.retention_ms, bytes: self.retention_bytes },
        }
    }

    /// The topic as stream jobs read it: the columns of its events' values, then those of
    /// its headers (writers write the value's only).
    pub fn as_read(&self) -> Topic {
        let mut t = self.clone();
        t.columns.extend(self.headers.iter().cloned());
        t
    }
}

/// One event as a record of the log: its JSON text as the value, keyed by the text of its
/// `key` field (a string as it is, anything else as JSON; no key when the field is missing
/// or null), stamped `now_ms`.
pub fn event_record(event: &serde_json::Value, key: Option<&str>, now_ms: i64) -> weir_log::Record {
    let key = key.and_then(|k| event.get(k)).filter(|v| !v.is_null()).map(|v| match v {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    });
    weir_log::Record { key, value: event.to_string().into_bytes(), timestamp: now_ms, headers: vec![] }
}

/// Reads every topic of one file.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Topic>, GraphError> {
    let Some(root) = yaml::parse(file, text)? else { return Ok(vec![]) };
    let err = |node: &Node, message: String| {
        let location = node.location(file);
        let snippet = location.snippet(text).map(|s| s.to_string());
        GraphError::At { location, message, snippet }
    };
    let entries = root.as_map().ok_or_else(|| err(&root, "a streams file is a mapping with a `topics:` list".into()))?;
    let mut topics: Vec<Topic> = vec![];
    for (key, value) in entries {
        match key.key_text().as_deref() {
            Some("version") => {}
            Some("topics") => {
                let items = value.as_seq().ok_or_else(|| err(value, "`topics` must be a list of topics".into()))?;
                for item in items {
                    let t = topic(file, item, &err)?;
                    if let Some(other) = topics.iter().find(|o| o.name == t.name) {
                        return Err(err(item, format!("topic '{}' is declared twice (also at line {})", t.name, other.location.line)));
                    }
                    topics.push(t);
                }
            }
            other => return Err(err(key, format!("unknown key '{}' (expected `topics:`)", other.unwrap_or_default()))),
        }
    }
    Ok(topics)
}

/// Where a cdc source's follower describes the topic of a table's change events: its columns
/// and their types, its primary key and partitions, as the table last stood. Stream jobs that
/// read the topic with `cdc()` are planned against it.
pub fn changelog_file(root: &Path, topic: &str) -> std::path::PathBuf {
    root.join(".weir").join("cdc").join("topics").join(format!("{topic}.json"))
}

/// The description [`changelog_file`] holds: `columns` (name, SQL type) in the table's order,
/// the `key` columns and the topic's `partitions`.
pub fn changelog_json(topic: &str, partitions: u32, columns: &[(String, String)], key: &[String]) -> serde_json::Value {
    serde_json::json!({"topic": topic, "partitions": partitions, "columns": columns, "key": key})
}

/// The topic of a table's change events, as its follower last described it; `None` when no
/// follower has published any yet. `declared`, when `streams/*.yml` declares the topic,
/// gives its partitions and retention.
pub fn read_changelog(root: &Path, topic: &str, declared: Option<&Topic>) -> Result<Option<Topic>, GraphError> {
    let path = changelog_file(root, topic);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GraphError::io(&path, e)),
    };
    let damaged =
        || GraphError::at(Location::file(&path), "not a description of a changelog topic: run the cdc load again to write it", None);
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| damaged())?;
    let texts = |v: &serde_json::Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect() };
    let columns: Vec<(String, String)> = v["columns"]
        .as_array()
        .ok_or_else(damaged)?
        .iter()
        .map(|c| Some((c.get(0)?.as_str()?.to_string(), c.get(1)?.as_str()?.to_string())))
        .collect::<Option<_>>()
        .ok_or_else(damaged)?;
    Ok(Some(Topic {
        name: topic.to_string(),
        description: declared.and_then(|d| d.description.clone()),
        location: declared.map_or_else(|| Location::file(&path), |d| d.location.clone()),
        partitions: v["partitions"].as_u64().map_or(1, |p| p as u32),
        key: None,
        format: Format::Changelog,
        subject_strategy: SubjectNaming::Topic,
        auto_register: None,
        columns,
        event_time: None,
        watermark: None,
        retention_ms: declared.and_then(|d| d.retention_ms),
        retention_bytes: declared.and_then(|d| d.retention_bytes),
        primary_key: texts(&v["key"]).ok_or_else(damaged)?,
        log: declared.map_or(weir_log::Backend::Embedded, |d| d.log),
        headers: vec![],
    }))
}

/// Every topic declared under `<root>/streams/`, in file order; a name declared in two
/// files is an error naming both.
pub fn read_topics(root: &Path) -> Result<Vec<Topic>, GraphError> {
    let files = stream_files(root, &["yml", "yaml"])?;
    let mut out: Vec<Topic> = vec![];
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| GraphError::io(&path, e))?;
        // Places are shown as users name the file: from the project folder.
        let shown = path.strip_prefix(root).unwrap_or(&path);
        for t in parse_file(shown, &text)? {
            if let Some(other) = out.iter().find(|o| o.name == t.name) {
                return Err(GraphError::at(
                    t.location.clone(),
                    format!("topic '{}' is already declared at {}", t.name, other.location),
                    Some(&text),
                ));
            }
            out.push(t);
        }
    }
    Ok(out)
}

/// The files of `<root>/streams/` with one of `extensions`, sorted: the topics' YAML and the
/// jobs' SQL live side by side there.
pub(crate) fn stream_files(root: &Path, extensions: &[&str]) -> Result<Vec<std::path::PathBuf>, GraphError> {
    let dir = root.join("streams");
    let mut files = vec![];
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir).map_err(|e| GraphError::io(&dir, e))? {
            let path = e.map_err(|e| GraphError::io(&dir, e))?.path();
            if path.extension().and_then(|x| x.to_str()).is_some_and(|x| extensions.contains(&x)) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

const KEYS: &[&str] = &[
    "name",
    "description",
    "partitions",
    "key",
    "format",
    "subject_strategy",
    "auto_register",
    "columns",
    "event_time",
    "watermark",
    "retention",
    "retention_bytes",
    "log",
    "headers",
];

fn topic(file: &Path, item: &Node, err: &dyn Fn(&Node, String) -> GraphError) -> Result<Topic, GraphError> {
    let entries = item.as_map().ok_or_else(|| err(item, "a topic is a mapping with at least a `name`".into()))?;
    for (k, _) in entries {
        let key = k.key_text().unwrap_or_default();
        if !KEYS.contains(&key.as_str()) {
            let hint =
                weir_project::error::closest(&key, KEYS.iter().copied()).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
            return Err(err(k, format!("unknown key '{key}' in a topic{hint} (known: {})", KEYS.join(", "))));
        }
    }
    let text = |k: &str| -> Result<Option<(String, &Node)>, GraphError> {
        match item.get(k) {
            None => Ok(None),
            Some(n) => match &n.value {
                Value::Str(_) | Value::Int(_) | Value::Float(_) => Ok(Some((n.scalar_text().unwrap_or_default(), n))),
                _ => Err(err(n, format!("`{k}` must be a text"))),
            },
        }
    };
    let (name, name_node) = text("name")?.ok_or_else(|| err(item, "a topic needs a `name`".into()))?;
    if !weir_log::valid_name(&name) {
        return Err(err(name_node, format!("topic name '{name}' may hold only letters, digits, '.', '_' and '-' (at most 249)")));
    }
    let partitions = match text("partitions")? {
        None => 1,
        Some((t, n)) => t
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=10_000).contains(p))
            .ok_or_else(|| err(n, format!("`partitions` must be a whole number from 1 to 10000, not '{t}'")))?,
    };
    let format = match text("format")? {
        None => Format::Json,
        Some((t, n)) => match t.as_str() {
            "json" => Format::Json,
            "raw" | "bytes" => Format::Raw,
            "csv" => Format::Csv,
            "avro" => Format::Avro,
            "json_schema" | "jsonschema" => Format::JsonSchema,
            "protobuf" | "proto" => Format::Protobuf,
            other => return Err(err(n, format!("format '{other}' is not one of json, csv, raw, avro, json_schema, protobuf"))),
        },
    };
    let subject_strategy = match text("subject_strategy")? {
        None => SubjectNaming::Topic,
        Some((t, n)) => {
            SubjectNaming::parse(&t).ok_or_else(|| err(n, format!("subject_strategy '{t}' is not one of topic, record, topic_record")))?
        }
    };
    let auto_register = match item.get("auto_register") {
        None => None,
        Some(n) => match &n.value {
            Value::Bool(b) => Some(*b),
            _ => return Err(err(n, "`auto_register` is true or false".into())),
        },
    };
    if format.schema_type().is_none() && (item.get("subject_strategy").is_some() || auto_register.is_some()) {
        let n = item.get("subject_strategy").or_else(|| item.get("auto_register")).unwrap_or(item);
        return Err(err(
            n,
            format!("topic '{name}' is `format: {}`: its messages carry no schema (use avro, json_schema or protobuf)", format.name()),
        ));
    }
    let log = match text("log")? {
        None => weir_log::Backend::Embedded,
        Some((t, n)) => match t.as_str() {
            "embedded" => weir_log::Backend::Embedded,
            "kafka" => weir_log::Backend::Kafka,
            other => return Err(err(n, format!("log '{other}' is not one of embedded, kafka"))),
        },
    };
    let mut columns = vec![];
    if let Some(n) = item.get("columns") {
        let m = n.as_map().ok_or_else(|| err(n, "`columns` maps each column to its type ({id: bigint, at: timestamp})".into()))?;
        for (k, v) in m {
            let ty = match &v.value {
                Value::Str(_) => v.scalar_text().unwrap_or_default(),
                _ => return Err(err(v, format!("the type of column '{}' must be a text", k.key_text().unwrap_or_default()))),
            };
            columns.push((k.key_text().unwrap_or_default(), ty));
        }
    }
    let mut headers = vec![];
    if let Some(n) = item.get("headers") {
        let m = n.as_map().ok_or_else(|| err(n, "`headers` maps each header read as a column to its type ({tenant: varchar})".into()))?;
        for (k, v) in m {
            let name = k.key_text().unwrap_or_default();
            let ty = match &v.value {
                Value::Str(_) => v.scalar_text().unwrap_or_default(),
                _ => return Err(err(v, format!("the type of header column '{name}' must be a text"))),
            };
            if columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(&name)) {
                return Err(err(k, format!("'{name}' is a column of the events' values already: a header column needs a name of its own")));
            }
            headers.push((name, ty));
        }
    }
    let known = |col: &str, n: &Node, what: &str| -> Result<(), GraphError> {
        if columns.is_empty() || columns.iter().any(|(c, _)| c == col) {
            return Ok(());
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let hint = weir_project::error::closest(col, names.iter().copied()).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
        Err(err(n, format!("{what} '{col}' is not one of the topic's columns ({}){hint}", names.join(", "))))
    };
    let key = match text("key")? {
        Some((k, n)) => {
            known(&k, n, "key column")?;
            Some(k)
        }
        None => None,
    };
    let event_time = match text("event_time")? {
        Some((c, n)) => {
            known(&c, n, "event_time column")?;
            if let Some((_, ty)) = columns.iter().find(|(name, _)| *name == c)
                && !is_time_type(ty)
            {
                return Err(err(n, format!("event_time column '{c}' is a {ty}, not a timestamp or date")));
            }
            Some(c)
        }
        None => None,
    };
    let watermark = match text("watermark")? {
        Some((w, n)) => {
            let wm = parse_watermark(&w).ok_or_else(|| {
                err(n, format!("watermark '{w}' is not `<time column>` or `<time column> - interval '<amount>'` (interval '5 seconds')"))
            })?;
            match &event_time {
                Some(et) if *et != wm.column => {
                    return Err(err(n, format!("the watermark is on '{}' but the topic's event_time is '{et}'", wm.column)));
                }
                None => known(&wm.column, n, "watermark column")?,
                _ => {}
            }
            Some(wm)
        }
        None => None,
    };
    let retention_ms = match text("retention")? {
        None => None,
        Some((t, n)) => Some(
            interval_ms(&t)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| err(n, format!("`retention` '{t}' is not an amount of time (7d, 12h, '30 days')")))?,
        ),
    };
    let retention_bytes = match text("retention_bytes")? {
        None => None,
        Some((t, n)) => {
            Some(t.parse::<u64>().map_err(|_| err(n, format!("`retention_bytes` must be a whole number of bytes, not '{t}'")))?)
        }
    };
    Ok(Topic {
        location: item.location(file),
        description: text("description")?.map(|(d, _)| d),
        name,
        partitions,
        key,
        format,
        subject_strategy,
        auto_register,
        columns,
        event_time: event_time.or_else(|| watermark.as_ref().map(|w| w.column.clone())),
        watermark,
        retention_ms,
        retention_bytes,
        primary_key: vec![],
        log,
        headers,
    })
}

fn is_time_type(ty: &str) -> bool {
    let t = ty.trim().to_ascii_lowercase();
    t.starts_with("timestamp") || t == "date" || t == "datetime" || t == "timestamptz"
}

/// `ordered_at`, `ordered_at - interval '5 seconds'`, `ordered_at - interval '1' minute`.
pub fn parse_watermark(text: &str) -> Option<Watermark> {
    let (column, rest) = match text.split_once('-') {
        Some((c, r)) => (c.trim(), Some(r.trim())),
        None => (text.trim(), None),
    };
    if column.is_empty() || !column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let delay_ms = match rest {
        None => 0,
        Some(r) => {
            let body = r.strip_prefix("interval").or_else(|| r.strip_prefix("INTERVAL"))?.trim();
            let unquoted: String = body.chars().filter(|c| *c != '\'' && *c != '"').collect();
            interval_ms(&unquoted)?
        }
    };
    Some(Watermark { column: column.to_string(), delay_ms })
}

/// An amount of time as SQL or people write it: `5 seconds`, `1 minute`, `250 ms`, `7d`,
/// `1h30m`; in milliseconds.
pub fn interval_ms(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(secs) = parse_duration(&t) {
        return Some((secs * 1000.0).round() as i64);
    }
    let mut words = t.split_whitespace();
    let (amount, unit) = (words.next()?.parse::<f64>().ok()?, words.next()?);
    if words.next().is_some() || amount < 0.0 {
        return None;
    }
    let ms = match unit {
        "ms" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
        "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "week" | "weeks" => 604_800_000.0,
        _ => return None,
    };
    Some((amount * ms).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Topic>, String> {
        parse_file(Path::new("streams/shop.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_topic_with_its_time_and_defaults() {
        let t = parse(
            "topics:\n  - name: orders\n    partitions: 4\n    key: customer_id\n    columns: {customer_id: bigint, ordered_at: timestamp}\n    \
             watermark: ordered_at - interval '5 seconds'\n    retention: 7d\n    log: kafka\n  - name: clicks\n",
        )
        .unwrap();
        assert_eq!((t[0].partitions, t[0].key.as_deref(), t[0].format), (4, Some("customer_id"), Format::Json));
        assert_eq!(t[0].watermark, Some(Watermark { column: "ordered_at".into(), delay_ms: 5000 }));
        assert_eq!(t[0].event_time.as_deref(), Some("ordered_at"), "the watermark's column is the event time");
        assert_eq!(t[0].retention_ms, Some(7 * 86_400_000));
        assert_eq!((t[1].partitions, t[1].location.line), (1, 9));
        assert_eq!(
            (t[0].log, t[1].log),
            (weir_log::Backend::Kafka, weir_log::Backend::Embedded),
            "topics are on the embedded log unless declared on Kafka"
        );
    }

    #[test]
    fn events_are_keyed_by_their_key_field() {
        let e = serde_json::json!({"id": 7, "customer": "c1", "n": null});
        assert_eq!(event_record(&e, Some("customer"), 5).key.as_deref(), Some(&b"c1"[..]));
        assert_eq!(event_record(&e, Some("id"), 5).key.as_deref(), Some(&b"7"[..]));
        assert_eq!(event_record(&e, Some("n"), 5).key, None);
        assert_eq!(event_record(&e, None, 5).value, br#"{"id":7,"customer":"c1","n":null}"#.to_vec());
    }

    #[test]
    fn intervals_read_as_sql_and_people_write_them() {
        assert_eq!(interval_ms("5 seconds"), Some(5000));
        assert_eq!(interval_ms("1 minute"), Some(60_000));
        assert_eq!(interval_ms("250 ms"), Some(250));
        assert_eq!(interval_ms("1h30m"), Some(5_400_000));
        assert_eq!(interval_ms("soon"), None);
        assert_eq!(parse_watermark("ts").map(|w| w.delay_ms), Some(0));
        assert_eq!(parse_watermark("ts - INTERVAL '2 minutes'").map(|w| w.delay_ms), Some(120_000));
        assert_eq!(parse_watermark("ts + interval '2 minutes'"), None);
    }

    #[test]
    fn mistakes_name_their_place() {
        let e = parse("topics:\n  - name: orders\n    partitons: 3\n").unwrap_err();
        assert!(e.starts_with("streams/shop.yml:3:5") && e.contains("did you mean 'partitions'"), "{e}");
        let e = parse("topics:\n  - name: orders\n    columns: {id: bigint, at: timestamp}\n    key: idd\n").unwrap_err();
        assert!(e.starts_with("streams/shop.yml:4:") && e.contains("did you mean 'id'"), "{e}");
        let e = parse("topics:\n  - name: orders\n    columns: {id: bigint}\n    event_time: id\n").unwrap_err();
        assert!(e.contains("is a bigint, not a timestamp"), "{e}");
        let e = parse("topics:\n  - name: o\n    watermark: at - 5\n").unwrap_err();
        assert!(e.contains("interval '5 seconds'"), "{e}");
        let e = parse("topics:\n  - name: o\n  - name: o\n").unwrap_err();
        assert!(e.contains("declared twice (also at line 2)"), "{e}");
        let e = parse("topics:\n  - name: 'a/b'\n").unwrap_err();
        assert!(e.contains("may hold only letters"), "{e}");
        let e = parse("topics:\n  - name: o\n    partitions: 0\n").unwrap_err();
        assert!(e.contains("from 1 to 10000, not '0'"), "{e}");
        let e = parse("topics:\n  - name: o\n    format: thrift\n").unwrap_err();
        assert!(e.starts_with("streams/shop.yml:3:13") && e.contains("json_schema, protobuf"), "{e}");
        let e = parse("topics:\n  - name: o\n    format: protobuf\n    subject_strategy: by_record\n").unwrap_err();
        assert!(e.starts_with("streams/shop.yml:4:") && e.contains("topic, record, topic_record"), "{e}");
        let e = parse("topics:\n  - name: o\n    auto_register: false\n").unwrap_err();
        assert!(e.contains("`format: json`: its messages carry no schema"), "{e}");
        let e = parse("topics:\n  - name: o\n    format: avro\n    auto_register: 'no'\n").unwrap_err();
        assert!(e.contains("`auto_register` is true or false"), "{e}");
    }

    #[test]
    fn registry_formats_name_their_subjects_and_registration() {
        let t = parse(
            "topics:\n  - name: a\n    format: json_schema\n  - name: b\n    format: protobuf\n    subject_strategy: TopicRecordNameStrategy\n    \
             auto_register: false\n  - name: c\n    format: avro\n    subject_strategy: record\n",
        )
        .unwrap();
        let got: Vec<_> = t.iter().map(|t| (t.format.schema_type(), t.subject_strategy, t.auto_register)).collect();
        assert_eq!(
            got,
            vec![
                (Some(SchemaType::Json), SubjectNaming::Topic, None),
                (Some(SchemaType::Protobuf), SubjectNaming::TopicRecord, Some(false)),
                (Some(SchemaType::Avro), SubjectNaming::Record, None),
            ]
        );
    }
}
