//! `loads/*.yml`: what each load reads, where it writes and how, read into typed [`Load`]s
//! that remember where they were written, so mistakes are reported as `file:line:col` before
//! anything is extracted.
//!
//! The keys follow dlt and Sling where they overlap (`write_disposition`, `primary_key`,
//! `incremental.cursor`, `schema_contract`), so users of either read a load file at sight.

use std::path::Path;

use weir_core::Location;
use weir_core::files::{FileFormat, ReadOptions};
use weir_project::yaml::{self, Node, Value};

use crate::GraphError;

pub mod http;

/// One load: a source, a destination table in the raw layer, and how to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub name: String,
    pub description: Option<String>,
    pub location: Location,
    pub source: Source,
    /// The destination schema (default `raw`).
    pub schema: String,
    /// The destination table (default: the load's name).
    pub table: String,
    pub write_disposition: WriteDisposition,
    pub primary_key: Vec<String>,
    pub incremental: Option<Incremental>,
    pub schema_contract: SchemaContract,
    /// Schema-on-read: each record kept whole as JSON text in `_weir_record` (with the primary
    /// key as columns), and this view in the destination schema reads it typed.
    pub schema_on_read: Option<String>,
    /// Whether rows land in the source's order. Off by default: DuckDB then writes a file's
    /// rows from its parallel readers as they come, and to disk as it goes (a 683 MB CSV
    /// loads in 3.8 s instead of 5.4 s), where keeping the order makes it write the whole
    /// table again when it is made durable.
    pub preserve_order: bool,
    pub tags: Vec<String>,
    /// `to: topic`: the rows become events of this topic (declared in `streams/*.yml`, or
    /// made on the embedded log) instead of rows of a table.
    pub topic: Option<String>,
}

impl Load {
    /// The change data capture options, when the load is a cdc source.
    pub fn cdc(&self) -> Option<&Cdc> {
        match &self.source {
            Source::Database(d) => d.cdc.as_ref(),
            _ => None,
        }
    }

    /// The tables the load writes in `database`: its destination, or a cdc source's mirrors
    /// (and their history tables); none when it writes a topic.
    pub fn writes(&self, database: &str) -> Vec<weir_core::Relation> {
        if self.topic.is_some() {
            return vec![];
        }
        match self.cdc() {
            Some(cdc) => cdc
                .mirror_tables()
                .iter()
                .flat_map(|t| std::iter::once(t.clone()).chain(cdc.history.then(|| format!("{t}_history"))))
                .map(|t| weir_core::Relation::new(database, &self.schema, t))
                .collect(),
            None => vec![weir_core::Relation::new(database, &self.schema, &self.table)],
        }
    }
}

/// Where a load reads from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Local files matching a glob (relative to the project), optionally gzip- or
    /// zstd-compressed.
    Files(FileSource),
    /// A table or a query in a PostgreSQL, MySQL or MariaDB database.
    Database(DatabaseSource),
    /// A JSON API over HTTP: records at a path of each response, page after page.
    Http(http::HttpSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSource {
    pub engine: Engine,
    /// Where to connect (`postgresql://...`, `mysql://...`); secrets come through `env_var()`.
    pub url: String,
    pub table: Option<String>,
    pub query: Option<String>,
    /// `mode: cdc`: the tables are followed through the database's own change log into
    /// mirror tables, instead of being queried.
    pub cdc: Option<Cdc>,
}

/// A change data capture source: which tables, through which publication and slot, and how
/// their mirrors are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdc {
    /// The source tables (`schema.table`; [`Cdc::home`] when no schema is written), each
    /// kept in a mirror table named by [`Cdc::mirror_of`].
    pub tables: Vec<String>,
    /// The schema a table named without one is in, whose mirrors take the table's own name:
    /// `public` on PostgreSQL, the URL's database on MySQL and MariaDB.
    pub home: String,
    /// The publication naming the tables (default `weir_<load>`), made by Weir when the
    /// database has none of that name (PostgreSQL only).
    pub publication: String,
    /// The replication slot (default `weir_<load>`), made by Weir with the first snapshot; on
    /// MySQL and MariaDB, which have no slots, the name of the lock a follower holds.
    pub slot: String,
    /// What a delete at the source does to the mirror's row.
    pub deletes: Deletes,
    /// Every change is also kept, in order, in a history table beside each mirror
    /// (`<mirror>_history`).
    pub history: bool,
    /// Every change is also published to the event log, in Debezium's envelope, on the topic
    /// `<load>.<schema>.<table>` ([`Cdc::topic_of`]).
    pub events: bool,
    /// Retained WAL past which a slot is reported as a danger to the source's disk.
    pub max_retained_wal: u64,
    /// Rows an incremental snapshot reads per chunk (0: Weir's default).
    pub snapshot_chunk: usize,
}

/// A delete at the source removes the mirror's row, or keeps it with `_weir_deleted` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletes {
    Hard,
    Soft,
}

impl Cdc {
    /// Each source table as (schema, table).
    pub fn source_tables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tables.iter().map(|t| t.split_once('.').unwrap_or((self.home.as_str(), t.as_str())))
    }

    /// The topic of a source table's change events (`schema.table`): `<load>.<schema>.<table>`,
    /// as Debezium names its topics with the load as the prefix.
    pub fn topic_of(load: &str, namespace: &str, table: &str) -> String {
        format!("{load}.{namespace}.{table}")
    }

    /// The topics of the change events, in the order of `tables`, when the load publishes
    /// them.
    pub fn topics(&self, load: &str) -> Vec<String> {
        if !self.events {
            return vec![];
        }
        self.source_tables().map(|(s, t)| Cdc::topic_of(load, s, t)).collect()
    }

    /// The mirror tables' names, in the order of `tables`.
    pub fn mirror_tables(&self) -> Vec<String> {
        self.source_tables().map(|(s, t)| self.mirror_of(s, t)).collect()
    }

    /// The mirror of source table `namespace.name` ([`mirror_table`]).
    pub fn mirror_of(&self, namespace: &str, name: &str) -> String {
        mirror_table(&self.home, namespace, name)
    }
}

/// The mirror of source table `namespace.name` of a source whose home schema is `home`:
/// `name` in the home schema, else `namespace_name` (so `public.orders` and `sales.orders`
/// do not meet).
pub fn mirror_table(home: &str, namespace: &str, name: &str) -> String {
    if namespace == home { name.to_string() } else { format!("{namespace}_{name}") }
}

/// The database a MySQL URL names (`mysql://user@host:3306/shop?...` -> `shop`), or "".
fn url_database(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    path.split(['?', '#']).next().unwrap_or_default().trim_matches('/').to_string()
}

/// The database engines a load reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    pub format: FileFormat,
    /// The glob as written (relative to the project root unless absolute).
    pub path: String,
    /// CSV options; column types given instead of inferred ones.
    pub options: ReadOptions,
}

/// How the extracted rows reach the destination table (dlt's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteDisposition {
    /// Add the rows.
    Append,
    /// Replace the table's whole content, atomically.
    Replace,
    /// Upsert on the primary key.
    Merge,
}

impl WriteDisposition {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteDisposition::Append => "append",
            WriteDisposition::Replace => "replace",
            WriteDisposition::Merge => "merge",
        }
    }
}

/// Incremental extraction on a cursor column.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    pub cursor: String,
    /// Where the first run starts (rows with a cursor above it).
    pub initial_value: Option<String>,
    /// How far behind the high-water mark each run starts again, for late updates: an
    /// interval (`2 hours`) for time cursors, a number for numeric ones.
    pub lookback: Option<String>,
    /// HTTP sources: the query parameter that receives the high-water mark (`since`), for
    /// the API to filter on.
    pub param: Option<String>,
}

/// What happens when the data does not fit the destination's columns (dlt's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaContract {
    /// New columns are added and types widened.
    Evolve,
    /// Any difference fails the load, which writes nothing.
    Freeze,
    /// A row with a new column or a value of another type is rejected (kept in
    /// `_weir_rejected`); the rest load.
    DiscardRow,
    /// New columns are dropped and values that do not fit become null.
    DiscardValue,
}

impl SchemaContract {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaContract::Evolve => "evolve",
            SchemaContract::Freeze => "freeze",
            SchemaContract::DiscardRow => "discard_row",
            SchemaContract::DiscardValue => "discard_value",
        }
    }
}

/// Reads every load of one file.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Load>, GraphError> {
    let Some(root) = yaml::parse(file, text)? else { return Ok(vec![]) };
    let p = Parser { file, text };
    let entries = root.as_map().ok_or_else(|| p.err(&root, "a loads file is a mapping with a `loads:` list"))?;
    let mut loads = vec![];
    for (key, value) in entries {
        match key.key_text().as_deref() {
            Some("version") => {}
            Some("loads") => {
                let items = value.as_seq().ok_or_else(|| p.err(value, "`loads` must be a list of loads"))?;
                for item in items {
                    if p.enabled(item)? {
                        loads.push(p.load(item)?);
                    }
                }
            }
            other => return Err(p.err(key, format!("unknown key '{}' (expected `loads:`)", other.unwrap_or_default()))),
        }
    }
    Ok(loads)
}

pub(super) struct Parser<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Parser<'_> {
    pub(super) fn err(&self, node: &Node, message: impl Into<String>) -> GraphError {
        let location = node.location(self.file);
        let snippet = location.snippet(self.text).map(|s| s.to_string());
        GraphError::At { location, message: message.into(), snippet }
    }

    pub(super) fn map<'n>(&self, node: &'n Node, what: &str, known: &[&str]) -> Result<&'n [(Node, Node)], GraphError> {
        let entries = node.as_map().ok_or_else(|| self.err(node, format!("{what} must be a mapping")))?;
        for (k, _) in entries {
            let key = k.key_text().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(self.err(k, format!("unknown key '{key}' in {what} (known: {})", known.join(", "))));
            }
        }
        Ok(entries)
    }

    pub(super) fn text(&self, node: &Node, what: &str) -> Result<String, GraphError> {
        match &node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) => {
                let raw = node.scalar_text().unwrap_or_default();
                weir_project::project::render_static(&raw, &Default::default()).map_err(|m| self.err(node, format!("{what}: {m}")))
            }
            _ => Err(self.err(node, format!("{what} must be a text"))),
        }
    }

    pub(super) fn texts(&self, node: &Node, what: &str) -> Result<Vec<String>, GraphError> {
        match &node.value {
            Value::Seq(items) => items.iter().map(|i| self.text(i, what)).collect(),
            _ => Ok(vec![self.text(node, what)?]),
        }
    }

    pub(super) fn flag(&self, node: &Node, what: &str) -> Result<bool, GraphError> {
        match node.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.err(node, format!("{what} must be true or false"))),
        }
    }

    /// `enabled: false`, or a text that renders to false (`"{{ env_var('SHOP_DB', '') != '' }}"`),
    /// leaves a load out of the project, as dbt leaves out a disabled node.
    fn enabled(&self, item: &Node) -> Result<bool, GraphError> {
        let Some(node) = item.get("enabled") else { return Ok(true) };
        if let Value::Bool(b) = node.value {
            return Ok(b);
        }
        match self.text(node, "enabled")?.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.err(node, format!("enabled must be true or false, not '{other}'"))),
        }
    }

    fn load(&self, item: &Node) -> Result<Load, GraphError> {
        const KEYS: &[&str] = &[
            "name",
            "enabled",
            "description",
            "source",
            "destination",
            "write_disposition",
            "primary_key",
            "incremental",
            "schema_contract",
            "schema_on_read",
            "preserve_order",
            "tags",
            "deletes",
            "history",
            "events",
            "to",
            "topic",
        ];
        let entries = self.map(item, "a load", KEYS)?;
        let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
        let name_node = get("name").ok_or_else(|| self.err(item, "a load needs a `name`"))?;
        let name = self.text(name_node, "name")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.err(name_node, format!("load name '{name}' must be letters, digits and underscores")));
        }
        let source_node = get("source").ok_or_else(|| self.err(item, format!("load '{name}' needs a `source`")))?;
        let source = self.source(source_node)?;
        if let Source::Database(DatabaseSource { cdc: Some(_), .. }) = &source {
            return self.cdc_load(item, name, source);
        }
        for key in ["deletes", "history", "events"] {
            if let Some(n) = get(key) {
                return Err(self.err(n, format!("`{key}` is for change data capture (`mode: cdc` on a postgres or mariadb source)")));
            }
        }
        let (mut schema, mut table) = match get("destination") {
            None => ("raw".to_string(), name.clone()),
            Some(d) => {
                let text = self.text(d, "destination")?;
                match text.split_once('.') {
                    Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => (s.to_string(), t.to_string()),
                    None if !text.is_empty() => ("raw".to_string(), text),
                    _ => return Err(self.err(d, format!("destination '{text}' must be `schema.table` or `table`"))),
                }
            }
        };
        let write_disposition = match get("write_disposition") {
            None => WriteDisposition::Append,
            Some(n) => match self.text(n, "write_disposition")?.as_str() {
                "append" => WriteDisposition::Append,
                "replace" => WriteDisposition::Replace,
                "merge" => WriteDisposition::Merge,
                other => return Err(self.err(n, format!("write_disposition '{other}' is not one of append, replace, merge"))),
            },
        };
        let primary_key = match get("primary_key") {
            Some(n) => self.texts(n, "primary_key")?,
            None => vec![],
        };
        if write_disposition == WriteDisposition::Merge && primary_key.is_empty() {
            return Err(self.err(item, format!("load '{name}': write_disposition merge needs a `primary_key`")));
        }
        let incremental = get("incremental").map(|n| self.incremental(n)).transpose()?;
        if let (Some(inc), Some(n)) = (&incremental, get("incremental")) {
            if matches!(source, Source::Files(_)) {
                return Err(self.err(
                    n,
                    "file loads are incremental by file (a file already loaded is skipped); `incremental` is for databases and APIs",
                ));
            }
            if matches!(source, Source::Http(_)) && inc.param.is_none() {
                return Err(self.err(n, "an http source's `incremental` needs the `param` that sends the high-water mark (`since`)"));
            }
            if matches!(source, Source::Database(_)) && inc.param.is_some() {
                return Err(self.err(n, "`param` is for http sources; a database source filters on the cursor column itself"));
            }
            if inc.lookback.is_some() && write_disposition != WriteDisposition::Merge {
                return Err(self.err(
                    n,
                    format!("load '{name}': a lookback extracts some rows again, which only `write_disposition: merge` loads once"),
                ));
            }
        }
        let schema_contract = match get("schema_contract") {
            None => SchemaContract::Evolve,
            Some(n) => match self.text(n, "schema_contract")?.as_str() {
                "evolve" => SchemaContract::Evolve,
                "freeze" => SchemaContract::Freeze,
                "discard_row" => SchemaContract::DiscardRow,
                "discard_value" => SchemaContract::DiscardValue,
                other => {
                    return Err(self.err(n, format!("schema_contract '{other}' is not one of evolve, freeze, discard_row, discard_value")));
                }
            },
        };
        let schema_on_read = match get("schema_on_read") {
            None => None,
            Some(n) => match &n.value {
                Value::Bool(false) => None,
                Value::Bool(true) => Some(format!("{table}_typed")),
                Value::Map(_) => {
                    let m = self.map(n, "`schema_on_read`", &["view"])?;
                    match m.first() {
                        Some((_, v)) => Some(self.text(v, "view")?),
                        None => Some(format!("{table}_typed")),
                    }
                }
                _ => return Err(self.err(n, "`schema_on_read` is true, false or {view: name}")),
            },
        };
        if let (Some(_), Some(n)) = (&schema_on_read, get("schema_contract")) {
            return Err(self.err(n, "a schema-on-read load keeps every record whole: `schema_contract` does not apply"));
        }
        let topic = self.topic(&name, &get)?;
        if topic.is_some() {
            // What only a table has.
            let table_only = [
                ("schema_on_read", "keeps records in a table"),
                ("schema_contract", "compares rows with a table's columns; a topic's declared `columns` type its events"),
                ("preserve_order", "is how a table stores rows; events keep the source's order"),
            ];
            for (key, why) in table_only {
                if let Some(n) = get(key) {
                    return Err(self.err(n, format!("load '{name}' writes a topic (`to: topic`): `{key}` {why}")));
                }
            }
            // Its `destination` is the schema of its stage and rejected rows.
            if let Some(d) = get("destination") {
                let text = self.text(d, "destination")?;
                if text.is_empty() || text.contains('.') {
                    return Err(self.err(
                        d,
                        format!("load '{name}' writes a topic (`to: topic`): its destination is the schema of its stage and rejected rows, not '{text}'"),
                    ));
                }
                (schema, table) = (text, name.clone());
            }
            if write_disposition == WriteDisposition::Replace {
                return Err(self.err(
                    get("write_disposition").unwrap_or(item),
                    format!("load '{name}' writes a topic, which keeps every event it was given: `write_disposition` is append or merge (events keyed by `primary_key`, the newest of each key)"),
                ));
            }
        }
        Ok(Load {
            topic,
            description: get("description").map(|n| self.text(n, "description")).transpose()?,
            schema_on_read,
            preserve_order: get("preserve_order").map(|n| self.flag(n, "preserve_order")).transpose()?.unwrap_or(false),
            location: item.location(self.file),
            tags: get("tags").map(|n| self.texts(n, "tags")).transpose()?.unwrap_or_default(),
            name,
            source,
            schema,
            table,
            write_disposition,
            primary_key,
            incremental,
            schema_contract,
        })
    }

    /// `to: topic` (with `topic: name`, default the load's name), or `to: table` (the
    /// default); `topic:` alone says `to: topic`.
    fn topic<'n>(&self, name: &str, get: &dyn Fn(&str) -> Option<&'n Node>) -> Result<Option<String>, GraphError> {
        let to = get("to").map(|n| Ok::<_, GraphError>((n, self.text(n, "to")?))).transpose()?;
        let topic = get("topic").map(|n| Ok::<_, GraphError>((n, self.text(n, "topic")?))).transpose()?;
        match (to, topic) {
            (Some((n, to)), _) if to != "table" && to != "topic" => Err(self.err(n, format!("`to: {to}` is not `table` or `topic`"))),
            (Some((_, to)), Some((n, _))) if to == "table" => {
                Err(self.err(n, format!("load '{name}' has `to: table`: `topic` is for `to: topic`")))
            }
            (Some((_, to)), None) if to == "table" => Ok(None),
            (None, None) => Ok(None),
            (_, Some((n, topic))) if !weir_log::valid_name(&topic) => {
                Err(self.err(n, format!("topic '{topic}' must be letters, digits, '.', '_' or '-' (at most 249)")))
            }
            (_, Some((_, topic))) => Ok(Some(topic)),
            (Some(_), None) => Ok(Some(name.to_string())),
        }
    }

    fn source(&self, node: &Node) -> Result<Source, GraphError> {
        let entries = node.as_map().ok_or_else(|| self.err(node, "`source` must be a mapping with a `kind`"))?;
        let kind_node = entries
            .iter()
            .find(|(k, _)| k.key_text().as_deref() == Some("kind"))
            .map(|(_, v)| v)
            .ok_or_else(|| self.err(node, "`source` needs a `kind`: csv, jsonl, parquet, postgres, mysql or http"))?;
        let kind = self.text(kind_node, "kind")?;
        let format = match kind.as_str() {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "parquet" => Some(FileFormat::Parquet),
            "postgres" | "postgresql" | "mysql" | "mariadb" | "http" => None,
            other => {
                return Err(self.err(kind_node, format!("source kind '{other}' is not one of csv, jsonl, parquet, postgres, mysql, http")));
            }
        };
        if let Some(format) = format {
            let known: &[&str] = if format == FileFormat::Csv {
                &["kind", "path", "header", "delimiter", "quote", "escape", "null", "columns"]
            } else {
                &["kind", "path"]
            };
            let entries = self.map(node, &format!("a {kind} source"), known)?;
            let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
            let path = get("path")
                .map(|n| self.text(n, "path"))
                .transpose()?
                .ok_or_else(|| self.err(node, "a file source needs a `path` (a file or a glob)"))?;
            let one_char = |k: &str| -> Result<Option<String>, GraphError> {
                match get(k) {
                    None => Ok(None),
                    Some(n) => {
                        let v = self.text(n, k)?;
                        if v.chars().count() != 1 {
                            return Err(self.err(n, format!("`{k}` must be one character, not '{v}'")));
                        }
                        Ok(Some(v))
                    }
                }
            };
            let mut types = vec![];
            if let Some(cols) = get("columns") {
                let cols = cols.as_map().ok_or_else(|| self.err(cols, "`columns` maps column names to types"))?;
                for (k, v) in cols {
                    types.push((k.key_text().unwrap_or_default(), self.text(v, "a column type")?));
                }
            }
            let options = ReadOptions {
                header: get("header").map(|n| self.flag(n, "header")).transpose()?.unwrap_or(true),
                delimiter: one_char("delimiter")?,
                quote: one_char("quote")?,
                escape: one_char("escape")?,
                nulls: get("null").map(|n| self.texts(n, "null")).transpose()?.unwrap_or_default(),
                types,
            };
            return Ok(Source::Files(FileSource { format, path, options }));
        }
        if kind == "http" {
            return http::parse_source(self, node).map(Source::Http);
        }
        let engine = if kind.starts_with("postgres") { Engine::Postgres } else { Engine::Mysql };
        let what = format!("a {kind} source");
        let entries = self.map(
            node,
            &what,
            &["kind", "url", "table", "query", "mode", "tables", "publication", "slot", "max_retained_wal", "snapshot_chunk"],
        )?;
        let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
        let example = match engine {
            Engine::Postgres => "postgresql://user@host:port/db",
            Engine::Mysql => "mysql://user:password@host:port/db",
        };
        let url = get("url")
            .map(|n| self.text(n, "url"))
            .transpose()?
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| self.err(node, format!("{what} needs a `url` ({example}; use {{{{ env_var('...') }}}} for secrets)")))?;
        let table = get("table").map(|n| self.text(n, "table")).transpose()?;
        let query = get("query").map(|n| self.text(n, "query")).transpose()?;
        let mode = get("mode").map(|n| Ok::<_, GraphError>((n, self.text(n, "mode")?))).transpose()?;
        let cdc_keys = ["tables", "publication", "slot", "max_retained_wal", "snapshot_chunk"];
        match mode.as_ref().map(|(n, m)| (*n, m.as_str())) {
            None | Some((_, "query")) => {
                if let Some((k, _)) = entries.iter().find(|(k, _)| cdc_keys.contains(&k.key_text().unwrap_or_default().as_str())) {
                    return Err(self.err(k, "this key is for change data capture: add `mode: cdc` to the source"));
                }
            }
            Some((_, "cdc")) => {
                let home = match engine {
                    Engine::Postgres => "public".to_string(),
                    Engine::Mysql => {
                        for key in ["publication", "slot", "max_retained_wal"] {
                            if let Some(k) = entries.iter().find(|(k, _)| k.key_text().as_deref() == Some(key)).map(|(k, _)| k) {
                                return Err(self.err(
                                    k,
                                    format!("`{key}` is for PostgreSQL's logical replication; a MySQL or MariaDB source reads the binlog"),
                                ));
                            }
                        }
                        url_database(&url)
                    }
                };
                if let Some(t) = get("table").or(get("query")) {
                    return Err(
                        self.err(t, "a cdc source follows `tables: [schema.table, ...]`; `table` and `query` are for queried loads")
                    );
                }
                let tables_node = get("tables").ok_or_else(|| self.err(node, "a cdc source needs `tables: [schema.table, ...]`"))?;
                let tables = self.texts(tables_node, "tables")?;
                if tables.is_empty() {
                    return Err(self.err(tables_node, "`tables` names at least one table"));
                }
                for t in &tables {
                    if t.is_empty() || t.split('.').count() > 2 || t.split('.').any(str::is_empty) {
                        return Err(self.err(tables_node, format!("table '{t}' must be `schema.table` or `table`")));
                    }
                    if home.is_empty() && !t.contains('.') {
                        return Err(
                            self.err(tables_node, format!("table '{t}' names no database, and the url names none: write `database.{t}`"))
                        );
                    }
                }
                let max_retained_wal = match get("max_retained_wal") {
                    None => 1 << 30,
                    Some(n) => {
                        let text = self.text(n, "max_retained_wal")?;
                        weir_core::size::parse(&text)
                            .ok_or_else(|| self.err(n, format!("max_retained_wal '{text}' is not a size (1GB, 512MB, 100000000)")))?
                    }
                };
                let snapshot_chunk = match get("snapshot_chunk") {
                    None => 0,
                    Some(n) => {
                        let text = self.text(n, "snapshot_chunk")?;
                        text.parse::<usize>().ok().filter(|&rows| rows > 0).ok_or_else(|| {
                            self.err(
                                n,
                                format!(
                                    "snapshot_chunk '{text}' is not a number of rows (an incremental snapshot reads this many at a time)"
                                ),
                            )
                        })?
                    }
                };
                let cdc = Cdc {
                    tables,
                    home,
                    publication: get("publication").map(|n| self.text(n, "publication")).transpose()?.unwrap_or_default(),
                    slot: get("slot").map(|n| self.text(n, "slot")).transpose()?.unwrap_or_default(),
                    deletes: Deletes::Hard,
                    history: false,
                    events: false,
                    max_retained_wal,
                    snapshot_chunk,
                };
                return Ok(Source::Database(DatabaseSource { engine, url, table: None, query: None, cdc: Some(cdc) }));
            }
            Some((n, other)) => return Err(self.err(n, format!("mode '{other}' is not one of query, cdc"))),
        }
        if table.is_some() == query.is_some() {
            return Err(self.err(node, format!("{what} needs exactly one of `table` and `query`")));
        }
        Ok(Source::Database(DatabaseSource { engine, url, table, query, cdc: None }))
    }

    /// A change data capture load: its mirrors go to the schema `destination` names (default
    /// `raw`), one per source table; the queried loads' write options do not apply.
    fn cdc_load(&self, item: &Node, name: String, mut source: Source) -> Result<Load, GraphError> {
        let entries = item.as_map().unwrap_or_default();
        let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
        for key in ["write_disposition", "primary_key", "incremental", "schema_on_read", "preserve_order"] {
            if let Some(n) = get(key) {
                return Err(self.err(
                    n,
                    format!("`{key}` does not apply to a cdc source: its mirrors are merged on each table's primary key as changes arrive"),
                ));
            }
        }
        for key in ["to", "topic"] {
            if let Some(n) = get(key) {
                return Err(self.err(
                    n,
                    format!("`{key}`: a cdc source publishes its changes to topics `{name}.<schema>.<table>` with `events: true`"),
                ));
            }
        }
        let schema = match get("destination") {
            None => "raw".to_string(),
            Some(d) => {
                let text = self.text(d, "destination")?;
                if text.is_empty() || text.contains('.') {
                    return Err(self.err(d, format!("a cdc source's destination is the schema of its mirror tables, not '{text}'")));
                }
                text
            }
        };
        let mut mirrors = vec![];
        if let Source::Database(DatabaseSource { cdc: Some(cdc), engine, .. }) = &mut source {
            self.cdc_options(item, &name, *engine, cdc)?;
            mirrors = cdc.mirror_tables();
        }
        let mut seen = std::collections::HashSet::new();
        for m in mirrors {
            if !seen.insert(m.clone()) {
                return Err(self.err(item, format!("load '{name}': two of its tables would both be mirrored as {schema}.{m}")));
            }
        }
        let schema_contract = match get("schema_contract") {
            None => SchemaContract::Evolve,
            Some(n) => match self.text(n, "schema_contract")?.as_str() {
                "evolve" => SchemaContract::Evolve,
                "freeze" => SchemaContract::Freeze,
                other => return Err(self.err(n, format!("a cdc source's schema_contract is evolve or freeze, not '{other}'"))),
            },
        };
        Ok(Load {
            description: get("description").map(|n| self.text(n, "description")).transpose()?,
            location: item.location(self.file),
            tags: get("tags").map(|n| self.texts(n, "tags")).transpose()?.unwrap_or_default(),
            table: String::new(),
            name,
            source,
            schema,
            write_disposition: WriteDisposition::Merge,
            primary_key: vec![],
            incremental: None,
            schema_contract,
            schema_on_read: None,
            preserve_order: false,
            topic: None,
        })
    }

    /// The load-level options of a cdc source, and the defaults named after the load.
    fn cdc_options(&self, item: &Node, name: &str, engine: Engine, cdc: &mut Cdc) -> Result<(), GraphError> {
        let get = |k: &str| item.get(k);
        let lower = name.to_ascii_lowercase();
        if cdc.publication.is_empty() {
            cdc.publication = format!("weir_{lower}");
        }
        if cdc.slot.is_empty() {
            cdc.slot = format!("weir_{lower}");
        }
        let slot_name = cdc.slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && cdc.slot.len() <= 63;
        if engine == Engine::Postgres && !slot_name {
            let at = item.get("source").and_then(|s| s.get("slot")).unwrap_or(item);
            return Err(self.err(
                at,
                format!("slot '{}': PostgreSQL names slots with lower-case letters, digits and underscores (63 at most)", cdc.slot),
            ));
        }
        if let Some(n) = get("history") {
            cdc.history = self.flag(n, "history")?;
        }
        if let Some(n) = get("events") {
            cdc.events = self.flag(n, "events")?;
        }
        if let Some(n) = get("deletes") {
            cdc.deletes = match self.text(n, "deletes")?.as_str() {
                "hard" => Deletes::Hard,
                "soft" => Deletes::Soft,
                other => return Err(self.err(n, format!("deletes '{other}' is not one of hard, soft"))),
            };
        }
        Ok(())
    }

    fn incremental(&self, node: &Node) -> Result<Incremental, GraphError> {
        let entries = self.map(node, "`incremental`", &["cursor", "initial_value", "lookback", "param"])?;
        let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
        let cursor = get("cursor")
            .map(|n| self.text(n, "cursor"))
            .transpose()?
            .ok_or_else(|| self.err(node, "`incremental` needs a `cursor` column"))?;
        Ok(Incremental {
            cursor,
            initial_value: get("initial_value").map(|n| self.text(n, "initial_value")).transpose()?,
            lookback: get("lookback").map(|n| self.text(n, "lookback")).transpose()?,
            param: get("param").map(|n| self.text(n, "param")).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Load>, String> {
        parse_file(Path::new("loads/x.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_file_and_database_loads_with_defaults() {
        let loads = parse(
            "loads:\n  - name: orders\n    source:\n      kind: csv\n      path: data/orders_*.csv.gz\n      delimiter: ';'\n      null: ['', NA]\n      columns: {amount: 'decimal(10,2)'}\n  - name: customers\n    source: {kind: postgres, url: 'postgresql://u@h/db', table: public.customers}\n    destination: crm.customers\n    write_disposition: merge\n    primary_key: id\n    incremental: {cursor: updated_at, initial_value: '2024-01-01', lookback: 1 hour}\n",
        )
        .unwrap();
        assert_eq!(loads.len(), 2);
        assert_eq!((loads[0].schema.as_str(), loads[0].table.as_str()), ("raw", "orders"));
        assert_eq!(loads[0].write_disposition, WriteDisposition::Append);
        let Source::Files(f) = &loads[0].source else { panic!("files") };
        assert_eq!((f.options.delimiter.as_deref(), f.options.nulls.len(), f.options.header), (Some(";"), 2, true));
        assert_eq!(f.options.types, vec![("amount".to_string(), "decimal(10,2)".to_string())]);
        assert_eq!((loads[1].schema.as_str(), loads[1].table.as_str()), ("crm", "customers"));
        assert_eq!(loads[1].primary_key, vec!["id".to_string()]);
        assert_eq!(loads[1].incremental.as_ref().and_then(|i| i.lookback.as_deref()), Some("1 hour"));
        assert_eq!(loads[1].location.line, 9);
    }

    #[test]
    fn a_load_may_write_a_topic_instead_of_a_table() {
        let load = |rest: &str| parse(&format!("loads:\n  - name: orders\n    source: {{kind: csv, path: x.csv}}\n{rest}"));
        let l = load("    to: topic\n").unwrap();
        assert_eq!(l[0].topic.as_deref(), Some("orders"), "the load's name by default");
        assert!(l[0].writes("db").is_empty(), "no table");
        let l = load("    topic: shop.orders\n    primary_key: id\n    write_disposition: merge\n").unwrap();
        assert_eq!(l[0].topic.as_deref(), Some("shop.orders"), "`topic` alone says `to: topic`");
        assert_eq!(load("    to: table\n").unwrap()[0].topic, None);
        let e = load("    to: kafka\n").unwrap_err();
        assert!(e.starts_with("loads/x.yml:4:9") && e.contains("is not `table` or `topic`"), "{e}");
        let e = load("    to: table\n    topic: t\n").unwrap_err();
        assert!(e.contains("`topic` is for `to: topic`"), "{e}");
        let e = load("    topic: 'a b'\n").unwrap_err();
        assert!(e.contains("topic 'a b' must be letters"), "{e}");
        let e = load("    to: topic\n    destination: raw.o\n").unwrap_err();
        assert!(e.starts_with("loads/x.yml:5:") && e.contains("the schema of its stage and rejected rows, not 'raw.o'"), "{e}");
        let l = load("    to: topic\n    destination: landing\n").unwrap();
        assert_eq!((l[0].schema.as_str(), l[0].table.as_str()), ("landing", "orders"));
        let e = load("    to: topic\n    write_disposition: replace\n").unwrap_err();
        assert!(e.contains("append or merge"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: postgres, url: x, mode: cdc, tables: [t]}\n    to: topic\n").unwrap_err();
        assert!(e.contains("with `events: true`"), "{e}");
    }

    #[test]
    fn a_disabled_load_is_left_out_even_when_it_would_not_parse() {
        let text = |enabled: &str| {
            format!(
                "loads:\n  - name: files\n    source: {{kind: csv, path: x}}\n  - name: crm\n    enabled: {enabled}\n    \
                 source: {{kind: postgres, url: \"{{{{ env_var('WEIR_TEST_UNSET_CRM_URL', '') }}}}\", table: t}}\n"
            )
        };
        let names = |enabled: &str| parse(&text(enabled)).map(|l| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>());
        assert_eq!(names("false"), Ok(vec!["files".to_string()]));
        assert_eq!(names("\"{{ env_var('WEIR_TEST_UNSET_CRM_URL', '') != '' }}\""), Ok(vec!["files".to_string()]));
        let e = names("true").unwrap_err();
        assert!(e.contains("needs a `url`"), "{e}");
        let e = names("maybe").unwrap_err();
        assert!(e.starts_with("loads/x.yml:5:14") && e.contains("enabled must be true or false, not 'maybe'"), "{e}");
    }

    #[test]
    fn reads_a_cdc_source_with_defaults_named_after_the_load() {
        let loads = parse(
            "loads:\n  - name: Shop\n    source:\n      kind: postgres\n      url: postgresql://u@h/db\n      mode: cdc\n      tables: [public.orders, sales.orders, customers]\n      max_retained_wal: 512MB\n      snapshot_chunk: 5000\n    destination: raw_shop\n    deletes: soft\n",
        )
        .unwrap();
        let Source::Database(d) = &loads[0].source else { panic!("database") };
        let cdc = d.cdc.as_ref().unwrap();
        assert_eq!((cdc.publication.as_str(), cdc.slot.as_str()), ("weir_shop", "weir_shop"));
        assert_eq!((cdc.deletes, cdc.max_retained_wal, cdc.snapshot_chunk), (Deletes::Soft, 512 << 20, 5000));
        assert_eq!(cdc.mirror_tables(), vec!["orders", "sales_orders", "customers"]);
        assert_eq!(loads[0].schema, "raw_shop");
        let defaults = parse("loads:\n  - name: s\n    source: {kind: postgres, url: x, mode: cdc, tables: t, slot: mine}\n").unwrap();
        let Source::Database(d) = &defaults[0].source else { panic!("database") };
        let cdc = d.cdc.as_ref().unwrap();
        assert_eq!((cdc.slot.as_str(), cdc.deletes, cdc.max_retained_wal, cdc.snapshot_chunk), ("mine", Deletes::Hard, 1 << 30, 0));
        assert_eq!(defaults[0].schema, "raw");
    }

    #[test]
    fn cdc_mistakes_say_what_applies() {
        let cdc = |rest: &str| parse(&format!("loads:\n  - name: s\n    source: {{kind: postgres, url: x, mode: cdc{rest}\n"));
        let e = cdc("}").unwrap_err();
        assert!(e.contains("needs `tables:"), "{e}");
        let e = cdc(", tables: [a.b.c]}").unwrap_err();
        assert!(e.contains("'a.b.c' must be `schema.table`"), "{e}");
        let e = cdc(", tables: [t], table: t}").unwrap_err();
        assert!(e.contains("`table` and `query` are for queried loads"), "{e}");
        let e = cdc(", tables: [t]}\n    write_disposition: append").unwrap_err();
        assert!(e.starts_with("loads/x.yml:4:24") && e.contains("does not apply to a cdc source"), "{e}");
        let e = cdc(", tables: [t]}\n    destination: raw.t").unwrap_err();
        assert!(e.contains("the schema of its mirror tables"), "{e}");
        let e = cdc(", tables: [t, public.t]}").unwrap_err();
        assert!(e.contains("both be mirrored as raw.t"), "{e}");
        let e = cdc(", tables: [t], slot: My-Slot}").unwrap_err();
        assert!(e.starts_with("loads/x.yml:3:") && e.contains("lower-case letters"), "{e}");
        let e = cdc(", tables: [t], max_retained_wal: lots}").unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
        let e = cdc(", tables: [t], snapshot_chunk: 0}").unwrap_err();
        assert!(e.starts_with("loads/x.yml:3:") && e.contains("snapshot_chunk '0' is not a number of rows"), "{e}");
        let e = cdc(", tables: [t]}\n    deletes: maybe").unwrap_err();
        assert!(e.contains("not one of hard, soft"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: postgres, url: x, table: t, tables: [t]}\n").unwrap_err();
        assert!(e.contains("add `mode: cdc`"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: csv, path: x}\n    deletes: soft\n").unwrap_err();
        assert!(e.contains("`deletes` is for change data capture"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: csv, path: x}\n    history: true\n").unwrap_err();
        assert!(e.contains("`history` is for change data capture"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: mysql, url: 'mysql://u@h', mode: cdc, tables: [t]}\n").unwrap_err();
        assert!(e.contains("names no database, and the url names none: write `database.t`"), "{e}");
        let e = parse("loads:\n  - name: s\n    source: {kind: mysql, url: 'mysql://u@h/shop', mode: cdc, tables: [t], slot: s}\n")
            .unwrap_err();
        assert!(e.contains("`slot` is for PostgreSQL's logical replication"), "{e}");
    }

    #[test]
    fn a_mysql_cdc_source_mirrors_its_urls_database_under_the_tables_own_names() {
        let loads =
            parse("loads:\n  - name: Shop\n    source: {kind: mariadb, url: 'mysql://u:p@h:3306/shop?x=1', mode: cdc, tables: [orders, crm.people]}\n")
                .unwrap();
        let cdc = loads[0].cdc().unwrap();
        assert_eq!(cdc.home, "shop");
        assert_eq!(cdc.source_tables().collect::<Vec<_>>(), vec![("shop", "orders"), ("crm", "people")]);
        assert_eq!(cdc.mirror_tables(), vec!["orders", "crm_people"]);
        assert_eq!(url_database("mysql://u@h:3306/"), "");
    }

    #[test]
    fn mistakes_name_their_place() {
        let e = parse("loads:\n  - name: a\n    source: {kind: excel, path: x}\n").unwrap_err();
        assert!(e.starts_with("loads/x.yml:3:") && e.contains("'excel' is not one of"), "{e}");
        let e = parse("loads:\n  - name: a\n    source: {kind: csv, path: x}\n    write_dispositon: merge\n").unwrap_err();
        assert!(e.starts_with("loads/x.yml:4:5") && e.contains("unknown key 'write_dispositon'"), "{e}");
        let e = parse("loads:\n  - name: a\n    source: {kind: csv, path: x}\n    write_disposition: merge\n").unwrap_err();
        assert!(e.contains("needs a `primary_key`"), "{e}");
        let e = parse("loads:\n  - name: a\n    source: {kind: postgres, url: x, table: t}\n    incremental: {cursor: id, lookback: 10}\n")
            .unwrap_err();
        assert!(e.contains("only `write_disposition: merge`"), "{e}");
        let e = parse("loads:\n  - name: a\n    source: {kind: csv, path: x, delimiter: ';;'}\n").unwrap_err();
        assert!(e.contains("one character"), "{e}");
    }
}
