//! A run's shared state: the manifest, the warehouse, and the relation cache, plus the
//! [`Host`] that execute-mode Jinja renders use to reach them.
//!
//! The relation cache ([`RelationCache`]) is filled by the build before the run starts and
//! kept up to date here as relations are built and dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value as J;
use weir_core::{Column, QueryResult, Relation, RelationKind};
use weir_graph::parse::flags_json;
use weir_graph::{Manifest, Node, ResourceType};
use weir_project::jinja::{Host, RelationValue, json_value};
use weir_warehouse::{Connection, RelationCache, Warehouse, WarehouseError};

/// Where log lines from Jinja `log()` calls go.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Session {
    pub manifest: Arc<Manifest>,
    pub warehouse: Arc<dyn Warehouse>,
    /// Relations known to exist: filled before the run, kept up to date as nodes build.
    pub relations: Arc<RelationCache>,
    /// `--defer`: unselected nodes missing from the target, read where an earlier run built them.
    deferred: Mutex<HashMap<String, Relation>>,
    graph: OnceLock<minijinja::Value>,
    /// Incremental models to rebuild whole this run, whatever `--full-refresh` says: those
    /// downstream of a restated range, which their incremental logic would not revisit.
    rebuild: Mutex<HashSet<String>>,
    /// Where processed intervals of microbatch models are recorded.
    pub store: Option<Arc<weir_store::Store>>,
    pub log: LogSink,
}

impl Session {
    pub fn new(manifest: Arc<Manifest>, warehouse: Arc<dyn Warehouse>, log: LogSink) -> Self {
        Session {
            manifest,
            warehouse,
            relations: Arc::new(RelationCache::default()),
            deferred: Mutex::new(HashMap::new()),
            graph: OnceLock::new(),
            rebuild: Mutex::new(HashSet::new()),
            store: None,
            log,
        }
    }

    /// Records microbatch intervals in `store`.
    pub fn with_store(mut self, store: Arc<weir_store::Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Makes an incremental model rebuild whole this run (see `rebuild`).
    pub fn rebuild_fully(&self, unique_id: &str) {
        if let Ok(mut r) = self.rebuild.lock() {
            r.insert(unique_id.to_string());
        }
    }

    pub fn cached(&self, r: &Relation) -> Option<RelationKind> {
        self.relations.get(r)
    }

    pub fn set_cached(&self, r: &Relation, kind: Option<RelationKind>) {
        self.relations.set(r, kind)
    }

    /// Makes `ref()` to `unique_id` render `rel` (dbt's `--defer`).
    pub fn defer(&self, unique_id: &str, rel: Relation) {
        if let Ok(mut d) = self.deferred.lock() {
            d.insert(unique_id.to_string(), rel);
        }
    }

    /// `ref()` of a node as a relation value: ephemeral models are their CTE.
    pub fn relation_value(&self, n: &Node) -> RelationValue {
        if n.is_ephemeral() {
            return RelationValue::cte(&n.name);
        }
        let deferred = self.deferred.lock().ok().and_then(|d| d.get(&n.unique_id).cloned());
        let rel = deferred.or_else(|| n.relation.clone()).unwrap_or_else(|| Relation::new("", "", n.name.clone()));
        let kind = self.cached(&rel).or(match n.materialized() {
            "view" => Some(RelationKind::View),
            _ => Some(RelationKind::Table),
        });
        RelationValue::new(rel, kind)
    }

    pub fn is_incremental(&self, n: &Node) -> bool {
        let Some(rel) = &n.relation else { return false };
        // A model's own `full_refresh: false` protects it from every rebuild, as in dbt.
        let full_refresh = n
            .config
            .get("full_refresh")
            .and_then(J::as_bool)
            .unwrap_or_else(|| self.manifest.flags.full_refresh || self.rebuild.lock().is_ok_and(|r| r.contains(&n.unique_id)));
        n.materialized() == "incremental" && !full_refresh && self.cached(rel) == Some(RelationKind::Table)
    }

    fn graph_value(&self) -> minijinja::Value {
        self.graph
            .get_or_init(|| {
                // Each node as manifest.json has it (config in full, meta, checksum,
                // relation_name, test_metadata, a source's loader and freshness, ...).
                let (mut nodes, mut sources, mut saved_queries, mut unit_tests) =
                    (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
                let render = |r: &Relation| self.warehouse.render(r);
                for n in self.manifest.nodes.values() {
                    let doc = weir_graph::artifacts::node_json(&self.manifest, n, &render);
                    let into = match n.resource_type {
                        ResourceType::Source => &mut sources,
                        ResourceType::SavedQuery => &mut saved_queries,
                        ResourceType::UnitTest => &mut unit_tests,
                        _ => &mut nodes,
                    };
                    into.insert(n.unique_id.clone(), doc);
                }
                json_value(serde_json::json!({
                    "nodes": nodes, "sources": sources, "macros": {}, "exposures": {}, "metrics": {}, "groups": {},
                    "semantic_models": {}, "saved_queries": saved_queries, "unit_tests": unit_tests,
                }))
            })
            .clone()
    }
}

/// A worker's connection slot, opened on first use.
pub type ConnSlot = Arc<Mutex<Option<Box<dyn Connection>>>>;

pub fn with_conn<T>(
    session: &Session,
    slot: &ConnSlot,
    f: impl FnOnce(&mut dyn Connection) -> Result<T, WarehouseError>,
) -> Result<T, WarehouseError> {
    let mut guard = slot.lock().map_err(|_| WarehouseError::Io("connection lock poisoned".into()))?;
    if guard.is_none() {
        *guard = Some(session.warehouse.connect()?);
    }
    match guard.as_mut() {
        Some(c) => f(c.as_mut()),
        None => Err(WarehouseError::Io("no connection".into())),
    }
}

/// The [`Host`] for execute-mode renders on one worker.
#[derive(Clone)]
pub struct ExecHost {
    pub session: Arc<Session>,
    pub conn: ConnSlot,
    /// The microbatch being rendered: refs to nodes with an `event_time` see only its rows.
    pub batch: Option<BatchWindow>,
    /// Under a unit test: the inputs read from fixtures, and the test's overrides.
    pub unit: Option<Arc<UnitInputs>>,
}

/// What a unit test changes about a model's render: refs and sources given as fixtures
/// render as the fixtures' CTEs, and `overrides:` set vars and `is_incremental()`.
#[derive(Debug, Default)]
pub struct UnitInputs {
    /// node unique id -> the name its CTE is called by (`__dbt__cte__NAME`)
    pub ctes: HashMap<String, String>,
    pub vars: serde_json::Map<String, J>,
    pub is_incremental: Option<bool>,
}

/// One microbatch: `[start, end)` of event time.
pub use weir_store::Interval as BatchWindow;

impl ExecHost {
    /// A host for `session` on the connection in `conn`.
    pub fn new(session: Arc<Session>, conn: ConnSlot) -> ExecHost {
        ExecHost { session, conn, batch: None, unit: None }
    }

    /// A node's relation as a ref renders it: inside a microbatch, a node with an `event_time`
    /// is filtered to the batch, as dbt filters refs of microbatch models; under a unit test,
    /// an input given as a fixture is its CTE.
    pub fn relation_for(&self, n: &Node) -> RelationValue {
        if let Some(name) = self.unit.as_ref().and_then(|u| u.ctes.get(&n.unique_id)) {
            return RelationValue::cte(name);
        }
        let mut rel = self.session.relation_value(n);
        if let (Some(b), Some(et)) = (self.batch, n.config_str("event_time")) {
            let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
            rel.event_time_filter = Some(format!("{et} >= '{}' and {et} < '{}'", fmt(b.start), fmt(b.end)));
        }
        rel
    }
}

impl std::fmt::Debug for ExecHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecHost")
    }
}

impl Host for ExecHost {
    fn adapter_type(&self) -> &str {
        self.session.warehouse.adapter_type()
    }

    fn resolve_ref(&self, from: &str, package: Option<&str>, name: &str) -> Result<RelationValue, String> {
        let m = &self.session.manifest;
        let from_pkg = m.node(from).map(|n| n.package.as_str()).unwrap_or(m.project.name());
        let n = m.find_ref(package, name, from_pkg).ok_or_else(|| format!("'{name}' was not found"))?;
        Ok(self.relation_for(n))
    }

    fn resolve_source(&self, _from: &str, source: &str, table: &str) -> Result<RelationValue, String> {
        let n = self.session.manifest.find_source(source, table).ok_or_else(|| format!("source('{source}', '{table}') was not found"))?;
        Ok(self.relation_for(n))
    }

    fn is_incremental(&self, node_id: &str) -> bool {
        if let Some(forced) = self.unit.as_ref().and_then(|u| u.is_incremental) {
            return forced;
        }
        self.session.manifest.node(node_id).is_some_and(|n| self.session.is_incremental(n))
    }

    fn var(&self, package: &str, name: &str) -> Option<J> {
        if let Some(v) = self.unit.as_ref().and_then(|u| u.vars.get(name)) {
            return Some(v.clone());
        }
        self.session.manifest.project.var(package, name)
    }

    fn target(&self) -> J {
        self.session.manifest.target.to_jinja()
    }

    fn flags(&self) -> J {
        flags_json(&self.session.manifest.flags)
    }

    fn graph(&self) -> minijinja::Value {
        self.session.graph_value()
    }

    fn invocation_id(&self) -> String {
        self.session.manifest.flags.invocation_id.clone()
    }

    fn run_started_at(&self) -> chrono::NaiveDateTime {
        self.session.manifest.run_started_at
    }

    fn run_sql(&self, sql: &str, fetch: bool) -> Result<QueryResult, String> {
        with_conn(&self.session, &self.conn, |c| if fetch { c.query(sql) } else { c.execute(sql).map(|_| QueryResult::default()) })
            .map_err(|e| e.to_string())
    }

    fn get_columns(&self, relation: &Relation) -> Result<Vec<Column>, String> {
        with_conn(&self.session, &self.conn, |c| c.columns(relation)).map_err(|e| e.to_string())
    }

    fn get_relation(&self, relation: &Relation) -> Result<Option<RelationKind>, String> {
        // A schema no run has listed yet (`weir show`, `weir sql`) is listed now, once.
        let relations = &self.session.relations;
        if !relations.listed(&relation.database, &relation.schema) {
            let schema = [(relation.database.clone(), relation.schema.clone())];
            with_conn(&self.session, &self.conn, |c| relations.load(c, &schema)).map_err(|e| e.to_string())?;
        }
        Ok(self.session.cached(relation))
    }

    fn drop_relation(&self, relation: &Relation, kind: RelationKind) -> Result<(), String> {
        let sql = self.session.warehouse.drop_relation_sql(relation, kind);
        with_conn(&self.session, &self.conn, |c| c.execute(&sql)).map_err(|e| e.to_string())?;
        self.session.set_cached(relation, None);
        Ok(())
    }

    fn log(&self, message: &str, _info: bool) {
        (self.session.log)(message);
    }
}
