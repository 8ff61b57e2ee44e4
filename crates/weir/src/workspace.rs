//! Loading what every command needs: the project, the profile target, the parsed manifest,
//! the graph and the selection; and opening the warehouse for commands that run SQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value as J};
use weir_graph::{Flags, Graph, GraphError, Manifest, PriorState, ResourceType, Selector};
use weir_project::{Project, profiles};
use weir_store::Store;
use weir_transform::Session;

use crate::cli::{Global, Selection};
use crate::output::Output;

pub type Error = Box<dyn std::error::Error>;

pub struct Workspace {
    pub manifest: Arc<Manifest>,
    pub graph: Graph,
    pub target_dir: PathBuf,
    pub threads: usize,
}

pub fn project_dir(g: &Global) -> PathBuf {
    g.project_dir.clone().unwrap_or_else(|| PathBuf::from("."))
}

/// Stops a command run outside a project folder, saying how to get into one.
pub fn require_project(dir: &Path) -> Result<(), Error> {
    if dir.join("dbt_project.yml").exists() {
        return Ok(());
    }
    Err(format!(
        "no dbt_project.yml in {}: run weir inside a project folder, pass --project-dir, or create one with `weir init NAME`",
        dir.display()
    )
    .into())
}

pub fn cli_vars(g: &Global) -> Result<Map<String, J>, Error> {
    let Some(text) = &g.vars else { return Ok(Map::new()) };
    let text = if text.trim_start().starts_with('{') || text.contains(':') { text.clone() } else { format!("{{{text}}}") };
    let node = weir_project::yaml::parse(std::path::Path::new("--vars"), &text)?;
    match node.map(|n| n.to_json()) {
        Some(J::Object(m)) => Ok(m),
        None => Ok(Map::new()),
        Some(_) => Err("--vars must be a YAML mapping, like '{key: value}'".into()),
    }
}

/// The project's settings and the target `--target` (or the profile) picks, without
/// parsing its models: for commands that need only where things are.
pub fn project_and_target(g: &Global) -> Result<(Project, profiles::Target), Error> {
    let dir = project_dir(g);
    require_project(&dir)?;
    let vars = cli_vars(g)?;
    let project = Project::load(&dir, vars.clone())?;
    let profile_name = project.root_package().settings.profile.clone().unwrap_or_else(|| project.name().to_string());
    let dirs = profiles::profiles_dirs(g.profiles_dir.as_deref(), &project.root);
    let target = profiles::load_target(&dirs, &profile_name, g.target.as_deref(), &vars)?;
    Ok((project, target))
}

impl Workspace {
    /// Loads and parses the project; warnings are printed, errors returned.
    pub fn load(g: &Global, out: &Output, flags: Flags) -> Result<Workspace, Error> {
        let (project, target) = project_and_target(g)?;
        let threads = g.threads.unwrap_or(target.threads).max(1);
        let target_dir = project.target_dir();
        let manifest = weir_graph::parse(project, target, flags)?;
        for w in &manifest.warnings {
            let root = &manifest.project.root;
            out.warn(format!("{}: {}", w.location.relative_to(root), w.message));
        }
        let graph = Graph::build(&manifest)?;
        Ok(Workspace { manifest: Arc::new(manifest), graph, target_dir, threads })
    }

    /// The nodes `--select`/`--exclude` pick (everything when nothing is selected), with
    /// tests and checks attached to selected nodes added as dbt's eager indirect selection does.
    pub fn select(&self, s: &Selection) -> Result<BTreeSet<String>, GraphError> {
        let m = &self.manifest;
        let state = s.state.as_deref().map(PriorState::load).transpose()?.map(Arc::new);
        let mut sel = Selector::parse(&s.select)?;
        sel.state = state.clone();
        let mut chosen = if sel.is_empty() { m.nodes.keys().cloned().collect() } else { sel.select(m, &self.graph)? };
        if !sel.is_empty() {
            let extra: Vec<String> = m
                .nodes
                .values()
                .filter(|n| matches!(n.resource_type, ResourceType::Test | ResourceType::UnitTest | ResourceType::Check))
                .filter(|n| n.depends_on.iter().any(|d| chosen.contains(d)))
                .map(|n| n.unique_id.clone())
                .collect();
            chosen.extend(extra);
        }
        let mut exclude = Selector::parse(&s.exclude)?;
        exclude.state = state;
        if !exclude.is_empty() {
            let excluded = exclude.select(m, &self.graph)?;
            chosen.retain(|id| !excluded.contains(id));
        }
        Ok(chosen)
    }

    /// Opens the warehouse (relative DuckDB paths are taken from the working folder, as
    /// dbt-duckdb takes them), with the metadata store when `ids` holds a microbatch model, a
    /// check, a load or a stream job (whose `format: avro` topics use the schema registry).
    pub fn session(&self, out: &Arc<Output>, ids: &BTreeSet<String>) -> Result<Arc<Session>, Error> {
        let t = &self.manifest.target;
        let cwd = std::env::current_dir()?;
        let wh = weir_warehouse::open(&t.adapter_type, &t.fields, &cwd)?;
        let log_out = out.clone();
        let mut session = Session::new(self.manifest.clone(), Arc::from(wh), Arc::new(move |m: &str| log_out.info(m)));
        // Microbatch models record their intervals, checks their measurements, loads their
        // runs, high-water marks and files.
        if ids
            .iter()
            .filter_map(|id| self.manifest.node(id))
            .any(|n| n.is_microbatch() || n.stream.is_some() || matches!(n.resource_type, ResourceType::Check | ResourceType::Load))
        {
            session = session.with_store(self.store()?);
        }
        Ok(Arc::new(session))
    }

    /// Progress bars for the loads among `ids`, if any.
    pub fn load_progress(&self, out: &Output, ids: &[String]) -> Option<weir_connect::ProgressFn> {
        let loads = ids.iter().filter_map(|id| self.manifest.node(id)).any(|n| n.resource_type == ResourceType::Load);
        if loads { out.load_bars() } else { None }
    }

    /// The metadata store: `$WEIR_METADATA_URL`, else `metadata_store:` in the project's
    /// `weir.yml`, else SQLite at `.weir/weir.db` in the project folder.
    pub fn store(&self) -> Result<Arc<Store>, Error> {
        let root = &self.manifest.project.root;
        let (url, schema) = store_settings(root)?;
        Ok(Arc::new(Store::open(&url, root, schema.as_deref())?))
    }
}

/// The store's URL and PostgreSQL schema (see [`Workspace::store`]). In `weir.yml`,
/// `metadata_store:` is a URL, or a mapping with `url:` and `schema:`.
pub fn store_settings(root: &Path) -> Result<(String, Option<String>), Error> {
    let default = "sqlite:.weir/weir.db".to_string();
    let file = root.join("weir.yml");
    let from_file = if file.exists() {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let node = weir_project::yaml::parse(&file, &text)?.map(|n| n.to_json());
        node.and_then(|j| j.get("metadata_store").cloned())
    } else {
        None
    };
    let (mut url, schema) = match from_file {
        None | Some(J::Null) => (default, None),
        Some(J::String(u)) => (u, None),
        Some(J::Object(o)) => (
            o.get("url").and_then(J::as_str).map(str::to_string).unwrap_or(default),
            o.get("schema").and_then(J::as_str).map(str::to_string),
        ),
        Some(other) => {
            return Err(format!("{}: metadata_store must be a URL or a mapping with url and schema, not {other}", file.display()).into());
        }
    };
    if let Ok(u) = std::env::var("WEIR_METADATA_URL")
        && !u.is_empty()
    {
        url = u;
    }
    Ok((url, schema))
}

pub fn new_flags(which: &str, full_refresh: bool, store_failures: bool) -> Flags {
    Flags { full_refresh, store_failures, which: which.to_string(), invocation_id: uuid::Uuid::new_v4().to_string() }
}
