//! A project folder: its `dbt_project.yml`, its local packages, and the files they hold.
//!
//! Loading reads and validates everything that does not need Jinja or a warehouse; SQL files
//! are only listed here and rendered later, by the transform layer, through [`crate::jinja`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
use weir_core::Location;

use crate::config::{ConfigTree, ResourceKind};
use crate::error::{ProjectError, Warning, closest};
use crate::yaml::{self, Node};

/// A loaded project: the root package first, then its local packages.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub packages: Vec<Package>,
    pub files: Vec<ProjectFile>,
    pub cli_vars: Map<String, J>,
    pub warnings: Vec<Warning>,
}

/// One dbt package (the root project is one too).
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub root: PathBuf,
    pub is_root: bool,
    pub settings: Settings,
}

/// What `dbt_project.yml` says.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub name: String,
    pub version: Option<String>,
    pub profile: Option<String>,
    pub model_paths: Vec<String>,
    pub seed_paths: Vec<String>,
    pub test_paths: Vec<String>,
    pub macro_paths: Vec<String>,
    pub snapshot_paths: Vec<String>,
    pub analysis_paths: Vec<String>,
    pub target_path: String,
    pub packages_install_path: String,
    pub clean_targets: Vec<String>,
    pub vars: Map<String, J>,
    pub models: ConfigTree,
    pub seeds: ConfigTree,
    pub tests: ConfigTree,
    pub snapshots: ConfigTree,
    pub sources: ConfigTree,
    pub on_run_start: Vec<String>,
    pub on_run_end: Vec<String>,
    /// `dispatch:` entries: macro namespace -> packages to search, in order.
    pub dispatch: BTreeMap<String, Vec<String>>,
    pub quoting: Map<String, J>,
}

/// What a file in the project is, decided by the folder it is in and its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Model,
    Seed,
    SingularTest,
    Macro,
    Snapshot,
    Analysis,
    Schema,
}

/// A file found in a package.
#[derive(Debug, Clone)]
pub struct ProjectFile {
    pub package: String,
    pub kind: FileKind,
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the package root (`models/staging/stg_orders.sql`), as dbt reports it.
    pub original_path: String,
    /// Path relative to the resource folder (`staging/stg_orders.sql`), which gives the fqn.
    pub path_in_folder: String,
}

impl ProjectFile {
    /// The folders between the resource folder and the file, for the fqn.
    pub fn folders(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.path_in_folder.split('/').map(str::to_string).collect();
        parts.pop();
        parts
    }

    pub fn stem(&self) -> String {
        Path::new(&self.path_in_folder).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

const PROJECT_KEYS: &[&str] = &[
    "name",
    "version",
    "config-version",
    "profile",
    "model-paths",
    "seed-paths",
    "test-paths",
    "macro-paths",
    "snapshot-paths",
    "analysis-paths",
    "docs-paths",
    "asset-paths",
    "function-paths",
    "target-path",
    "log-path",
    "packages-install-path",
    "clean-targets",
    "vars",
    "models",
    "seeds",
    "tests",
    "data_tests",
    "snapshots",
    "sources",
    "on-run-start",
    "on-run-end",
    "quoting",
    "dispatch",
    "require-dbt-version",
    "flags",
    "query-comment",
    "restrict-access",
    "semantic-models",
    "saved-queries",
    "metrics",
    "exposures",
    "unit_tests",
    "analyses",
    "source-paths",
    "data-paths",
];

impl Project {
    /// Loads the project at `root`, its `packages.yml`, and lists every file.
    pub fn load(root: &Path, cli_vars: Map<String, J>) -> Result<Project, ProjectError> {
        let root = root.canonicalize().map_err(|e| ProjectError::io(root, e))?;
        let mut warnings = vec![];
        let settings = Settings::load(&root, &cli_vars, &mut warnings)?;
        let mut packages = vec![Package { name: settings.name.clone(), root: root.clone(), is_root: true, settings }];
        // `dbt deps` installs every package, and the packages of packages, side by side in the
        // root's install folder, each named by its project name (which `package-lock.yml` says).
        let installed = Installed::new(&root, &packages[0].settings.packages_install_path);
        load_packages(&root, &installed, &cli_vars, &mut packages, &mut warnings)?;
        let mut files = vec![];
        for pkg in &packages {
            discover(pkg, &mut files)?;
        }
        Ok(Project { root, packages, files, cli_vars, warnings })
    }

    pub fn root_package(&self) -> &Package {
        &self.packages[0]
    }

    pub fn name(&self) -> &str {
        &self.packages[0].name
    }

    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn target_dir(&self) -> PathBuf {
        self.root.join(&self.root_package().settings.target_path)
    }

    /// `var(name)` as seen from a node of `package`: CLI vars, then the root project's vars
    /// scoped to that package, then its global vars, then the package's own vars.
    pub fn var(&self, package: &str, name: &str) -> Option<J> {
        if let Some(v) = self.cli_vars.get(name) {
            return Some(v.clone());
        }
        let root_vars = &self.root_package().settings.vars;
        if let Some(J::Object(scoped)) = root_vars.get(package)
            && let Some(v) = scoped.get(name)
        {
            return Some(v.clone());
        }
        if let Some(v) = root_vars.get(name).filter(|_| self.package(name).is_none()) {
            return Some(v.clone());
        }
        let pkg = self.package(package)?;
        if let Some(J::Object(scoped)) = pkg.settings.vars.get(package)
            && let Some(v) = scoped.get(name)
        {
            return Some(v.clone());
        }
        pkg.settings.vars.get(name).filter(|_| self.package(name).is_none()).cloned()
    }
}

impl Settings {
    pub(crate) fn load(dir: &Path, cli_vars: &Map<String, J>, warnings: &mut Vec<Warning>) -> Result<Settings, ProjectError> {
        let file = dir.join("dbt_project.yml");
        let text = std::fs::read_to_string(&file).map_err(|e| ProjectError::io(&file, e))?;
        let doc = yaml::parse(&file, &text)?.ok_or_else(|| ProjectError::invalid(Location::file(&file), "dbt_project.yml is empty"))?;
        let Some(entries) = doc.as_map() else {
            return Err(ProjectError::invalid_at(doc.location(&file), "dbt_project.yml must be a mapping", &text));
        };
        for (k, _) in entries {
            let key = k.key_text().unwrap_or_default();
            if !PROJECT_KEYS.contains(&key.as_str()) {
                let hint = closest(&key, PROJECT_KEYS.iter().copied()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
                warnings.push(Warning { location: k.location(&file), message: format!("unknown key '{key}' in dbt_project.yml{hint}") });
            }
        }
        let render = |n: &Node| -> Result<Option<String>, ProjectError> {
            match n.scalar_text() {
                Some(s) => render_static(&s, cli_vars).map(Some).map_err(|m| ProjectError::invalid_at(n.location(&file), m, &text)),
                None => Ok(None),
            }
        };
        let name = match doc.get("name") {
            Some(n) => render(n)?.ok_or_else(|| ProjectError::invalid_at(n.location(&file), "'name' must be a string", &text))?,
            None => return Err(ProjectError::invalid(Location::file(&file), "dbt_project.yml has no 'name'")),
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let loc = doc.get("name").map(|n| n.location(&file)).unwrap_or_else(|| Location::file(&file));
            return Err(ProjectError::invalid_at(
                loc,
                format!("project name '{name}' must contain only letters, digits and underscores"),
                &text,
            ));
        }
        let list = |keys: &[&str], default: &str| -> Result<Vec<String>, ProjectError> {
            for key in keys {
                if let Some(n) = doc.get(key) {
                    return match (n.as_seq(), n.as_str()) {
                        (Some(items), _) => items.iter().map(|i| render(i).map(|s| s.unwrap_or_default())).collect(),
                        (None, Some(s)) => Ok(vec![s.to_string()]),
                        _ => Err(ProjectError::invalid_at(n.location(&file), format!("'{key}' must be a list of folders"), &text)),
                    };
                }
            }
            Ok(vec![default.to_string()])
        };
        let text_of = |key: &str, default: &str| -> Result<String, ProjectError> {
            match doc.get(key) {
                Some(n) => Ok(render(n)?.unwrap_or_else(|| default.to_string())),
                None => Ok(default.to_string()),
            }
        };
        let hooks = |key: &str| -> Vec<String> {
            match doc.get(key) {
                Some(n) => match (n.as_seq(), n.scalar_text()) {
                    (Some(items), _) => items.iter().filter_map(Node::scalar_text).collect(),
                    (None, Some(s)) => vec![s],
                    _ => vec![],
                },
                None => vec![],
            }
        };
        let tree = |kind, keys: &[&str]| {
            let node = keys.iter().find_map(|k| doc.get(k)).cloned();
            ConfigTree::new(kind, &file, node)
        };
        let mut dispatch = BTreeMap::new();
        if let Some(items) = doc.get("dispatch").and_then(Node::as_seq) {
            for item in items {
                let ns = item.get("macro_namespace").and_then(Node::as_str);
                let order = item.get("search_order").and_then(Node::as_seq);
                match (ns, order) {
                    (Some(ns), Some(order)) => {
                        dispatch.insert(ns.to_string(), order.iter().filter_map(|o| o.as_str().map(str::to_string)).collect());
                    }
                    _ => {
                        return Err(ProjectError::invalid_at(
                            item.location(&file),
                            "each 'dispatch' entry needs 'macro_namespace' and a 'search_order' list",
                            &text,
                        ));
                    }
                }
            }
        }
        let settings = Settings {
            name,
            version: doc.get("version").and_then(Node::scalar_text),
            profile: doc.get("profile").map(render).transpose()?.flatten(),
            model_paths: list(&["model-paths", "source-paths"], "models")?,
            seed_paths: list(&["seed-paths", "data-paths"], "seeds")?,
            test_paths: list(&["test-paths"], "tests")?,
            macro_paths: list(&["macro-paths"], "macros")?,
            snapshot_paths: list(&["snapshot-paths"], "snapshots")?,
            analysis_paths: list(&["analysis-paths"], "analyses")?,
            target_path: text_of("target-path", "target")?,
            packages_install_path: text_of("packages-install-path", "dbt_packages")?,
            clean_targets: list(&["clean-targets"], "target")?,
            vars: doc.get("vars").map(Node::to_json).and_then(|v| v.as_object().cloned()).unwrap_or_default(),
            models: tree(ResourceKind::Model, &["models"]),
            seeds: tree(ResourceKind::Seed, &["seeds"]),
            tests: tree(ResourceKind::Test, &["data_tests", "tests"]),
            snapshots: tree(ResourceKind::Snapshot, &["snapshots"]),
            sources: tree(ResourceKind::Source, &["sources"]),
            on_run_start: hooks("on-run-start"),
            on_run_end: hooks("on-run-end"),
            dispatch,
            quoting: doc.get("quoting").map(Node::to_json).and_then(|v| v.as_object().cloned()).unwrap_or_default(),
            file,
        };
        for t in [&settings.models, &settings.seeds, &settings.tests, &settings.snapshots, &settings.sources] {
            warnings.extend(t.unknown_key_warnings());
        }
        Ok(settings)
    }
}

/// Renders `{{ env_var(...) }}` and `{{ var(...) }}` in `dbt_project.yml` and `profiles.yml`
/// values, which dbt renders before anything else exists.
pub fn render_static(text: &str, cli_vars: &Map<String, J>) -> Result<String, String> {
    render_with_target(text, cli_vars, None)
}

/// As [`render_static`], with `target` too: what dbt renders a source's `database`, `schema`
/// and `identifier` with (`schema: "{{ target.schema }}_raw"`).
pub fn render_with_target(text: &str, cli_vars: &Map<String, J>, target: Option<&J>) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    let mut env = minijinja::Environment::new();
    env.add_function("env_var", crate::jinja::env_var);
    let vars = cli_vars.clone();
    env.add_function("var", move |name: String, default: Option<minijinja::Value>| -> Result<minijinja::Value, minijinja::Error> {
        match (vars.get(&name), default) {
            (Some(v), _) => Ok(crate::jinja::json_value(v)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("Required var '{name}' not found"))),
        }
    });
    let ctx = match target {
        Some(t) => minijinja::context! { target => crate::jinja::json_value(t) },
        None => minijinja::context! {},
    };
    env.render_str(text, ctx).map_err(|e| e.detail().map(str::to_string).unwrap_or_else(|| e.to_string()))
}

/// Renders the Jinja in config values as dbt renders `dbt_project.yml` and schema YAML configs
/// (`+materialized: "{{ 'table' if target.type == 'duckdb' else 'view' }}"`, a test's
/// `enabled: "{{ target.name == 'prod' }}"`): with `env_var`, `var` and `target`, each rendered
/// text read back as a literal where it is one (`true` a boolean, `3` a number), as dbt's
/// native rendering does. Hooks are left as written: they are rendered when they run.
/// `None` when there is nothing to render.
pub fn render_config(map: &Map<String, J>, cli_vars: &Map<String, J>, target: Option<&J>) -> Result<Option<Map<String, J>>, String> {
    fn has_jinja(v: &J) -> bool {
        match v {
            J::String(s) => s.contains("{{") || s.contains("{%"),
            J::Array(items) => items.iter().any(has_jinja),
            J::Object(m) => m.values().any(has_jinja),
            _ => false,
        }
    }
    fn render(v: &J, cli_vars: &Map<String, J>, target: Option<&J>) -> Result<J, String> {
        Ok(match v {
            J::String(s) if s.contains("{{") || s.contains("{%") => native(render_with_target(s, cli_vars, target)?),
            J::Array(items) => J::Array(items.iter().map(|i| render(i, cli_vars, target)).collect::<Result<_, _>>()?),
            J::Object(m) => J::Object(m.iter().map(|(k, i)| Ok((k.clone(), render(i, cli_vars, target)?))).collect::<Result<_, String>>()?),
            other => other.clone(),
        })
    }
    let is_hook = |key: &str| matches!(key.trim_start_matches('+'), "pre-hook" | "post-hook" | "pre_hook" | "post_hook");
    if !map.iter().any(|(k, v)| !is_hook(k) && has_jinja(v)) {
        return Ok(None);
    }
    let mut out = map.clone();
    for (key, value) in map {
        if is_hook(key) || !has_jinja(value) {
            continue;
        }
        out.insert(key.clone(), render(value, cli_vars, target).map_err(|m| format!("config '{key}': {m}"))?);
    }
    Ok(Some(out))
}

/// A rendered text as the literal it spells, if it spells one (`true`, `False`, `none`, `3`,
/// `2.5`, `['a', 'b']`), else the text.
fn native(text: String) -> J {
    let t = text.trim();
    match t {
        "true" | "True" => return J::Bool(true),
        "false" | "False" => return J::Bool(false),
        "none" | "None" => return J::Null,
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return J::from(i);
    }
    if t.contains('.')
        && let Ok(f) = t.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return J::Number(n);
    }
    if (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('{') && t.ends_with('}')) {
        let json = t.replace('\'', "\"").replace("True", "true").replace("False", "false").replace("None", "null");
        if let Ok(v) = serde_json::from_str::<J>(&json) {
            return v;
        }
    }
    J::String(text)
}

/// Where `dbt deps` put the packages: the root project's install folder, and the project
/// name of each package spec as `package-lock.yml` records it.
struct Installed {
    project_root: PathBuf,
    dir: PathBuf,
    /// The folder as the project names it (`dbt_packages`), for messages.
    shown: String,
    /// (the spec's `package:`, `git:` or `tarball:` value, the package's project name)
    locked: Vec<(String, String)>,
}

impl Installed {
    fn new(root: &Path, install_path: &str) -> Installed {
        let mut locked = vec![];
        let file = root.join("package-lock.yml");
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(Some(doc)) = yaml::parse(&file, &text)
            && let Some(items) = doc.get("packages").and_then(Node::as_seq)
        {
            for item in items {
                let spec = ["package", "git", "tarball"].iter().find_map(|k| item.get(k).and_then(Node::scalar_text));
                if let (Some(spec), Some(name)) = (spec, item.get("name").and_then(Node::scalar_text)) {
                    locked.push((spec, name));
                }
            }
        }
        Installed { project_root: root.to_path_buf(), dir: root.join(install_path), shown: install_path.to_string(), locked }
    }

    /// The folder of an installed package: by its locked name, else by the name its spec
    /// suggests (`dbt-labs/dbt_utils` → `dbt_utils`, `.../dbt-codegen.git` → `dbt_codegen` or
    /// `codegen`), looked up as a folder or as the `name` in a folder's `dbt_project.yml`.
    fn find(&self, spec: &str) -> Option<PathBuf> {
        if let Some((_, name)) = self.locked.iter().find(|(s, _)| s == spec) {
            let dir = self.dir.join(name);
            if dir.join("dbt_project.yml").exists() {
                return Some(dir);
            }
        }
        let short = spec.rsplit('/').next().unwrap_or(spec).trim_end_matches(".git").replace('-', "_");
        let mut names = vec![short.clone()];
        if let Some(bare) = short.strip_prefix("dbt_").filter(|b| !b.is_empty()) {
            names.push(bare.to_string());
        }
        for name in &names {
            if let Some(dir) = installed_package(&self.dir, name) {
                return Some(dir);
            }
        }
        std::fs::read_dir(&self.dir).ok()?.flatten().map(|e| e.path()).find(|dir| {
            let file = dir.join("dbt_project.yml");
            let Ok(text) = std::fs::read_to_string(&file) else { return false };
            let name = yaml::parse(&file, &text).ok().flatten().and_then(|doc| doc.get("name").and_then(Node::scalar_text));
            name.is_some_and(|n| names.contains(&n))
        })
    }
}

fn load_packages(
    root: &Path,
    installed: &Installed,
    cli_vars: &Map<String, J>,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<Warning>,
) -> Result<(), ProjectError> {
    for file_name in ["packages.yml", "dependencies.yml"] {
        let file = root.join(file_name);
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let Some(doc) = yaml::parse(&file, &text)? else { continue };
        let Some(items) = doc.get("packages").and_then(Node::as_seq) else {
            if file_name == "packages.yml" {
                return Err(ProjectError::invalid_at(doc.location(&file), "packages.yml needs a 'packages:' list", &text));
            }
            continue;
        };
        for item in items {
            let dir = if let Some(local) = item.get("local").and_then(Node::scalar_text) {
                let local = render_static(&local, cli_vars).map_err(|m| ProjectError::invalid_at(item.location(&file), m, &text))?;
                // dbt reads a local path from the root project, even in a package's own list;
                // a path from the package's folder is taken where that is what exists.
                let from_root = installed.project_root.join(&local);
                if from_root.join("dbt_project.yml").exists() { from_root } else { root.join(local) }
            } else {
                let (what, name) = match (item.get("package"), item.get("git"), item.get("tarball")) {
                    (Some(p), _, _) => ("hub package", p.scalar_text().unwrap_or_default()),
                    (_, Some(g), _) => ("git package", g.scalar_text().unwrap_or_default()),
                    (_, _, Some(t)) => ("tarball package", t.scalar_text().unwrap_or_default()),
                    _ => {
                        return Err(ProjectError::invalid_at(
                            item.location(&file),
                            "a package entry needs 'local:', 'package:', 'git:' or 'tarball:'",
                            &text,
                        ));
                    }
                };
                // Installed by `weir deps` (or `dbt deps`) into the install folder.
                match installed.find(&name) {
                    Some(dir) => dir,
                    None => {
                        return Err(ProjectError::invalid_at(
                            item.location(&file),
                            format!("{what} '{name}' is not installed in {}/: run `weir deps`", installed.shown),
                            &text,
                        ));
                    }
                }
            };
            let settings = Settings::load(&dir, cli_vars, warnings).map_err(|e| match e {
                ProjectError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => ProjectError::invalid_at(
                    item.location(&file),
                    format!("package folder {} has no dbt_project.yml", path.parent().unwrap_or(&path).display()),
                    &text,
                ),
                other => other,
            })?;
            if packages.iter().any(|p| p.name == settings.name) {
                continue;
            }
            let dir = dir.canonicalize().map_err(|e| ProjectError::io(&dir, e))?;
            packages.push(Package { name: settings.name.clone(), root: dir.clone(), is_root: false, settings });
            load_packages(&dir, installed, cli_vars, packages, warnings)?;
        }
    }
    Ok(())
}

fn installed_package(install_dir: &Path, short: &str) -> Option<PathBuf> {
    let direct = install_dir.join(short);
    if direct.join("dbt_project.yml").exists() {
        return Some(direct);
    }
    std::fs::read_dir(install_dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().replace('-', "_").eq_ignore_ascii_case(short))
            && p.join("dbt_project.yml").exists()
    })
}

fn discover(pkg: &Package, out: &mut Vec<ProjectFile>) -> Result<(), ProjectError> {
    let s = &pkg.settings;
    let groups: [(&Vec<String>, FileKind, &[&str]); 6] = [
        (&s.model_paths, FileKind::Model, &["sql"]),
        (&s.seed_paths, FileKind::Seed, &["csv"]),
        (&s.test_paths, FileKind::SingularTest, &["sql"]),
        (&s.macro_paths, FileKind::Macro, &["sql"]),
        (&s.snapshot_paths, FileKind::Snapshot, &["sql"]),
        (&s.analysis_paths, FileKind::Analysis, &["sql"]),
    ];
    for (dirs, kind, exts) in groups {
        for dir in dirs {
            let base = pkg.root.join(dir);
            let mut found = vec![];
            walk(&base, &mut found)?;
            found.sort();
            for path in found {
                let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
                let rel_in = path.strip_prefix(&base).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                let original = path.strip_prefix(&pkg.root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                let kind = if ext == "yml" || ext == "yaml" {
                    FileKind::Schema
                } else if !exts.contains(&ext.as_str()) {
                    continue;
                } else if kind == FileKind::SingularTest && rel_in.starts_with("generic/") {
                    // dbt reads tests/generic/*.sql as macro files defining generic tests.
                    FileKind::Macro
                } else {
                    kind
                };
                out.push(ProjectFile { package: pkg.name.clone(), kind, path, original_path: original, path_in_folder: rel_in });
            }
        }
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ProjectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ProjectError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ProjectError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| ProjectError::io(&path, e))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn lists_files_by_folder_and_reads_local_packages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "dbt_project.yml", "name: shop\nprofile: shop\nvars:\n  a: 1\n  util:\n    b: 2\n");
        write(root, "packages.yml", "packages:\n  - local: vendor/util\n");
        write(root, "models/staging/stg.sql", "select 1");
        write(root, "models/schema.yml", "version: 2\n");
        write(root, "tests/generic/t.sql", "{% test x(model) %}select 1{% endtest %}");
        write(root, "tests/singular.sql", "select 1 where false");
        write(root, "vendor/util/dbt_project.yml", "name: util\n");
        write(root, "vendor/util/macros/m.sql", "{% macro m() %}1{% endmacro %}");
        let p = Project::load(root, Map::new()).unwrap();
        assert_eq!(p.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["shop", "util"]);
        let kinds: Vec<(FileKind, &str)> = p.files.iter().map(|f| (f.kind, f.original_path.as_str())).collect();
        assert!(kinds.contains(&(FileKind::Model, "models/staging/stg.sql")));
        assert!(kinds.contains(&(FileKind::Schema, "models/schema.yml")));
        assert!(kinds.contains(&(FileKind::Macro, "tests/generic/t.sql")));
        assert!(kinds.contains(&(FileKind::SingularTest, "tests/singular.sql")));
        assert!(kinds.contains(&(FileKind::Macro, "macros/m.sql")));
        assert_eq!(p.var("shop", "a"), Some(serde_json::json!(1)));
        assert_eq!(p.var("util", "b"), Some(serde_json::json!(2)));
        assert_eq!(p.var("shop", "b"), None);
    }

    #[test]
    fn hub_packages_that_are_not_installed_get_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "dbt_project.yml", "name: shop\n");
        write(dir.path(), "packages.yml", "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n");
        let err = Project::load(dir.path(), Map::new()).unwrap_err().to_string();
        assert!(err.contains("packages.yml:2:5"), "{err}");
        assert!(err.contains("is not installed in dbt_packages/: run `weir deps`"), "{err}");
    }

    /// As `dbt deps` lays them out: a package's own packages sit beside it in the root's
    /// `dbt_packages/`, and a git package's folder is its project name, not its URL's.
    #[test]
    fn packages_of_packages_are_found_beside_them_by_project_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "dbt_project.yml", "name: shop\n");
        write(
            dir.path(),
            "packages.yml",
            "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n  - git: https://github.com/dbt-labs/dbt-codegen.git\n    revision: 0.13.1\n  - git: https://example.com/acme/odd-repo.git\n",
        );
        write(dir.path(), "dbt_packages/dbt_utils/dbt_project.yml", "name: dbt_utils\n");
        write(dir.path(), "dbt_packages/codegen/dbt_project.yml", "name: 'codegen'\n");
        write(dir.path(), "dbt_packages/codegen/packages.yml", "packages:\n  - package: dbt-labs/dbt_utils\n    version: [\">=1.0.0\"]\n");
        write(dir.path(), "dbt_packages/acme_tools/dbt_project.yml", "name: acme_tools\n");
        write(
            dir.path(),
            "package-lock.yml",
            "packages:\n  - name: acme_tools\n    git: https://example.com/acme/odd-repo.git\n    revision: abc\n",
        );
        let p = Project::load(dir.path(), Map::new()).unwrap();
        let names: Vec<&str> = p.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["shop", "dbt_utils", "codegen", "acme_tools"]);
    }

    #[test]
    fn unknown_top_level_keys_warn_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "dbt_project.yml", "name: shop\nmodel-path: [models]\n");
        let p = Project::load(dir.path(), Map::new()).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].to_string().contains("dbt_project.yml:2:1"), "{}", p.warnings[0]);
        assert!(p.warnings[0].message.contains("did you mean 'model-paths'"));
    }
}
