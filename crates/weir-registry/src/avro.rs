//! Avro schemas: parsed by `apache-avro`, resolved against each other by the specification's
//! schema resolution rules (writer's schema read with the reader's).

use std::collections::{HashMap, HashSet};

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, RecordSchema, UuidSchema};

use crate::{Break, Invalid};

/// A parsed Avro schema with the named types it may refer to (its own and its references').
#[derive(Debug, Clone)]
pub struct Avro {
    pub schema: Schema,
    names: HashMap<String, Schema>,
}

/// Parses `text` with the named types of `references` (each an Avro named type's JSON,
/// dependencies first), and gives its normalised text: the JSON without layout.
pub fn parse(text: &str, references: &[&str]) -> Result<(Avro, String), Invalid> {
    let json: serde_json::Value = crate::json_text(text)?;
    let (schema, refs) = Schema::parse_str_with_list(text, references).map_err(|e| Invalid::new(weir_core::error_chain(&e)))?;
    let mut names = HashMap::new();
    for s in refs.iter().chain([&schema]) {
        collect_names(s, &mut names);
    }
    Ok((Avro { schema, names }, json.to_string()))
}

/// What keeps data written with `writer` from being read with `reader`; empty when it can be.
pub fn check(reader: &Avro, writer: &Avro) -> Vec<Break> {
    let mut c = Checker { reader, writer, seen: HashSet::new(), breaks: vec![] };
    c.resolve(&writer.schema, &reader.schema, "");
    c.breaks
}

struct Checker<'a> {
    reader: &'a Avro,
    writer: &'a Avro,
    /// Pairs of named types already being compared: recursive types stop here.
    seen: HashSet<(String, String)>,
    breaks: Vec<Break>,
}

impl<'a> Checker<'a> {
    fn resolve(&mut self, w: &'a Schema, r: &'a Schema, path: &str) {
        let (Some(w), Some(r)) = (deref(w, &self.writer.names), deref(r, &self.reader.names)) else {
            return self.breaks.push(Break::new("UNKNOWN_TYPE", path, "a named type is not defined"));
        };
        let (w, r) = (base(w), base(r));
        if let Schema::Union(wu) = w {
            for (i, branch) in wu.variants().iter().enumerate() {
                if !self.readable(branch, r) {
                    let detail = format!("the writer's union branch {} ({}) has no match in the reader's {}", i, kind(branch), kind(r));
                    self.breaks.push(Break::new("MISSING_UNION_BRANCH", &format!("{path}/{i}"), &detail));
                }
            }
            return;
        }
        if let Schema::Union(ru) = r {
            // The specification takes the reader's first branch that matches the writer's type.
            match ru.variants().iter().find(|b| self.matches(w, b)) {
                Some(b) => self.resolve(w, b, path),
                None => {
                    let detail = format!("the reader's union has no branch for the writer's {}", kind(w));
                    self.breaks.push(Break::new("MISSING_UNION_BRANCH", path, &detail));
                }
            }
            return;
        }
        if !self.matches(w, r) {
            let detail = format!("the reader's {} cannot read the writer's {}", kind(r), kind(w));
            return self.breaks.push(Break::new(if same_kind(w, r) { "NAME_MISMATCH" } else { "TYPE_MISMATCH" }, path, &detail));
        }
        match (w, r) {
            (Schema::Record(wr), Schema::Record(rr)) => {
                let first_visit = self.seen.insert((wr.name.fullname(None), rr.name.fullname(None)));
                if first_visit {
                    self.record(wr, rr, path);
                }
            }
            (Schema::Enum(we), Schema::Enum(re)) => {
                let missing: Vec<&str> = we.symbols.iter().filter(|s| !re.symbols.contains(s)).map(String::as_str).collect();
                if !missing.is_empty() && re.default.is_none() {
                    let detail =
                        format!("the reader's enum {} has no symbol {} and no default", re.name.fullname(None), missing.join(", "));
                    self.breaks.push(Break::new("MISSING_ENUM_SYMBOLS", &format!("{path}/symbols"), &detail));
                }
            }
            (Schema::Fixed(wf), Schema::Fixed(rf)) if wf.size != rf.size => {
                let detail = format!("the reader's fixed {} has size {}, the writer's {}", rf.name.fullname(None), rf.size, wf.size);
                self.breaks.push(Break::new("FIXED_SIZE_MISMATCH", &format!("{path}/size"), &detail));
            }
            (Schema::Array(wa), Schema::Array(ra)) => self.resolve(&wa.items, &ra.items, &format!("{path}/items")),
            (Schema::Map(wm), Schema::Map(rm)) => self.resolve(&wm.types, &rm.types, &format!("{path}/values")),
            _ => {}
        }
    }

    fn record(&mut self, w: &'a RecordSchema, r: &'a RecordSchema, path: &str) {
        for rf in &r.fields {
            // A renamed field is found by the reader's aliases (the writer's do not count).
            let found = w.fields.iter().find(|wf| wf.name == rf.name).or_else(|| w.fields.iter().find(|wf| rf.aliases.contains(&wf.name)));
            let at = format!("{path}/fields/{}", rf.name);
            match found {
                Some(wf) => self.resolve(&wf.schema, &rf.schema, &at),
                None if rf.default.is_some() => {}
                None => {
                    let detail = format!("the reader's field '{}' has no default and the writer has no such field", rf.name);
                    self.breaks.push(Break::new("READER_FIELD_MISSING_DEFAULT_VALUE", &at, &detail));
                }
            }
        }
    }

    /// Whether the writer's `w` could be read by `r` at all (a union branch's test).
    fn readable(&mut self, w: &'a Schema, r: &'a Schema) -> bool {
        let before = self.breaks.len();
        let seen = self.seen.clone();
        self.resolve(w, r, "");
        let ok = self.breaks.len() == before;
        self.breaks.truncate(before);
        self.seen = seen;
        ok
    }

    /// The specification's matching of one schema with another, before any recursion.
    fn matches(&self, w: &Schema, r: &Schema) -> bool {
        let (Some(w), Some(r)) = (deref(w, &self.writer.names), deref(r, &self.reader.names)) else { return false };
        use Schema::*;
        match (base(w), base(r)) {
            (Null, Null) | (Boolean, Boolean) | (Int, Int) | (Long, Long) | (Float, Float) | (Double, Double) => true,
            (Bytes, Bytes) | (String, String) | (Array(_), Array(_)) | (Map(_), Map(_)) => true,
            // Promotions.
            (Int, Long | Float | Double) | (Long, Float | Double) | (Float, Double) | (String, Bytes) | (Bytes, String) => true,
            (Record(w), Record(r)) => named(&w.name, &r.name, r.aliases.as_deref()),
            (Enum(w), Enum(r)) => named(&w.name, &r.name, r.aliases.as_deref()),
            (Fixed(w), Fixed(r)) => named(&w.name, &r.name, r.aliases.as_deref()),
            (Union(_), _) | (_, Union(_)) => true,
            _ => false,
        }
    }
}

/// A named type matches when the unqualified names agree or the reader's aliases name the
/// writer's type.
fn named(w: &Name, r: &Name, aliases: Option<&[apache_avro::schema::Alias]>) -> bool {
    w.name() == r.name() || aliases.unwrap_or_default().iter().any(|a| a.fullname(None) == w.fullname(None) || a.name() == w.name())
}

/// Follows a reference to the named type it names.
fn deref<'s>(s: &'s Schema, names: &'s HashMap<String, Schema>) -> Option<&'s Schema> {
    match s {
        Schema::Ref { name } => names.get(&name.fullname(None)),
        other => Some(other),
    }
}

/// Logical types are read as their underlying type, as the specification resolves them.
fn base(s: &Schema) -> &Schema {
    match s {
        Schema::Date | Schema::TimeMillis => &Schema::Int,
        Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => &Schema::Long,
        Schema::Uuid(UuidSchema::String) => &Schema::String,
        Schema::Uuid(UuidSchema::Bytes) | Schema::BigDecimal => &Schema::Bytes,
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => &Schema::Bytes,
            InnerDecimalSchema::Fixed(_) => s,
        },
        other => other,
    }
}

fn same_kind(w: &Schema, r: &Schema) -> bool {
    std::mem::discriminant(w) == std::mem::discriminant(r)
}

/// How a message names a schema: its type, and its name when it has one.
fn kind(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Ref { name } => name.fullname(None),
        Schema::Union(u) => format!("union [{}]", u.variants().iter().map(kind).collect::<Vec<_>>().join(", ")),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// Every named type defined in `s`, by full name.
fn collect_names(s: &Schema, names: &mut HashMap<String, Schema>) {
    match s {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), s.clone());
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), s.clone());
        }
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            names.insert(f.name.fullname(None), s.clone());
        }
        Schema::Decimal(d) => {
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                names.insert(f.name.fullname(None), s.clone());
            }
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}
