//! dbt's Jinja on minijinja.
//!
//! Three things minijinja does not do the way dbt code needs are handled here:
//!
//! - **Macros everywhere.** dbt makes every macro of a package callable by name from any model.
//!   minijinja macros only live inside the template state that defined them, so each macro is
//!   cut out of its file and compiled as a template of its own; a [`MacroFn`] object evaluates
//!   it in a fresh state when called. Macros are looked up through the node's context, so the
//!   current package's macros win, then the root project's, then dbt's built-in ones.
//! - **`return()`.** dbt's `return` stops the macro and hands back a value (a list, a dict, a
//!   relation). Here it stores the value on the macro's state and raises a marker error, which
//!   [`MacroFn`] turns back into the value, so it short-circuits exactly as in dbt.
//! - **Custom tags.** `{% test %}` blocks become `{% macro test_... %}` before compiling.
//!
//! Lines are preserved in every rewrite, so errors point at the user's file and line.

mod context;
mod mutable;
pub use mutable::list_value;
mod objects;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use minijinja::value::{Kwargs, Object, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use regex::Regex;
use weir_core::Location;

pub use context::{ConfigObject, Host, LazyModel, NodeContext, NodeScope, RenderMode};
pub use objects::{ColumnValue, DateTimeValue, RelationValue, TableValue, datum_value};

use crate::error::ProjectError;

/// The package name dbt's own macros live in (`dbt.current_timestamp()`, `default__test_unique`).
pub const INTERNAL_PACKAGE: &str = "dbt";

const RETURN_MARKER: &str = "__weir_return__";

/// One `{% macro %}` (or `{% test %}`) cut out of its file.
#[derive(Debug, Clone)]
pub struct MacroDef {
    pub package: String,
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    /// The template name it is compiled under.
    pub template: String,
    pub arguments: Vec<String>,
    /// Whether its body reads `kwargs` (the keyword arguments it does not declare).
    pub uses_kwargs: bool,
}

/// Every macro of every package, for lookups by name and for `adapter.dispatch`.
#[derive(Debug, Default)]
pub struct MacroIndex {
    pub root: String,
    pub adapter_type: String,
    packages: HashMap<String, HashMap<String, Arc<MacroDef>>>,
    dispatch: BTreeMap<String, Vec<String>>,
}

impl MacroIndex {
    pub fn get(&self, package: &str, name: &str) -> Option<&Arc<MacroDef>> {
        self.packages.get(package)?.get(name)
    }

    pub fn has_package(&self, package: &str) -> bool {
        self.packages.contains_key(package)
    }

    /// An unqualified name seen from `current`: its own package, the root project, then dbt's.
    pub fn resolve(&self, current: &str, name: &str) -> Option<&Arc<MacroDef>> {
        self.get(current, name).or_else(|| self.get(&self.root, name)).or_else(|| self.get(INTERNAL_PACKAGE, name))
    }

    /// `adapter.dispatch(name, namespace)`: the first `<adapter>__name` or `default__name` in
    /// the search order (`dispatch:` config, else the root project then the namespace).
    pub fn dispatch(&self, current: &str, name: &str, namespace: Option<&str>) -> Option<&Arc<MacroDef>> {
        let prefixes = [self.adapter_type.as_str(), "default"];
        let packages: Vec<String> = match namespace {
            None => {
                for prefix in prefixes {
                    if let Some(m) = self.resolve(current, &format!("{prefix}__{name}")) {
                        return Some(m);
                    }
                }
                return None;
            }
            Some(ns) => match self.dispatch.get(ns) {
                Some(order) => order.clone(),
                None => vec![self.root.clone(), ns.to_string()],
            },
        };
        for pkg in &packages {
            for prefix in prefixes {
                if let Some(m) = self.get(pkg, &format!("{prefix}__{name}")) {
                    return Some(m);
                }
            }
        }
        None
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<MacroDef>> {
        self.packages.values().flat_map(|m| m.values())
    }
}

/// A macro as a callable value: evaluates its template in a fresh state, with the caller's
/// node context seen from the macro's own package.
#[derive(Debug)]
pub struct MacroFn(pub Arc<MacroDef>);

#[derive(Default)]
struct Returned(Option<Value>);

impl Object for MacroFn {
    fn call(self: &Arc<Self>, state: &mut State, args: &[Value]) -> Result<Value, Error> {
        let def = &self.0;
        let node = state.lookup(context::NODE_KEY).unwrap_or_default();
        let ctx = match node.downcast_object_ref::<NodeContext>() {
            Some(n) => Value::from_object(n.for_package(&def.package)),
            None => node,
        };
        // Jinja2 gives a macro the keyword arguments it does not declare as `kwargs`
        // (dbt_utils' tests read `kwargs.get('at_least')`); minijinja would refuse them.
        let mut args = args.to_vec();
        let mut extra: Vec<(String, Value)> = vec![];
        if let Some(kw) = args.last().filter(|a| a.is_kwargs()).and_then(|a| Kwargs::try_from(a.clone()).ok()) {
            let (mut kept, mut unknown) = (vec![], vec![]);
            for key in kw.args() {
                let value = kw.peek::<Value>(key)?;
                if def.arguments.iter().any(|a| a == key) || key == "caller" {
                    kept.push((key.to_string(), value));
                } else {
                    unknown.push((key.to_string(), value));
                }
            }
            if !unknown.is_empty() {
                args.pop();
                if !kept.is_empty() {
                    args.push(Value::from(Kwargs::from_iter(kept)));
                }
                extra = unknown;
            }
        }
        let ctx = if extra.is_empty() && !def.uses_kwargs {
            ctx
        } else {
            let kwargs: BTreeMap<String, Value> = extra.into_iter().collect();
            minijinja::context! { kwargs => Value::from_object(kwargs), ..ctx }
        };
        let tmpl = state.env().get_template(&def.template)?;
        let mut captured = tmpl.render_captured(ctx)?;
        captured.with_state_mut(|st| {
            let f =
                st.lookup(&def.name).ok_or_else(|| Error::new(ErrorKind::UnknownFunction, format!("macro '{}' not found", def.name)))?;
            let result = f.call(st, &args);
            let returned = st.get_extension_mut::<Returned>().and_then(|r| r.0.take());
            match (result, returned) {
                (_, Some(v)) => Ok(v),
                (Ok(v), None) => Ok(v),
                (Err(e), None) => Err(e),
            }
        })
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "name" => Some(Value::from(self.0.name.clone())),
            "package_name" => Some(Value::from(self.0.package.clone())),
            _ => None,
        }
    }
}

/// A compiled Jinja environment for one project and one adapter.
pub struct JinjaEnv {
    env: Environment<'static>,
    pub macros: Arc<MacroIndex>,
}

/// A file of macros to compile, as read from disk (or dbt's built-ins).
pub struct MacroFile {
    pub package: String,
    pub path: PathBuf,
    pub text: String,
}

static MACRO_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{%-?\s*(macro|test|materialization)\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(|,|%|-)").expect("static regex"));
static BLOCK_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{%-?\s*end(macro|test|materialization)\s*-?%\}").expect("static regex"));
/// The parameter names of a macro signature starting at `text` (`(a, b='x, y', c=f(1))`):
/// commas inside strings, brackets and calls do not split.
fn signature_args(text: &str) -> Vec<String> {
    let text = text.trim_start();
    let Some(body) = text.strip_prefix('(') else { return vec![] };
    let (mut depth, mut quote, mut parts, mut current) = (0usize, None::<char>, vec![], String::new());
    for c in body.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                current.push(c);
                continue;
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if matches!(c, '(' | '[' | '{') => depth += 1,
            None if c == ')' && depth == 0 => break,
            None if matches!(c, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            None if c == ',' && depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            None => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.iter().map(|p| p.split('=').next().unwrap_or("").trim().to_string()).filter(|p| !p.is_empty()).collect()
}

/// dbt's built-in macros (schema naming, generic tests, cross-database helpers).
pub const BUILTIN_MACROS: &str = include_str!("builtins.sql");

impl JinjaEnv {
    /// Compiles every macro file. Syntax errors name the file and line.
    pub fn new(
        root_package: &str,
        adapter_type: &str,
        files: &[MacroFile],
        dispatch: BTreeMap<String, Vec<String>>,
    ) -> Result<JinjaEnv, ProjectError> {
        objects::set_relation_class(adapter_type);
        let mut env = Environment::new();
        configure(&mut env);
        let mut index =
            MacroIndex { root: root_package.to_string(), adapter_type: adapter_type.to_string(), dispatch, ..Default::default() };
        let builtin =
            MacroFile { package: INTERNAL_PACKAGE.into(), path: PathBuf::from("<weir builtins>/macros.sql"), text: BUILTIN_MACROS.into() };
        // dbt's built-in macros (tested with Weir) are compiled when first called: most runs
        // use a handful of the hundred. The project's own are compiled now, so a syntax error
        // in any of them is reported before anything runs.
        let mut builtins: HashMap<String, String> = HashMap::new();
        for (def, source) in split_macros(&builtin)? {
            builtins.insert(def.template.clone(), source);
            index.packages.entry(def.package.clone()).or_default().insert(def.name.clone(), Arc::new(def));
        }
        env.set_loader(move |name| Ok(builtins.get(name).cloned()));
        for file in files {
            for (def, source) in split_macros(file)? {
                env.add_template_owned(def.template.clone(), source).map_err(|e| jinja_error(&e, &file.path, &file.text))?;
                index.packages.entry(def.package.clone()).or_default().insert(def.name.clone(), Arc::new(def));
            }
        }
        for pkg in files.iter().map(|f| f.package.clone()) {
            index.packages.entry(pkg).or_default();
        }
        Ok(JinjaEnv { env, macros: Arc::new(index) })
    }

    /// Renders a SQL/Jinja text from `file` (used for error locations) with a node's context.
    pub fn render(&self, file: &Path, text: &str, ctx: &NodeContext) -> Result<String, ProjectError> {
        let source = preprocess(text);
        let name = file.display().to_string();
        self.env.render_named_str(&name, &source, Value::from_object(ctx.clone())).map_err(|e| self.error(&e, file, text))
    }

    /// Evaluates one Jinja expression to its value, not its text: a test argument such as
    /// `ref('orders')` reaches the test's macro as a relation, as in dbt.
    pub fn eval(&self, file: &Path, expr: &str, ctx: &NodeContext) -> Result<Value, ProjectError> {
        let compiled = self.env.compile_expression(expr).map_err(|e| self.error(&e, file, expr))?;
        compiled.eval(Value::from_object(ctx.clone())).map_err(|e| self.error(&e, file, expr))
    }

    /// Calls a macro by name from a node's context, as dbt calls `generate_schema_name`.
    pub fn call_macro(&self, ctx: &NodeContext, name: &str, args: &[Value]) -> Result<Value, ProjectError> {
        let def = self
            .macros
            .resolve(ctx.package(), name)
            .ok_or_else(|| ProjectError::Profile(format!("macro '{name}' is not defined")))?
            .clone();
        self.call_def(ctx, &def, args)
    }

    /// Calls a given macro with a node's context.
    pub fn call_def(&self, ctx: &NodeContext, def: &Arc<MacroDef>, args: &[Value]) -> Result<Value, ProjectError> {
        let source_of = |def: &MacroDef| std::fs::read_to_string(&def.file).unwrap_or_else(|_| builtin_text(&def.file));
        let tmpl = self.env.template_from_str("").map_err(|e| self.error(&e, &def.file, &source_of(def)))?;
        let mut captured = tmpl.render_captured(Value::from_object(ctx.clone())).map_err(|e| self.error(&e, &def.file, &source_of(def)))?;
        captured
            .with_state_mut(|st| Value::from_object(MacroFn(def.clone())).call(st, args))
            .map_err(|e| self.error(&e, &def.file, &source_of(def)))
    }

    /// Turns a minijinja error into one naming the file and line where it happened, which
    /// may be inside a macro file rather than the model being rendered.
    pub fn error(&self, e: &Error, file: &Path, text: &str) -> ProjectError {
        let (path, source) = match e.name().and_then(|n| n.split_once("::")) {
            Some((p, _)) => {
                let p = PathBuf::from(p);
                let src = if p == file { text.to_string() } else { std::fs::read_to_string(&p).unwrap_or_else(|_| builtin_text(&p)) };
                (p, src)
            }
            None => (file.to_path_buf(), text.to_string()),
        };
        jinja_error(e, &path, &source)
    }
}

fn builtin_text(p: &Path) -> String {
    if p.starts_with("<weir builtins>") { BUILTIN_MACROS.to_string() } else { String::new() }
}

fn jinja_error(e: &Error, file: &Path, text: &str) -> ProjectError {
    let line = e.line().unwrap_or(0);
    let col = e
        .range()
        .and_then(|r| {
            let before = text.get(..r.start)?;
            Some(before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1)
        })
        .unwrap_or(0);
    let location = Location::new(file, line, if line > 0 { col } else { 0 });
    let mut message = match e.kind() {
        ErrorKind::SyntaxError => format!("Jinja syntax error: {}", e.detail().unwrap_or("invalid syntax")),
        ErrorKind::UnknownFunction => format!("undefined macro or function: {}", e.detail().unwrap_or("")),
        _ => e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string()),
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(inner) = inner.downcast_ref::<Error>()
            && let Some(d) = inner.detail()
        {
            message.push_str(&format!(": {d}"));
        }
        source = inner.source();
    }
    let snippet = location.snippet(text).map(|s| s.to_string());
    ProjectError::Jinja { location, message, snippet }
}

/// Cuts every macro out of a file, padding each with blank lines so line numbers match.
fn split_macros(file: &MacroFile) -> Result<Vec<(MacroDef, String)>, ProjectError> {
    let text = preprocess(&file.text);
    let mut out = vec![];
    let mut pos = 0;
    while let Some(m) = MACRO_START.captures(&text[pos..]) {
        let whole = m.get(0).map(|g| (g.start() + pos, g.end() + pos)).unwrap_or((pos, pos));
        let kind = m.get(1).map(|g| g.as_str()).unwrap_or("macro");
        let name = m.get(2).map(|g| g.as_str().to_string()).unwrap_or_default();
        let Some(end) = BLOCK_END.find(&text[whole.0..]) else {
            let line = text[..whole.0].matches('\n').count() + 1;
            return Err(ProjectError::invalid_at(
                Location::new(&file.path, line, 1),
                format!("{{% {kind} {name} %}} is never closed with {{% end{kind} %}}"),
                &file.text,
            ));
        };
        let end = whole.0 + end.end();
        pos = end;
        if kind == "materialization" {
            continue;
        }
        let line = text[..whole.0].matches('\n').count() + 1;
        let arguments = signature_args(&text[whole.1 - 1..]);
        let body = &text[whole.0..end];
        let source = format!("{}{}", "\n".repeat(line - 1), body);
        let template = format!("{}::{}", file.path.display(), name);
        static KWARGS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bkwargs\b").expect("static regex"));
        let uses_kwargs = KWARGS.is_match(body);
        out.push((
            MacroDef { package: file.package.clone(), name, file: file.path.clone(), line, template, arguments, uses_kwargs },
            source,
        ));
    }
    Ok(out)
}

static TEST_TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{%(-?)\s*test\s+([A-Za-z_][A-Za-z0-9_]*)").expect("static regex"));
static END_TEST_TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{%(-?)\s*endtest\s*(-?)%\}").expect("static regex"));

/// Rewrites dbt's custom tags into plain Jinja, keeping every newline where it was.
pub fn preprocess(text: &str) -> String {
    let text = mutable::rewrite_literals(text);
    if !text.contains("test") {
        return text.into_owned();
    }
    let t = TEST_TAG.replace_all(&text, "{%${1} macro test_${2}");
    END_TEST_TAG.replace_all(&t, "{%${1} endmacro ${2}%}").into_owned()
}

/// Python's methods on values: minijinja-contrib's, plus `list.index(x)` on every list.
fn python_methods(state: &mut State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if method == "index" && value.kind() == ValueKind::Seq {
        let wanted = args.first().ok_or_else(|| Error::new(ErrorKind::MissingArgument, "index() takes a value"))?;
        return value
            .try_iter()?
            .position(|item| &item == wanted)
            .map(Value::from)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("{wanted} is not in list")));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

fn configure(env: &mut Environment<'static>) {
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    // dbt never escapes output; minijinja would pick an escaping from the template's
    // extension (JSON escaping for a test rendered from schema.yml).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_unknown_method_callback(python_methods);
    env.set_recursion_limit(500);
    mutable::register(env);
    env.add_function("return", |state: &mut State, value: Option<Value>| -> Result<Value, Error> {
        state.get_or_insert_extension(Returned::default()).0 = Some(value.unwrap_or(Value::from(())));
        Err(Error::new(ErrorKind::InvalidOperation, RETURN_MARKER))
    });
    env.add_function("env_var", env_var);
    env.add_function("fromjson", |s: String, default: Option<Value>| -> Result<Value, Error> {
        match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(v) => Ok(json_value(&v)),
            Err(e) => default.ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}"))),
        }
    });
    env.add_function("tojson", |v: Value| -> Result<Value, Error> {
        serde_json::to_string(&v).map(Value::from).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_function("fromyaml", |s: String| -> Result<Value, Error> {
        let node = crate::yaml::parse(Path::new("<fromyaml>"), &s).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(node.map(|n| json_value(n.to_json())).unwrap_or_default())
    });
    env.add_function("toyaml", |v: Value| -> Result<Value, Error> {
        serde_json::to_string(&v).map(Value::from).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_function("zip", |a: Value, b: Value| -> Result<Value, Error> {
        let pairs: Vec<Value> = a.try_iter()?.zip(b.try_iter()?).map(|(x, y)| Value::from(vec![x, y])).collect();
        Ok(Value::from(pairs))
    });
    // Python's set: no repeats, and two sets with the same members are equal whatever order
    // they were built in (dbt_utils' `equality` compares column sets), so members are sorted.
    env.add_function("set_strict", |v: Value| -> Result<Value, Error> { python_set(Some(v)) });
    env.add_function("set", python_set);
    fn python_set(v: Option<Value>) -> Result<Value, Error> {
        let mut seen: Vec<Value> = vec![];
        if let Some(v) = v {
            for item in v.try_iter()? {
                if !seen.contains(&item) {
                    seen.push(item);
                }
            }
        }
        seen.sort();
        Ok(Value::from(seen))
    }
    env.add_function("local_md5", |s: String| -> String {
        use md5::{Digest, Md5};
        format!("{:x}", Md5::digest(s.as_bytes()))
    });
    env.add_function("print", |v: Value| -> Value {
        eprintln!("{v}");
        Value::from("")
    });
    env.add_filter("as_bool", |v: Value| -> Value {
        match v.as_str() {
            Some(s) => Value::from(matches!(s.trim().to_lowercase().as_str(), "true" | "1" | "yes")),
            None => Value::from(v.is_true()),
        }
    });
    env.add_filter("as_number", |v: Value| -> Value {
        match v.as_str().map(str::trim) {
            Some(s) => s.parse::<i64>().map(Value::from).or_else(|_| s.parse::<f64>().map(Value::from)).unwrap_or(v.clone()),
            None => v,
        }
    });
    // Jinja2's `int` and `float`: what is not a number gives the default (0) instead of an
    // error; dbt macros rely on it (`"abc" | int` is 0, `"3.7" | int` is 3).
    env.add_filter("int", |v: Value, default: Option<Value>, base: Option<u32>, kwargs: Kwargs| -> Result<Value, Error> {
        let default = default.or(kwargs.get("default")?).unwrap_or(Value::from(0));
        let base = base.or(kwargs.get("base")?);
        kwargs.assert_all_used()?;
        Ok(jinja2_int(v, default, base))
    });
    env.add_filter("float", |v: Value, default: Option<Value>, kwargs: Kwargs| -> Result<Value, Error> {
        let default = default.or(kwargs.get("default")?).unwrap_or(Value::from(0.0));
        kwargs.assert_all_used()?;
        let parsed = match v.as_str() {
            Some(s) => s.trim().parse::<f64>().ok(),
            None if v.kind() == ValueKind::Bool => Some(if v.is_true() { 1.0 } else { 0.0 }),
            None => f64::try_from(v).ok(),
        };
        Ok(parsed.map(Value::from).unwrap_or(default))
    });
    env.add_filter("as_text", |v: Value| -> String { v.to_string() });
    env.add_filter("as_native", |v: Value| -> Value { v });
    env.add_global(
        "modules",
        map_value([
            ("datetime", Value::from_object(objects::DatetimeModule)),
            ("re", Value::from_object(objects::ReModule)),
            ("pytz", Value::from_object(objects::PytzModule)),
        ]),
    );
    env.add_global("exceptions", Value::from_object(context::Exceptions));
    env.add_global("dbt_version", Value::from(DBT_VERSION));
}

/// The dbt version Weir reports to Jinja code that checks it.
pub const DBT_VERSION: &str = "1.11.0";

/// `env_var(name, default)`: the environment variable, else the default, else an error.
pub fn env_var(name: String, default: Option<Value>) -> Result<Value, Error> {
    match std::env::var(&name) {
        Ok(v) => Ok(Value::from(v)),
        Err(_) => match default {
            Some(d) => Ok(if d.is_none() { d } else { Value::from(d.to_string()) }),
            None => Err(Error::new(ErrorKind::InvalidOperation, format!("Env var required but not provided: '{name}'"))),
        },
    }
}

/// A Jinja dict from name/value pairs.
pub fn map_value<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::from(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<String, Value>>())
}

/// A JSON value (configs, vars, the target) as a Jinja value.
pub fn json_value<T: serde::Serialize>(j: T) -> Value {
    Value::from(minijinja::value::Serde(j))
}

/// Jinja2's `int(value, default, base)`: a text in `base` (or one that reads as a float, which
/// is truncated), a number truncated, a boolean as 0 or 1; anything else is `default`.
fn jinja2_int(v: Value, default: Value, base: Option<u32>) -> Value {
    if let Some(s) = v.as_str() {
        let t = s.trim().replace('_', "");
        let parsed = match base.filter(|b| *b != 10) {
            Some(b) => {
                let digits = t.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b");
                i64::from_str_radix(digits, b).ok()
            }
            None => t.parse::<i64>().ok().or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f.trunc() as i64)),
        };
        return parsed.map(Value::from).unwrap_or(default);
    }
    match v.kind() {
        ValueKind::Bool => Value::from(i64::from(v.is_true())),
        ValueKind::Number => i64::try_from(v.clone())
            .ok()
            .or_else(|| f64::try_from(v).ok().filter(|f| f.is_finite()).map(|f| f.trunc() as i64))
            .map(Value::from)
            .unwrap_or(default),
        _ => default,
    }
}

/// Extracts keyword arguments (dbt macros take many) without failing on positional ones.
pub fn kwargs_of(args: &[Value]) -> Kwargs {
    args.last()
        .filter(|a| a.is_kwargs())
        .and_then(|a| Kwargs::try_from(a.clone()).ok())
        .unwrap_or_else(|| Kwargs::from_iter(std::iter::empty::<(String, Value)>()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_split_at_top_level_commas_only() {
        assert_eq!(
            super::signature_args("(table, column, order_by='count(*) desc', max_records=none, where=\"a, b\", cols=[1, 2])\n{{ x }}"),
            ["table", "column", "order_by", "max_records", "where", "cols"]
        );
        assert!(super::signature_args("()").is_empty());
    }

    use super::*;

    #[test]
    fn int_and_float_filters_behave_as_in_jinja2() {
        let mut env = Environment::new();
        configure(&mut env);
        let render = |t: &str| env.render_str(t, ()).unwrap();
        assert_eq!(render("{{ 'abc' | int }} {{ '42' | int }} {{ ' 3.7 ' | int }} {{ 3.7 | int }} {{ true | int }}"), "0 42 3 3 1");
        assert_eq!(render("{{ 'abc' | int(5) }} {{ none | int }} {{ 'ff' | int(0, 16) }} {{ '0x1A' | int(base=16) }}"), "5 0 255 26");
        assert_eq!(render("{{ 'abc' | float }} {{ '1.5' | float }} {{ 2 | float }} {{ 'x' | float(9.5) }}"), "0.0 1.5 2.0 9.5");
    }

    /// Built-in macros compile lazily at run time, so check here that every one compiles.
    #[test]
    fn every_builtin_macro_compiles() {
        let builtin =
            MacroFile { package: INTERNAL_PACKAGE.into(), path: PathBuf::from("<weir builtins>/macros.sql"), text: BUILTIN_MACROS.into() };
        let mut env = Environment::new();
        configure(&mut env);
        let macros = split_macros(&builtin).unwrap();
        assert!(macros.len() > 50, "{} builtin macros", macros.len());
        for (def, source) in macros {
            env.template_from_named_str(&def.template, &source).unwrap_or_else(|e| panic!("{}: {e}", def.name));
        }
    }
}
