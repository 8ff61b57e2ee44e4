//! Protobuf schemas: `.proto` text (or a base64 `FileDescriptorProto`, as Confluent's
//! clients send) compiled by `protox` against its references and Google's well-known types;
//! compatibility compares messages field number by field number, as the wire format does.

use std::collections::HashMap;

use base64::Engine;
use prost::Message;
use prost_reflect::{Cardinality, FileDescriptor, Kind, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::{Break, Invalid};

/// The name the schema being parsed has among its imports.
const MAIN: &str = "weir-registry-schema.proto";

/// A compiled `.proto` file.
#[derive(Debug, Clone)]
pub struct Proto {
    pub file: FileDescriptor,
}

/// Parses `text` with `references` (import name, text), giving the file and its normalised
/// text: the source with surrounding space trimmed (a descriptor comes back as sent).
pub fn parse(text: &str, references: &[(&str, &str)]) -> Result<(Proto, String), Invalid> {
    let mut files = HashMap::new();
    for (name, source) in references {
        files.insert(name.to_string(), file(name, source)?);
    }
    files.insert(MAIN.to_string(), file(MAIN, text)?);
    let mut resolver = ChainFileResolver::new();
    resolver.add(Files(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(MAIN).map_err(|e| located(&e, text))?;
    let pool = compiler.descriptor_pool();
    let file = pool.get_file_by_name(MAIN).ok_or_else(|| Invalid::new("the schema did not compile to a file".into()))?;
    Ok((Proto { file }, text.trim().to_string()))
}

/// The message indexes Confluent's wire format puts before a Protobuf payload: the path of
/// `message` (a full name) through the file's messages, `[0]` for the first top-level one.
pub fn message_indexes(proto: &Proto, message: &str) -> Option<Vec<i32>> {
    fn find(ms: Vec<MessageDescriptor>, name: &str, path: &mut Vec<i32>) -> bool {
        for (i, m) in ms.into_iter().enumerate() {
            path.push(i as i32);
            if m.full_name() == name || find(m.child_messages().collect(), name, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![];
    find(proto.file.messages().collect(), message, &mut path).then_some(path)
}

/// The file as a base64 `FileDescriptorProto`.
pub fn serialized(proto: &Proto) -> String {
    base64::engine::general_purpose::STANDARD.encode(proto.file.file_descriptor_proto().encode_to_vec())
}

/// What keeps data written with `writer` from being read with `reader`.
pub fn check(reader: &Proto, writer: &Proto) -> Vec<Break> {
    let mut breaks = vec![];
    let (rp, wp) = (reader.file.package_name(), writer.file.package_name());
    if rp != wp {
        breaks.push(Break::new("PACKAGE_CHANGED", "#", &format!("the package is {rp:?}, was {wp:?}")));
        return breaks;
    }
    let readers: HashMap<String, MessageDescriptor> = all(&reader.file).map(|m| (local(&m, rp), m)).collect();
    for w in all(&writer.file) {
        let name = local(&w, wp);
        match readers.get(&name) {
            Some(r) => message(r, &w, &name, rp, &mut breaks),
            None => breaks.push(Break::new("MESSAGE_REMOVED", &format!("#/{name}"), &format!("message {name} is gone"))),
        }
    }
    breaks
}

fn message(r: &MessageDescriptor, w: &MessageDescriptor, name: &str, package: &str, breaks: &mut Vec<Break>) {
    for wf in w.fields() {
        let at = format!("#/{name}/{}", wf.number());
        match r.get_field(wf.number()) {
            Some(rf) => {
                let (wk, rk) = (wf.kind(), rf.kind());
                match (&wk, &rk) {
                    (Kind::Message(wm), Kind::Message(rm)) => {
                        let maps = wf.is_map() && rf.is_map();
                        if maps {
                            // A map's entries are compared as the messages they are.
                            message(rm, wm, &format!("{name}/{}", wf.number()), package, breaks);
                        } else if local(wm, package) != local(rm, package) {
                            let detail = format!("field {} is of message {}, was {}", rf.name(), rm.full_name(), wm.full_name());
                            breaks.push(Break::new("FIELD_NAMED_TYPE_CHANGED", &at, &detail));
                        }
                    }
                    (Kind::Enum(we), Kind::Enum(re)) if we.full_name() != re.full_name() => {
                        let detail = format!("field {} is of enum {}, was {}", rf.name(), re.full_name(), we.full_name());
                        breaks.push(Break::new("FIELD_NAMED_TYPE_CHANGED", &at, &detail));
                    }
                    (Kind::Message(_), _) | (_, Kind::Message(_)) => {
                        let detail = format!("field {} is {}, was {}", rf.name(), kind(&rk), kind(&wk));
                        breaks.push(Break::new("FIELD_KIND_CHANGED", &at, &detail));
                    }
                    _ if wire_group(&wk) != wire_group(&rk) => {
                        let detail = format!("field {} is {}, was {}: they differ on the wire", rf.name(), kind(&rk), kind(&wk));
                        breaks.push(Break::new("FIELD_SCALAR_KIND_CHANGED", &at, &detail));
                    }
                    _ => {}
                }
                let (wl, rl) = (wf.cardinality() == Cardinality::Repeated, rf.cardinality() == Cardinality::Repeated);
                if wl != rl && !wf.is_map() && !matches!(wire_group(&rk), Group::Delimited | Group::Message) {
                    let detail = format!("field {} is {}, was {}: packed numbers do not read as one", rf.name(), label(rl), label(wl));
                    breaks.push(Break::new("FIELD_NUMERIC_LABEL_CHANGED", &at, &detail));
                }
                if rf.is_required() && !wf.is_required() {
                    breaks.push(Break::new("REQUIRED_FIELD_ADDED", &at, &format!("field {} became required", rf.name())));
                }
            }
            None => {
                if wf.is_required() {
                    breaks.push(Break::new("REQUIRED_FIELD_REMOVED", &at, &format!("required field {} is gone", wf.name())));
                }
                if let Some(rf) = r.get_field_by_name(wf.name()) {
                    let detail = format!(
                        "field {} is numbered {}, was {}: old data's field {} would be ignored",
                        wf.name(),
                        rf.number(),
                        wf.number(),
                        wf.number()
                    );
                    breaks.push(Break::new("FIELD_NUMBER_CHANGED", &at, &detail));
                }
            }
        }
    }
    for rf in r.fields() {
        if w.get_field(rf.number()).is_some() {
            continue;
        }
        let at = format!("#/{name}/{}", rf.number());
        if rf.is_required() {
            breaks.push(Break::new("REQUIRED_FIELD_ADDED", &at, &format!("required field {} is new", rf.name())));
        }
        let reserved = w.reserved_ranges().any(|range| range.contains(&rf.number())) || w.reserved_names().any(|n| n == rf.name());
        if reserved {
            let detail = format!("field {} takes number {} or a name the old schema reserved", rf.name(), rf.number());
            breaks.push(Break::new("RESERVED_FIELD_REUSED", &at, &detail));
        }
    }
    for ro in r.oneofs().filter(|o| !o.is_synthetic()) {
        let moved: Vec<String> = ro
            .fields()
            .filter(|f| w.get_field(f.number()).is_some_and(|wf| wf.containing_oneof().is_none_or(|o| o.is_synthetic())))
            .map(|f| f.name().to_string())
            .collect();
        if moved.len() > 1 {
            let detail = format!("fields {} moved into oneof {}: data may carry several of them", moved.join(", "), ro.name());
            breaks.push(Break::new("MULTIPLE_FIELDS_MOVED_TO_ONEOF", &format!("#/{name}/{}", ro.name()), &detail));
        }
    }
    for wo in w.oneofs().filter(|o| !o.is_synthetic()) {
        for wf in wo.fields() {
            let kept = r.get_field(wf.number()).is_some_and(|rf| rf.containing_oneof().is_some_and(|o| o.name() == wo.name()));
            if !kept && r.oneofs().any(|o| o.name() == wo.name()) {
                let detail = format!("field {} left oneof {}", wf.name(), wo.name());
                breaks.push(Break::new("ONEOF_FIELD_REMOVED", &format!("#/{name}/{}", wf.number()), &detail));
            }
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Group {
    Varint,
    Zigzag,
    Fixed32,
    Fixed64,
    Delimited,
    Message,
}

/// Which wire encoding a kind uses: kinds of one group read each other's values.
fn wire_group(k: &Kind) -> Group {
    match k {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => Group::Varint,
        Kind::Sint32 | Kind::Sint64 => Group::Zigzag,
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => Group::Fixed32,
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => Group::Fixed64,
        Kind::String | Kind::Bytes => Group::Delimited,
        Kind::Message(_) => Group::Message,
    }
}

fn kind(k: &Kind) -> String {
    match k {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn label(repeated: bool) -> &'static str {
    if repeated { "repeated" } else { "singular" }
}

/// Every message of a file, nested ones too (map entries are their fields' business).
fn all(file: &FileDescriptor) -> impl Iterator<Item = MessageDescriptor> {
    fn walk(m: MessageDescriptor, out: &mut Vec<MessageDescriptor>) {
        for c in m.child_messages().filter(|c| !c.is_map_entry()) {
            walk(c, out);
        }
        out.push(m);
    }
    let mut out = vec![];
    for m in file.messages() {
        walk(m, &mut out);
    }
    out.into_iter()
}

/// A message's name within its package.
fn local(m: &MessageDescriptor, package: &str) -> String {
    let full = m.full_name();
    if package.is_empty() {
        full.to_string()
    } else {
        full.strip_prefix(package).map(|s| s.trim_start_matches('.')).unwrap_or(full).to_string()
    }
}

/// A `.proto` source, or a serialized `FileDescriptorProto` in base64 as Confluent's
/// clients register it.
fn file(name: &str, source: &str) -> Result<File, Invalid> {
    let looks_like_source = source.contains(';') || source.contains('{') || source.trim().is_empty();
    if !looks_like_source
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(source.trim())
        && let Ok(mut fd) = prost_types::FileDescriptorProto::decode(bytes.as_slice())
    {
        fd.name = Some(name.to_string());
        return Ok(File::from_file_descriptor_proto(fd));
    }
    File::from_source(name, source).map_err(|e| located(&e, source))
}

/// The compiler's message with the line and column its first label points at.
fn located(e: &protox::Error, source: &str) -> Invalid {
    use miette::Diagnostic;
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let mut message = e.to_string();
    if let Some(offset) = offset.filter(|o| *o <= source.len()) {
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        message = format!("{message} at line {line} column {column}");
        return Invalid { message, line: Some(line), column: Some(column) };
    }
    if e.file().is_some_and(|f| f != MAIN) {
        message = format!("{}: {message}", e.file().unwrap_or_default());
    }
    Invalid::new(message)
}

/// Resolves the schema and its references by name.
struct Files(HashMap<String, File>);

impl FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0.get(name).cloned().ok_or_else(|| protox::Error::file_not_found(name))
    }
}
