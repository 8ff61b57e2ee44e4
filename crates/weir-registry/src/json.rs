//! JSON Schema: a reader can read a writer's data when every document the writer's schema
//! accepts, the reader's accepts too. The check walks both schemas keyword by keyword and
//! names each keyword that narrows what is accepted (the rules Confluent's registry applies,
//! with its names for them).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::{Break, Invalid};

/// What a schema that is `true` (or has no keywords of a kind) says: nothing.
static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// A parsed JSON Schema with the documents its `$ref`s may name (its references, by name).
#[derive(Debug, Clone)]
pub struct JsonSchema {
    pub root: Value,
    docs: HashMap<String, Value>,
}

/// Parses `text` (a JSON object or boolean) with `references` (name, text), and gives its
/// normalised text: the JSON without layout.
pub fn parse(text: &str, references: &[(&str, &str)]) -> Result<(JsonSchema, String), Invalid> {
    let root = crate::json_text(text)?;
    if !(root.is_object() || root.is_boolean()) {
        return Err(Invalid::new("a JSON Schema is an object or a boolean".into()));
    }
    let mut docs = HashMap::new();
    for (name, text) in references {
        let doc = crate::json_text(text).map_err(|e| Invalid::new(format!("reference {name}: {}", e.message)))?;
        docs.insert(name.to_string(), doc);
    }
    let normal = root.to_string();
    let schema = JsonSchema { root, docs };
    schema.check_refs(&schema.root, None, "#", &mut HashSet::new())?;
    Ok((schema, normal))
}

/// What keeps documents valid under `writer` from being valid under `reader`.
pub fn check(reader: &JsonSchema, writer: &JsonSchema) -> Vec<Break> {
    let mut c = Checker { reader, writer, seen: HashSet::new(), breaks: vec![] };
    c.check(Node { v: &writer.root, doc: None }, Node { v: &reader.root, doc: None }, "#");
    c.breaks
}

/// A schema inside one of the documents: the root's (`doc` None) or a reference's.
#[derive(Clone, Copy)]
struct Node<'a> {
    v: &'a Value,
    doc: Option<&'a str>,
}

impl JsonSchema {
    /// Follows `$ref`s until a schema that is not one.
    fn deref<'a>(&'a self, mut n: Node<'a>) -> Result<Node<'a>, String> {
        for _ in 0..64 {
            let Some(target) = n.v.get("$ref").and_then(Value::as_str) else { return Ok(n) };
            n = self.target(target, n.doc)?;
        }
        Err("a chain of $ref that does not end".into())
    }

    fn target<'a>(&'a self, target: &str, doc: Option<&'a str>) -> Result<Node<'a>, String> {
        let (name, pointer) = target.split_once('#').unwrap_or((target, ""));
        let (root, doc) = if name.is_empty() {
            (doc.and_then(|d| self.docs.get_key_value(d)).map(|(_, v)| v).unwrap_or(&self.root), doc)
        } else {
            match self.docs.get_key_value(name) {
                Some((k, v)) => (v, Some(k.as_str())),
                None => return Err(format!("$ref {target}: no reference named {name}")),
            }
        };
        root.pointer(pointer).map(|v| Node { v, doc }).ok_or_else(|| format!("$ref {target}: nothing at {pointer}"))
    }

    /// Every `$ref` must lead somewhere: an invalid schema is refused when registered.
    fn check_refs(&self, v: &Value, doc: Option<&str>, path: &str, seen: &mut HashSet<usize>) -> Result<(), Invalid> {
        if !seen.insert(v as *const Value as usize) {
            return Ok(());
        }
        match v {
            Value::Object(m) => {
                if let Some(target) = m.get("$ref").and_then(Value::as_str) {
                    let n = self.target(target, doc).map_err(|e| Invalid::new(format!("at {path}: {e}")))?;
                    self.check_refs(n.v, n.doc, target, seen)?;
                }
                for (k, child) in m {
                    if k != "enum" && k != "const" && k != "default" && k != "examples" {
                        self.check_refs(child, doc, &format!("{path}/{k}"), seen)?;
                    }
                }
                Ok(())
            }
            Value::Array(a) => a.iter().enumerate().try_for_each(|(i, c)| self.check_refs(c, doc, &format!("{path}/{i}"), seen)),
            _ => Ok(()),
        }
    }
}

struct Checker<'a> {
    reader: &'a JsonSchema,
    writer: &'a JsonSchema,
    seen: HashSet<(usize, usize)>,
    breaks: Vec<Break>,
}

impl<'a> Checker<'a> {
    fn push(&mut self, rule: &str, path: &str, detail: String) {
        self.breaks.push(Break::new(rule, path, &detail));
    }

    fn check(&mut self, w: Node<'a>, r: Node<'a>, path: &str) {
        let (w, r) = match (self.writer.deref(w), self.reader.deref(r)) {
            (Ok(w), Ok(r)) => (w, r),
            (Err(e), _) | (_, Err(e)) => return self.push("UNRESOLVED_REFERENCE", path, e),
        };
        if !self.seen.insert((w.v as *const Value as usize, r.v as *const Value as usize)) {
            return;
        }
        // Boolean schemas: true accepts everything, false nothing.
        match (w.v, r.v) {
            (_, Value::Bool(true)) | (Value::Bool(false), _) => return,
            (_, Value::Bool(false)) => return self.push("SCHEMA_REMOVED", path, "the reader accepts nothing".into()),
            _ => {}
        }
        let wm = w.v.as_object().unwrap_or(&EMPTY);
        let rm = r.v.as_object().unwrap_or(&EMPTY);

        if self.combined(w, r, wm, rm, path) {
            return;
        }
        let wt = types(wm);
        let rt = types(rm);
        for t in &wt {
            if !rt.iter().any(|r| r == t || (r == "number" && t == "integer")) {
                let detail = format!("the writer's {t} is not among the reader's types ({})", rt.join(", "));
                self.push(if wt.len() > 1 || rt.len() > 1 { "TYPE_NARROWED" } else { "TYPE_CHANGED" }, &format!("{path}/type"), detail);
            }
        }
        let has = |ts: &[String], t: &str| ts.iter().any(|x| x == t || (t == "integer" && x == "number"));
        if has(&wt, "object") {
            self.object(w, r, wm, rm, path);
        }
        if has(&wt, "array") {
            self.array(w, r, wm, rm, path);
        }
        if has(&wt, "string") {
            self.bound(wm, rm, path, "maxLength", Bound::Max, "MAX_LENGTH");
            self.bound(wm, rm, path, "minLength", Bound::Min, "MIN_LENGTH");
            if let Some(p) = rm.get("pattern")
                && wm.get("pattern") != Some(p)
            {
                self.push(
                    if wm.contains_key("pattern") { "PATTERN_CHANGED" } else { "PATTERN_ADDED" },
                    &format!("{path}/pattern"),
                    format!("the reader requires the pattern {p}"),
                );
            }
        }
        if has(&wt, "number") || has(&wt, "integer") {
            self.bound(wm, rm, path, "maximum", Bound::Max, "MAXIMUM");
            self.bound(wm, rm, path, "minimum", Bound::Min, "MINIMUM");
            self.bound(wm, rm, path, "exclusiveMaximum", Bound::Max, "EXCLUSIVE_MAXIMUM");
            self.bound(wm, rm, path, "exclusiveMinimum", Bound::Min, "EXCLUSIVE_MINIMUM");
            if let Some(rmul) = rm.get("multipleOf").and_then(Value::as_f64) {
                let divides = wm.get("multipleOf").and_then(Value::as_f64).is_some_and(|wmul| (wmul / rmul).fract() == 0.0);
                if !divides {
                    self.push("MULTIPLE_OF_CHANGED", &format!("{path}/multipleOf"), format!("the reader requires multiples of {rmul}"));
                }
            }
        }
        if let Some(Value::Array(re)) = rm.get("enum") {
            match wm.get("enum") {
                Some(Value::Array(we)) => {
                    let missing: Vec<String> = we.iter().filter(|v| !re.contains(v)).map(Value::to_string).collect();
                    if !missing.is_empty() {
                        self.push(
                            "ENUM_ARRAY_NARROWED",
                            &format!("{path}/enum"),
                            format!("the reader's enum lacks {}", missing.join(", ")),
                        );
                    }
                }
                _ => self.push("ENUM_ARRAY_CHANGED", &format!("{path}/enum"), "the reader adds an enum the writer did not have".into()),
            }
        }
        if let Some(rc) = rm.get("const")
            && wm.get("const") != Some(rc)
        {
            self.push("CONST_CHANGED", &format!("{path}/const"), format!("the reader requires the value {rc}"));
        }
        if let Some(rn) = rm.get("not") {
            match wm.get("not") {
                // not B ⊇ not A when B ⊆ A: the check turns around.
                Some(wn) => self.check(Node { v: rn, doc: r.doc }, Node { v: wn, doc: w.doc }, &format!("{path}/not")),
                None => self.push("NOT_TYPE_EXTENDED", &format!("{path}/not"), "the reader adds a not the writer did not have".into()),
            }
        }
    }

    /// `oneOf`/`anyOf`/`allOf` on either side; true when they decided the whole comparison.
    fn combined(&mut self, w: Node<'a>, r: Node<'a>, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) -> bool {
        let branches =
            |m: &'a Map<String, Value>| ["oneOf", "anyOf"].iter().find_map(|k| m.get(*k).and_then(Value::as_array).map(|a| (*k, a)));
        if let Some(Value::Array(all)) = rm.get("allOf") {
            for (i, b) in all.iter().enumerate() {
                self.check(w, Node { v: b, doc: r.doc }, &format!("{path}/allOf/{i}"));
            }
            return true;
        }
        if let Some((k, wb)) = branches(wm) {
            // Each of the writer's branches must be read by the reader as a whole.
            for (i, b) in wb.iter().enumerate() {
                self.check(Node { v: b, doc: w.doc }, r, &format!("{path}/{k}/{i}"));
            }
            return true;
        }
        if let Some((k, rb)) = branches(rm) {
            let found = rb.iter().any(|b| self.accepts(w, Node { v: b, doc: r.doc }));
            if !found {
                self.push("COMBINED_TYPE_CHANGED", &format!("{path}/{k}"), "no branch of the reader's accepts the writer's schema".into());
            }
            return true;
        }
        if let Some(Value::Array(all)) = wm.get("allOf") {
            // The writer's data satisfies every branch: one branch the reader reads is enough.
            if !all.iter().any(|b| self.accepts(Node { v: b, doc: w.doc }, r)) {
                self.push("PRODUCT_TYPE_NARROWED", &format!("{path}/allOf"), "the reader reads none of the writer's allOf branches".into());
            }
            return true;
        }
        false
    }

    /// Whether `r` accepts everything `w` does, without reporting.
    fn accepts(&mut self, w: Node<'a>, r: Node<'a>) -> bool {
        let before = self.breaks.len();
        let seen = self.seen.clone();
        self.check(w, r, "");
        let ok = self.breaks.len() == before;
        self.breaks.truncate(before);
        self.seen = seen;
        ok
    }

    fn object(&mut self, w: Node<'a>, r: Node<'a>, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) {
        let wp = wm.get("properties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let rp = rm.get("properties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let w_extra = extra(wm);
        let r_extra = extra(rm);
        let r_required = names(rm, "required");
        let w_required = names(wm, "required");
        for (name, ws) in wp {
            let at = format!("{path}/properties/{name}");
            match (rp.get(name), r_extra) {
                (Some(rs), _) => self.check(Node { v: ws, doc: w.doc }, Node { v: rs, doc: r.doc }, &at),
                (None, Extra::Open) => {}
                (None, Extra::Closed) if ws == &Value::Bool(false) => {}
                (None, Extra::Closed) => self.push(
                    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                    &at,
                    format!("the reader's closed model has no property '{name}'"),
                ),
                (None, Extra::Schema(ra)) => self.check(Node { v: ws, doc: w.doc }, Node { v: ra, doc: r.doc }, &at),
            }
        }
        for (name, rs) in rp {
            if wp.contains_key(name) {
                continue;
            }
            let at = format!("{path}/properties/{name}");
            match w_extra {
                Extra::Closed => {}
                Extra::Open if rs == &Value::Bool(true) || rs.as_object().is_some_and(Map::is_empty) => {}
                Extra::Open => self.push(
                    "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
                    &at,
                    format!("the writer's open model may already carry '{name}' with any value"),
                ),
                Extra::Schema(wa) => {
                    if !self.accepts(Node { v: wa, doc: w.doc }, Node { v: rs, doc: r.doc }) {
                        self.push(
                            "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                            &at,
                            format!("the writer's additionalProperties may carry '{name}' with values the reader refuses"),
                        );
                    }
                }
            }
        }
        for name in &r_required {
            if !w_required.contains(name) && rp.get(name).and_then(|s| s.get("default")).is_none() {
                self.push(
                    "REQUIRED_ATTRIBUTE_ADDED",
                    &format!("{path}/required"),
                    format!("the reader requires '{name}', which the writer does not"),
                );
            }
        }
        match (w_extra, r_extra) {
            (_, Extra::Open) | (Extra::Closed, _) => {}
            (Extra::Open, Extra::Closed) => self.push(
                "ADDITIONAL_PROPERTIES_REMOVED",
                &format!("{path}/additionalProperties"),
                "the reader closes the writer's open model".into(),
            ),
            (Extra::Open, Extra::Schema(_)) => self.push(
                "ADDITIONAL_PROPERTIES_NARROWED",
                &format!("{path}/additionalProperties"),
                "the reader restricts the writer's open model".into(),
            ),
            (Extra::Schema(wa), Extra::Closed) => {
                if wa != &Value::Bool(false) {
                    self.push(
                        "ADDITIONAL_PROPERTIES_REMOVED",
                        &format!("{path}/additionalProperties"),
                        "the reader closes the writer's additional properties".into(),
                    );
                }
            }
            (Extra::Schema(wa), Extra::Schema(ra)) => {
                self.check(Node { v: wa, doc: w.doc }, Node { v: ra, doc: r.doc }, &format!("{path}/additionalProperties"))
            }
        }
        self.bound(wm, rm, path, "maxProperties", Bound::Max, "MAX_PROPERTIES");
        self.bound(wm, rm, path, "minProperties", Bound::Min, "MIN_PROPERTIES");
        for k in ["dependencies", "dependentRequired", "dependentSchemas"] {
            if let Some(rd) = rm.get(k)
                && wm.get(k) != Some(rd)
            {
                self.push("DEPENDENCY_ADDED", &format!("{path}/{k}"), format!("the reader adds {k} the writer did not have"));
            }
        }
    }

    fn array(&mut self, w: Node<'a>, r: Node<'a>, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) {
        match (wm.get("items"), rm.get("items")) {
            (_, None) => {}
            (Some(wi @ (Value::Object(_) | Value::Bool(_))), Some(ri @ (Value::Object(_) | Value::Bool(_)))) => {
                self.check(Node { v: wi, doc: w.doc }, Node { v: ri, doc: r.doc }, &format!("{path}/items"))
            }
            (Some(Value::Array(wi)), Some(Value::Array(ri))) => {
                for (i, (ws, rs)) in wi.iter().zip(ri).enumerate() {
                    self.check(Node { v: ws, doc: w.doc }, Node { v: rs, doc: r.doc }, &format!("{path}/items/{i}"));
                }
            }
            (None, Some(_)) => {
                self.push("ITEMS_ADDED", &format!("{path}/items"), "the reader constrains items the writer left open".into())
            }
            _ => self.push("ITEMS_CHANGED", &format!("{path}/items"), "the reader's items differ in form from the writer's".into()),
        }
        self.bound(wm, rm, path, "maxItems", Bound::Max, "MAX_ITEMS");
        self.bound(wm, rm, path, "minItems", Bound::Min, "MIN_ITEMS");
        if rm.get("uniqueItems") == Some(&Value::Bool(true)) && wm.get("uniqueItems") != Some(&Value::Bool(true)) {
            self.push("UNIQUE_ITEMS_ADDED", &format!("{path}/uniqueItems"), "the reader requires unique items".into());
        }
    }

    /// A numeric limit: the reader may keep, relax or drop the writer's, not add or tighten one.
    fn bound(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str, key: &str, bound: Bound, rule: &str) {
        let Some(rv) = rm.get(key).and_then(Value::as_f64) else { return };
        let at = format!("{path}/{key}");
        match wm.get(key).and_then(Value::as_f64) {
            None => self.push(&format!("{rule}_ADDED"), &at, format!("the reader adds {key} {rv}")),
            Some(wv) if (bound == Bound::Max && rv < wv) || (bound == Bound::Min && rv > wv) => {
                let verb = if bound == Bound::Max { "DECREASED" } else { "INCREASED" };
                self.push(&format!("{rule}_{verb}"), &at, format!("the reader's {key} is {rv}, the writer's {wv}"));
            }
            Some(_) => {}
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Bound {
    Max,
    Min,
}

/// What an object schema says of properties it does not name.
#[derive(Clone, Copy)]
enum Extra<'a> {
    Open,
    Closed,
    Schema(&'a Value),
}

fn extra(m: &Map<String, Value>) -> Extra<'_> {
    match m.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Extra::Open,
        Some(Value::Bool(false)) => Extra::Closed,
        Some(v) if v.as_object().is_some_and(Map::is_empty) => Extra::Open,
        Some(v) => Extra::Schema(v),
    }
}

/// The types a schema allows; every type when it names none.
fn types(m: &Map<String, Value>) -> Vec<String> {
    match m.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => ["null", "boolean", "object", "array", "number", "string"].map(str::to_string).to_vec(),
    }
}

fn names(m: &Map<String, Value>, key: &str) -> Vec<String> {
    m.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
}
