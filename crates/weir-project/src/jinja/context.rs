//! The per-node Jinja context: `ref`, `source`, `config`, `this`, `is_incremental`, `var`,
//! `target`, `adapter`, `run_query`, `statement`/`load_result`, `graph`, ...
//!
//! What needs the manifest or the warehouse goes through the [`Host`] trait, which the
//! transform layer implements; this module knows neither.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Object, Value};
use minijinja::{Error, ErrorKind, State};
use serde_json::Value as J;
use weir_core::{Column, QueryResult, Relation, RelationKind};

use super::objects::{ColumnValue, DateTimeValue, RelationValue, TableValue};
use super::{MacroFn, MacroIndex, json_value, kwargs_of, map_value};
use crate::config::{ConfigMap, merge};

pub(crate) const NODE_KEY: &str = "__weir_node__";

/// Parse renders capture refs and configs and run no SQL (`execute` is false); execute
/// renders see real relations and may query the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    Parse,
    Execute,
}

/// What the Jinja context needs from the layers above: the manifest and the warehouse.
pub trait Host: Send + Sync + fmt::Debug {
    fn adapter_type(&self) -> &str;
    /// `ref('name')` / `ref('package', 'name')` seen from node `from`.
    fn resolve_ref(&self, from: &str, package: Option<&str>, name: &str) -> Result<RelationValue, String>;
    fn resolve_source(&self, from: &str, source: &str, table: &str) -> Result<RelationValue, String>;
    fn is_incremental(&self, node_id: &str) -> bool;
    fn var(&self, package: &str, name: &str) -> Option<J>;
    fn target(&self) -> J;
    fn flags(&self) -> J;
    fn graph(&self) -> Value;
    fn invocation_id(&self) -> String;
    fn run_started_at(&self) -> chrono::NaiveDateTime;
    fn run_sql(&self, sql: &str, fetch: bool) -> Result<QueryResult, String>;
    fn get_columns(&self, relation: &Relation) -> Result<Vec<Column>, String>;
    fn get_relation(&self, relation: &Relation) -> Result<Option<RelationKind>, String>;
    /// `adapter.drop_relation`: drops it and forgets it.
    fn drop_relation(&self, relation: &Relation, kind: RelationKind) -> Result<(), String> {
        let _ = (relation, kind);
        Err("adapter.drop_relation() runs only when a node runs".into())
    }
    fn log(&self, message: &str, info: bool);
}

/// The node a render is for.
#[derive(Debug, Clone)]
pub struct NodeScope {
    pub unique_id: String,
    pub package: String,
    pub file: PathBuf,
    pub this: Option<RelationValue>,
    /// The node as a dict (`model` in Jinja): name, unique_id, config, columns, ...
    pub model: LazyModel,
}

/// Builds the `model` dict when a template first reads it: most renders never do, and
/// building it for every node was a tenth of `weir compile`'s time on big projects.
#[derive(Clone)]
pub struct LazyModel(Arc<dyn Fn() -> J + Send + Sync>);

impl LazyModel {
    pub fn new(build: impl Fn() -> J + Send + Sync + 'static) -> LazyModel {
        LazyModel(Arc::new(build))
    }

    pub fn get(&self) -> J {
        (self.0)()
    }
}

impl std::fmt::Debug for LazyModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyModel")
    }
}

/// The context object for one node's render. Cheap to clone; macros see a copy whose
/// package is the macro's own.
#[derive(Debug, Clone)]
pub struct NodeContext {
    shared: Arc<Shared>,
    package: String,
    extra: Arc<HashMap<String, Value>>,
}

#[derive(Debug)]
struct Shared {
    host: Arc<dyn Host>,
    macros: Arc<MacroIndex>,
    scope: NodeScope,
    mode: RenderMode,
    config: Arc<Mutex<ConfigMap>>,
    /// Whether `config(...)` calls are recorded while executing (a test macro's own
    /// `config(fail_calc=...)`, which dbt reads when it parses the test).
    capture: std::sync::atomic::AtomicBool,
    results: Mutex<HashMap<String, Value>>,
}

impl NodeContext {
    pub fn new(host: Arc<dyn Host>, macros: Arc<MacroIndex>, scope: NodeScope, mode: RenderMode, config: ConfigMap) -> Self {
        let package = scope.package.clone();
        NodeContext {
            shared: Arc::new(Shared {
                host,
                macros,
                scope,
                mode,
                config: Arc::new(Mutex::new(config)),
                capture: std::sync::atomic::AtomicBool::new(false),
                results: Mutex::new(HashMap::new()),
            }),
            package,
            extra: Arc::new(HashMap::new()),
        }
    }

    pub fn package(&self) -> &str {
        &self.package
    }

    /// The config after the render, with any `{{ config(...) }}` calls merged in.
    pub fn config(&self) -> ConfigMap {
        self.shared.config.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Records `config(...)` calls even while executing; read them back with [`Self::config`].
    pub fn capture_config(&self) {
        self.shared.capture.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn captures(&self) -> bool {
        self.shared.mode == RenderMode::Parse || self.shared.capture.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn for_package(&self, package: &str) -> NodeContext {
        NodeContext { shared: self.shared.clone(), package: package.to_string(), extra: self.extra.clone() }
    }

    /// Adds a name to the context (a test's `model` and `column_name`, a hook's `sql`).
    pub fn set_extra(&mut self, name: &str, value: Value) {
        Arc::make_mut(&mut self.extra).insert(name.to_string(), value);
    }

    fn executing(&self) -> bool {
        self.shared.mode == RenderMode::Execute
    }

    fn callable(&self, kind: Callable) -> Value {
        Value::from_object(Func { ctx: self.clone(), kind })
    }
}

impl Object for NodeContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if let Some(v) = self.extra.get(name) {
            return Some(v.clone());
        }
        let s = &self.shared;
        let v = match name {
            NODE_KEY => Value::from_dyn_object(self.clone()),
            "ref" => self.callable(Callable::Ref),
            "source" => self.callable(Callable::Source),
            "var" => self.callable(Callable::Var),
            "is_incremental" => self.callable(Callable::IsIncremental),
            "run_query" => self.callable(Callable::RunQuery),
            "statement" => self.callable(Callable::Statement),
            "load_result" => self.callable(Callable::LoadResult),
            "store_result" => self.callable(Callable::StoreResult),
            "log" => self.callable(Callable::Log),
            "should_full_refresh" => self.callable(Callable::ShouldFullRefresh),
            "config" => Value::from_object(ConfigObject { map: s.config.clone(), capture: self.captures() }),
            "adapter" => Value::from_object(Adapter { ctx: (**self).clone() }),
            "api" => map_value([("Relation", Value::from_object(ApiRelation))]),
            "this" => s.scope.this.clone().map(RelationValue::into_value).unwrap_or_default(),
            "model" => json_value(s.scope.model.get()),
            "execute" => Value::from(self.executing()),
            "target" => json_value(s.host.target()),
            "flags" => json_value(s.host.flags()),
            "graph" => s.host.graph(),
            "invocation_id" => Value::from(s.host.invocation_id()),
            "run_started_at" => DateTimeValue::value(s.host.run_started_at()),
            "project_name" => Value::from(s.macros.root.clone()),
            "builtins" => map_value([
                ("ref", self.callable(Callable::Ref)),
                ("source", self.callable(Callable::Source)),
                ("config", Value::from_object(ConfigObject { map: s.config.clone(), capture: self.captures() })),
            ]),
            "database" => json_value(s.host.target().get("database")),
            "schema" => json_value(s.host.target().get("schema")),
            _ => {
                if let Some(def) = s.macros.resolve(&self.package, name) {
                    return Some(Value::from_object(MacroFn(def.clone())));
                }
                if s.macros.has_package(name) {
                    return Some(Value::from_object(PackageNamespace { macros: s.macros.clone(), package: name.to_string() }));
                }
                return None;
            }
        };
        Some(v)
    }
}

/// `dbt_utils.star(...)`: a package's macros by attribute.
#[derive(Debug)]
struct PackageNamespace {
    macros: Arc<MacroIndex>,
    package: String,
}

impl Object for PackageNamespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let def = self.macros.get(&self.package, name).or_else(|| {
            // dbt's namespace also offers the adapter-dispatched helpers (`dbt.dateadd`).
            (self.package == super::INTERNAL_PACKAGE).then(|| self.macros.dispatch(&self.package, name, Some(&self.package))).flatten()
        })?;
        Some(Value::from_object(MacroFn(def.clone())))
    }
}

#[derive(Debug, Clone, Copy)]
enum Callable {
    Ref,
    Source,
    Var,
    IsIncremental,
    RunQuery,
    Statement,
    LoadResult,
    StoreResult,
    Log,
    ShouldFullRefresh,
}

#[derive(Debug)]
struct Func {
    ctx: NodeContext,
    kind: Callable,
}

fn fail(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn positional(args: &[Value]) -> Vec<&Value> {
    args.iter().filter(|a| !a.is_kwargs()).collect()
}

impl Object for Func {
    fn call(self: &Arc<Self>, state: &mut State, args: &[Value]) -> Result<Value, Error> {
        let ctx = &self.ctx;
        let s = &ctx.shared;
        let pos = positional(args);
        let text = |i: usize| pos.get(i).and_then(|v| v.as_str()).map(str::to_string);
        match self.kind {
            Callable::Ref => {
                let kw = kwargs_of(args);
                let version = match (kw.get::<Option<Value>>("version")?, kw.get::<Option<Value>>("v")?) {
                    (Some(v), _) | (None, Some(v)) => Some(v.to_string()),
                    (None, None) => None,
                };
                let (package, name) = match (text(0), text(1)) {
                    (Some(p), Some(n)) => (Some(p), n),
                    (Some(n), None) => (None, n),
                    _ => return Err(fail("ref() takes a model name, or a package name and a model name")),
                };
                // A version is asked for as `name.vN`, the id suffix of that version's node.
                let name = match version {
                    Some(v) => format!("{name}.v{v}"),
                    None => name,
                };
                s.host.resolve_ref(&s.scope.unique_id, package.as_deref(), &name).map(RelationValue::into_value).map_err(fail)
            }
            Callable::Source => match (text(0), text(1)) {
                (Some(src), Some(table)) => {
                    s.host.resolve_source(&s.scope.unique_id, &src, &table).map(RelationValue::into_value).map_err(fail)
                }
                _ => Err(fail("source() takes a source name and a table name")),
            },
            Callable::Var => {
                let name = text(0).ok_or_else(|| fail("var() takes a variable name"))?;
                // dbt resolves vars in the calling node's scope, even inside a package's macro.
                match s.host.var(&s.scope.package, &name) {
                    // dbt renders a text var when it is read, in the reader's context
                    // (`start: "{{ modules.datetime.date.today() }}"`).
                    Some(J::String(text)) if text.contains("{{") || text.contains("{%") => {
                        thread_local!(static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
                        let depth = DEPTH.with(|d| d.replace(d.get() + 1));
                        let rendered = if depth > 16 {
                            Err(fail(format!("var '{name}' refers to itself through other vars")))
                        } else {
                            state.env().render_str(&text, Value::from_object(ctx.clone())).map(Value::from)
                        };
                        DEPTH.with(|d| d.set(depth));
                        rendered
                    }
                    Some(v) => Ok(json_value(&v)),
                    None => match pos.get(1) {
                        Some(d) => Ok((*d).clone()),
                        None if !ctx.executing() => Ok(Value::from(())),
                        None => Err(fail(format!(
                            "Required var '{name}' not found in config: set it under 'vars:' in dbt_project.yml or pass --vars"
                        ))),
                    },
                }
            }
            Callable::IsIncremental => Ok(Value::from(ctx.executing() && s.host.is_incremental(&s.scope.unique_id))),
            Callable::ShouldFullRefresh => {
                let cfg = ctx.config();
                let flag = s.host.flags().get("FULL_REFRESH").and_then(J::as_bool).unwrap_or(false);
                Ok(Value::from(cfg.get("full_refresh").and_then(J::as_bool).unwrap_or(flag)))
            }
            Callable::RunQuery => {
                let sql = pos.first().map(|v| v.to_string()).ok_or_else(|| fail("run_query() takes a SQL string"))?;
                if !ctx.executing() {
                    return Ok(Value::from(()));
                }
                let result = s.host.run_sql(&sql, true).map_err(fail)?;
                Ok(Value::from_object(TableValue(result)))
            }
            Callable::Statement => {
                let kw = kwargs_of(args);
                let name = text(0).or(kw.get::<Option<String>>("name")?).unwrap_or_else(|| "main".into());
                let fetch = kw.get::<Option<bool>>("fetch_result")?.unwrap_or(false) || pos.get(1).is_some_and(|v| v.is_true());
                let _ = kw.get::<Option<Value>>("auto_begin");
                let _ = kw.get::<Option<Value>>("language");
                let caller = kw.get::<Value>("caller")?;
                let sql = caller.call(state, &[])?.to_string();
                if !ctx.executing() {
                    return Ok(Value::from(""));
                }
                let result = s.host.run_sql(&sql, fetch).map_err(fail)?;
                let rows: Vec<Value> =
                    result.rows.iter().map(|r| Value::from(r.iter().map(super::datum_value).collect::<Vec<_>>())).collect();
                let stored = map_value([
                    ("response", map_value([("code", Value::from("OK")), ("rows_affected", Value::from(result.rows.len()))])),
                    ("data", Value::from(rows)),
                    ("table", Value::from_object(TableValue(result))),
                ]);
                if let Ok(mut r) = s.results.lock() {
                    r.insert(name, stored);
                }
                Ok(Value::from(""))
            }
            Callable::StoreResult => {
                let kw = kwargs_of(args);
                let name = text(0).ok_or_else(|| fail("store_result() takes a name"))?;
                let response = kw.get::<Option<Value>>("response")?.unwrap_or_default();
                let table = kw.get::<Option<Value>>("agate_table")?.unwrap_or_default();
                if let Ok(mut r) = s.results.lock() {
                    r.insert(name, map_value([("response", response), ("table", table), ("data", Value::from(()))]));
                }
                Ok(Value::from(""))
            }
            Callable::LoadResult => {
                let name = text(0).ok_or_else(|| fail("load_result() takes a name"))?;
                Ok(s.results.lock().ok().and_then(|r| r.get(&name).cloned()).unwrap_or_default())
            }
            Callable::Log => {
                let kw = kwargs_of(args);
                let info = kw.get::<Option<bool>>("info")?.unwrap_or(false) || pos.get(1).is_some_and(|v| v.is_true());
                let msg = pos.first().map(|v| v.to_string()).unwrap_or_default();
                if ctx.executing() {
                    s.host.log(&msg, info);
                }
                Ok(Value::from(""))
            }
        }
    }
}

/// `config(...)` at parse time records settings; `config.get()` reads them at any time.
#[derive(Debug)]
pub struct ConfigObject {
    map: Arc<Mutex<ConfigMap>>,
    capture: bool,
}

impl Object for ConfigObject {
    fn call(self: &Arc<Self>, _: &mut State, args: &[Value]) -> Result<Value, Error> {
        if !self.capture {
            return Ok(Value::from(""));
        }
        let mut new = ConfigMap::new();
        for arg in args {
            let json: J = serde_json::to_value(arg).map_err(|e| fail(format!("config(): {e}")))?;
            if let J::Object(m) = json {
                new.extend(m);
            }
        }
        if let Ok(mut map) = self.map.lock() {
            merge(&mut map, &new);
        }
        Ok(Value::from(""))
    }

    fn call_method(self: &Arc<Self>, state: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        let pos = positional(args);
        let key = pos.first().and_then(|v| v.as_str()).map(crate::config::normalize_key);
        let value = key.as_ref().and_then(|k| self.map.lock().ok().and_then(|m| m.get(k).cloned()));
        match method {
            "get" => {
                let default = pos.get(1).map(|v| (*v).clone()).or_else(|| kwargs_of(args).get::<Value>("default").ok());
                Ok(match value {
                    Some(J::Null) | None => default.unwrap_or_default(),
                    Some(v) => json_value(&v),
                })
            }
            "require" => match value {
                Some(v) if !v.is_null() => Ok(json_value(&v)),
                _ => Err(fail(format!("required config '{}' is not set", key.unwrap_or_default()))),
            },
            "set" => {
                if let (Some(k), Some(v)) = (key, pos.get(1)) {
                    let json: J = serde_json::to_value(v).map_err(|e| fail(e.to_string()))?;
                    if let Ok(mut m) = self.map.lock() {
                        m.insert(k, json);
                    }
                }
                Ok(Value::from(""))
            }
            "persist_relation_docs" | "persist_column_docs" => Ok(Value::from(false)),
            _ => {
                let _ = state;
                Err(Error::from(ErrorKind::UnknownMethod))
            }
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let m = self.map.lock().ok()?;
        m.get(key.as_str()?).map(json_value)
    }
}

/// `adapter.*`: dispatch, quoting and catalog lookups.
#[derive(Debug)]
struct Adapter {
    ctx: NodeContext,
}

impl Object for Adapter {
    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        let s = &self.ctx.shared;
        let pos = positional(args);
        let kw = kwargs_of(args);
        let text = |i: usize, key: &str| -> Result<Option<String>, Error> {
            Ok(match pos.get(i).and_then(|v| v.as_str()) {
                Some(t) => Some(t.to_string()),
                None => kw.get::<Option<String>>(key)?,
            })
        };
        match method {
            "dispatch" => {
                let name = text(0, "macro_name")?.ok_or_else(|| fail("adapter.dispatch() takes a macro name"))?;
                let namespace = text(1, "macro_namespace")?;
                let _ = kw.get::<Option<Value>>("packages");
                let def = s.macros.dispatch(&self.ctx.package, &name, namespace.as_deref()).ok_or_else(|| {
                    fail(format!(
                        "adapter.dispatch('{name}'{}): no macro named {}__{name} or default__{name} was found",
                        namespace.as_ref().map(|n| format!(", '{n}'")).unwrap_or_default(),
                        s.host.adapter_type()
                    ))
                })?;
                Ok(Value::from_object(MacroFn(def.clone())))
            }
            "quote" => {
                let ident = pos.first().map(|v| v.to_string()).unwrap_or_default();
                Ok(Value::from(format!("\"{}\"", ident.replace('"', "\"\""))))
            }
            "type" => Ok(Value::from(s.host.adapter_type().to_string())),
            "get_relation" | "already_exists" => {
                let (database, schema, identifier) = if method == "already_exists" {
                    (
                        s.host.target().get("database").and_then(J::as_str).unwrap_or_default().to_string(),
                        text(0, "schema")?,
                        text(1, "identifier")?,
                    )
                } else {
                    (text(0, "database")?.unwrap_or_default(), text(1, "schema")?, text(2, "identifier")?)
                };
                let rel = Relation::new(database, schema.unwrap_or_default(), identifier.unwrap_or_default());
                if !self.ctx.executing() {
                    return Ok(if method == "already_exists" { Value::from(false) } else { Value::from(()) });
                }
                let kind = s.host.get_relation(&rel).map_err(fail)?;
                Ok(match (method, kind) {
                    ("already_exists", k) => Value::from(k.is_some()),
                    (_, Some(k)) => RelationValue::new(rel, Some(k)).into_value(),
                    (_, None) => Value::from(()),
                })
            }
            "get_columns_in_relation" => {
                let rel_value = pos.first().ok_or_else(|| fail("get_columns_in_relation() takes a relation"))?;
                let Some(rel) = rel_value.downcast_object_ref::<RelationValue>() else {
                    return Err(fail("get_columns_in_relation() takes a relation (from ref, source or adapter.get_relation)"));
                };
                if !self.ctx.executing() {
                    return Ok(Value::from(Vec::<Value>::new()));
                }
                let cols = s.host.get_columns(&rel.relation).map_err(fail)?;
                Ok(Value::from(cols.into_iter().map(|c| Value::from_object(ColumnValue(c))).collect::<Vec<_>>()))
            }
            "check_schema_exists" => Ok(Value::from(true)),
            "drop_relation" => {
                let rel = pos
                    .first()
                    .and_then(|v| v.downcast_object_ref::<RelationValue>())
                    .ok_or_else(|| fail("drop_relation() takes a relation"))?;
                if self.ctx.executing() {
                    s.host.drop_relation(&rel.relation, rel.kind.unwrap_or(RelationKind::Table)).map_err(fail)?;
                }
                Ok(Value::from(()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `api.Relation.create(database=, schema=, identifier=)`.
#[derive(Debug)]
struct ApiRelation;

impl Object for ApiRelation {
    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        if method != "create" {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        let kw: Kwargs = kwargs_of(args);
        let get = |k: &str| -> Result<String, Error> { Ok(kw.get::<Option<String>>(k)?.unwrap_or_default()) };
        let rel = Relation::new(get("database")?, get("schema")?, get("identifier")?);
        let kind = match kw.get::<Option<String>>("type")?.as_deref() {
            Some("view") => Some(RelationKind::View),
            Some("table") => Some(RelationKind::Table),
            _ => None,
        };
        Ok(RelationValue::new(rel, kind).into_value())
    }
}

/// `exceptions.raise_compiler_error(msg)` and friends.
#[derive(Debug)]
pub(crate) struct Exceptions;

impl Object for Exceptions {
    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        let msg = positional(args).first().map(|v| v.to_string()).unwrap_or_default();
        match method {
            "warn" => {
                eprintln!("warning: {msg}");
                Ok(Value::from(""))
            }
            "raise_compiler_error" | "raise_not_implemented" | "raise_database_error" | "raise_fail_fast_error" => {
                Err(fail(format!("Compilation Error: {msg}")))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
