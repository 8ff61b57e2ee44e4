//! Schema YAML files (`models/schema.yml` and friends): descriptions, columns, tests, sources.
//! Unknown keys are warned about with their place; wrong shapes are errors.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
use weir_core::Location;

use crate::config::{ConfigMap, merge};
use crate::error::{ProjectError, Warning, closest};
use crate::yaml::{self, Node};

/// Everything one schema file declares.
#[derive(Debug, Clone, Default)]
pub struct SchemaFile {
    pub path: PathBuf,
    pub package: String,
    pub models: Vec<Patch>,
    pub seeds: Vec<Patch>,
    pub snapshots: Vec<Patch>,
    pub analyses: Vec<Patch>,
    pub sources: Vec<SourceDef>,
    pub unit_tests: Vec<UnitTestDef>,
    pub semantic_models: Vec<SemanticModelDef>,
    pub metrics: Vec<MetricDef>,
    pub saved_queries: Vec<SavedQueryDef>,
}

/// A semantic model: the model it reads (`ref('orders')`) and the measures it defines.
#[derive(Debug, Clone)]
pub struct SemanticModelDef {
    pub name: String,
    pub model: String,
    pub measures: Vec<String>,
    pub location: Location,
}

/// A metric: the measures and the other metrics it is computed from.
#[derive(Debug, Clone)]
pub struct MetricDef {
    pub name: String,
    pub measures: Vec<String>,
    pub metrics: Vec<String>,
    pub location: Location,
}

/// A saved query: the metrics it asks for. `weir build` reports it as dbt does (no-op),
/// after the models its metrics read.
#[derive(Debug, Clone)]
pub struct SavedQueryDef {
    pub name: String,
    pub description: String,
    pub metrics: Vec<String>,
    pub config: ConfigMap,
    pub location: Location,
}

/// A unit test: a model's SQL run on fixed input rows, its output compared to expected rows.
#[derive(Debug, Clone)]
pub struct UnitTestDef {
    pub name: String,
    pub model: String,
    pub description: String,
    /// One fixture per input the model reads: `ref('orders')`, `source('raw', 'customers')`.
    pub given: Vec<(String, Fixture)>,
    pub expect: Fixture,
    /// `overrides:`: `macros` (`is_incremental: true`), `vars`, `env_vars`.
    pub overrides: Map<String, J>,
    pub config: ConfigMap,
    pub location: Location,
}

/// Rows for a unit test, as the YAML gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum Fixture {
    /// `rows:` as a list of mappings (`format: dict`) or read from CSV (`format: csv`; every
    /// value is text, an empty field null).
    Rows(Vec<Map<String, J>>),
    /// `format: sql`: a query giving the rows.
    Sql(String),
}

/// Properties that a schema file adds to a model, seed or snapshot defined elsewhere.
#[derive(Debug, Clone)]
pub struct Patch {
    pub name: String,
    pub location: Location,
    pub description: String,
    pub config: ConfigMap,
    pub columns: Vec<ColumnDef>,
    pub tests: Vec<TestDef>,
    /// A YAML-defined snapshot's source: `ref('orders')` or `source('raw', 'orders')`.
    pub relation: Option<String>,
    /// A versioned model's versions (`versions:`), and which is the latest.
    pub versions: Vec<VersionDef>,
    pub latest_version: Option<String>,
}

/// One version of a model: its file (`defined_in`, else `NAME_vV`), its own config, and its
/// columns (the model's, narrowed by `include`/`exclude`, plus its own).
#[derive(Debug, Clone)]
pub struct VersionDef {
    pub v: String,
    pub defined_in: Option<String>,
    pub config: ConfigMap,
    pub columns: Vec<ColumnDef>,
    /// `include: all` (None) or a list of the model's columns; `exclude:` leaves some out.
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

impl Patch {
    /// The file stem each version is defined in, with the version.
    pub fn version_files(&self) -> Vec<(String, &VersionDef)> {
        self.versions.iter().map(|v| (v.defined_in.clone().unwrap_or_else(|| format!("{}_v{}", self.name, v.v)), v)).collect()
    }

    /// The latest version: `latest_version`, else the highest.
    pub fn latest(&self) -> Option<String> {
        if let Some(l) = &self.latest_version {
            return Some(l.clone());
        }
        let key = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
        self.versions.iter().map(|v| v.v.clone()).max_by_key(|v| key(v))
    }

    /// A version's columns: the model's, narrowed as the version says, then its own.
    pub fn columns_of(&self, v: &VersionDef) -> Vec<ColumnDef> {
        let mut out: Vec<ColumnDef> = self
            .columns
            .iter()
            .filter(|c| v.include.as_ref().is_none_or(|inc| inc.iter().any(|i| i.eq_ignore_ascii_case(&c.name))))
            .filter(|c| !v.exclude.iter().any(|e| e.eq_ignore_ascii_case(&c.name)))
            .cloned()
            .collect();
        for own in &v.columns {
            match out.iter_mut().find(|c| c.name.eq_ignore_ascii_case(&own.name)) {
                Some(c) => *c = own.clone(),
                None => out.push(own.clone()),
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub description: String,
    pub data_type: Option<String>,
    pub quote: bool,
    pub constraints: Vec<J>,
    pub meta: Map<String, J>,
    pub tags: Vec<String>,
    pub tests: Vec<TestDef>,
    pub location: Location,
}

/// One generic test use: `unique`, `{accepted_values: {values: [...]}}`, `dbt_utils.at_least_one`.
#[derive(Debug, Clone)]
pub struct TestDef {
    pub namespace: Option<String>,
    pub test_name: String,
    /// A name the user gave with `name:`.
    pub custom_name: Option<String>,
    /// The test macro's keyword arguments, `column_name` excluded.
    pub args: Map<String, J>,
    pub config: ConfigMap,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub description: String,
    pub loader: String,
    pub config: ConfigMap,
    pub loaded_at_field: Option<String>,
    pub freshness: Option<J>,
    pub quoting: Map<String, J>,
    pub tables: Vec<SourceTable>,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct SourceTable {
    pub name: String,
    pub identifier: Option<String>,
    pub description: String,
    pub config: ConfigMap,
    pub loaded_at_field: Option<String>,
    pub freshness: Option<J>,
    pub columns: Vec<ColumnDef>,
    pub tests: Vec<TestDef>,
    pub location: Location,
}

const TOP_KEYS: &[&str] = &[
    "version",
    "models",
    "seeds",
    "snapshots",
    "sources",
    "macros",
    "analyses",
    "exposures",
    "metrics",
    "semantic_models",
    "saved_queries",
    "groups",
    "unit_tests",
    "data_tests",
    "functions",
];
const PATCH_KEYS: &[&str] = &[
    "name",
    "relation",
    "description",
    "config",
    "columns",
    "tests",
    "data_tests",
    "docs",
    "meta",
    "tags",
    "access",
    "group",
    "latest_version",
    "versions",
    "constraints",
    "deprecation_date",
    "time_spine",
    "quote",
    "contract",
];
const COLUMN_KEYS: &[&str] = &[
    "name",
    "description",
    "data_type",
    "quote",
    "constraints",
    "meta",
    "tags",
    "tests",
    "data_tests",
    "policy_tags",
    "granularity",
    "config",
    "docs",
];
const SOURCE_KEYS: &[&str] = &[
    "name",
    "database",
    "schema",
    "description",
    "loader",
    "loaded_at_field",
    "freshness",
    "quoting",
    "meta",
    "tags",
    "config",
    "tables",
    "overrides",
    "catalog",
    "docs",
    "loaded_at_query",
    "event_time",
];
const TABLE_KEYS: &[&str] = &[
    "name",
    "identifier",
    "description",
    "loaded_at_field",
    "freshness",
    "quoting",
    "meta",
    "tags",
    "config",
    "columns",
    "tests",
    "data_tests",
    "external",
    "docs",
    "loaded_at_query",
    "event_time",
];
/// Test keys that are configs, not macro arguments (dbt accepts them at either place).
const TEST_CONFIG_KEYS: &[&str] = &[
    "severity",
    "tags",
    "enabled",
    "where",
    "limit",
    "warn_if",
    "error_if",
    "fail_calc",
    "store_failures",
    "store_failures_as",
    "meta",
    "database",
    "schema",
    "alias",
];

impl SchemaFile {
    pub fn load(path: &Path, package: &str, warnings: &mut Vec<Warning>) -> Result<SchemaFile, ProjectError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProjectError::io(path, e))?;
        let mut out = SchemaFile { path: path.to_path_buf(), package: package.to_string(), ..Default::default() };
        let Some(doc) = yaml::parse(path, &text)? else { return Ok(out) };
        let r = Reader { file: path, text: &text, warnings };
        let Some(entries) = doc.as_map() else {
            return Err(ProjectError::invalid_at(doc.location(path), "a schema file must be a mapping", &text));
        };
        let mut r = r;
        r.check_keys(entries, TOP_KEYS, "schema file");
        for (key, list) in [("models", 0), ("seeds", 1), ("snapshots", 2), ("analyses", 3)] {
            if let Some(items) = doc.get(key) {
                let patches = r.patches(items, key)?;
                match list {
                    0 => out.models = patches,
                    1 => out.seeds = patches,
                    2 => out.snapshots = patches,
                    _ => out.analyses = patches,
                }
            }
        }
        if let Some(items) = doc.get("sources") {
            for item in r.seq(items, "sources")? {
                out.sources.push(r.source(item)?);
            }
        }
        if let Some(items) = doc.get("unit_tests") {
            for item in r.seq(items, "unit_tests")? {
                out.unit_tests.push(r.unit_test(item)?);
            }
        }
        if let Some(items) = doc.get("semantic_models") {
            for item in r.seq(items, "semantic_models")? {
                let names = |key: &str| {
                    item.get(key).and_then(Node::as_seq).unwrap_or_default().iter().filter_map(|m| m.get("name")?.scalar_text()).collect()
                };
                out.semantic_models.push(SemanticModelDef {
                    name: r.name(item, "semantic_models")?,
                    model: item.get("model").and_then(Node::scalar_text).unwrap_or_default(),
                    measures: names("measures"),
                    location: item.location(path),
                });
            }
        }
        if let Some(items) = doc.get("metrics") {
            for item in r.seq(items, "metrics")? {
                let (mut measures, mut metrics) = (vec![], vec![]);
                if let Some(params) = item.get("type_params") {
                    metric_inputs(params, &mut measures, &mut metrics);
                }
                out.metrics.push(MetricDef { name: r.name(item, "metrics")?, measures, metrics, location: item.location(path) });
            }
        }
        if let Some(items) = doc.get("saved_queries") {
            for item in r.seq(items, "saved_queries")? {
                let metrics = item
                    .get("query_params")
                    .and_then(|q| q.get("metrics"))
                    .and_then(Node::as_seq)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Node::scalar_text)
                    .collect();
                out.saved_queries.push(SavedQueryDef {
                    name: r.name(item, "saved_queries")?,
                    description: Reader::text(item, "description"),
                    metrics,
                    config: r.config(item)?,
                    location: item.location(path),
                });
            }
        }
        Ok(out)
    }
}

/// The measures (`measure`, `base_measure`, `conversion_measure`) and metrics (`numerator`,
/// `denominator`, `metrics`) a metric's `type_params` name, each written as a name or as a
/// mapping with `name:`.
fn metric_inputs(node: &Node, measures: &mut Vec<String>, metrics: &mut Vec<String>) {
    let name_of = |n: &Node| n.scalar_text().or_else(|| n.get("name").and_then(Node::scalar_text));
    let Some(entries) = node.as_map() else { return };
    for (k, v) in entries {
        match k.key_text().as_deref() {
            Some("measure" | "base_measure" | "conversion_measure") => measures.extend(name_of(v)),
            Some("numerator" | "denominator") => metrics.extend(name_of(v)),
            Some("metrics") => metrics.extend(v.as_seq().unwrap_or_default().iter().filter_map(name_of)),
            _ if v.as_map().is_some() => metric_inputs(v, measures, metrics),
            _ => {}
        }
    }
}

const UNIT_TEST_KEYS: &[&str] = &["name", "model", "description", "given", "expect", "overrides", "config", "versions"];

impl Reader<'_> {
    fn unit_test(&mut self, item: &Node) -> Result<UnitTestDef, ProjectError> {
        let entries = self.map(item, "unit_tests")?;
        self.check_keys(entries, UNIT_TEST_KEYS, "a unit test");
        let name = self.name(item, "unit_tests")?;
        let model =
            item.get("model").and_then(Node::scalar_text).ok_or_else(|| self.err(item, format!("unit test '{name}' has no 'model'")))?;
        let mut given = vec![];
        if let Some(list) = item.get("given") {
            for g in self.seq(list, "given")? {
                let input = g
                    .get("input")
                    .and_then(Node::scalar_text)
                    .ok_or_else(|| self.err(g, format!("unit test '{name}': each 'given' entry needs an 'input' such as ref('orders')")))?;
                given.push((input, self.fixture(g, &name)?));
            }
        }
        let expect = match item.get("expect") {
            Some(e) => self.fixture(e, &name)?,
            None => return Err(self.err(item, format!("unit test '{name}' has no 'expect'"))),
        };
        let overrides = match item.get("overrides").map(Node::to_json) {
            Some(J::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(UnitTestDef {
            name,
            model,
            description: Self::text(item, "description"),
            given,
            expect,
            overrides,
            config: self.config(item)?,
            location: item.location(self.file),
        })
    }

    /// A `given` or `expect` entry's rows: inline (`rows:`), or from `fixture: NAME` (a
    /// `.csv` or `.sql` file under a test path's `fixtures/` folder).
    fn fixture(&self, node: &Node, test: &str) -> Result<Fixture, ProjectError> {
        let format = node.get("format").and_then(Node::scalar_text).unwrap_or_else(|| "dict".into());
        let rows = match (node.get("rows"), node.get("fixture").and_then(Node::scalar_text)) {
            (Some(rows), _) => rows.clone(),
            (None, Some(fixture)) => {
                let ext = if format == "sql" { "sql" } else { "csv" };
                let text = self.fixture_file(&fixture, ext).ok_or_else(|| {
                    self.err(node, format!("unit test '{test}': fixture '{fixture}' not found (tests/fixtures/{fixture}.{ext})"))
                })?;
                Node { value: yaml::Value::Str(text), line: node.line, col: node.col }
            }
            (None, None) => Node { value: yaml::Value::Seq(vec![]), line: node.line, col: node.col },
        };
        match format.as_str() {
            "dict" => {
                let mut out = vec![];
                for row in self.seq(&rows, "rows")? {
                    match row.to_json() {
                        J::Object(m) => out.push(m),
                        _ => return Err(self.err(row, format!("unit test '{test}': each row is a mapping of column to value"))),
                    }
                }
                Ok(Fixture::Rows(out))
            }
            "csv" => {
                let text = rows.as_str().ok_or_else(|| self.err(&rows, format!("unit test '{test}': csv rows are one text block")))?;
                let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
                let headers = reader.headers().map_err(|e| self.err(&rows, format!("unit test '{test}': {e}")))?.clone();
                let mut out = vec![];
                for record in reader.records() {
                    let record = record.map_err(|e| self.err(&rows, format!("unit test '{test}': {e}")))?;
                    out.push(
                        headers
                            .iter()
                            .zip(record.iter())
                            .map(|(h, v)| (h.to_string(), if v.is_empty() || v == "null" { J::Null } else { J::String(v.to_string()) }))
                            .collect(),
                    );
                }
                Ok(Fixture::Rows(out))
            }
            "sql" => Ok(Fixture::Sql(
                rows.as_str().map(str::to_string).ok_or_else(|| self.err(&rows, format!("unit test '{test}': sql rows are one query")))?,
            )),
            other => Err(self.err(node, format!("unit test '{test}': unknown format '{other}' (dict, csv or sql)"))),
        }
    }

    /// `tests/fixtures/NAME.EXT`, looked for from the schema file's folder up to the project.
    fn fixture_file(&self, name: &str, ext: &str) -> Option<String> {
        let mut dir = self.file.parent();
        while let Some(d) = dir {
            for candidate in [d.join("tests/fixtures"), d.join("fixtures")] {
                if let Some(text) = find_file(&candidate, &format!("{name}.{ext}")) {
                    return Some(text);
                }
            }
            if d.join("dbt_project.yml").exists() {
                break;
            }
            dir = d.parent();
        }
        None
    }
}

fn find_file(dir: &Path, file_name: &str) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = vec![];
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            subdirs.push(p);
        } else if p.file_name().is_some_and(|n| n == file_name) {
            return std::fs::read_to_string(&p).ok();
        }
    }
    subdirs.into_iter().find_map(|d| find_file(&d, file_name))
}

struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    warnings: &'a mut Vec<Warning>,
}

impl Reader<'_> {
    fn err(&self, node: &Node, message: impl Into<String>) -> ProjectError {
        ProjectError::invalid_at(node.location(self.file), message, self.text)
    }

    fn check_keys(&mut self, entries: &[(Node, Node)], known: &[&str], what: &str) {
        for (k, _) in entries {
            let key = k.key_text().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                let hint = closest(&key, known.iter().copied()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
                self.warnings.push(Warning { location: k.location(self.file), message: format!("unknown key '{key}' in {what}{hint}") });
            }
        }
    }

    fn seq<'n>(&self, node: &'n Node, what: &str) -> Result<&'n [Node], ProjectError> {
        if node.is_null() {
            return Ok(&[]);
        }
        node.as_seq().ok_or_else(|| self.err(node, format!("'{what}' must be a list")))
    }

    fn map<'n>(&self, node: &'n Node, what: &str) -> Result<&'n [(Node, Node)], ProjectError> {
        node.as_map().ok_or_else(|| self.err(node, format!("each entry of '{what}' must be a mapping")))
    }

    fn name(&self, node: &Node, what: &str) -> Result<String, ProjectError> {
        node.get("name").and_then(Node::scalar_text).ok_or_else(|| self.err(node, format!("an entry of '{what}' has no 'name'")))
    }

    fn text(node: &Node, key: &str) -> String {
        node.get(key).and_then(Node::scalar_text).unwrap_or_default()
    }

    fn config(&self, node: &Node) -> Result<ConfigMap, ProjectError> {
        let mut config = ConfigMap::new();
        for key in ["meta", "tags", "docs", "access", "group", "contract"] {
            if let Some(v) = node.get(key) {
                config.insert(key.to_string(), v.to_json());
            }
        }
        if let Some(c) = node.get("config") {
            match c.to_json() {
                J::Object(m) => merge(&mut config, &m),
                J::Null => {}
                _ => return Err(self.err(c, "'config' must be a mapping")),
            }
        }
        Ok(config)
    }

    fn patches(&mut self, items: &Node, what: &str) -> Result<Vec<Patch>, ProjectError> {
        let mut out = vec![];
        for item in self.seq(items, what)? {
            let entries = self.map(item, what)?;
            self.check_keys(entries, PATCH_KEYS, &format!("a '{what}' entry"));
            out.push(Patch {
                name: self.name(item, what)?,
                location: item.location(self.file),
                description: Self::text(item, "description"),
                config: self.config(item)?,
                columns: self.columns(item)?,
                tests: self.tests(item, None)?,
                relation: item.get("relation").and_then(Node::scalar_text),
                versions: self.versions(item)?,
                latest_version: item.get("latest_version").and_then(Node::scalar_text),
            });
        }
        Ok(out)
    }

    fn versions(&mut self, item: &Node) -> Result<Vec<VersionDef>, ProjectError> {
        let mut out = vec![];
        let Some(list) = item.get("versions") else { return Ok(out) };
        for v in self.seq(list, "versions")? {
            let number = v.get("v").and_then(Node::scalar_text).ok_or_else(|| self.err(v, "each entry of 'versions' needs a 'v:'"))?;
            let (mut include, mut exclude, mut named) = (None, vec![], vec![]);
            for c in v.get("columns").and_then(Node::as_seq).unwrap_or_default() {
                if let Some(inc) = c.get("include") {
                    include = inc.as_seq().map(|items| items.iter().filter_map(Node::scalar_text).collect());
                    exclude = c.get("exclude").and_then(Node::as_seq).unwrap_or_default().iter().filter_map(Node::scalar_text).collect();
                } else {
                    named.push(c.clone());
                }
            }
            let own = Node { value: yaml::Value::Seq(named), line: v.line, col: v.col };
            let holder =
                Node { value: yaml::Value::Map(vec![(Node::from_json(&J::String("columns".into())), own)]), line: v.line, col: v.col };
            out.push(VersionDef {
                v: number,
                defined_in: v.get("defined_in").and_then(Node::scalar_text),
                config: self.config(v)?,
                columns: self.columns(&holder)?,
                include,
                exclude,
            });
        }
        Ok(out)
    }

    fn columns(&mut self, parent: &Node) -> Result<Vec<ColumnDef>, ProjectError> {
        let mut out = vec![];
        let Some(items) = parent.get("columns") else { return Ok(out) };
        for item in self.seq(items, "columns")? {
            let entries = self.map(item, "columns")?;
            self.check_keys(entries, COLUMN_KEYS, "a column");
            let name = self.name(item, "columns")?;
            let cfg = item.get("config");
            let pick = |key: &str| item.get(key).or_else(|| cfg.and_then(|c| c.get(key)));
            out.push(ColumnDef {
                description: Self::text(item, "description"),
                data_type: item.get("data_type").and_then(Node::scalar_text),
                quote: matches!(item.get("quote").map(|n| &n.value), Some(yaml::Value::Bool(true))),
                constraints: item
                    .get("constraints")
                    .and_then(Node::as_seq)
                    .map(|s| s.iter().map(Node::to_json).collect())
                    .unwrap_or_default(),
                meta: pick("meta").map(Node::to_json).and_then(|v| v.as_object().cloned()).unwrap_or_default(),
                tags: crate::config::as_list(pick("tags").map(Node::to_json).as_ref())
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                tests: self.tests(item, Some(&name))?,
                location: item.location(self.file),
                name,
            });
        }
        Ok(out)
    }

    fn tests(&mut self, parent: &Node, column: Option<&str>) -> Result<Vec<TestDef>, ProjectError> {
        let mut out = vec![];
        for key in ["data_tests", "tests"] {
            let Some(items) = parent.get(key) else { continue };
            for item in self.seq(items, key)? {
                out.push(self.test(item, column)?);
            }
        }
        Ok(out)
    }

    fn test(&mut self, item: &Node, column: Option<&str>) -> Result<TestDef, ProjectError> {
        let location = item.location(self.file);
        let (full_name, body): (String, Option<&Node>) = if let Some(name) = item.as_str() {
            (name.to_string(), None)
        } else if let Some(entries) = item.as_map() {
            if let Some(test_name) = item.get("test_name").and_then(Node::scalar_text) {
                (test_name, Some(item))
            } else if entries.len() == 1 {
                let (k, v) = &entries[0];
                (k.key_text().unwrap_or_default(), Some(v))
            } else {
                return Err(self.err(item, "a test must be a name, or a mapping with one test name as its key"));
            }
        } else {
            return Err(self.err(item, "a test must be a name or a mapping"));
        };
        let (namespace, test_name) = match full_name.split_once('.') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, full_name.clone()),
        };
        let mut args = Map::new();
        let mut config = ConfigMap::new();
        let mut custom_name = None;
        if let Some(body) = body.filter(|b| !b.is_null()) {
            let Some(entries) = body.as_map() else {
                return Err(self.err(body, format!("the arguments of test '{full_name}' must be a mapping")));
            };
            for (k, v) in entries {
                let key = k.key_text().unwrap_or_default();
                match key.as_str() {
                    "test_name" => {}
                    "name" if body.get("test_name").is_some() || column.is_some() || v.as_str().is_some() => {
                        custom_name = v.scalar_text();
                    }
                    "config" => match v.to_json() {
                        J::Object(m) => merge(&mut config, &m),
                        _ => return Err(self.err(v, "a test's 'config' must be a mapping")),
                    },
                    "arguments" => match v.to_json() {
                        J::Object(m) => args.extend(m),
                        _ => return Err(self.err(v, "a test's 'arguments' must be a mapping")),
                    },
                    k2 if TEST_CONFIG_KEYS.contains(&k2) => {
                        config.insert(k2.to_string(), v.to_json());
                    }
                    _ => {
                        args.insert(key, v.to_json());
                    }
                }
            }
        }
        // A templated severity is checked once rendered, at parse.
        if let Some(J::String(sev)) = config.get("severity").filter(|s| !s.as_str().is_some_and(|s| s.contains("{{"))) {
            let upper = sev.to_uppercase();
            if upper != "WARN" && upper != "ERROR" {
                return Err(ProjectError::invalid_at(location, format!("severity must be 'warn' or 'error', not '{sev}'"), self.text));
            }
        }
        Ok(TestDef { namespace, test_name, custom_name, args, config, location })
    }

    fn source(&mut self, item: &Node) -> Result<SourceDef, ProjectError> {
        let entries = self.map(item, "sources")?;
        self.check_keys(entries, SOURCE_KEYS, "a source");
        let mut tables = vec![];
        if let Some(list) = item.get("tables") {
            for t in self.seq(list, "tables")? {
                let entries = self.map(t, "tables")?;
                self.check_keys(entries, TABLE_KEYS, "a source table");
                tables.push(SourceTable {
                    name: self.name(t, "tables")?,
                    identifier: t.get("identifier").and_then(Node::scalar_text),
                    description: Self::text(t, "description"),
                    config: self.config(t)?,
                    loaded_at_field: t.get("loaded_at_field").and_then(Node::scalar_text),
                    freshness: t.get("freshness").map(Node::to_json),
                    columns: self.columns(t)?,
                    tests: self.tests(t, None)?,
                    location: t.location(self.file),
                });
            }
        }
        Ok(SourceDef {
            name: self.name(item, "sources")?,
            database: item.get("database").and_then(Node::scalar_text),
            schema: item.get("schema").and_then(Node::scalar_text),
            description: Self::text(item, "description"),
            loader: Self::text(item, "loader"),
            config: self.config(item)?,
            loaded_at_field: item.get("loaded_at_field").and_then(Node::scalar_text),
            freshness: item.get("freshness").map(Node::to_json),
            quoting: item.get("quoting").map(Node::to_json).and_then(|v| v.as_object().cloned()).unwrap_or_default(),
            tables,
            location: item.location(self.file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (SchemaFile, Vec<Warning>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("schema.yml");
        std::fs::write(&p, text).unwrap();
        let mut w = vec![];
        (SchemaFile::load(&p, "shop", &mut w).unwrap(), w)
    }

    #[test]
    fn reads_column_tests_in_every_spelling() {
        let (s, w) = load(
            "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n        data_tests: [unique, not_null]\n      - name: status\n        tests:\n          - accepted_values:\n              values: [a, b]\n              config:\n                severity: warn\n      - name: customer_id\n        tests:\n          - relationships:\n              arguments:\n                to: ref('customers')\n                field: id\n              where: \"1=1\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
        let cols = &s.models[0].columns;
        assert_eq!(cols[0].tests.iter().map(|t| t.test_name.as_str()).collect::<Vec<_>>(), ["unique", "not_null"]);
        assert_eq!(cols[1].tests[0].args["values"], serde_json::json!(["a", "b"]));
        assert_eq!(cols[1].tests[0].config["severity"], serde_json::json!("warn"));
        assert_eq!(cols[2].tests[0].args["to"], serde_json::json!("ref('customers')"));
        assert_eq!(cols[2].tests[0].config["where"], serde_json::json!("1=1"));
    }

    #[test]
    fn misspelled_keys_warn_at_their_place() {
        let (_, w) = load("version: 2\nmodels:\n  - name: orders\n    descripton: x\n");
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].location.line, w[0].location.col), (4, 5));
        assert!(w[0].message.contains("did you mean 'description'"));
    }

    #[test]
    fn sources_keep_their_tables() {
        let (s, _) = load(
            "version: 2\nsources:\n  - name: raw\n    schema: landing\n    tables:\n      - name: orders\n        identifier: orders_v2\n",
        );
        assert_eq!(s.sources[0].schema.as_deref(), Some("landing"));
        assert_eq!(s.sources[0].tables[0].identifier.as_deref(), Some("orders_v2"));
    }
}
