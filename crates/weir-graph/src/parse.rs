//! Parsing: every file of the project becomes a [`Node`] with its config, dependencies and
//! relation, gathered in a [`Manifest`].
//!
//! SQL files are rendered once in parse mode, as dbt does, to capture `ref()`, `source()` and
//! `config()` calls. Nothing here touches the warehouse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as J};
use weir_core::{Location, Relation, RelationKind};
use weir_project::config::merge;
use weir_project::error::closest;
use weir_project::jinja::{Host, JinjaEnv, LazyModel, MacroFile, NodeContext, NodeScope, RelationValue, RenderMode, json_value};
use weir_project::schema::{ColumnDef, SchemaFile, TestDef};
use weir_project::{ConfigMap, ConfigTree, FileKind, Project, ProjectFile, Target, Warning};

use crate::error::GraphError;
use crate::node::{Node, RefCall, ResourceType, TestMeta};

/// Flags that change how the project is read and run.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub full_refresh: bool,
    pub store_failures: bool,
    pub which: String,
    pub invocation_id: String,
}

/// The parsed project: every enabled node, the Jinja environment, the target.
pub struct Manifest {
    pub project: Arc<Project>,
    pub target: Target,
    pub jinja: Arc<JinjaEnv>,
    pub nodes: BTreeMap<String, Node>,
    pub warnings: Vec<Warning>,
    pub flags: Flags,
    pub run_started_at: chrono::NaiveDateTime,
}

impl Manifest {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Unique ids of nodes that depend on `id`.
    pub fn children(&self) -> HashMap<&str, Vec<&str>> {
        let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in self.nodes.values() {
            for d in &n.depends_on {
                out.entry(d.as_str()).or_default().push(n.unique_id.as_str());
            }
        }
        out
    }

    /// The node `ref(name)` means when written in `package`: that package's own node first,
    /// then the root project's, then any package's.
    pub fn find_ref(&self, package: Option<&str>, name: &str, from_package: &str) -> Option<&Node> {
        // `name` is `model` or, for a version, `model.v2`; a versioned model's plain name is
        // its latest version.
        let candidates = |pkg: &str| {
            [ResourceType::Model, ResourceType::Seed, ResourceType::Snapshot, ResourceType::Stream]
                .into_iter()
                .find_map(|t| self.nodes.get(&format!("{}.{}.{}", t.as_str(), pkg, name)))
                .or_else(|| {
                    let latest = self.nodes.values().find(|n| n.package == pkg && n.name == name && n.latest_version.is_some())?;
                    self.nodes.get(&format!("model.{pkg}.{name}.v{}", latest.latest_version.as_deref().unwrap_or_default()))
                })
        };
        match package {
            Some(p) => candidates(p),
            None => candidates(from_package).or_else(|| candidates(self.project.name())).or_else(|| {
                self.nodes.values().find(|n| {
                    n.name == name
                        && matches!(
                            n.resource_type,
                            ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot | ResourceType::Stream
                        )
                })
            }),
        }
    }

    /// Where the tables a stream job joins are (`ref()`, `source()` in its SQL), in order.
    pub fn stream_tables(&self, job: &crate::stream_jobs::StreamJob) -> Result<Vec<Relation>, GraphError> {
        let project = self.project.name();
        job.tables
            .iter()
            .map(|t| {
                let (node, what) = match t {
                    crate::stream_jobs::TableRef::Ref { package, name } => {
                        (self.find_ref(package.as_deref(), name, project), format!("ref('{name}')"))
                    }
                    crate::stream_jobs::TableRef::Source { source, table } => {
                        (self.find_source(source, table), format!("source('{source}', '{table}')"))
                    }
                };
                node.and_then(|n| n.relation.clone()).ok_or_else(|| {
                    GraphError::at(Location::file(&job.path), format!("stream job '{}': {what} names no table", job.name), None)
                })
            })
            .collect()
    }

    pub fn find_source(&self, source: &str, table: &str) -> Option<&Node> {
        self.nodes.values().find(|n| n.source.as_ref().is_some_and(|(s, t)| s == source && t == table))
    }
}

/// Records refs, sources and configs while rendering in parse mode.
#[derive(Debug)]
struct ParseHost {
    project: Arc<Project>,
    target: Target,
    refs: Mutex<HashMap<String, Vec<RefCall>>>,
    sources: Mutex<HashMap<String, Vec<(String, String)>>>,
    started: chrono::NaiveDateTime,
    flags: Flags,
}

impl Host for ParseHost {
    fn adapter_type(&self) -> &str {
        &self.target.adapter_type
    }

    fn resolve_ref(&self, from: &str, package: Option<&str>, name: &str) -> Result<RelationValue, String> {
        if let Ok(mut r) = self.refs.lock() {
            r.entry(from.to_string()).or_default().push(RefCall { package: package.map(str::to_string), name: name.to_string() });
        }
        Ok(RelationValue::new(Relation::new(self.target.database(), self.target.schema(), name), Some(RelationKind::Table)))
    }

    fn resolve_source(&self, from: &str, source: &str, table: &str) -> Result<RelationValue, String> {
        if let Ok(mut s) = self.sources.lock() {
            s.entry(from.to_string()).or_default().push((source.to_string(), table.to_string()));
        }
        Ok(RelationValue::new(Relation::new(self.target.database(), source, table), Some(RelationKind::Table)))
    }

    fn is_incremental(&self, _: &str) -> bool {
        false
    }

    fn var(&self, package: &str, name: &str) -> Option<J> {
        self.project.var(package, name)
    }

    fn target(&self) -> J {
        self.target.to_jinja()
    }

    fn flags(&self) -> J {
        flags_json(&self.flags)
    }

    fn graph(&self) -> minijinja::Value {
        json_value(serde_json::json!({"nodes": {}, "sources": {}, "macros": {}, "exposures": {}, "metrics": {}}))
    }

    fn invocation_id(&self) -> String {
        self.flags.invocation_id.clone()
    }

    fn run_started_at(&self) -> chrono::NaiveDateTime {
        self.started
    }

    fn run_sql(&self, _: &str, _: bool) -> Result<weir_core::QueryResult, String> {
        Ok(Default::default())
    }

    fn get_columns(&self, _: &Relation) -> Result<Vec<weir_core::Column>, String> {
        Ok(vec![])
    }

    fn get_relation(&self, _: &Relation) -> Result<Option<RelationKind>, String> {
        Ok(None)
    }

    fn log(&self, _: &str, _: bool) {}
}

pub fn flags_json(flags: &Flags) -> J {
    serde_json::json!({
        "FULL_REFRESH": flags.full_refresh,
        "STORE_FAILURES": flags.store_failures,
        "WHICH": flags.which,
        "INVOCATION_COMMAND": format!("weir {}", flags.which),
    })
}

/// Renders the Jinja in YAML configs (`dbt_project.yml` trees, schema YAML `config:`, test
/// configs, column `data_type`) as dbt does at parse time: with `target`, `env_var` and the
/// project's vars (`--vars` over the root project's `vars:`).
struct YamlConfigs {
    vars: Map<String, J>,
    target: J,
}

impl YamlConfigs {
    fn new(project: &Project, target: &Target) -> YamlConfigs {
        let mut vars: Map<String, J> = project.root_package().settings.vars.clone();
        vars.extend(project.cli_vars.clone());
        YamlConfigs { vars, target: target.to_jinja() }
    }

    /// The config rendered; borrowed as it is when it holds no Jinja (most do).
    fn render<'c>(&self, config: &'c ConfigMap, file: &Path) -> Result<std::borrow::Cow<'c, ConfigMap>, GraphError> {
        weir_project::project::render_config(config, &self.vars, Some(&self.target))
            .map(|r| r.map_or(std::borrow::Cow::Borrowed(config), std::borrow::Cow::Owned))
            .map_err(|m| GraphError::at(Location::file(file), m, None))
    }

    fn columns(&self, columns: &[ColumnDef]) -> Result<Vec<ColumnDef>, GraphError> {
        let mut out = columns.to_vec();
        for c in &mut out {
            if let Some(t) = c.data_type.as_mut().filter(|t| t.contains("{{") || t.contains("{%")) {
                *t = weir_project::project::render_with_target(t, &self.vars, Some(&self.target))
                    .map_err(|m| GraphError::at(c.location.clone(), format!("column '{}' data_type: {m}", c.name), None))?;
            }
        }
        Ok(out)
    }
}

/// Reads every file of the project into a manifest.
pub fn parse(project: Project, target: Target, flags: Flags) -> Result<Manifest, GraphError> {
    let project = Arc::new(project);
    let mut warnings = project.warnings.clone();
    let read = |f: &ProjectFile| std::fs::read_to_string(&f.path).map_err(|e| GraphError::io(&f.path, e));

    // Macros first: every SQL file may call them.
    let mut macro_files = vec![];
    for f in project.files.iter().filter(|f| f.kind == FileKind::Macro) {
        macro_files.push(MacroFile { package: f.package.clone(), path: f.path.clone(), text: read(f)? });
    }
    let dispatch = project.root_package().settings.dispatch.clone();
    let jinja = Arc::new(JinjaEnv::new(project.name(), &target.adapter_type, &macro_files, dispatch)?);
    let run_started_at = chrono::Utc::now().naive_utc();
    let host = Arc::new(ParseHost {
        project: project.clone(),
        target: target.clone(),
        refs: Mutex::new(HashMap::new()),
        sources: Mutex::new(HashMap::new()),
        started: run_started_at,
        flags: flags.clone(),
    });

    let yaml = YamlConfigs::new(&project, &target);

    // Schema files: patches by (package, kind, name), sources, tests.
    let mut schemas = vec![];
    for f in project.files.iter().filter(|f| f.kind == FileKind::Schema) {
        schemas.push((f.clone(), SchemaFile::load(&f.path, &f.package, &mut warnings)?));
    }
    let mut patches: HashMap<(String, &'static str, String), (&weir_project::schema::Patch, String)> = HashMap::new();
    for (f, s) in &schemas {
        for (kind, list) in [("model", &s.models), ("seed", &s.seeds), ("snapshot", &s.snapshots), ("analysis", &s.analyses)] {
            for p in list {
                let key = (s.package.clone(), kind, p.name.clone());
                if let Some((_, first)) = patches.get(&key) {
                    return Err(GraphError::at(
                        p.location.clone(),
                        format!("{kind} '{}' is described twice (also in {first})", p.name),
                        std::fs::read_to_string(&f.path).ok().as_deref(),
                    ));
                }
                patches.insert(key, (p, f.original_path.clone()));
            }
        }
    }

    // Versioned models: which file is which version of which model.
    let mut versioned: HashMap<(String, String), (&weir_project::schema::Patch, &weir_project::schema::VersionDef, String)> =
        HashMap::new();
    for ((pkg, kind, _), (p, _)) in &patches {
        if *kind == "model" {
            let latest = p.latest().unwrap_or_default();
            for (stem, v) in p.version_files() {
                versioned.insert((pkg.clone(), stem), (*p, v, latest.clone()));
            }
        }
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut renders: Vec<(NodeScope, String, ConfigMap)> = vec![];
    let mut seen_names: HashMap<(String, String), String> = HashMap::new();
    for f in &project.files {
        let resource_type = match f.kind {
            FileKind::Model => ResourceType::Model,
            FileKind::Seed => ResourceType::Seed,
            FileKind::SingularTest => ResourceType::Test,
            FileKind::Analysis => ResourceType::Analysis,
            FileKind::Snapshot | FileKind::Schema => ResourceType::Snapshot,
            FileKind::Macro => continue,
        };
        let blocks: Vec<(String, String)> = match f.kind {
            // dbt 1.9+ snapshots defined in YAML: `relation:` is what they copy.
            FileKind::Schema => schemas
                .iter()
                .filter(|(sf, _)| sf.path == f.path)
                .flat_map(|(_, s)| s.snapshots.iter())
                .filter_map(|p| p.relation.as_ref().map(|r| (p.name.clone(), format!("select * from {{{{ {r} }}}}"))))
                .collect(),
            FileKind::Snapshot => snapshot_blocks(&read(f)?, &f.path)?,
            FileKind::Seed => vec![(f.stem(), String::new())],
            _ => vec![(f.stem(), read(f)?)],
        };
        for (name, body) in blocks {
            let kind_str = resource_type.as_str();
            let version = versioned.get(&(f.package.clone(), name.clone())).filter(|_| resource_type == ResourceType::Model);
            let file_name = name.clone();
            let name = version.map(|(p, _, _)| p.name.clone()).unwrap_or(name);
            if matches!(resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot)
                && let Some(other) = seen_names.insert((f.package.clone(), file_name.clone()), f.original_path.clone())
            {
                return Err(GraphError::at(
                    Location::file(&f.path),
                    format!("duplicate resource name '{name}': also defined in {other}; names must be unique within a package"),
                    None,
                ));
            }
            let mut fqn = vec![f.package.clone()];
            fqn.extend(f.folders());
            fqn.push(name.clone());
            if let Some((_, v, _)) = version {
                fqn.push(format!("v{}", v.v));
            }
            fn tree_of(pkg: &weir_project::Package, resource_type: ResourceType) -> &ConfigTree {
                let s = &pkg.settings;
                match resource_type {
                    ResourceType::Model | ResourceType::Analysis => &s.models,
                    ResourceType::Seed => &s.seeds,
                    ResourceType::Test
                    | ResourceType::UnitTest
                    | ResourceType::SavedQuery
                    | ResourceType::Check
                    | ResourceType::Load
                    | ResourceType::Stream => &s.tests,
                    ResourceType::Snapshot => &s.snapshots,
                    ResourceType::Source => &s.sources,
                }
            }
            let mut config = ConfigMap::new();
            if let Some(pkg) = project.package(&f.package).filter(|p| !p.is_root) {
                merge(&mut config, yaml.render(&tree_of(pkg, resource_type).resolve(&fqn), &pkg.settings.file)?.as_ref());
            }
            let root_settings = &project.root_package().settings;
            merge(&mut config, yaml.render(&tree_of(project.root_package(), resource_type).resolve(&fqn), &root_settings.file)?.as_ref());
            let patch = patches.get(&(f.package.clone(), kind_str, name.clone()));
            if let Some((p, _)) = patch {
                merge(&mut config, yaml.render(&p.config, &p.location.file)?.as_ref());
            }
            if let Some((p, v, _)) = version {
                merge(&mut config, yaml.render(&v.config, &p.location.file)?.as_ref());
            }
            let unique_id = match version {
                Some((_, v, _)) => format!("{kind_str}.{}.{name}.v{}", f.package, v.v),
                None => format!("{kind_str}.{}.{name}", f.package),
            };
            let node = Node {
                unique_id: unique_id.clone(),
                resource_type,
                package: f.package.clone(),
                name: name.clone(),
                fqn,
                path: f.path_in_folder.clone(),
                original_file_path: f.original_path.clone(),
                file: f.path.clone(),
                raw_code: if resource_type == ResourceType::Seed { String::new() } else { body.clone() },
                config,
                description: patch.map(|(p, _)| p.description.clone()).unwrap_or_default(),
                columns: match (patch, version) {
                    (Some((p, _)), Some((_, v, _))) => yaml.columns(&p.columns_of(v))?,
                    (Some((p, _)), None) => yaml.columns(&p.columns)?,
                    (None, _) => vec![],
                },
                refs: vec![],
                sources: vec![],
                depends_on: vec![],
                relation: None,
                test: None,
                patch_path: patch.map(|(_, path)| format!("{}://{}", f.package, path)),
                source: None,
                check: None,
                load: None,
                stream: None,
                unit: None,
                version: version.map(|(_, v, _)| v.v.clone()),
                latest_version: version.map(|(_, _, latest)| latest.clone()),
            };
            if resource_type != ResourceType::Seed {
                let scope = NodeScope {
                    unique_id: unique_id.clone(),
                    package: f.package.clone(),
                    file: f.path.clone(),
                    // As in dbt, `this` is a relation at parse time too (its final schema and
                    // alias come once every config is known).
                    this: Some(RelationValue::new(Relation::new(target.database(), target.schema(), name.clone()), None)),
                    model: {
                        let partial = node.clone();
                        LazyModel::new(move || partial.to_jinja())
                    },
                };
                renders.push((scope, body, node.config.clone()));
            }
            nodes.insert(unique_id, node);
        }
    }
    // Parse-time renders (finding `ref`, `source` and `config` calls) are independent: run
    // them on every core. The first error in file order is reported, as a sequential parse would.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = renders.len().div_ceil(threads).max(1);
    let configs: Vec<Result<(String, ConfigMap), GraphError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = renders
            .chunks(chunk)
            .map(|part| {
                let (host, jinja) = (&host, &jinja);
                scope.spawn(move || {
                    part.iter()
                        .map(|(node_scope, body, config)| {
                            let (id, file) = (node_scope.unique_id.clone(), node_scope.file.clone());
                            let ctx =
                                NodeContext::new(host.clone(), jinja.macros.clone(), node_scope.clone(), RenderMode::Parse, config.clone());
                            jinja.render(&file, body, &ctx)?;
                            Ok((id, ctx.config()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec![Err(GraphError::Graph("a parse thread panicked".into()))]))
            .collect()
    });
    for result in configs {
        let (id, config) = result?;
        if let Some(n) = nodes.get_mut(&id) {
            n.config = config;
        }
    }
    if let Ok(mut refs) = host.refs.lock() {
        for (id, r) in refs.drain() {
            if let Some(n) = nodes.get_mut(&id) {
                n.refs = dedup(r);
            }
        }
    }
    if let Ok(mut srcs) = host.sources.lock() {
        for (id, s) in srcs.drain() {
            if let Some(n) = nodes.get_mut(&id) {
                n.sources = dedup(s);
            }
        }
    }

    // Sources and generic tests from schema files.
    let target_jinja = target.to_jinja();
    let mut tests = vec![];
    for (f, s) in &schemas {
        let folders = {
            let mut p: Vec<String> = f.path_in_folder.split('/').map(str::to_string).collect();
            p.pop();
            p
        };
        for src in &s.sources {
            for t in &src.tables {
                let unique_id = format!("source.{}.{}.{}", s.package, src.name, t.name);
                let mut config = ConfigMap::new();
                let mut fqn = vec![s.package.clone()];
                fqn.extend(folders.clone());
                fqn.push(src.name.clone());
                fqn.push(t.name.clone());
                let root_file = &project.root_package().settings.file;
                merge(&mut config, yaml.render(&project.root_package().settings.sources.resolve(&fqn), root_file)?.as_ref());
                merge(&mut config, yaml.render(&src.config, &f.path)?.as_ref());
                merge(&mut config, yaml.render(&t.config, &f.path)?.as_ref());
                if let Some(l) = t.loaded_at_field.as_ref().or(src.loaded_at_field.as_ref()) {
                    config.insert("loaded_at_field".into(), J::from(l.clone()));
                }
                if let Some(fr) = t.freshness.as_ref().or(src.freshness.as_ref()) {
                    config.insert("freshness".into(), fr.clone());
                }
                // dbt renders these three with the target and vars (`{{ target.schema }}_raw`).
                let render = |value: Option<&String>, default: String| -> Result<String, GraphError> {
                    let Some(v) = value else { return Ok(default) };
                    weir_project::project::render_with_target(v, &project.cli_vars, Some(&target_jinja)).map_err(|m| {
                        let text = std::fs::read_to_string(&f.path).ok();
                        GraphError::at(t.location.clone(), format!("source '{}.{}': {m}", src.name, t.name), text.as_deref())
                    })
                };
                let relation = Relation::new(
                    render(src.database.as_ref(), target.database())?,
                    render(src.schema.as_ref(), src.name.clone())?,
                    render(t.identifier.as_ref(), t.name.clone())?,
                );
                nodes.insert(
                    unique_id.clone(),
                    Node {
                        unique_id: unique_id.clone(),
                        resource_type: ResourceType::Source,
                        package: s.package.clone(),
                        name: t.name.clone(),
                        fqn,
                        path: f.path_in_folder.clone(),
                        original_file_path: f.original_path.clone(),
                        file: f.path.clone(),
                        raw_code: String::new(),
                        config,
                        description: t.description.clone(),
                        columns: t.columns.clone(),
                        refs: vec![],
                        sources: vec![],
                        depends_on: vec![],
                        relation: Some(relation),
                        test: None,
                        patch_path: None,
                        source: Some((src.name.clone(), t.name.clone())),
                        check: None,
                        load: None,
                        stream: None,
                        unit: None,
                        version: None,
                        latest_version: None,
                    },
                );
                collect_tests(&mut tests, f, &folders, &unique_id, &format!("{}_{}", src.name, t.name), true, &t.tests, &t.columns);
            }
        }
        for (kind, list) in [("model", &s.models), ("seed", &s.seeds), ("snapshot", &s.snapshots)] {
            for p in list {
                // A versioned model's tests apply to each version, with that version's columns.
                if !p.versions.is_empty() {
                    for v in &p.versions {
                        let id = format!("{kind}.{}.{}.v{}", s.package, p.name, v.v);
                        if nodes.contains_key(&id) {
                            let name = format!("{}_v{}", p.name, v.v);
                            collect_tests(&mut tests, f, &folders, &id, &name, false, &p.tests, &p.columns_of(v));
                        }
                    }
                    continue;
                }
                let attached = format!("{kind}.{}.{}", s.package, p.name);
                if !nodes.contains_key(&attached) {
                    warnings.push(Warning {
                        location: p.location.clone(),
                        message: format!(
                            "{kind} '{}' is described here but no {kind} file defines it{}",
                            p.name,
                            closest(&p.name, nodes.values().filter(|n| n.resource_type.as_str() == kind).map(|n| n.name.as_str()))
                                .map(|c| format!(" (did you mean '{c}'?)"))
                                .unwrap_or_default()
                        ),
                    });
                    continue;
                }
                collect_tests(&mut tests, f, &folders, &attached, &p.name, false, &p.tests, &p.columns);
            }
        }
    }
    for t in tests {
        let node = build_test_node(&project, &jinja, &host, &yaml, t)?;
        nodes.insert(node.unique_id.clone(), node);
    }
    if let Ok(mut refs) = host.refs.lock() {
        for (id, r) in refs.drain() {
            if let Some(n) = nodes.get_mut(&id) {
                n.refs.extend(r);
                n.refs = dedup(std::mem::take(&mut n.refs));
            }
        }
    }
    if let Ok(mut srcs) = host.sources.lock() {
        for (id, s) in srcs.drain() {
            if let Some(n) = nodes.get_mut(&id) {
                n.sources.extend(s);
                n.sources = dedup(std::mem::take(&mut n.sources));
            }
        }
    }

    // Disabled nodes leave the graph, and so do tests attached to them.
    let disabled: HashSet<String> = nodes.values().filter(|n| !n.enabled()).map(|n| n.unique_id.clone()).collect();
    // Config paths that reach only disabled nodes still reach something (dbt does not warn).
    let disabled_fqns: Vec<(ResourceType, Vec<String>)> =
        nodes.values().filter(|n| disabled.contains(&n.unique_id)).map(|n| (n.resource_type, n.fqn.clone())).collect();
    nodes.retain(|id, n| {
        !disabled.contains(id) && n.test.as_ref().and_then(|t| t.attached_node.as_ref()).is_none_or(|a| !disabled.contains(a))
    });

    let unit_tests: Vec<(ProjectFile, weir_project::schema::UnitTestDef)> =
        schemas.iter().flat_map(|(f, s)| s.unit_tests.iter().map(move |u| (f.clone(), u.clone()))).collect();
    let semantic: Vec<(ProjectFile, SchemaFile)> = schemas
        .iter()
        .filter(|(_, s)| !s.saved_queries.is_empty() || !s.metrics.is_empty() || !s.semantic_models.is_empty())
        .cloned()
        .collect();
    let mut manifest = Manifest { project: project.clone(), target, jinja, nodes, warnings, flags, run_started_at };
    add_streams(&mut manifest)?;
    resolve_dependencies(&mut manifest, &disabled)?;
    resolve_relations(&mut manifest, host)?;
    add_unit_tests(&mut manifest, unit_tests, &yaml)?;
    add_saved_queries(&mut manifest, &semantic, &yaml)?;
    add_loads(&mut manifest)?;
    add_changelog_readers(&mut manifest)?;
    add_checks(&mut manifest)?;
    warn_unused_config_paths(&mut manifest, &disabled_fqns);
    Ok(manifest)
}

/// `unit_tests:` entries: one node per test, `unit_test.PACKAGE.MODEL.NAME`, depending on the
/// model it tests. A test of a disabled model, or a disabled test, leaves the graph.
fn add_unit_tests(
    m: &mut Manifest,
    defs: Vec<(ProjectFile, weir_project::schema::UnitTestDef)>,
    yaml: &YamlConfigs,
) -> Result<(), GraphError> {
    for (f, def) in defs {
        let Some(model) = m.find_ref(None, &def.model, &f.package).filter(|n| n.resource_type == ResourceType::Model) else {
            if m.project.package(&f.package).is_some_and(|p| p.is_root)
                && !m.nodes.contains_key(&format!("model.{}.{}", f.package, def.model))
            {
                let names = m.nodes.values().filter(|n| n.resource_type == ResourceType::Model).map(|n| n.name.as_str());
                let hint = closest(&def.model, names).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
                m.warnings.push(Warning {
                    location: def.location.clone(),
                    message: format!("unit test '{}' tests model '{}', which is not defined or is disabled{hint}", def.name, def.model),
                });
            }
            continue;
        };
        let model_id = model.unique_id.clone();
        let mut config = ConfigMap::new();
        merge(&mut config, yaml.render(&def.config, &f.path)?.as_ref());
        if !config.get("enabled").and_then(J::as_bool).unwrap_or(true) {
            continue;
        }
        let mut fqn = vec![f.package.clone()];
        fqn.extend(f.folders());
        fqn.push(def.model.clone());
        fqn.push(def.name.clone());
        let mut node = own_node(ResourceType::UnitTest, &f.package, &def.name, &f.original_path, &f.path);
        node.unique_id = format!("unit_test.{}.{}.{}", f.package, def.model, def.name);
        node.fqn = fqn;
        node.path = f.path_in_folder.clone();
        node.config = config;
        node.description = def.description.clone();
        node.depends_on = vec![model_id];
        node.unit = Some(Arc::new(def));
        m.nodes.insert(node.unique_id.clone(), node);
    }
    Ok(())
}

/// `saved_queries:` entries: one node each, `saved_query.PACKAGE.NAME`, depending on the models
/// its metrics read (metric -> measures and metrics -> semantic model -> `model: ref(...)`), so
/// it waits for them and is skipped when one fails, as in `dbt build`.
fn add_saved_queries(m: &mut Manifest, files: &[(ProjectFile, SchemaFile)], yaml: &YamlConfigs) -> Result<(), GraphError> {
    let mut model_of_measure: HashMap<&str, String> = HashMap::new();
    let mut metrics: HashMap<&str, &weir_project::schema::MetricDef> = HashMap::new();
    for (f, s) in files {
        for sm in &s.semantic_models {
            let model =
                ref_name(&sm.model).and_then(|(pkg, name)| m.find_ref(pkg.as_deref(), &name, &f.package)).map(|n| n.unique_id.clone());
            if let Some(model) = model {
                for measure in &sm.measures {
                    model_of_measure.insert(measure, model.clone());
                }
            }
        }
        for metric in &s.metrics {
            metrics.insert(&metric.name, metric);
        }
    }
    let mut added = vec![];
    for (f, s) in files {
        for q in &s.saved_queries {
            let mut config = ConfigMap::new();
            merge(&mut config, yaml.render(&q.config, &f.path)?.as_ref());
            if !config.get("enabled").and_then(J::as_bool).unwrap_or(true) {
                continue;
            }
            let (mut deps, mut seen, mut todo): (Vec<String>, HashSet<&str>, Vec<&str>) =
                (vec![], HashSet::new(), q.metrics.iter().map(String::as_str).collect());
            while let Some(name) = todo.pop() {
                let Some(metric) = metrics.get(name).filter(|_| seen.insert(name)) else { continue };
                deps.extend(metric.measures.iter().filter_map(|ms| model_of_measure.get(ms.as_str()).cloned()));
                todo.extend(metric.metrics.iter().map(String::as_str));
            }
            let mut node = own_node(ResourceType::SavedQuery, &f.package, &q.name, &f.original_path, &f.path);
            node.path = f.path_in_folder.clone();
            node.config = config;
            node.description = q.description.clone();
            node.depends_on = dedup(deps);
            added.push(node);
        }
    }
    for node in added {
        m.nodes.insert(node.unique_id.clone(), node);
    }
    Ok(())
}

/// `ref('m')` or `ref('pkg', 'm')` as written in YAML: (package, name).
fn ref_name(text: &str) -> Option<(Option<String>, String)> {
    match call_args(text, "ref")?.as_slice() {
        [name] => Some((None, name.clone())),
        [package, name] => Some((Some(package.clone()), name.clone())),
        _ => None,
    }
}

/// The quoted positional arguments of `func(...)` written as text in YAML (`ref('pkg', 'm')`,
/// `source('raw', 'orders')`); keyword arguments are left out.
pub fn call_args(text: &str, func: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix(func)?.trim_start().strip_prefix('(')?.trim_end().strip_suffix(')')?;
    Some(inner.split(',').map(|a| a.trim().trim_matches(['\'', '"']).to_string()).filter(|a| !a.is_empty() && !a.contains('=')).collect())
}

/// The root project's `loads/*.yml`: one load node per load, writing its raw table. A
/// source whose table a load writes depends on that load, so `weir build +stg_orders` loads
/// `raw.orders` first; checks may name a load's table as `load_name`.
fn add_loads(m: &mut Manifest) -> Result<(), GraphError> {
    let dir = m.project.root.join("loads");
    let mut files = vec![];
    collect_yaml(&dir, &mut files)?;
    files.sort();
    let package = m.project.name().to_string();
    let database = m.target.database();
    let mut added: BTreeMap<String, Node> = BTreeMap::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| GraphError::io(&path, e))?;
        let rel = path.strip_prefix(&m.project.root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        for load in crate::loads::parse_file(&path, &text)? {
            let unique_id = format!("load.{package}.{}", load.name);
            if let Some(other) = added.get(&unique_id) {
                return Err(GraphError::at(
                    load.location.clone(),
                    format!("a load named '{}' is already defined in {}", load.name, other.original_file_path),
                    Some(&text),
                ));
            }
            let writes = load.writes(&database);
            for relation in &writes {
                let writer =
                    added.values().find(|n| n.load.as_ref().is_some_and(|l| l.writes(&database).iter().any(|r| r.key() == relation.key())));
                if let Some(w) = writer {
                    return Err(GraphError::at(
                        load.location.clone(),
                        format!(
                            "load '{}' writes {}.{}, which load '{}' writes already",
                            load.name, relation.schema, relation.identifier, w.name
                        ),
                        Some(&text),
                    ));
                }
            }
            let mut config = ConfigMap::new();
            config.insert("tags".into(), J::Array(load.tags.iter().map(|t| J::String(t.clone())).collect()));
            let mut load = load;
            load.location = load.location.relative_to(&m.project.root);
            let mut node = own_node(ResourceType::Load, &package, &load.name, &rel, &path);
            node.config = config;
            node.description = load.description.clone().unwrap_or_default();
            // A cdc source writes several mirror tables: it has no one relation.
            node.relation = if load.cdc().is_some() { None } else { writes.into_iter().next() };
            node.load = Some(Arc::new(load));
            added.insert(unique_id, node);
        }
    }
    // Sources read what loads write: (schema, table) match, whatever the database is called.
    for load in added.values() {
        let Some(l) = &load.load else { continue };
        for written in l.writes(&database) {
            for n in m.nodes.values_mut().filter(|n| n.resource_type == ResourceType::Source) {
                if n.relation.as_ref().is_some_and(|r| {
                    r.schema.eq_ignore_ascii_case(&written.schema) && r.identifier.eq_ignore_ascii_case(&written.identifier)
                }) {
                    n.depends_on.push(load.unique_id.clone());
                }
            }
        }
        // Stream jobs read what loads publish (`to: topic`): `weir build` loads first.
        if let Some(topic) = &l.topic {
            for n in m.nodes.values_mut().filter(|n| n.stream.as_ref().is_some_and(|j| j.streams.contains(topic))) {
                n.depends_on.push(load.unique_id.clone());
            }
        }
    }
    m.nodes.extend(added);
    Ok(())
}

/// The root project's `streams/*.sql`: one stream node per job, its relation the job's sink
/// table, so models `ref()` it by the job's name and checks check it. A name a model, seed
/// or snapshot has already is refused: `ref()` could not tell them apart.
fn add_streams(m: &mut Manifest) -> Result<(), GraphError> {
    let package = m.project.name().to_string();
    for job in crate::stream_jobs::read_jobs(&m.project.root)? {
        if let Some(other) = m.find_ref(Some(&package), &job.name, &package) {
            return Err(GraphError::at(
                Location::file(&job.path),
                format!(
                    "stream job '{}' has the name of {} {}; `ref()` could not tell them apart",
                    job.name,
                    other.resource_type.as_str(),
                    other.original_file_path
                ),
                None,
            ));
        }
        let rel = job.path.to_string_lossy().replace('\\', "/");
        let mut node = own_node(ResourceType::Stream, &package, &job.name, &rel, &m.project.root.join(&job.path));
        if job.config.sink == crate::stream_jobs::Sink::Table {
            node.relation = Some(job.relation(&m.target.database(), &m.target.schema()));
        }
        node.raw_code = job.text.clone();
        node.description = job.config.description.clone().unwrap_or_default();
        node.config.insert("tags".into(), J::Array(job.config.tags.iter().map(|t| J::String(t.clone())).collect()));
        node.config.insert("materialized".into(), J::String("stream".into()));
        // The tables it joins are upstream of it, resolved (and their mistakes named) as a
        // model's refs and sources are.
        for t in &job.tables {
            match t {
                crate::stream_jobs::TableRef::Ref { package, name } => {
                    node.refs.push(RefCall { package: package.clone(), name: name.clone() })
                }
                crate::stream_jobs::TableRef::Source { source, table } => node.sources.push((source.clone(), table.clone())),
            }
        }
        node.stream = Some(Arc::new(job));
        m.nodes.insert(node.unique_id.clone(), node);
    }
    // Sources read what stream jobs write, as they read what loads write: a dbt project reads
    // the job's table as a source and `weir build` catches the job up first.
    let written: Vec<(Relation, String)> =
        m.nodes.values().filter(|n| n.stream.is_some()).filter_map(|n| Some((n.relation.clone()?, n.unique_id.clone()))).collect();
    for n in m.nodes.values_mut().filter(|n| n.resource_type == ResourceType::Source) {
        for (rel, job) in &written {
            if n.relation
                .as_ref()
                .is_some_and(|r| r.schema.eq_ignore_ascii_case(&rel.schema) && r.identifier.eq_ignore_ascii_case(&rel.identifier))
            {
                n.depends_on.push(job.clone());
            }
        }
    }
    // A job reading a topic another job writes runs after it (`weir build` catches the writer
    // up first).
    let writers: Vec<(String, String)> = m
        .nodes
        .values()
        .filter_map(|n| match n.stream.as_ref().map(|j| &j.config.sink) {
            Some(crate::stream_jobs::Sink::Topic { topic }) => Some((topic.clone(), n.unique_id.clone())),
            _ => None,
        })
        .collect();
    for n in m.nodes.values_mut() {
        let reads = n.stream.as_ref().map(|j| j.streams.clone()).unwrap_or_default();
        n.depends_on.extend(writers.iter().filter(|(t, w)| reads.contains(t) && *w != n.unique_id).map(|(_, w)| w.clone()));
    }
    Ok(())
}

/// A stream job reading a cdc source's change events (`cdc('shop', 'public.orders')`) runs
/// after the load that publishes them; a load that is not there, or publishes none, is named
/// with its place in the job.
fn add_changelog_readers(m: &mut Manifest) -> Result<(), GraphError> {
    let mut publishers: Vec<(String, String)> = vec![];
    for n in m.nodes.values().filter(|n| n.stream.is_some()) {
        let Some(job) = n.stream.as_deref() else { continue };
        for (load, topic) in &job.changelogs {
            let at = |message: String| {
                let (line, col) = job
                    .text
                    .find(&format!("'{load}'"))
                    .map(|i| {
                        let before = &job.text[..i];
                        (before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
                    })
                    .unwrap_or((1, 1));
                GraphError::at(Location::new(&job.path, line, col), message, Some(&job.text))
            };
            let found = m.nodes.values().find(|l| l.load.as_deref().is_some_and(|l| l.name == *load));
            let Some(l) = found.and_then(|f| f.load.as_deref()) else {
                return Err(at(format!("cdc('{load}', ...): no load named '{load}' in loads/*.yml")));
            };
            let Some(cdc) = l.cdc() else {
                return Err(at(format!("cdc('{load}', ...): load '{load}' is not a cdc source (`mode: cdc`)")));
            };
            if !cdc.events {
                return Err(at(format!(
                    "cdc('{load}', ...): load '{load}' publishes no change events: add `events: true` to it in loads/*.yml"
                )));
            }
            if !cdc.topics(&l.name).contains(topic) {
                let tables = cdc.source_tables().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", ");
                return Err(at(format!("cdc('{load}', ...): '{load}' captures {tables}, so no topic '{topic}'")));
            }
            if let Some(f) = found {
                publishers.push((n.unique_id.clone(), f.unique_id.clone()));
            }
        }
    }
    for (job, load) in publishers {
        if let Some(n) = m.nodes.get_mut(&job) {
            n.depends_on.push(load);
        }
    }
    Ok(())
}

/// The root project's `checks/*.yml`: one check node per checked dataset (suites for the
/// same dataset in several files are merged, so they are measured in one scan), depending on
/// the dataset and on every dataset its reference checks name.
fn add_checks(m: &mut Manifest) -> Result<(), GraphError> {
    let dir = m.project.root.join("checks");
    let mut files = vec![];
    collect_yaml(&dir, &mut files)?;
    files.sort();
    let package = m.project.name().to_string();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| GraphError::io(&path, e))?;
        let rel = path.strip_prefix(&m.project.root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        for suite in crate::checks::parse_file(&path, &text)? {
            let dataset = resolve_dataset(m, &suite.dataset).ok_or_else(|| {
                let names = m.nodes.values().filter(|n| n.is_relational()).map(|n| n.name.as_str());
                let hint = closest(&suite.dataset, names).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
                GraphError::at(
                    suite.location.clone(),
                    format!("checks for '{}': no model, seed, snapshot or source (source_name.table) has that name{hint}", suite.dataset),
                    Some(&text),
                )
            })?;
            let mut depends_on = vec![dataset];
            for c in &suite.checks {
                if let crate::checks::Metric::Reference { other, .. } = &c.metric {
                    let id = resolve_dataset(m, other).ok_or_else(|| {
                        GraphError::at(
                            c.location.clone(),
                            format!("'{}': no model, seed, snapshot or source (source_name.table) is called '{other}'", c.text),
                            Some(&text),
                        )
                    })?;
                    depends_on.push(id);
                }
            }
            // Reports and history show places relative to the project, as users wrote them.
            let mut suite = suite;
            let root = &m.project.root;
            suite.location = suite.location.relative_to(root);
            for c in &mut suite.checks {
                c.location = c.location.relative_to(root);
            }
            let unique_id = format!("check.{package}.{}", suite.dataset);
            match nodes.get_mut(&unique_id) {
                Some(existing) => {
                    let mut merged = existing.check.as_deref().cloned().unwrap_or_else(|| suite.clone());
                    merged.checks.extend(suite.checks);
                    existing.check = Some(Arc::new(merged));
                    existing.depends_on.extend(depends_on);
                    existing.depends_on = dedup(std::mem::take(&mut existing.depends_on));
                }
                None => {
                    let mut node = own_node(ResourceType::Check, &package, &suite.dataset, &rel, &path);
                    node.depends_on = dedup(depends_on);
                    node.check = Some(Arc::new(suite));
                    nodes.insert(unique_id, node);
                }
            }
        }
    }
    m.nodes.extend(nodes);
    Ok(())
}

/// A node of Weir's own files (`checks/`, `loads/`) or a unit test: named
/// `<type>.<package>.<name>`, with nothing of dbt's (SQL, refs, config) filled in.
fn own_node(kind: ResourceType, package: &str, name: &str, rel: &str, file: &Path) -> Node {
    let folder = format!("{}s", kind.as_str());
    Node {
        unique_id: format!("{}.{package}.{name}", kind.as_str()),
        resource_type: kind,
        package: package.to_string(),
        name: name.to_string(),
        fqn: vec![package.to_string(), folder.clone(), name.to_string()],
        path: rel.trim_start_matches(&format!("{folder}/")).to_string(),
        original_file_path: rel.to_string(),
        file: file.to_path_buf(),
        raw_code: String::new(),
        config: ConfigMap::new(),
        description: String::new(),
        columns: vec![],
        refs: vec![],
        sources: vec![],
        depends_on: vec![],
        relation: None,
        test: None,
        patch_path: None,
        source: None,
        check: None,
        load: None,
        stream: None,
        unit: None,
        version: None,
        latest_version: None,
    }
}

/// A dataset named in a checks file: `name` (model, seed, snapshot) or `source.table`.
fn resolve_dataset(m: &Manifest, name: &str) -> Option<String> {
    let project = m.project.name();
    if let Some(n) = m.find_ref(None, name, project).filter(|n| !n.is_ephemeral()) {
        return Some(n.unique_id.clone());
    }
    let (source, table) = name.split_once('.')?;
    m.find_source(source, table).map(|n| n.unique_id.clone())
}

fn collect_yaml(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), GraphError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(GraphError::io(dir, e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = vec![];
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Splits `{% snapshot name %} ... {% endsnapshot %}` blocks out of a snapshot file.
fn snapshot_blocks(text: &str, path: &Path) -> Result<Vec<(String, String)>, GraphError> {
    let start = regex::Regex::new(r"\{%-?\s*snapshot\s+([A-Za-z_][A-Za-z0-9_]*)\s*-?%\}").map_err(|e| GraphError::Graph(e.to_string()))?;
    let end = regex::Regex::new(r"\{%-?\s*endsnapshot\s*-?%\}").map_err(|e| GraphError::Graph(e.to_string()))?;
    let mut out = vec![];
    let mut pos = 0;
    while let Some(c) = start.captures(&text[pos..]) {
        let m = c.get(0).map(|m| (m.start() + pos, m.end() + pos)).unwrap_or((pos, pos));
        let name = c.get(1).map(|g| g.as_str().to_string()).unwrap_or_default();
        let Some(e) = end.find(&text[m.1..]) else {
            let line = text[..m.0].matches('\n').count() + 1;
            return Err(GraphError::at(
                Location::new(path, line, 1),
                format!("snapshot '{name}' is never closed with {{% endsnapshot %}}"),
                Some(text),
            ));
        };
        let body_start = m.1;
        let body_end = m.1 + e.start();
        // Keep line numbers: pad the body with the newlines before it.
        let pad = "\n".repeat(text[..body_start].matches('\n').count());
        out.push((name, format!("{pad}{}", &text[body_start..body_end])));
        pos = m.1 + e.end();
    }
    Ok(out)
}

struct PendingTest {
    def: TestDef,
    column: Option<String>,
    attached: String,
    target_name: String,
    is_source: bool,
    file: ProjectFile,
    folders: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn collect_tests(
    out: &mut Vec<PendingTest>,
    file: &ProjectFile,
    folders: &[String],
    attached: &str,
    target_name: &str,
    is_source: bool,
    model_tests: &[TestDef],
    columns: &[ColumnDef],
) {
    let mk = |def: &TestDef, column: Option<&str>| PendingTest {
        def: def.clone(),
        column: column.map(str::to_string),
        attached: attached.to_string(),
        target_name: target_name.to_string(),
        is_source,
        file: file.clone(),
        folders: folders.to_vec(),
    };
    out.extend(model_tests.iter().map(|d| mk(d, None)));
    for c in columns {
        out.extend(c.tests.iter().map(|d| mk(d, Some(&c.name))));
    }
}

/// Python's `str()` of a YAML value, which dbt uses to name generic tests.
fn py_str(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        J::Null => "None".into(),
        J::Number(n) => n.to_string(),
        J::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        J::Object(m) => format!("{{{}}}", m.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect::<Vec<_>>().join(", ")),
    }
}

fn py_repr(v: &J) -> String {
    match v {
        J::String(s) => format!("'{s}'"),
        other => py_str(other),
    }
}

/// dbt's generic test name: `not_null_orders_id`.
pub fn generic_test_name(test_identifier: &str, target_name: &str, args: &Map<String, J>) -> String {
    let mut keys: Vec<&String> = args.keys().filter(|k| k.as_str() != "model").collect();
    keys.sort();
    let mut flat = vec![];
    for k in keys {
        match &args[k] {
            J::Object(m) => flat.extend(m.values().map(py_str)),
            J::Array(items) => flat.extend(items.iter().map(py_str)),
            other => flat.push(py_str(other)),
        }
    }
    static NON_WORD: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new("[^0-9a-zA-Z_]+").expect("static regex"));
    let re = &*NON_WORD;
    let clean: Vec<String> = flat.iter().map(|a| re.replace_all(a, "_").into_owned()).collect();
    let unique = clean.join("__");
    format!("{test_identifier}_{target_name}_{unique}")
}

/// The relation name dbt gives a test's stored failures: the name, hashed when 64 characters
/// or more.
pub fn test_alias(name: &str) -> String {
    if name.len() >= 64 {
        use md5::{Digest, Md5};
        let prefix: String = name.chars().take(30).collect();
        format!("{prefix}_{:x}", Md5::digest(name.as_bytes()))
    } else {
        name.to_string()
    }
}

fn build_test_node(
    project: &Arc<Project>,
    jinja: &Arc<JinjaEnv>,
    host: &Arc<ParseHost>,
    yaml: &YamlConfigs,
    t: PendingTest,
) -> Result<Node, GraphError> {
    let def = &t.def;
    let mut kwargs = def.args.clone();
    if let Some(c) = &t.column {
        kwargs.insert("column_name".into(), J::from(c.clone()));
    }
    let identifier = match &def.namespace {
        Some(ns) => format!("{ns}_{}", def.test_name),
        None => def.test_name.clone(),
    };
    let identifier = if t.is_source { format!("source_{identifier}") } else { identifier };
    let name = def.custom_name.clone().unwrap_or_else(|| generic_test_name(&identifier, &t.target_name, &kwargs));
    let package = t.file.package.clone();
    let mut fqn = vec![package.clone()];
    fqn.extend(t.folders.clone());
    fqn.push(name.clone());
    let mut config = ConfigMap::new();
    if let Some(pkg) = project.package(&package).filter(|p| !p.is_root) {
        merge(&mut config, yaml.render(&pkg.settings.tests.resolve(&fqn), &pkg.settings.file)?.as_ref());
    }
    let root_file = &project.root_package().settings.file;
    merge(&mut config, yaml.render(&project.root_package().settings.tests.resolve(&fqn), root_file)?.as_ref());
    merge(&mut config, yaml.render(&def.config, &t.file.path)?.as_ref());
    if let Some(sev) = config.get("severity").and_then(J::as_str)
        && !sev.eq_ignore_ascii_case("warn")
        && !sev.eq_ignore_ascii_case("error")
    {
        return Err(GraphError::at(def.location.clone(), format!("severity must be 'warn' or 'error', not '{sev}'"), None));
    }
    let hash = {
        use md5::{Digest, Md5};
        let h = format!("{:x}", Md5::digest(format!("{name}{}", t.file.original_path).as_bytes()));
        h[..10].to_string()
    };
    let unique_id = format!("test.{package}.{name}.{hash}");
    // `to: ref('customers')` and friends are Jinja expressions: render them in parse mode
    // so the refs they make become dependencies.
    let scope = NodeScope {
        unique_id: unique_id.clone(),
        package: package.clone(),
        file: t.file.path.clone(),
        this: None,
        model: LazyModel::new(|| J::Null),
    };
    let ctx = NodeContext::new(host.clone(), jinja.macros.clone(), scope, RenderMode::Parse, config.clone());
    for v in kwargs.values() {
        if let J::String(s) = v
            && is_jinja_expression(s)
        {
            jinja.render(&t.file.path, &format!("{{{{ {s} }}}}"), &ctx).map_err(|e| relocate(e, &def.location))?;
        }
    }
    let raw_code = format!("{{{{ test_{}(**_dbt_generic_test_kwargs) }}}}", def.test_name);
    Ok(Node {
        unique_id,
        resource_type: ResourceType::Test,
        package,
        name: name.clone(),
        fqn,
        path: format!("{name}.sql"),
        original_file_path: t.file.original_path.clone(),
        file: t.file.path.clone(),
        raw_code,
        config,
        description: String::new(),
        columns: vec![],
        refs: vec![],
        sources: vec![],
        depends_on: vec![t.attached.clone()],
        relation: None,
        test: Some(TestMeta {
            name: def.test_name.clone(),
            namespace: def.namespace.clone(),
            kwargs,
            column_name: t.column.clone(),
            attached_node: Some(t.attached),
        }),
        patch_path: None,
        source: None,
        check: None,
        load: None,
        stream: None,
        unit: None,
        version: None,
        latest_version: None,
    })
}

fn relocate(e: weir_project::ProjectError, at: &Location) -> GraphError {
    GraphError::at(at.clone(), e.to_string(), std::fs::read_to_string(&at.file).ok().as_deref())
}

/// Test arguments that dbt evaluates as Jinja: `ref('x')`, `source('a', 'b')`, or any
/// string holding `{{ }}`.
pub fn is_jinja_expression(s: &str) -> bool {
    let t = s.trim();
    (t.starts_with("ref(") || t.starts_with("source(")) && t.ends_with(')')
}

/// Where in a file a name is referenced, so "not found" errors point at the call.
fn find_call(text: &str, func: &str, name: &str) -> Option<(usize, usize)> {
    let re = regex::Regex::new(&format!(r#"{func}\s*\(([^)]*['"]{}['"][^)]*)\)"#, regex::escape(name))).ok()?;
    let m = re.find(text)?;
    let before = &text[..m.start()];
    let line = before.matches('\n').count() + 1;
    let col = m.start() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Some((line, col))
}

fn resolve_dependencies(m: &mut Manifest, disabled: &HashSet<String>) -> Result<(), GraphError> {
    let mut updates = vec![];
    for n in m.nodes.values() {
        let mut deps = n.depends_on.clone();
        for r in &n.refs {
            match m.find_ref(r.package.as_deref(), &r.name, &n.package) {
                Some(target) if target.resource_type == ResourceType::Stream && target.relation.is_none() => {
                    let text = std::fs::read_to_string(&n.file).unwrap_or_default();
                    let (line, col) = find_call(&text, "ref", &r.name).unwrap_or((0, 0));
                    return Err(GraphError::at(
                        Location::new(&n.file, line, col),
                        format!(
                            "{} '{}' refers to stream job '{}', which writes {}, not a table",
                            n.resource_type.as_str(),
                            n.name,
                            r.name,
                            match target.stream.as_ref().map(|j| &j.config.sink) {
                                Some(crate::stream_jobs::Sink::Topic { topic }) => format!("topic '{topic}'"),
                                _ => "to Redis".to_string(),
                            }
                        ),
                        Some(&text),
                    ));
                }
                Some(target) => deps.push(target.unique_id.clone()),
                None => {
                    let text = std::fs::read_to_string(&n.file).unwrap_or_default();
                    let (line, col) = find_call(&text, "ref", &r.name).unwrap_or((0, 0));
                    let was_disabled = disabled.iter().any(|d| d.ends_with(&format!(".{}", r.name)));
                    let names = m.nodes.values().filter(|x| x.resource_type != ResourceType::Test).map(|x| x.name.as_str());
                    let hint = if was_disabled {
                        " (it is disabled)".to_string()
                    } else {
                        closest(&r.name, names).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default()
                    };
                    return Err(GraphError::at(
                        Location::new(&n.file, line, col),
                        format!("{} '{}' refers to '{}', which was not found{hint}", n.resource_type.as_str(), n.name, r.name),
                        Some(&text),
                    ));
                }
            }
        }
        for (s, t) in &n.sources {
            match m.find_source(s, t) {
                Some(src) => deps.push(src.unique_id.clone()),
                None => {
                    let text = std::fs::read_to_string(&n.file).unwrap_or_default();
                    let (line, col) = find_call(&text, "source", t).unwrap_or((0, 0));
                    return Err(GraphError::at(
                        Location::new(&n.file, line, col),
                        format!(
                            "{} '{}' uses source('{s}', '{t}'), which is not declared in any schema file's 'sources:'",
                            n.resource_type.as_str(),
                            n.name
                        ),
                        Some(&text),
                    ));
                }
            }
        }
        updates.push((n.unique_id.clone(), dedup(deps)));
    }
    for (id, deps) in updates {
        if let Some(n) = m.nodes.get_mut(&id) {
            n.depends_on = deps;
        }
    }
    Ok(())
}

/// Database, schema and alias of every model, seed and snapshot, through the project's
/// `generate_*_name` macros (dbt's own unless the project overrides them).
fn resolve_relations(m: &mut Manifest, host: Arc<ParseHost>) -> Result<(), GraphError> {
    let macros = m.jinja.macros.clone();
    let builtin = |name: &str| {
        macros.resolve(m.project.name(), name).is_some_and(|d| d.package == weir_project::jinja::INTERNAL_PACKAGE)
            && macros
                .dispatch(m.project.name(), name, Some("dbt"))
                .is_some_and(|d| d.package == weir_project::jinja::INTERNAL_PACKAGE && d.name.starts_with("default__"))
    };
    let fast = [builtin("generate_schema_name"), builtin("generate_alias_name"), builtin("generate_database_name")];
    let (db, schema) = (m.target.database(), m.target.schema());
    let mut updates = vec![];
    for n in m.nodes.values() {
        if !matches!(n.resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot) {
            continue;
        }
        let custom = |key: &str| n.config_str(key);
        let snapshot_schema = if n.resource_type == ResourceType::Snapshot { custom("target_schema") } else { None };
        // A project override of a generate_* macro is called with the node, as dbt calls it.
        let call = |name: &str, arg: Option<String>| -> Result<String, GraphError> {
            let model = n.to_jinja();
            let scope = NodeScope {
                unique_id: n.unique_id.clone(),
                package: n.package.clone(),
                file: n.file.clone(),
                this: None,
                model: {
                    let model = model.clone();
                    LazyModel::new(move || model.clone())
                },
            };
            let ctx = NodeContext::new(host.clone(), macros.clone(), scope, RenderMode::Execute, n.config.clone());
            let args = [arg.map(minijinja::Value::from).unwrap_or(minijinja::Value::from(())), json_value(model)];
            let v = m.jinja.call_macro(&ctx, name, &args)?;
            Ok(v.to_string().trim().to_string())
        };
        let schema_name = match (snapshot_schema, fast[0], custom("schema")) {
            (Some(s), _, _) => s,
            (None, true, None) => schema.clone(),
            (None, true, Some(c)) => format!("{schema}_{}", c.trim()),
            (None, false, c) => call("generate_schema_name", c)?,
        };
        let alias = match (fast[1], custom("alias")) {
            (true, Some(a)) => a.trim().to_string(),
            (true, None) => match &n.version {
                Some(v) => format!("{}_v{}", n.name, v.replace('.', "_")),
                None => n.name.clone(),
            },
            (false, a) => call("generate_alias_name", a)?,
        };
        let target_db = if n.resource_type == ResourceType::Snapshot { custom("target_database") } else { None };
        let database = match (target_db, fast[2], custom("database")) {
            (Some(d), _, _) => d,
            (None, true, None) => db.clone(),
            (None, true, Some(d)) => d.trim().to_string(),
            (None, false, d) => call("generate_database_name", d)?,
        };
        updates.push((n.unique_id.clone(), Relation::new(database, schema_name, alias)));
    }
    let mut seen: HashMap<(String, String, String), String> = HashMap::new();
    for (id, rel) in updates {
        if !m.nodes.get(&id).is_some_and(Node::is_ephemeral)
            && let Some(other) = seen.insert(rel.key(), id.clone())
        {
            let file = m.nodes.get(&id).map(|n| n.file.clone()).unwrap_or_default();
            return Err(GraphError::at(
                Location::file(file),
                format!("{id} and {other} would both be built as {rel}; give one of them another alias or schema"),
                None,
            ));
        }
        if let Some(n) = m.nodes.get_mut(&id) {
            n.relation = Some(rel);
        }
    }
    Ok(())
}

/// dbt warns when a `dbt_project.yml` config path matches no resource; so does Weir.
fn warn_unused_config_paths(m: &mut Manifest, disabled: &[(ResourceType, Vec<String>)]) {
    let settings = &m.project.root_package().settings;
    let trees = [
        (&settings.models, vec![ResourceType::Model, ResourceType::Analysis]),
        (&settings.seeds, vec![ResourceType::Seed]),
        (&settings.tests, vec![ResourceType::Test]),
        (&settings.snapshots, vec![ResourceType::Snapshot]),
        (&settings.sources, vec![ResourceType::Source]),
    ];
    for (tree, kinds) in trees {
        for (path, location) in tree.paths() {
            let used =
                m.nodes.values().filter(|n| kinds.contains(&n.resource_type)).any(|n| {
                    let fqn = if n.resource_type == ResourceType::Source {
                        let mut f = n.fqn.clone();
                        // Source configs are addressed as [package, source, table].
                        if f.len() > 3 {
                            f.drain(1..f.len() - 2);
                        }
                        f
                    } else {
                        n.fqn.clone()
                    };
                    fqn.len() >= path.len() && fqn[..path.len()] == path[..]
                }) || disabled.iter().any(|(kind, fqn)| kinds.contains(kind) && fqn.len() >= path.len() && fqn[..path.len()] == path[..])
                    || (kinds.contains(&ResourceType::Test) && path.len() == 1);
            let is_package = m.project.package(&path[0]).is_some();
            if !used && (is_package || path.len() == 1) {
                m.warnings
                    .push(Warning { location, message: format!("config path '{}' matches no {}", path.join("."), kinds[0].as_str()) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_test_names_follow_dbt() {
        let mut a = Map::new();
        a.insert("column_name".into(), J::from("status"));
        a.insert("values".into(), serde_json::json!(["placed", "shipped", "return_pending"]));
        assert_eq!(generic_test_name("accepted_values", "orders", &a), "accepted_values_orders_status__placed__shipped__return_pending");
        let mut r = Map::new();
        r.insert("column_name".into(), J::from("customer_id"));
        r.insert("to".into(), J::from("ref('customers')"));
        r.insert("field".into(), J::from("customer_id"));
        assert_eq!(generic_test_name("relationships", "orders", &r), "relationships_orders_customer_id__customer_id__ref_customers_");
    }

    #[test]
    fn long_test_names_get_hashed_aliases_like_dbt() {
        let mut a = Map::new();
        a.insert("column_name".into(), J::from("a_rather_long_column_name_for_testing"));
        let name = test_alias(&generic_test_name("accepted_values", "a_model_with_a_long_name", &a));
        assert_eq!(name.len(), 30 + 1 + 32);
        assert!(name.starts_with("accepted_values_a_model_with_a"));
    }
}
