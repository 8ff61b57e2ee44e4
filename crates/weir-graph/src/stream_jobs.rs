//! `streams/*.sql`: stream jobs, read and rendered as users write them. A job is one `select`
//! in the warehouse's dialect over a topic named with `{{ stream('orders') }}` (as a model
//! names a model with `ref()`), with its settings in `{{ config(...) }}`:
//!
//! ```sql
//! {{ config(allowed_lateness='30 seconds', emit='every 10s') }}
//! select country, window_start, window_end, count(*) as orders, sum(amount) as revenue
//! from tumble({{ stream('orders') }}, ordered_at, interval '1 minute')
//! group by country, window_start, window_end
//! ```
//!
//! Rendering keeps the file's lines where they were (`config()` renders as nothing in place),
//! so a place in the rendered SQL is a place in the file. What the SQL means is worked out by
//! the stream executor (`weir-stream`); here the job is a declaration: its name, the topics it
//! reads, the relation it writes and its settings, each mistake named with its place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use weir_core::Location;

use crate::GraphError;
use crate::streams::{interval_ms, stream_files};

/// One stream job of `streams/<name>.sql`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamJob {
    /// The file's stem: how commands and the sink table name it.
    pub name: String,
    /// The file, from the project folder.
    pub path: PathBuf,
    /// The file as written, for snippets in errors.
    pub text: String,
    /// The SQL with the Jinja rendered, line for line.
    pub sql: String,
    /// Topics read through `stream()` or `cdc()`, in the order named.
    pub streams: Vec<String>,
    /// The topics of change events read through `cdc('load', 'schema.table')`, as a
    /// changelog: (the cdc load, the topic).
    pub changelogs: Vec<(String, String)>,
    /// Tables joined to the stream through `ref()` or `source()`, rendered as
    /// `__weir_table_<i>` for the `i`th.
    pub tables: Vec<TableRef>,
    pub config: JobConfig,
}

/// A warehouse table a job enriches its events from (a dimension), as named in the SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRef {
    Ref { package: Option<String>, name: String },
    Source { source: String, table: String },
}

/// What `ref()` and `source()` render as in a job's SQL: a name the planner knows as the
/// `i`th table.
pub fn table_placeholder(i: usize) -> String {
    format!("__weir_table_{i}")
}

/// Where a job's results go. The late and rejected events, the positions and the counts go
/// to the warehouse whatever the sink.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Sink {
    /// A table of the project's warehouse, upserted on the job's keys and window.
    #[default]
    Table,
    /// A Redis hash per group key (`<key_prefix><key>[:<key>...]`), holding the output columns
    /// of its latest window; expiring `ttl_ms` after its last write when set.
    Redis { url: String, key_prefix: String, ttl_ms: Option<i64> },
    /// A topic of the event log, its records committed with the input positions at each
    /// checkpoint, so that jobs can read what other jobs write.
    Topic { topic: String },
}

/// A job's settings, from `config()`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// The sink table's schema (the target's schema when unset) and name (the job's name).
    pub schema: Option<String>,
    pub alias: Option<String>,
    /// How long after a window closes a late event still updates its result.
    pub allowed_lateness_ms: i64,
    /// Emit each window when it closes (`None`), or also its running result this often.
    pub emit_every_ms: Option<i64>,
    /// How often the window state and the input positions are written down.
    pub checkpoint_interval_ms: i64,
    /// After this long without events, a partition no longer holds the watermark back.
    pub idle_timeout_ms: i64,
    /// Events dated further than this past the wall clock are rejected.
    pub max_future_ms: i64,
    /// How often the tables joined to the stream are read again.
    pub table_refresh_ms: i64,
    /// Where its results go: a warehouse table, or Redis as an online feature store.
    pub sink: Sink,
    /// Where a job that has never run (or was reset) starts reading its topics.
    pub start_from: StartFrom,
    /// Whether `weir serve` starts it.
    pub enabled: bool,
    pub description: Option<String>,
    /// For selection (`weir build --select tag:realtime`), as models have them.
    pub tags: Vec<String>,
    /// Where `config()` was called, for mistakes in its values.
    pub location: Location,
}

impl Default for JobConfig {
    fn default() -> JobConfig {
        JobConfig {
            schema: None,
            alias: None,
            allowed_lateness_ms: 0,
            emit_every_ms: None,
            sink: Sink::Table,
            checkpoint_interval_ms: 5_000,
            idle_timeout_ms: 30_000,
            max_future_ms: 3_600_000,
            table_refresh_ms: 60_000,
            start_from: StartFrom::Earliest,
            enabled: true,
            description: None,
            tags: vec![],
            location: Location::default(),
        }
    }
}

/// `config(start_from=...)`: where a job with no positions of its own starts reading, as a
/// Kafka consumer's `auto.offset.reset` and Flink's `scan.startup.mode` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Each partition's first event kept.
    Earliest,
    /// Only events appended after it starts.
    Latest,
    /// The offsets the job's consumer group (`weir-stream.<job>`) committed, where it has
    /// some; the first event kept elsewhere.
    Committed,
    /// The first event appended at or after this time (milliseconds since the epoch).
    Time(i64),
}

impl StreamJob {
    /// The sink table's name.
    pub fn table(&self) -> &str {
        self.config.alias.as_deref().unwrap_or(&self.name)
    }

    /// The sink table: in `config(schema=...)` or the target's schema, named by `alias` or
    /// the job.
    pub fn relation(&self, database: &str, target_schema: &str) -> weir_core::Relation {
        weir_core::Relation::new(database, self.config.schema.as_deref().unwrap_or(target_schema), self.table())
    }

    /// A place in the rendered SQL (1-based line and column) as a place in the file. Lines
    /// are the file's; a column after a `{{ ... }}` on the same line has moved, so the word
    /// there is looked for in the file's line, from that column on.
    pub fn at(&self, line: usize, col: usize, message: impl Into<String>) -> GraphError {
        let col = match (self.sql.lines().nth(line.wrapping_sub(1)), self.text.lines().nth(line.wrapping_sub(1))) {
            (Some(rendered), Some(written)) if rendered != written => {
                let word: String = rendered.chars().skip(col.saturating_sub(1)).take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let from = written.char_indices().nth(col.saturating_sub(1)).map_or(written.len(), |(i, _)| i);
                match (word.is_empty(), written[from..].find(&word)) {
                    (false, Some(i)) => written[..from + i].chars().count() + 1,
                    _ => col,
                }
            }
            _ => col,
        };
        GraphError::at(Location::new(&self.path, line, col), message, Some(&self.text))
    }
}

const CONFIG_KEYS: &[&str] = &[
    "schema",
    "alias",
    "allowed_lateness",
    "emit",
    "checkpoint_interval",
    "idle_timeout",
    "max_future",
    "enabled",
    "description",
    "sink",
    "materialized",
    "redis_url",
    "key_prefix",
    "ttl",
    "topic",
    "table_refresh",
    "tags",
    "start_from",
];

/// Every job under `<root>/streams/`, by file name.
pub fn read_jobs(root: &Path) -> Result<Vec<StreamJob>, GraphError> {
    stream_files(root, &["sql"])?
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| GraphError::io(&path, e))?;
            parse_job(path.strip_prefix(root).unwrap_or(&path), &text)
        })
        .collect()
}

/// Renders one job file.
pub fn parse_job(file: &Path, text: &str) -> Result<StreamJob, GraphError> {
    let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    if !weir_log::valid_name(&name) {
        return Err(GraphError::at(
            Location::file(file),
            format!("a stream job's name ('{name}', from its file) may hold only letters, digits, '.', '_' and '-'"),
            None,
        ));
    }
    let streams: Arc<Mutex<Vec<String>>> = Arc::default();
    let configs: Arc<Mutex<Vec<Kwargs>>> = Arc::default();
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let seen = streams.clone();
    env.add_function("stream", move |topic: String| -> Result<String, Error> {
        if !weir_log::valid_name(&topic) {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("'{topic}' is not a topic name")));
        }
        let mut s = seen.lock().map_err(|_| Error::new(ErrorKind::InvalidOperation, "poisoned"))?;
        if !s.contains(&topic) {
            s.push(topic.clone());
        }
        // A plain identifier when it is one, so the SQL reads as written.
        Ok(if topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') { topic } else { format!("\"{topic}\"") })
    });
    let changelogs: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (seen, read) = (streams.clone(), changelogs.clone());
    env.add_function("cdc", move |load: String, table: String| -> Result<String, Error> {
        let Some((schema, name)) = table.split_once('.').filter(|(s, t)| !s.is_empty() && !t.is_empty() && !t.contains('.')) else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cdc('{load}', '{table}'): name the table with its schema, as the change events' topic does ('public.{table}')"),
            ));
        };
        let topic = crate::loads::Cdc::topic_of(&load, schema, name);
        if !weir_log::valid_name(&topic) {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("'{topic}' is not a topic name")));
        }
        let poisoned = || Error::new(ErrorKind::InvalidOperation, "poisoned");
        let mut s = seen.lock().map_err(|_| poisoned())?;
        if !s.contains(&topic) {
            s.push(topic.clone());
        }
        let mut r = read.lock().map_err(|_| poisoned())?;
        if !r.iter().any(|(_, t)| *t == topic) {
            r.push((load, topic.clone()));
        }
        Ok(format!("\"{topic}\""))
    });
    let kept = configs.clone();
    env.add_function("config", move |kwargs: Kwargs| -> Result<String, Error> {
        kept.lock().map_err(|_| Error::new(ErrorKind::InvalidOperation, "poisoned"))?.push(kwargs);
        Ok(String::new())
    });
    let tables: Arc<Mutex<Vec<TableRef>>> = Arc::default();
    let named = tables.clone();
    let place = move |t: TableRef| -> Result<String, Error> {
        let mut all = named.lock().map_err(|_| Error::new(ErrorKind::InvalidOperation, "poisoned"))?;
        let i = all.iter().position(|x| *x == t).unwrap_or_else(|| {
            all.push(t);
            all.len() - 1
        });
        Ok(table_placeholder(i))
    };
    let place_ref = place.clone();
    env.add_function("ref", move |a: String, b: Option<String>| match b {
        Some(name) => place_ref(TableRef::Ref { package: Some(a), name }),
        None => place_ref(TableRef::Ref { package: None, name: a }),
    });
    env.add_function("source", move |source: String, table: String| place(TableRef::Source { source, table }));
    env.add_function("env_var", weir_project::jinja::env_var);
    let rendered = env.render_str(text, ()).map_err(|e| {
        let line = e.line().unwrap_or(0);
        GraphError::at(Location::new(file, line, 1), e.detail().unwrap_or(&e.to_string()).to_string(), Some(text))
    })?;
    let streams = streams.lock().map(|s| s.clone()).unwrap_or_default();
    let changelogs = changelogs.lock().map(|s| s.clone()).unwrap_or_default();
    let tables = tables.lock().map(|t| t.clone()).unwrap_or_default();
    let config_at = config_location(file, text);
    let mut config = JobConfig { location: config_at.clone(), ..JobConfig::default() };
    let calls = configs.lock().map(|c| c.clone()).unwrap_or_default();
    let (mut sink_kind, mut redis_url, mut key_prefix, mut ttl_ms, mut out_topic) = ("table", None, None, None, None);
    let err = |message: String| GraphError::at(config_at.clone(), message, Some(text));
    for kwargs in &calls {
        for key in kwargs.args() {
            if !CONFIG_KEYS.contains(&key) {
                let hint = weir_project::error::closest(key, CONFIG_KEYS.iter().copied())
                    .map(|c| format!("; did you mean '{c}'?"))
                    .unwrap_or_default();
                return Err(err(format!("unknown setting '{key}' in config(){hint} (known: {})", CONFIG_KEYS.join(", "))));
            }
            let v: Value = kwargs.get(key).map_err(|e| err(e.to_string()))?;
            let text_of = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            let time = |what: &str| -> Result<i64, GraphError> {
                let t = text_of(&v);
                interval_ms(&t).ok_or_else(|| err(format!("`{what}` '{t}' is not an amount of time ('30 seconds', '5s', '1 minute')")))
            };
            match key {
                "schema" => config.schema = Some(text_of(&v)),
                "alias" => config.alias = Some(text_of(&v)),
                "description" => config.description = Some(text_of(&v)),
                "allowed_lateness" => config.allowed_lateness_ms = time(key)?,
                "checkpoint_interval" => config.checkpoint_interval_ms = time(key)?.max(100),
                "idle_timeout" => config.idle_timeout_ms = time(key)?,
                "max_future" => config.max_future_ms = time(key)?,
                "table_refresh" => config.table_refresh_ms = time(key)?.max(100),
                "enabled" => config.enabled = v.is_true(),
                "start_from" => {
                    let t = text_of(&v);
                    config.start_from = match t.trim().to_ascii_lowercase().as_str() {
                        "earliest" => StartFrom::Earliest,
                        "latest" => StartFrom::Latest,
                        "committed" => StartFrom::Committed,
                        _ => StartFrom::Time(start_time(&t).ok_or_else(|| {
                            err(format!(
                                "`start_from` '{t}' is not earliest, latest, committed or a time ('2026-12-01 00:00:00', '2026-12-01T00:00:00Z')"
                            ))
                        })?),
                    };
                }
                "tags" => {
                    config.tags = match v.try_iter() {
                        Ok(items) if v.as_str().is_none() => items.map(|t| text_of(&t)).collect(),
                        _ => vec![text_of(&v)],
                    }
                }
                "emit" => {
                    let t = text_of(&v);
                    let lower = t.trim().to_ascii_lowercase();
                    config.emit_every_ms = match lower.as_str() {
                        "on close" | "on_close" | "close" => None,
                        every => Some(
                            every
                                .strip_prefix("every")
                                .and_then(|d| interval_ms(d.trim()))
                                .filter(|ms| *ms > 0)
                                .ok_or_else(|| err(format!("`emit` '{t}' is not 'on close' or 'every <time>' ('every 10s')")))?,
                        ),
                    };
                }
                "sink" | "materialized" => {
                    let t = text_of(&v);
                    sink_kind = match t.as_str() {
                        "table" => "table",
                        "redis" => "redis",
                        "topic" => "topic",
                        _ => return Err(err(format!("`{key}` '{t}' is not a sink Weir writes (table, redis, topic)"))),
                    };
                }
                "redis_url" => redis_url = Some(text_of(&v)),
                "topic" => {
                    let t = text_of(&v);
                    if !weir_log::valid_name(&t) {
                        return Err(err(format!("`topic` '{t}' is not a topic name (letters, digits, '.', '_' and '-')")));
                    }
                    out_topic = Some(t);
                }
                "key_prefix" => key_prefix = Some(text_of(&v)),
                "ttl" => ttl_ms = Some(time(key)?).filter(|ms| *ms > 0),
                _ => {}
            }
        }
    }
    config.sink = match sink_kind {
        "redis" => Sink::Redis {
            url: redis_url.unwrap_or_else(|| "redis://127.0.0.1:6379".to_string()),
            key_prefix: key_prefix.unwrap_or_else(|| format!("{name}:")),
            ttl_ms,
        },
        _ if redis_url.is_some() || key_prefix.is_some() || ttl_ms.is_some() => {
            return Err(err("`redis_url`, `key_prefix` and `ttl` are settings of `sink='redis'`".into()));
        }
        "topic" => match out_topic {
            Some(t) if streams.contains(&t) => return Err(err(format!("the job reads topic '{t}': it cannot write it too"))),
            Some(topic) => Sink::Topic { topic },
            None => return Err(err("`sink='topic'` needs the topic to write: `topic='revenue_per_minute'`".into())),
        },
        _ if out_topic.is_some() => return Err(err("`topic` is a setting of `sink='topic'`".into())),
        _ => Sink::Table,
    };
    Ok(StreamJob { name, path: file.to_path_buf(), text: text.to_string(), sql: rendered, streams, changelogs, tables, config })
}

/// A time as `start_from` takes it, in milliseconds since the epoch: RFC 3339 with its
/// offset, or a date and time (or a date) in UTC.
fn start_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(at.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return Some(at.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|at| at.and_utc().timestamp_millis())
}

/// Where `config(` is called, for mistakes in its values; the file when it is not.
fn config_location(file: &Path, text: &str) -> Location {
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find("config(") {
            return Location::new(file, i + 1, col + 1);
        }
    }
    Location::file(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<StreamJob, String> {
        parse_job(Path::new("streams/revenue.sql"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn start_from_takes_a_mode_or_a_time() {
        let from = |v: &str| {
            job(&format!("{{{{ config(start_from='{v}') }}}}\nselect * from {{{{ stream('orders') }}}}\n")).map(|j| j.config.start_from)
        };
        assert_eq!(from("latest"), Ok(StartFrom::Latest));
        assert_eq!(from("Committed"), Ok(StartFrom::Committed));
        assert_eq!(from("2026-12-01T00:00:00+01:00"), Ok(StartFrom::Time(1_796_079_600_000)));
        assert_eq!(from("2026-12-01 01:00:00"), Ok(StartFrom::Time(1_796_086_800_000)));
        assert_eq!(from("2026-12-01"), Ok(StartFrom::Time(1_796_083_200_000)));
        let e = from("yesterday").unwrap_err();
        assert!(e.contains("streams/revenue.sql:1:4") && e.contains("'yesterday' is not earliest, latest"), "{e}");
        assert_eq!(job("select * from {{ stream('orders') }}\n").unwrap().config.start_from, StartFrom::Earliest);
    }

    #[test]
    fn renders_line_for_line_and_keeps_the_settings() {
        let j = job("{{ config(allowed_lateness='30 seconds', emit='every 10s', alias='rev') }}\nselect *\nfrom {{ stream('orders') }}\n")
            .unwrap();
        assert_eq!(j.sql.lines().nth(2), Some("from orders"));
        assert_eq!(j.sql.lines().count(), 3, "config() leaves its line in place");
        assert_eq!(j.streams, vec!["orders".to_string()]);
        let joined = job(
            "select * from {{ stream('orders') }} o join {{ ref('customers') }} c on o.c = c.id join {{ source('crm', 'x') }} x on true",
        )
        .unwrap();
        assert_eq!(joined.sql, "select * from orders o join __weir_table_0 c on o.c = c.id join __weir_table_1 x on true");
        assert_eq!(joined.tables[0], TableRef::Ref { package: None, name: "customers".into() });
        assert_eq!((j.config.allowed_lateness_ms, j.config.emit_every_ms), (30_000, Some(10_000)));
        assert_eq!((j.name.as_str(), j.table()), ("revenue", "rev"));
        assert_eq!(job("select 1 from {{ stream('a-b') }}").unwrap().sql, "select 1 from \"a-b\"");
        let changes = job("select status, count(*) from {{ cdc('shop', 'public.orders') }} group by status").unwrap();
        assert_eq!(changes.sql, "select status, count(*) from \"shop.public.orders\" group by status");
        assert_eq!(changes.changelogs, vec![("shop".to_string(), "shop.public.orders".to_string())]);
        assert_eq!(changes.streams, vec!["shop.public.orders".to_string()]);
        let e = job("select 1 from {{ cdc('shop', 'orders') }}").unwrap_err();
        assert!(e.contains("name the table with its schema"), "{e}");
    }

    #[test]
    fn mistakes_name_their_place() {
        let e = job("\n{{ config(allowed_latenes='1s') }}\nselect 1").unwrap_err();
        assert!(e.starts_with("streams/revenue.sql:2:4") && e.contains("did you mean 'allowed_lateness'"), "{e}");
        let e = job("{{ config(emit='sometimes') }}").unwrap_err();
        assert!(e.contains("'every <time>'"), "{e}");
        let e = job("select 1\nfrom {{ strem('orders') }}").unwrap_err();
        assert!(e.starts_with("streams/revenue.sql:2:"), "{e}");
        let e = job("{{ config(sink='kafka') }}").unwrap_err();
        assert!(e.contains("not a sink Weir writes (table, redis, topic)"), "{e}");
        let e = job("{{ config(sink='topic', topic='orders') }}\nselect 1 from {{ stream('orders') }}").unwrap_err();
        assert!(e.contains("cannot write it too"), "{e}");
        let j = job("{{ config(sink='topic', topic='revenue') }}\nselect 1 from {{ stream('orders') }}").unwrap();
        assert_eq!(j.config.sink, Sink::Topic { topic: "revenue".into() });
        let e = job("{{ config(ttl='1h') }}").unwrap_err();
        assert!(e.contains("settings of `sink='redis'`"), "{e}");
        let j = job("{{ config(sink='redis', ttl='1 hour') }}\nselect 1").unwrap();
        assert_eq!(
            j.config.sink,
            Sink::Redis { url: "redis://127.0.0.1:6379".into(), key_prefix: "revenue:".into(), ttl_ms: Some(3_600_000) }
        );
    }
}
