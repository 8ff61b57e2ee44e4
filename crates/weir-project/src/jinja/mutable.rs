//! Mutable lists and dicts, as Jinja2 (and so dbt) has them.
//!
//! dbt macros build lists in place: `{% set cols = [] %}{% do cols.append(c) %}`, and dicts
//! with `{% do d.update({...}) %}`. minijinja's values are immutable, so a `set` whose value is
//! a list or dict literal is rewritten to wrap the literal in `__weir_list(...)` /
//! `__weir_dict(...)`, which return objects with interior mutability that behave as a sequence
//! or a map everywhere else (loops, filters, `length`, indexing, `tojson`, `+`).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value, from_args};
use minijinja::{Error, ErrorKind, State};
use regex::Regex;

/// Wraps list and dict literals assigned by `{% set name = [...] %}` / `{% set name = {...} %}`
/// in the mutable constructors. Only whole-literal assignments are touched; line numbers are
/// kept (nothing is inserted across lines).
pub fn rewrite_literals(text: &str) -> Cow<'_, str> {
    static SET: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{%-?\s*set\s+[A-Za-z_][A-Za-z0-9_]*\s*=\s*([\[{])").expect("static regex"));
    if !text.contains("set") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut pos = 0;
    for caps in SET.captures_iter(text) {
        let Some(open) = caps.get(1) else { continue };
        if open.start() < pos {
            continue;
        }
        let Some(close) = matching_bracket(text, open.start()) else { continue };
        // The literal must be the whole value: only whitespace until the tag's end.
        let rest = text[close + 1..].trim_start();
        if !(rest.starts_with("%}") || rest.starts_with("-%}")) {
            continue;
        }
        let ctor = if open.as_str() == "[" { "__weir_list(" } else { "__weir_dict(" };
        out.push_str(&text[pos..open.start()]);
        out.push_str(ctor);
        out.push_str(&text[open.start()..=close]);
        out.push(')');
        pos = close + 1;
    }
    let text: Cow<'_, str> = if pos == 0 {
        Cow::Borrowed(text)
    } else {
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    };
    match rewrite_empty_lists(&text) {
        Some(rewritten) => Cow::Owned(rewritten),
        None => text,
    }
}

/// An empty list written inside a `do` or `set` tag (`{% do d.update({key: []}) %}`) is a new
/// mutable list too, so that what is appended to it later stays (dbt_utils' `union_relations`).
fn rewrite_empty_lists(text: &str) -> Option<String> {
    static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{%-?\s*(?:do|set)\b").expect("static regex"));
    if !text.contains("[]") {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut pos = 0;
    for m in TAG.find_iter(text) {
        if m.start() < pos {
            continue;
        }
        let Some(end) = text[m.end()..].find("%}").map(|i| m.end() + i) else { break };
        out.push_str(&text[pos..m.end()]);
        let body = &text[m.end()..end];
        let mut quote: Option<char> = None;
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == '[' && body[i + 1..].starts_with(']') => {
                    let before = body[..i].trim_end();
                    // `x[]` is no literal; `__weir_list([])` is already one.
                    if !before.ends_with(|p: char| p.is_alphanumeric() || p == '_' || p == ')' || p == ']')
                        && !before.ends_with("__weir_list(")
                    {
                        out.push_str("__weir_list([])");
                        chars.next();
                        continue;
                    }
                }
                None => {}
            }
            out.push(c);
        }
        pos = end;
    }
    if pos == 0 {
        return None;
    }
    out.push_str(&text[pos..]);
    Some(out)
}

/// A JSON list as a mutable list (its items as they are): what a macro receives for a list
/// written in YAML, which Jinja2 code may append to (`group_by_columns.append(...)`).
pub fn list_value(items: &[serde_json::Value]) -> Value {
    Value::from_object(MutList(Mutex::new(items.iter().map(super::json_value).collect())))
}

/// Registers the constructors the rewrite calls.
pub fn register(env: &mut minijinja::Environment<'static>) {
    env.add_function("__weir_list", |v: Option<Value>| -> Result<Value, Error> {
        let items = match v {
            Some(v) if !v.is_none() && !v.is_undefined() => v.try_iter()?.collect(),
            _ => vec![],
        };
        Ok(Value::from_object(MutList(Mutex::new(items))))
    });
    env.add_function("__weir_dict", |v: Option<Value>| -> Result<Value, Error> {
        let mut map = IndexMap::new();
        if let Some(v) = v.filter(|v| !v.is_none() && !v.is_undefined()) {
            for k in v.try_iter()? {
                let item = v.get_item(&k)?;
                map.insert(k, item);
            }
        }
        Ok(Value::from_object(MutDict(Mutex::new(map))))
    });
}

/// Index of the bracket closing the one at `open`, skipping string literals.
fn matching_bracket(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'[' | b'{' | b'(' => depth += 1,
                b']' | b'}' | b')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                b'%' if bytes.get(i + 1) == Some(&b'}') => return None,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// A Python-like list: `append`, `extend`, `insert`, `pop`, `remove`, `index`, `count`,
/// `reverse`, `copy`.
#[derive(Debug, Default)]
pub struct MutList(Mutex<Vec<Value>>);

impl MutList {
    fn items(&self) -> MutexGuard<'_, Vec<Value>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Object for MutList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.items();
        let i = key.as_i64()?;
        let i = if i < 0 { items.len() as i64 + i } else { i };
        items.get(usize::try_from(i).ok()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items().clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.items().len())
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let none = Value::from(());
        match method {
            "append" => {
                let (v,): (Value,) = from_args(args)?;
                self.items().push(v);
                Ok(none)
            }
            "extend" => {
                let (v,): (Value,) = from_args(args)?;
                let new: Vec<Value> = v.try_iter()?.collect();
                self.items().extend(new);
                Ok(none)
            }
            "insert" => {
                let (i, v): (i64, Value) = from_args(args)?;
                let mut items = self.items();
                let len = items.len() as i64;
                let at = if i < 0 { (len + i).max(0) } else { i.min(len) };
                items.insert(at as usize, v);
                Ok(none)
            }
            "pop" => {
                let (i,): (Option<i64>,) = from_args(args)?;
                let mut items = self.items();
                let len = items.len() as i64;
                let at = match i {
                    None => len - 1,
                    Some(i) if i < 0 => len + i,
                    Some(i) => i,
                };
                if at < 0 || at >= len {
                    return Err(invalid("pop index out of range"));
                }
                Ok(items.remove(at as usize))
            }
            "remove" => {
                let (v,): (Value,) = from_args(args)?;
                let mut items = self.items();
                let at = items.iter().position(|x| *x == v).ok_or_else(|| invalid(format!("list.remove({v}): not in list")))?;
                items.remove(at);
                Ok(none)
            }
            "index" => {
                let (v,): (Value,) = from_args(args)?;
                let at = self.items().iter().position(|x| *x == v).ok_or_else(|| invalid(format!("{v} is not in list")))?;
                Ok(Value::from(at))
            }
            "count" => {
                let (v,): (Value,) = from_args(args)?;
                Ok(Value::from(self.items().iter().filter(|x| **x == v).count()))
            }
            "reverse" => {
                self.items().reverse();
                Ok(none)
            }
            "copy" => Ok(Value::from_object(MutList(Mutex::new(self.items().clone())))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Value::from(self.items().clone()))
    }
}

/// A Python-like dict: `update`, `pop`, `setdefault`, `get`, `items`, `keys`, `values`, `copy`.
#[derive(Debug, Default)]
pub struct MutDict(Mutex<IndexMap<Value, Value>>);

impl MutDict {
    fn map(&self) -> MutexGuard<'_, IndexMap<Value, Value>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> Value {
        Value::from_iter(self.map().iter().map(|(k, v)| (k.clone(), v.clone())))
    }
}

impl Object for MutDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.map().get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.map().keys().cloned().collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.map().len())
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let none = Value::from(());
        match method {
            "update" => {
                let (other, kwargs): (Option<Value>, minijinja::value::Kwargs) = from_args(args)?;
                let mut pairs = vec![];
                if let Some(other) = other.filter(|o| !o.is_none()) {
                    for k in other.try_iter()? {
                        let v = other.get_item(&k)?;
                        pairs.push((k, v));
                    }
                }
                for k in kwargs.args() {
                    pairs.push((Value::from(k), kwargs.peek::<Value>(k)?));
                }
                self.map().extend(pairs);
                Ok(none)
            }
            "pop" => {
                let (k, default): (Value, Option<Value>) = from_args(args)?;
                match self.map().shift_remove(&k) {
                    Some(v) => Ok(v),
                    None => default.ok_or_else(|| invalid(format!("dict.pop({k}): no such key"))),
                }
            }
            "setdefault" => {
                let (k, default): (Value, Option<Value>) = from_args(args)?;
                Ok(self.map().entry(k).or_insert_with(|| default.unwrap_or(Value::from(()))).clone())
            }
            "get" => {
                let (k, default): (Value, Option<Value>) = from_args(args)?;
                Ok(self.map().get(&k).cloned().or(default).unwrap_or(none))
            }
            "keys" => Ok(Value::from(self.map().keys().cloned().collect::<Vec<_>>())),
            "values" => Ok(Value::from(self.map().values().cloned().collect::<Vec<_>>())),
            "items" => Ok(Value::from(self.map().iter().map(|(k, v)| Value::from(vec![k.clone(), v.clone()])).collect::<Vec<_>>())),
            "copy" => Ok(Value::from_object(MutDict(Mutex::new(self.map().clone())))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> String {
        let mut env = minijinja::Environment::new();
        register(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.render_str(&rewrite_literals(src), ()).unwrap()
    }

    #[test]
    fn lists_append_extend_and_behave_as_sequences() {
        let out = render(
            "{% set xs = [] %}{% for i in range(3) %}{% do xs.append(i * 2) %}{% endfor %}{% do xs.extend(['a']) %}\
             {{ xs | join(',') }}|{{ xs | length }}|{{ xs[-1] }}|{{ (xs + [9]) | join(',') }}|{{ xs.pop() }}|{{ xs | tojson }}",
        );
        assert_eq!(out, "0,2,4,a|4|a|0,2,4,a,9|a|[0, 2, 4]");
    }

    #[test]
    fn dicts_update_and_iterate_in_insertion_order() {
        let out = render(
            "{%- set d = {'b': 1} -%}{% do d.update({'a': 2}) %}{% do d.update(c=3) %}\
             {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d['a'] }}{{ d.get('z', 'none') }}{{ 'b' in d }}",
        );
        assert_eq!(out, "b=1;a=2;c=3;2noneTrue");
    }

    #[test]
    fn only_whole_literal_assignments_are_rewritten() {
        assert_eq!(rewrite_literals("{% set x = [1, ']'] %}"), "{% set x = __weir_list([1, ']']) %}");
        assert_eq!(rewrite_literals("{%- set d = {} -%}"), "{%- set d = __weir_dict({}) -%}");
        assert_eq!(rewrite_literals("{% set x = [1] + y %}"), "{% set x = [1] + y %}");
        assert_eq!(rewrite_literals("{% set x = y %}"), "{% set x = y %}");
    }

    #[test]
    fn empty_lists_inside_do_and_set_are_mutable() {
        let out = render("{% set d = {} %}{% do d.update({'k': []}) %}{% do d['k'].append(1) %}{{ d['k'] | join(',') }}|{{ '[]' }}");
        assert_eq!(out, "1|[]");
        assert_eq!(rewrite_literals("{% set x = [] %}"), "{% set x = __weir_list([]) %}");
        assert_eq!(rewrite_literals("{% do f(\"[]\", a[0]) %}{{ [] }}"), "{% do f(\"[]\", a[0]) %}{{ [] }}");
    }
}
