//! YAML documents as trees that remember where each value was written.
//!
//! Serde-based YAML crates lose positions once a document is deserialised, yet every warning
//! about a misspelled key must say `file:line:col`. So project YAML is read into a [`Node`] tree
//! first; typed structs are then filled from it, and unknown keys are reported with their place.
//! Anchors, aliases and `<<` merge keys are resolved here.

use std::collections::HashMap;
use std::path::Path;

use weir_core::Location;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::ProjectError;

/// A YAML value with the line and column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

/// The YAML data model after tag resolution (YAML 1.2 core schema, as PyYAML reads dbt files).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn new(value: Value, mark: Marker) -> Node {
        Node { value, line: mark.line(), col: mark.col() + 1 }
    }

    /// The node's place in `file`.
    pub fn location(&self, file: &Path) -> Location {
        Location::new(file, self.line, self.col)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value under a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node under a string key, so callers can point at either.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?.iter().find(|(k, _)| k.key_text().as_deref() == Some(key)).map(|(k, v)| (k, v))
    }

    /// A mapping key as text (YAML allows `1:` or `true:` as keys; dbt treats them as strings).
    pub fn key_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Null => Some("null".to_string()),
            _ => None,
        }
    }

    /// A scalar rendered as text (numbers and booleans as YAML wrote them).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Seq(_) | Value::Map(_) | Value::Null => None,
            _ => self.key_text(),
        }
    }

    /// A node made from JSON (a value from an API rather than a file), placed at 1:1.
    pub fn from_json(j: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or_default()),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(Node::from_json).collect()),
            J::Object(map) => Value::Map(map.iter().map(|(k, v)| (Node::from_json(&J::String(k.clone())), Node::from_json(v))).collect()),
        };
        Node { value, line: 1, col: 1 }
    }

    /// The JSON value of this node, for configs and for the Jinja context.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().filter_map(|(k, v)| Some((k.key_text()?, v.to_json()))).collect()),
        }
    }
}

/// Parses the first document of `text`. An empty file gives `None`.
pub fn parse(file: &Path, text: &str) -> Result<Option<Node>, ProjectError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| {
        let m = e.marker();
        let location = Location::new(file, m.line(), m.col() + 1);
        ProjectError::Yaml { snippet: location.snippet(text).map(|s| s.to_string()), location, message: e.info().to_string() }
    })?;
    if let Some((message, mark)) = builder.error {
        let location = Location::new(file, mark.line(), mark.col() + 1);
        return Err(ProjectError::Yaml { snippet: location.snippet(text).map(|s| s.to_string()), location, message });
    }
    Ok(builder.root.filter(|n| !n.is_null()))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<(String, Marker)>,
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(Node::new(Value::Seq(vec![]), mark), anchor)),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(Node::new(Value::Map(vec![]), mark), anchor, None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(n, a)) | Some(Frame::Map(n, a, _)) => (n, a),
                    None => return,
                };
                self.push(node, anchor, mark);
            }
            Event::Scalar(text, style, anchor, tag) => {
                // Quoted scalars and `!!str` are strings; plain ones are typed as PyYAML types them.
                let value = if style != TScalarStyle::Plain || tag.as_ref().is_some_and(|t| t.suffix == "str") {
                    Value::Str(text)
                } else {
                    resolve_plain(text)
                };
                self.push(Node::new(value, mark), anchor, mark);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.line = mark.line();
                    node.col = mark.col() + 1;
                    self.push(node, 0, mark)
                }
                None => self.error = Some(("unknown anchor".to_string(), mark)),
            },
            _ => {}
        }
    }
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending)) => match pending.take() {
                None => {
                    // A block mapping starts where its first key does.
                    if matches!(&map.value, Value::Map(e) if e.is_empty()) {
                        map.line = node.line;
                        map.col = node.col;
                    }
                    *pending = Some(node)
                }
                Some(key) => {
                    let Value::Map(entries) = &mut map.value else { return };
                    if key.as_str() == Some("<<") {
                        merge_into(entries, &node);
                    } else if let Some(slot) = entries.iter_mut().find(|(k, _)| k.key_text().is_some() && k.key_text() == key.key_text()) {
                        // A later duplicate key wins, as in PyYAML.
                        let _ = mark;
                        *slot = (key, node);
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// `<<: *defaults` (or a list of them): keys not already present are copied in.
fn merge_into(entries: &mut Vec<(Node, Node)>, source: &Node) {
    let sources: Vec<&Node> = match &source.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![source],
    };
    for src in sources {
        if let Value::Map(src_entries) = &src.value {
            for (k, v) in src_entries {
                if !entries.iter().any(|(ek, _)| ek.key_text() == k.key_text()) {
                    entries.push((k.clone(), v.clone()));
                }
            }
        }
    }
}

/// Plain scalars follow the YAML 1.1 rules PyYAML applies (dbt reads YAML with PyYAML).
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Value::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.replace('_', "");
    if let Ok(i) = digits.parse::<i64>() {
        return Value::Int(i);
    }
    if let Some(hex) = digits.strip_prefix("0x").and_then(|h| i64::from_str_radix(h, 16).ok()) {
        return Value::Int(hex);
    }
    let looks_numeric = digits.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
        && digits.chars().any(|c| c.is_ascii_digit());
    if looks_numeric && let Ok(f) = digits.parse::<f64>() {
        return Value::Float(f);
    }
    match text.as_str() {
        ".inf" | ".Inf" | "+.inf" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" => Value::Float(f64::NAN),
        _ => Value::Str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(Path::new("t.yml"), text).unwrap().unwrap()
    }

    #[test]
    fn keys_remember_their_line_and_column() {
        let n = doc("name: shop\nmodels:\n  shop:\n    +materialized: table\n");
        let (key, value) = n.get("models").unwrap().get("shop").unwrap().entry("+materialized").unwrap();
        assert_eq!((key.line, key.col), (4, 5));
        assert_eq!(value.as_str(), Some("table"));
    }

    #[test]
    fn plain_scalars_resolve_like_pyyaml() {
        let n = doc("a: 1\nb: 1.5\nc: yes\nd: ~\ne: '1'\nf: 2020-01-01\n");
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert!(n.get("d").unwrap().is_null());
        assert_eq!(n.get("e").unwrap().as_str(), Some("1"));
        assert_eq!(n.get("f").unwrap().as_str(), Some("2020-01-01"));
    }

    #[test]
    fn anchors_and_merge_keys_resolve() {
        let n = doc("base: &b\n  x: 1\n  y: 2\nchild:\n  <<: *b\n  y: 3\n");
        let json = n.get("child").unwrap().to_json();
        assert_eq!(json, serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let err = parse(Path::new("dbt_project.yml"), "name: [unclosed\nversion: 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("dbt_project.yml:"), "{text}");
    }

    #[test]
    fn empty_documents_are_none() {
        assert!(parse(Path::new("t.yml"), "# only a comment\n").unwrap().is_none());
    }
}
