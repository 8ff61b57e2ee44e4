//! Weir's schema registry: Confluent's registry semantics over the metadata store.
//!
//! Schemas of three kinds (Avro, JSON Schema, Protobuf) are parsed, normalised and given
//! global ids that the same schema keeps wherever it is registered; subjects hold versions;
//! a new version must pass the subject's compatibility level, checked by each format's own
//! reading rules, and a refusal names the rule, the place and the version it breaks with.
//! The HTTP API (`weir serve`) and `weir registry` are thin layers over [`Registry`].

mod avro;
pub mod codec;
mod json;
mod proto;
mod registry;
pub mod wire;

use std::fmt;

pub use registry::{Error, Registered, Registry, SchemaRequest, VersionRef};
pub use weir_store::RegistryReference as Reference;

/// The kinds of schema the registry keeps, by Confluent's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaType {
    #[default]
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub const ALL: [SchemaType; 3] = [SchemaType::Json, SchemaType::Protobuf, SchemaType::Avro];

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    /// Reads a type as Confluent's clients send it (`AVRO`, `JSON`, `PROTOBUF`, any case).
    pub fn parse(s: &str) -> Option<SchemaType> {
        SchemaType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// A compatibility level: which earlier versions a new one is checked against, and which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(s))
    }

    /// New schemas must read data written with the old ones.
    pub fn backward(self) -> bool {
        matches!(self, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive)
    }

    /// Old schemas must read data written with the new one.
    pub fn forward(self) -> bool {
        matches!(self, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive)
    }

    /// Checked against every earlier version, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }
}

/// A registry's mode: whether it takes writes, and whether they bring their own ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    ReadWrite,
    ReadOnly,
    /// Registrations bring their ids and versions (migrating from another registry) and are
    /// not checked for compatibility.
    Import,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::ReadWrite, Mode::ReadOnly, Mode::Import].into_iter().find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// One way in which a reader cannot read a writer's data: the rule (Confluent's name for
/// it), where in the schema, and what the two schemas say there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub rule: String,
    pub path: String,
    pub detail: String,
}

impl Break {
    fn new(rule: &str, path: &str, detail: &str) -> Break {
        Break { rule: rule.into(), path: if path.is_empty() { "/".into() } else { path.into() }, detail: detail.into() }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.rule, self.path, self.detail)
    }
}

/// Why a schema is not valid: the parser's message, with its position when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Invalid {
    fn new(message: String) -> Invalid {
        Invalid { message, line: None, column: None }
    }
}

/// Reads JSON text, naming the line and column where it stops being JSON.
fn json_text(text: &str) -> Result<serde_json::Value, Invalid> {
    serde_json::from_str(text).map_err(|e| Invalid { message: format!("not JSON: {e}"), line: Some(e.line()), column: Some(e.column()) })
}

/// A schema parsed by its format.
#[derive(Debug, Clone)]
pub enum Parsed {
    Avro(avro::Avro),
    Json(json::JsonSchema),
    Protobuf(proto::Proto),
}

impl Parsed {
    /// Parses `text` as `kind`, with its references' schemas (name, text), dependencies
    /// first; gives the schema and its normalised text.
    pub fn parse(kind: SchemaType, text: &str, references: &[(String, String)]) -> Result<(Parsed, String), Invalid> {
        match kind {
            SchemaType::Avro => {
                let refs: Vec<&str> = references.iter().map(|(_, t)| t.as_str()).collect();
                avro::parse(text, &refs).map(|(p, n)| (Parsed::Avro(p), n))
            }
            SchemaType::Json => {
                let refs: Vec<(&str, &str)> = references.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
                json::parse(text, &refs).map(|(p, n)| (Parsed::Json(p), n))
            }
            SchemaType::Protobuf => {
                let refs: Vec<(&str, &str)> = references.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
                proto::parse(text, &refs).map(|(p, n)| (Parsed::Protobuf(p), n))
            }
        }
    }

    /// What keeps data written with `writer` from being read with `self`; empty when it can be.
    pub fn can_read(&self, writer: &Parsed) -> Vec<Break> {
        match (self, writer) {
            (Parsed::Avro(r), Parsed::Avro(w)) => avro::check(r, w),
            (Parsed::Json(r), Parsed::Json(w)) => json::check(r, w),
            (Parsed::Protobuf(r), Parsed::Protobuf(w)) => proto::check(r, w),
            _ => vec![Break::new("SCHEMA_TYPE_CHANGED", "", "the schemas are of different types")],
        }
    }

    /// A Protobuf schema as a base64 `FileDescriptorProto` (Confluent's `format=serialized`,
    /// which its Protobuf deserializers ask for); `None` for the other formats.
    pub fn serialized(&self) -> Option<String> {
        match self {
            Parsed::Protobuf(p) => Some(proto::serialized(p)),
            _ => None,
        }
    }

    /// The wire format's message indexes of `message` (Protobuf only).
    pub fn message_indexes(&self, message: &str) -> Option<Vec<i32>> {
        match self {
            Parsed::Protobuf(p) => proto::message_indexes(p, message),
            _ => None,
        }
    }
}

/// Checks `new` against `previous` (oldest first, with their versions) under `level`;
/// each refusal names the version it breaks with and which way.
pub fn check_level(level: Level, new: &Parsed, previous: &[(i64, Parsed)]) -> Vec<String> {
    let against: &[(i64, Parsed)] = match previous {
        [] => &[],
        _ if level.transitive() => previous,
        [.., last] => std::slice::from_ref(last),
    };
    let mut messages = vec![];
    for (version, old) in against.iter().rev() {
        if level.backward() {
            for b in new.can_read(old) {
                messages.push(format!("{b} (the new schema cannot read data written with version {version})"));
            }
        }
        if level.forward() {
            for b in old.can_read(new) {
                messages.push(format!("{b} (version {version} cannot read data written with the new schema)"));
            }
        }
    }
    messages
}

#[cfg(test)]
mod tests;
