//! `pipelines/*.yml`: what a pipeline is, read and validated before anything runs.
//!
//! A pipeline file names its schedule and its tasks; each task has exactly one kind key
//! (`build`, `load`, `sql`, `shell`, `http`, `sensor`, `pipeline`) and the keys every task
//! shares (`after`, `trigger_rule`, retries, `timeout`, `pool`). Unknown keys, unknown task
//! kinds, dependencies on tasks that do not exist, cycles, bad cron expressions and time zones
//! are errors that name file:line:col, found when the file is loaded.
//!
//! ```yaml
//! schedule: "0 2 * * *"
//! timezone: Europe/Amsterdam
//! start_date: 2024-01-01
//! defaults: {retries: 2, retry_delay: 30s}
//! tasks:
//!   load: {load: [orders, customers]}
//!   transform: {build: "+daily_revenue", after: load}
//!   report: {shell: "echo {{ ds }}", after: transform, trigger_rule: all_done}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value as J};
use weir_core::Location;
use weir_core::duration::parse_duration;
use weir_project::yaml::{Node, Value};

use crate::OrchestrateError;
use crate::alert::{Alert, AlertEvent, Channel};
use crate::schedule::{Schedule, parse_time, parse_tz};

/// Every pipeline of a project, by name (the file's stem).
#[derive(Debug, Clone, Default)]
pub struct Pipelines {
    pub by_name: BTreeMap<String, Pipeline>,
}

/// One pipeline: a DAG of tasks and when to run it.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    /// `None`: runs only when asked (manually, by another pipeline, or by a backfill).
    pub schedule: Option<Schedule>,
    pub tz: Tz,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    /// Whether the scheduler creates runs for intervals missed while it was not running.
    pub catchup: bool,
    pub max_active_runs: usize,
    pub max_active_tasks: usize,
    /// Params and their defaults; a manual run may override them, and may not add others.
    pub params: Map<String, J>,
    /// Tasks in the order the file lists them; `after` always names earlier-validated tasks.
    pub tasks: Vec<Task>,
    /// Alerts on task failures and retries, run success, and a missed deadline.
    pub alerts: Vec<Alert>,
    /// How long after it starts a run should be done; past it, `deadline` alerts fire.
    pub deadline: Option<Duration>,
}

/// One task of a pipeline.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    /// Where the task is written, for messages.
    pub location: Location,
    pub kind: TaskKind,
    /// Tasks that must finish (as the trigger rule says) before this one starts.
    pub after: Vec<String>,
    pub trigger_rule: TriggerRule,
    pub retry: Retry,
    /// How long one attempt may run before it is killed (for a sensor: how long it waits).
    pub timeout: Option<Duration>,
    /// A named pool (`pools:` in `weir.yml`) whose slots limit how many such tasks run at once.
    pub pool: Option<String>,
    /// Extra environment for the task's process, templated.
    pub env: Vec<(String, String)>,
    /// For `sql` and `http` tasks: the name under which the result is published for later tasks.
    pub xcom: Option<String>,
}

/// What a task does.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// `weir build` of a selection (loads, seeds, models, snapshots, tests, checks).
    Build { select: Vec<String>, exclude: Vec<String>, full_refresh: bool },
    /// `weir load` of named loads (all of them when none are named).
    Load { loads: Vec<String>, full_refresh: bool },
    /// SQL statements against the warehouse (a profile target, or the default one).
    Sql { sql: String, target: Option<String> },
    /// A command run by `sh -c` in the project folder, with the run's context in its environment.
    Shell { command: String },
    /// An HTTP request and the statuses that count as success.
    Http(HttpCall),
    /// A condition polled until it holds, without holding a worker slot in between.
    Sensor(Sensor),
    /// Another pipeline, run for the same data interval; the task succeeds when it does.
    Pipeline { name: String, params: Map<String, J> },
}

/// An HTTP request made by a task.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Statuses that mean success; empty means any 2xx.
    pub expect: Vec<u16>,
}

/// A sensor: what it waits for and how often it looks.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub condition: Condition,
    pub poke_interval: Duration,
}

/// What a sensor waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A file or glob (relative to the project folder) matches at least one file.
    File(String),
    /// A query whose first value is true (true, a non-zero number, a non-empty text).
    Sql { sql: String, target: Option<String> },
    /// An endpoint answers this status.
    Http { url: String, status: u16 },
    /// An asset (a load's name or destination table) was updated at or after the end of the
    /// run's data interval.
    Asset(String),
}

/// When a task runs, given how the tasks it runs after ended (Airflow's trigger rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerRule {
    AllSuccess,
    AllFailed,
    AllDone,
    OneSuccess,
    OneFailed,
    NoneFailed,
    NoneSkipped,
}

/// How a failed attempt is retried: the n-th retry waits
/// `min(delay * backoff^(n-1), max_delay)`, spread by up to ±20% when `jitter` is on so that
/// tasks failing together do not retry together.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub retries: u32,
    pub delay: Duration,
    pub backoff: f64,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { retries: 0, delay: Duration::from_secs(30), backoff: 2.0, max_delay: Duration::from_secs(3600), jitter: true }
    }
}

impl Retry {
    /// The wait before retry number `n` (1 for the first retry), without jitter.
    pub fn base_delay(&self, n: u32) -> Duration {
        let factor = self.backoff.max(1.0).powi(n.saturating_sub(1).min(64) as i32);
        let secs = (self.delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The wait before retry number `n`, jittered when asked.
    pub fn delay_before(&self, n: u32) -> Duration {
        let base = self.base_delay(n);
        if !self.jitter {
            return base;
        }
        let spread = 0.8 + 0.4 * fastrand::f64();
        Duration::from_secs_f64((base.as_secs_f64() * spread).min(self.max_delay.as_secs_f64()))
    }
}

impl TriggerRule {
    const NAMES: &[(&str, TriggerRule)] = &[
        ("all_success", TriggerRule::AllSuccess),
        ("all_failed", TriggerRule::AllFailed),
        ("all_done", TriggerRule::AllDone),
        ("one_success", TriggerRule::OneSuccess),
        ("one_failed", TriggerRule::OneFailed),
        ("none_failed", TriggerRule::NoneFailed),
        ("none_skipped", TriggerRule::NoneSkipped),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, r)| *r == self).map(|(n, _)| *n).unwrap_or("all_success")
    }
}

/// The task kinds, each a key of its own in a task.
pub const TASK_KINDS: &[&str] = &["build", "load", "sql", "shell", "http", "sensor", "pipeline"];

/// Keys every task may have, whatever its kind; `defaults:` may set the first ones.
const DEFAULTABLE: &[&str] = &["retries", "retry_delay", "retry_backoff", "max_retry_delay", "retry_jitter", "timeout", "pool", "env"];
const COMMON: &[&str] = &["after", "trigger_rule", "description"];

impl Pipelines {
    /// Reads every `*.yml`/`*.yaml` under `dir` (none if it does not exist).
    pub fn load(dir: &Path) -> Result<Pipelines, OrchestrateError> {
        let mut out = Pipelines::default();
        if !dir.is_dir() {
            return Ok(out);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| OrchestrateError::Io { path: dir.display().to_string(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|source| OrchestrateError::Io { path: file.display().to_string(), source })?;
            let p = Pipeline::parse(&file, &text)?;
            if let Some(other) = out.by_name.get(&p.name) {
                return Err(OrchestrateError::Invalid {
                    location: Location::file(&file),
                    message: format!("a pipeline named '{}' is already defined in {}", p.name, other.file.display()),
                    snippet: None,
                });
            }
            out.by_name.insert(p.name.clone(), p);
        }
        out.check_pipeline_tasks()?;
        Ok(out)
    }

    /// The pipeline of that name, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Pipeline, OrchestrateError> {
        self.by_name.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none; add pipelines/NAME.yml".to_string() } else { known.join(", ") };
            OrchestrateError::Request(format!("no pipeline named '{name}' (pipelines: {known})"))
        })
    }

    /// `pipeline` tasks must name a pipeline that exists, and pipelines may not trigger
    /// each other in a circle.
    fn check_pipeline_tasks(&self) -> Result<(), OrchestrateError> {
        let invalid = |t: &Task, message: String| OrchestrateError::Invalid { location: t.location.clone(), message, snippet: None };
        for p in self.by_name.values() {
            for t in &p.tasks {
                if let TaskKind::Pipeline { name, params } = &t.kind {
                    let Some(other) = self.by_name.get(name) else {
                        let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                        return Err(invalid(
                            t,
                            format!("task '{}' triggers pipeline '{name}', which does not exist (pipelines: {})", t.name, known.join(", ")),
                        ));
                    };
                    if let Some(k) = params.keys().find(|k| !other.params.contains_key(*k)) {
                        return Err(invalid(t, format!("task '{}' passes param '{k}', which pipeline '{name}' does not declare", t.name)));
                    }
                }
            }
        }
        // Depth-first search over "pipeline A has a task triggering B".
        fn visit<'a>(p: &'a str, all: &'a Pipelines, path: &mut Vec<&'a str>) -> Option<(String, String)> {
            if let Some(i) = path.iter().position(|x| *x == p) {
                return Some((path[i].to_string(), format!("{} -> {p}", path[i..].join(" -> "))));
            }
            path.push(p);
            for t in all.by_name.get(p).map(|x| x.tasks.as_slice()).unwrap_or_default() {
                if let TaskKind::Pipeline { name, .. } = &t.kind
                    && let Some(found) = visit(name, all, path)
                {
                    return Some(found);
                }
            }
            path.pop();
            None
        }
        for name in self.by_name.keys() {
            if let Some((first, cycle)) = visit(name, self, &mut Vec::new()) {
                let file = self.by_name.get(&first).map(|p| p.file.clone()).unwrap_or_default();
                return Err(OrchestrateError::Invalid {
                    location: Location::file(file),
                    message: format!("pipelines trigger each other in a circle: {cycle}"),
                    snippet: None,
                });
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// Reads and validates one pipeline file.
    pub fn parse(file: &Path, text: &str) -> Result<Pipeline, OrchestrateError> {
        let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let r = Reader { file, text };
        let Some(root) = weir_project::yaml::parse(file, text)? else {
            return Err(r.err_at(Location::file(file), "the file is empty; a pipeline needs at least `tasks:`"));
        };
        r.map(
            &root,
            "a pipeline",
            &[
                "description",
                "schedule",
                "timezone",
                "start_date",
                "end_date",
                "catchup",
                "max_active_runs",
                "max_active_tasks",
                "params",
                "defaults",
                "tasks",
                "alerts",
                "deadline",
            ],
        )?;
        let tz = match root.get("timezone") {
            Some(n) => parse_tz(&r.text(n, "timezone")?).map_err(|m| r.err(n, m))?,
            None => Tz::UTC,
        };
        let schedule = match root.get("schedule") {
            None => None,
            Some(n) if n.is_null() => None,
            Some(n) => {
                let expr = r.text(n, "schedule")?;
                if expr.eq_ignore_ascii_case("none") || expr.eq_ignore_ascii_case("manual") {
                    None
                } else {
                    Some(Schedule::parse(&expr, tz).map_err(|m| r.err(n, format!("schedule: {m}")))?)
                }
            }
        };
        let time = |key: &str| -> Result<Option<DateTime<Utc>>, OrchestrateError> {
            match root.get(key) {
                None => Ok(None),
                Some(n) => parse_time(&r.text(n, key)?, tz).map(Some).map_err(|m| r.err(n, format!("{key}: {m}"))),
            }
        };
        let (start_date, end_date) = (time("start_date")?, time("end_date")?);
        if let (Some(s), Some(e), Some(n)) = (start_date, end_date, root.get("end_date"))
            && e <= s
        {
            return Err(r.err(n, "end_date must be after start_date"));
        }
        let catchup = root.get("catchup").map(|n| r.flag(n, "catchup")).transpose()?.unwrap_or(false);
        if catchup && start_date.is_none() {
            let n = root.get("catchup").unwrap_or(&root);
            return Err(r.err(n, "catchup needs a start_date: the first interval to catch up from"));
        }
        let max_active_runs = root.get("max_active_runs").map(|n| r.count(n, "max_active_runs")).transpose()?.unwrap_or(16);
        let max_active_tasks = root.get("max_active_tasks").map(|n| r.count(n, "max_active_tasks")).transpose()?.unwrap_or(16);
        let params = match root.get("params") {
            None => Map::new(),
            Some(n) => {
                r.map(n, "params", &[]).or_else(|e| if n.as_map().is_some() { Ok(&[][..]) } else { Err(e) })?;
                match n.to_json() {
                    J::Object(m) => m,
                    _ => Map::new(),
                }
            }
        };
        let defaults = match root.get("defaults") {
            Some(n) => {
                r.map(n, "defaults", DEFAULTABLE)?;
                Some(n)
            }
            None => None,
        };
        let Some(tasks_node) = root.get("tasks") else {
            return Err(r.err(&root, "a pipeline needs `tasks:`, a mapping of task names to tasks"));
        };
        let entries = tasks_node.as_map().ok_or_else(|| r.err(tasks_node, "tasks must be a mapping of task names to tasks"))?;
        if entries.is_empty() {
            return Err(r.err(tasks_node, "a pipeline needs at least one task"));
        }
        let mut tasks = Vec::with_capacity(entries.len());
        let mut after_nodes: HashMap<String, Vec<&Node>> = HashMap::new();
        for (k, v) in entries {
            let name = k.key_text().unwrap_or_default();
            if !valid_name(&name) {
                return Err(r.err(k, format!("'{name}' is not a task name (letters, digits, _ and -)")));
            }
            if tasks.iter().any(|t: &Task| t.name == name) {
                return Err(r.err(k, format!("task '{name}' is defined twice")));
            }
            let (task, after) = r.task(&name, k, v, defaults)?;
            after_nodes.insert(name, after);
            tasks.push(task);
        }
        for t in &tasks {
            for n in after_nodes.get(&t.name).into_iter().flatten() {
                let dep = n.scalar_text().unwrap_or_default();
                if dep == t.name {
                    return Err(r.err(n, format!("task '{}' cannot run after itself", t.name)));
                }
                if !tasks.iter().any(|x| x.name == dep) {
                    let names: Vec<&str> = tasks.iter().map(|x| x.name.as_str()).collect();
                    return Err(r.err(
                        n,
                        format!("task '{}' runs after '{dep}', which is not a task of this pipeline (tasks: {})", t.name, names.join(", ")),
                    ));
                }
            }
        }
        if let Some(cycle) = find_cycle(&tasks) {
            let first = tasks.iter().find(|t| t.name == cycle[0]).map(|t| t.location.clone()).unwrap_or_else(|| Location::file(file));
            return Err(r.err_at(first, format!("tasks depend on each other in a circle: {}", cycle.join(" -> "))));
        }
        for t in &tasks {
            if let TaskKind::Pipeline { name: other, .. } = &t.kind
                && *other == name
            {
                return Err(r.err_at(t.location.clone(), format!("task '{}' triggers its own pipeline", t.name)));
            }
        }
        let description = root.get("description").map(|n| r.text(n, "description")).transpose()?;
        let alerts = root.get("alerts").map(|n| r.alerts(n)).transpose()?.unwrap_or_default();
        let deadline = root.get("deadline").map(|n| r.duration(n, "deadline")).transpose()?;
        if deadline.is_some()
            && !alerts.iter().any(|a| a.on.contains(&AlertEvent::Deadline))
            && let Some(n) = root.get("deadline")
        {
            return Err(r.err(n, "a deadline needs an alert with `on: deadline` to tell someone it was missed"));
        }
        Ok(Pipeline {
            name,
            file: file.to_path_buf(),
            description,
            schedule,
            tz,
            start_date,
            end_date,
            catchup,
            max_active_runs,
            max_active_tasks,
            params,
            tasks,
            alerts,
            deadline,
        })
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// Params for a run: the declared defaults, overridden by `given`; an undeclared name is
    /// an error naming the declared ones.
    pub fn resolve_params(&self, given: &Map<String, J>) -> Result<Map<String, J>, OrchestrateError> {
        let mut out = self.params.clone();
        for (k, v) in given {
            if !self.params.contains_key(k) {
                let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
                let known = if known.is_empty() { "it declares none".to_string() } else { format!("declared: {}", known.join(", ")) };
                return Err(OrchestrateError::Request(format!("pipeline '{}' has no param '{k}' ({known})", self.name)));
            }
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    }
}

/// Reads typed values out of YAML nodes, with errors that point at them.
struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn err(&self, node: &Node, message: impl Into<String>) -> OrchestrateError {
        self.err_at(node.location(self.file), message)
    }

    fn err_at(&self, location: Location, message: impl Into<String>) -> OrchestrateError {
        let snippet = location.snippet(self.text).map(|s| s.to_string());
        OrchestrateError::Invalid { location, message: message.into(), snippet }
    }

    /// The entries of a mapping whose keys must all be `known` (any key when `known` is empty
    /// and the node is a mapping).
    fn map<'n>(&self, node: &'n Node, what: &str, known: &[&str]) -> Result<&'n [(Node, Node)], OrchestrateError> {
        let entries = node.as_map().ok_or_else(|| self.err(node, format!("{what} must be a mapping")))?;
        for (k, _) in entries {
            let key = k.key_text().unwrap_or_default();
            if !known.is_empty() && !known.contains(&key.as_str()) {
                return Err(self.err(k, format!("unknown key '{key}' in {what} (known: {})", known.join(", "))));
            }
        }
        Ok(entries)
    }

    fn text(&self, node: &Node, what: &str) -> Result<String, OrchestrateError> {
        match &node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => Ok(node.scalar_text().unwrap_or_default()),
            _ => Err(self.err(node, format!("{what} must be a text"))),
        }
    }

    /// A text or a list of texts.
    fn texts(&self, node: &Node, what: &str) -> Result<Vec<String>, OrchestrateError> {
        match &node.value {
            Value::Seq(items) => items.iter().map(|i| self.text(i, what)).collect(),
            Value::Null => Ok(Vec::new()),
            _ => Ok(vec![self.text(node, what)?]),
        }
    }

    fn flag(&self, node: &Node, what: &str) -> Result<bool, OrchestrateError> {
        match node.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.err(node, format!("{what} must be true or false"))),
        }
    }

    fn count(&self, node: &Node, what: &str) -> Result<usize, OrchestrateError> {
        match node.value {
            Value::Int(i) if i >= 1 => Ok(i as usize),
            _ => Err(self.err(node, format!("{what} must be a whole number of at least 1"))),
        }
    }

    fn duration(&self, node: &Node, what: &str) -> Result<Duration, OrchestrateError> {
        let text = self.text(node, what)?;
        parse_duration(&text)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| self.err(node, format!("{what}: '{text}' is not a duration (write 30s, 5m, 1h30m, 250ms)")))
    }

    fn pairs(&self, node: &Node, what: &str) -> Result<Vec<(String, String)>, OrchestrateError> {
        self.map(node, what, &[])?
            .iter()
            .map(|(k, v)| Ok((k.key_text().unwrap_or_default(), self.text(v, &format!("{what}.{}", k.key_text().unwrap_or_default()))?)))
            .collect()
    }

    /// One task, and the nodes of its `after:` entries (checked once every task is known).
    fn task<'n>(&self, name: &str, key: &Node, node: &'n Node, defaults: Option<&Node>) -> Result<(Task, Vec<&'n Node>), OrchestrateError> {
        let entries = node
            .as_map()
            .ok_or_else(|| self.err(node, format!("task '{name}' must be a mapping with one of: {}", TASK_KINDS.join(", "))))?;
        let kinds: Vec<&(Node, Node)> =
            entries.iter().filter(|(k, _)| TASK_KINDS.contains(&k.key_text().unwrap_or_default().as_str())).collect();
        let kind_entry = match kinds.as_slice() {
            [one] => *one,
            [] => {
                let unknown = entries.iter().map(|(k, _)| k).find(|k| {
                    let t = k.key_text().unwrap_or_default();
                    !COMMON.contains(&t.as_str())
                        && !DEFAULTABLE.contains(&t.as_str())
                        && !KIND_KEYS.iter().any(|(_, keys)| keys.contains(&t.as_str()))
                });
                return Err(match unknown {
                    Some(k) => self.err(
                        k,
                        format!(
                            "'{}' is not a task kind (task '{name}' needs one of: {})",
                            k.key_text().unwrap_or_default(),
                            TASK_KINDS.join(", ")
                        ),
                    ),
                    None => self.err(key, format!("task '{name}' needs one of: {}", TASK_KINDS.join(", "))),
                });
            }
            [_, second, ..] => {
                return Err(
                    self.err(&second.0, format!("task '{name}' has two kinds; a task does one thing (one of: {})", TASK_KINDS.join(", ")))
                );
            }
        };
        let kind_name = kind_entry.0.key_text().unwrap_or_default();
        let own: &[&str] = KIND_KEYS.iter().find(|(k, _)| *k == kind_name).map(|(_, keys)| *keys).unwrap_or_default();
        for (k, _) in entries {
            let t = k.key_text().unwrap_or_default();
            if t != kind_name && !COMMON.contains(&t.as_str()) && !DEFAULTABLE.contains(&t.as_str()) && !own.contains(&t.as_str()) {
                let mut known: Vec<&str> = COMMON.iter().chain(DEFAULTABLE).chain(own).copied().collect();
                known.sort();
                return Err(self.err(k, format!("unknown key '{t}' in {kind_name} task '{name}' (known: {})", known.join(", "))));
            }
        }
        let field = |k: &str| node.get(k).or_else(|| if DEFAULTABLE.contains(&k) { defaults.and_then(|d| d.get(k)) } else { None });
        let body = &kind_entry.1;
        let what = format!("task '{name}'");
        let kind = match kind_name.as_str() {
            "build" => {
                let select = self.texts(body, &format!("{what}: build"))?;
                if select.is_empty() {
                    return Err(self.err(body, format!("{what}: build needs a selection, such as \"+daily_revenue\" or \"tag:nightly\"")));
                }
                let exclude = node.get("exclude").map(|n| self.texts(n, "exclude")).transpose()?.unwrap_or_default();
                let full_refresh = node.get("full_refresh").map(|n| self.flag(n, "full_refresh")).transpose()?.unwrap_or(false);
                TaskKind::Build { select, exclude, full_refresh }
            }
            "load" => {
                let loads = self.texts(body, &format!("{what}: load"))?;
                let full_refresh = node.get("full_refresh").map(|n| self.flag(n, "full_refresh")).transpose()?.unwrap_or(false);
                TaskKind::Load { loads, full_refresh }
            }
            "sql" => TaskKind::Sql {
                sql: self.text(body, &format!("{what}: sql"))?,
                target: node.get("target").map(|n| self.text(n, "target")).transpose()?,
            },
            "shell" => TaskKind::Shell { command: self.text(body, &format!("{what}: shell"))? },
            "http" => TaskKind::Http(self.http(body, &what)?),
            "sensor" => {
                let poke_interval =
                    node.get("poke_interval").map(|n| self.duration(n, "poke_interval")).transpose()?.unwrap_or(Duration::from_secs(30));
                if poke_interval.is_zero() {
                    return Err(self.err(node.get("poke_interval").unwrap_or(node), "poke_interval must be more than 0s"));
                }
                TaskKind::Sensor(Sensor { condition: self.condition(body, &what)?, poke_interval })
            }
            "pipeline" => {
                let params = match node.get("params") {
                    Some(p) => match (self.map(p, "params", &[])?, p.to_json()) {
                        (_, J::Object(m)) => m,
                        _ => Map::new(),
                    },
                    None => Map::new(),
                };
                TaskKind::Pipeline { name: self.text(body, &format!("{what}: pipeline"))?, params }
            }
            _ => unreachable!("kind keys are filtered to TASK_KINDS above"),
        };
        let after_nodes: Vec<&Node> = match node.get("after") {
            None => Vec::new(),
            Some(n) => match &n.value {
                Value::Seq(items) => items.iter().collect(),
                Value::Null => Vec::new(),
                _ => vec![n],
            },
        };
        for n in &after_nodes {
            self.text(n, "after")?;
        }
        let trigger_rule = match node.get("trigger_rule") {
            None => TriggerRule::AllSuccess,
            Some(n) => {
                let t = self.text(n, "trigger_rule")?;
                TriggerRule::NAMES.iter().find(|(k, _)| *k == t).map(|(_, r)| *r).ok_or_else(|| {
                    let names: Vec<&str> = TriggerRule::NAMES.iter().map(|(k, _)| *k).collect();
                    self.err(n, format!("'{t}' is not a trigger rule (rules: {})", names.join(", ")))
                })?
            }
        };
        let mut retry = Retry::default();
        if let Some(n) = field("retries") {
            retry.retries = match n.value {
                Value::Int(i) if (0..=1000).contains(&i) => i as u32,
                _ => return Err(self.err(n, "retries must be a whole number from 0 to 1000")),
            };
        }
        if let Some(n) = field("retry_delay") {
            retry.delay = self.duration(n, "retry_delay")?;
        }
        if let Some(n) = field("max_retry_delay") {
            retry.max_delay = self.duration(n, "max_retry_delay")?;
        }
        if let Some(n) = field("retry_backoff") {
            retry.backoff = match n.value {
                Value::Int(i) if (1..=100).contains(&i) => i as f64,
                Value::Float(f) if (1.0..=100.0).contains(&f) => f,
                _ => return Err(self.err(n, "retry_backoff is the multiplier between retries, from 1 (constant) to 100")),
            };
        }
        if let Some(n) = field("retry_jitter") {
            retry.jitter = self.flag(n, "retry_jitter")?;
        }
        let timeout = field("timeout").map(|n| self.duration(n, "timeout")).transpose()?;
        if let (Some(t), Some(n)) = (timeout, field("timeout"))
            && t.is_zero()
        {
            return Err(self.err(n, "timeout must be more than 0s"));
        }
        let pool = field("pool").map(|n| self.text(n, "pool")).transpose()?;
        let mut env = defaults.and_then(|d| d.get("env")).map(|n| self.pairs(n, "env")).transpose()?.unwrap_or_default();
        if let Some(n) = node.get("env") {
            for (k, v) in self.pairs(n, "env")? {
                env.retain(|(x, _)| *x != k);
                env.push((k, v));
            }
        }
        let xcom = node.get("xcom").map(|n| self.text(n, "xcom")).transpose()?;
        if let (Some(x), Some(n)) = (&xcom, node.get("xcom"))
            && !valid_name(x)
        {
            return Err(self.err(n, format!("'{x}' is not a value name (letters, digits, _ and -)")));
        }
        let task = Task {
            name: name.to_string(),
            location: key.location(self.file),
            kind,
            after: after_nodes.iter().filter_map(|n| n.scalar_text()).collect(),
            trigger_rule,
            retry,
            timeout,
            pool,
            env,
            xcom,
        };
        Ok((task, after_nodes))
    }

    fn alerts(&self, node: &Node) -> Result<Vec<Alert>, OrchestrateError> {
        let items = node.as_seq().ok_or_else(|| self.err(node, "alerts must be a list, each with `on:` and `webhook:` or `email:`"))?;
        let mut out = Vec::new();
        for item in items {
            let entries =
                item.as_map().ok_or_else(|| self.err(item, "an alert must be a mapping with `on:` and `webhook:` or `email:`"))?;
            // YAML 1.1, which dbt's PyYAML reads, turns a plain `on` into `true`.
            let key = |k: &Node| if k.value == Value::Bool(true) { "on".to_string() } else { k.key_text().unwrap_or_default() };
            for (k, _) in entries {
                let name = key(k);
                if !["on", "webhook", "headers", "email"].contains(&name.as_str()) {
                    return Err(self.err(k, format!("unknown key '{name}' in an alert (known: on, webhook, headers, email)")));
                }
            }
            let on_node = entries.iter().find(|(k, _)| key(k) == "on").map(|(_, v)| v);
            let on = match on_node {
                None => vec![AlertEvent::Failure],
                Some(n) => self
                    .texts(n, "on")?
                    .iter()
                    .map(|e| {
                        AlertEvent::ALL.iter().find(|(k, _)| k == e).map(|(_, v)| *v).ok_or_else(|| {
                            let names: Vec<&str> = AlertEvent::ALL.iter().map(|(k, _)| *k).collect();
                            self.err(n, format!("'{e}' is not an alert event (events: {})", names.join(", ")))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let channel = match (item.get("webhook"), item.get("email")) {
                (Some(url), None) => Channel::Webhook {
                    url: self.text(url, "webhook")?,
                    headers: item.get("headers").map(|h| self.pairs(h, "headers")).transpose()?.unwrap_or_default(),
                },
                (None, Some(e)) => {
                    self.map(e, "email", &["to", "from", "smtp"])?;
                    let need = |k: &str| e.get(k).ok_or_else(|| self.err(e, format!("email needs `{k}:`")));
                    let to = self.texts(need("to")?, "to")?;
                    if to.is_empty() {
                        return Err(self.err(e, "email needs at least one address in `to:`"));
                    }
                    if item.get("headers").is_some() {
                        return Err(self.err(item, "headers go with a webhook, not an email"));
                    }
                    Channel::Email { smtp: self.text(need("smtp")?, "smtp")?, from: self.text(need("from")?, "from")?, to }
                }
                _ => return Err(self.err(item, "an alert has one of `webhook:` (a URL) or `email:` ({to, from, smtp})")),
            };
            out.push(Alert { on, channel });
        }
        Ok(out)
    }

    fn http(&self, body: &Node, what: &str) -> Result<HttpCall, OrchestrateError> {
        if body.as_str().is_some() {
            return Ok(HttpCall { method: "GET".into(), url: self.text(body, what)?, headers: Vec::new(), body: None, expect: Vec::new() });
        }
        self.map(body, &format!("{what}: http"), &["url", "method", "headers", "body", "expect"])?;
        let url = body.get("url").ok_or_else(|| self.err(body, format!("{what}: http needs a url")))?;
        let method = body.get("method").map(|n| self.text(n, "method")).transpose()?.unwrap_or_else(|| "GET".into()).to_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
            return Err(self.err(
                body.get("method").unwrap_or(body),
                format!("'{method}' is not an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD)"),
            ));
        }
        let body_text = match body.get("body") {
            None => None,
            Some(n) if n.as_map().is_some() || n.as_seq().is_some() => Some(n.to_json().to_string()),
            Some(n) => Some(self.text(n, "body")?),
        };
        let expect = match body.get("expect") {
            None => Vec::new(),
            Some(n) => self
                .texts(n, "expect")?
                .iter()
                .map(|s| {
                    s.parse::<u16>()
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .ok_or_else(|| self.err(n, format!("expect: '{s}' is not an HTTP status")))
                })
                .collect::<Result<_, _>>()?,
        };
        let headers = body.get("headers").map(|n| self.pairs(n, "headers")).transpose()?.unwrap_or_default();
        Ok(HttpCall { method, url: self.text(url, "url")?, headers, body: body_text, expect })
    }

    fn condition(&self, body: &Node, what: &str) -> Result<Condition, OrchestrateError> {
        let entries = self.map(body, &format!("{what}: sensor"), &["file", "sql", "target", "http", "status", "asset"])?;
        let conditions: Vec<&Node> = entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| ["file", "sql", "http", "asset"].contains(&k.key_text().unwrap_or_default().as_str()))
            .collect();
        if conditions.len() != 1 {
            return Err(self.err(body, format!("{what}: a sensor waits for one of: file, sql, http, asset")));
        }
        let key = conditions[0].key_text().unwrap_or_default();
        let value = body.get(&key).unwrap_or(body);
        let extra = |allowed: &str| -> Result<(), OrchestrateError> {
            for (k, _) in entries {
                let t = k.key_text().unwrap_or_default();
                if t != key && t != allowed {
                    return Err(self.err(k, format!("'{t}' does not go with a {key} sensor")));
                }
            }
            Ok(())
        };
        Ok(match key.as_str() {
            "file" => {
                extra("")?;
                let pattern = self.text(value, "file")?;
                glob::Pattern::new(&pattern).map_err(|e| self.err(value, format!("'{pattern}' is not a file pattern: {e}")))?;
                Condition::File(pattern)
            }
            "sql" => {
                extra("target")?;
                Condition::Sql { sql: self.text(value, "sql")?, target: body.get("target").map(|n| self.text(n, "target")).transpose()? }
            }
            "http" => {
                extra("status")?;
                let status = match body.get("status") {
                    None => 200,
                    Some(n) => match n.value {
                        Value::Int(i) if (100..600).contains(&i) => i as u16,
                        _ => return Err(self.err(n, "status must be an HTTP status, such as 200")),
                    },
                };
                Condition::Http { url: self.text(value, "http")?, status }
            }
            _ => {
                extra("")?;
                Condition::Asset(self.text(value, "asset")?)
            }
        })
    }
}

/// Keys that belong to one task kind only.
const KIND_KEYS: &[(&str, &[&str])] = &[
    ("build", &["exclude", "full_refresh"]),
    ("load", &["full_refresh"]),
    ("sql", &["target", "xcom"]),
    ("shell", &[]),
    ("http", &["xcom"]),
    ("sensor", &["poke_interval"]),
    ("pipeline", &["params"]),
];

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One cycle among the tasks' `after` edges, as task names with the first repeated last.
fn find_cycle(tasks: &[Task]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; tasks.len()];
    let mut path = Vec::new();
    fn dfs(i: usize, tasks: &[Task], index: &HashMap<&str, usize>, mark: &mut [u8], path: &mut Vec<usize>) -> Option<Vec<String>> {
        mark[i] = 1;
        path.push(i);
        for dep in &tasks[i].after {
            let Some(&j) = index.get(dep.as_str()) else { continue };
            if mark[j] == 1 {
                let from = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().rev().map(|&p| tasks[p].name.clone()).collect();
                cycle.insert(0, tasks[j].name.clone());
                return Some(cycle);
            }
            if mark[j] == 0
                && let Some(c) = dfs(j, tasks, index, mark, path)
            {
                return Some(c);
            }
        }
        path.pop();
        mark[i] = 2;
        None
    }
    (0..tasks.len()).find_map(|i| if mark[i] == 0 { dfs(i, tasks, &index, &mut mark, &mut path) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, String> {
        Pipeline::parse(Path::new("pipelines/daily.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_pipeline_reads() {
        let p = parse(
            "description: nightly\nschedule: '0 2 * * *'\ntimezone: Europe/Amsterdam\nstart_date: 2024-01-01\ncatchup: true\n\
             params: {full: false}\ndefaults: {retries: 2, retry_delay: 10s, env: {A: '1'}}\n\
             tasks:\n  wait:\n    sensor: {file: 'data/*.csv'}\n    poke_interval: 5s\n  load:\n    load: [orders]\n    after: wait\n\
             \x20 build:\n    build: '+daily_revenue'\n    after: [load]\n    retries: 0\n  report:\n    shell: echo {{ ds }}\n\
             \x20   after: build\n    trigger_rule: all_done\n    env: {B: '2'}\n",
        )
        .unwrap();
        assert_eq!(p.name, "daily");
        assert_eq!(p.tz, Tz::Europe__Amsterdam);
        assert_eq!(p.start_date.map(|d| d.to_rfc3339()), Some("2023-12-31T23:00:00+00:00".into()));
        assert_eq!(p.tasks.len(), 4);
        let load = p.task("load").unwrap();
        assert_eq!((load.retry.retries, load.retry.delay, load.after.clone()), (2, Duration::from_secs(10), vec!["wait".to_string()]));
        assert_eq!(p.task("build").unwrap().retry.retries, 0);
        let report = p.task("report").unwrap();
        assert_eq!(report.trigger_rule, TriggerRule::AllDone);
        assert_eq!(report.env, vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert!(matches!(&p.task("wait").unwrap().kind, TaskKind::Sensor(s) if s.poke_interval == Duration::from_secs(5)));
    }

    #[test]
    fn mistakes_name_file_line_and_column() {
        let cases = [
            ("tasks:\n  a: {bash: 'true'}\n", "daily.yml:2:7", "'bash' is not a task kind"),
            ("tasks:\n  a: {shell: 'true', after: b}\n", "daily.yml:2:29", "runs after 'b', which is not a task"),
            ("tasks:\n  a: {shell: x, after: b}\n  b: {shell: y, after: a}\n", "daily.yml:2:3", "in a circle: a -> b -> a"),
            ("schedule: '0 25 * * *'\ntasks:\n  a: {shell: x}\n", "daily.yml:1:11", "not a cron expression"),
            ("timezone: Mars/Base\ntasks:\n  a: {shell: x}\n", "daily.yml:1:11", "not a time zone"),
            ("tasks:\n  a: {shell: x, trigger_rule: sometimes}\n", "daily.yml:2:31", "not a trigger rule"),
            ("tasks:\n  a: {shell: x, retry_delay: soon}\n", "daily.yml:2:30", "not a duration"),
            ("tasks:\n  a: {shell: x, sql: y}\n", "daily.yml:2:17", "two kinds"),
            ("tasks:\n  a: {shell: x, poke_interval: 5s}\n", "daily.yml:2:17", "unknown key 'poke_interval' in shell task"),
            ("catchup: true\ntasks:\n  a: {shell: x}\n", "daily.yml:1:10", "catchup needs a start_date"),
            ("tasks:\n  a: {sensor: {file: x, http: y}}\n", "daily.yml:2:16", "one of: file, sql, http, asset"),
            ("schedul: '@daily'\ntasks:\n  a: {shell: x}\n", "daily.yml:1:1", "unknown key 'schedul'"),
            ("alerts:\n  - on: sometimes\n    webhook: x\ntasks:\n  a: {shell: x}\n", "daily.yml:2:9", "'sometimes' is not an alert event"),
            ("alerts:\n  - on: failure\ntasks:\n  a: {shell: x}\n", "daily.yml:2:5", "one of `webhook:`"),
            ("deadline: 1h\ntasks:\n  a: {shell: x}\n", "daily.yml:1:11", "needs an alert with `on: deadline`"),
        ];
        for (text, place, message) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(place) && e.contains(message), "{text}\n=> {e}");
        }
    }

    #[test]
    fn params_are_declared_and_overridden() {
        let p = parse("params: {day: null, full: false}\ntasks:\n  a: {shell: x}\n").unwrap();
        let mut given = Map::new();
        given.insert("full".into(), J::Bool(true));
        assert_eq!(p.resolve_params(&given).unwrap().get("full"), Some(&J::Bool(true)));
        given.insert("other".into(), J::Null);
        assert!(p.resolve_params(&given).unwrap_err().to_string().contains("no param 'other' (declared: day, full)"));
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let r = Retry { retries: 5, delay: Duration::from_secs(10), backoff: 2.0, max_delay: Duration::from_secs(60), jitter: false };
        let d: Vec<u64> = (1..=5).map(|n| r.delay_before(n).as_secs()).collect();
        assert_eq!(d, vec![10, 20, 40, 60, 60]);
        let j = Retry { jitter: true, ..r };
        for n in 1..=5 {
            let got = j.delay_before(n).as_secs_f64();
            let base = j.base_delay(n).as_secs_f64();
            assert!(got >= base * 0.8 - 1e-9 && got <= (base * 1.2).min(60.0) + 1e-9, "{n}: {got}");
        }
    }

    #[test]
    fn pipelines_triggering_each_other_in_a_circle_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), "tasks:\n  t: {pipeline: b}\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "tasks:\n  t: {pipeline: a}\n").unwrap();
        let e = Pipelines::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
        std::fs::write(dir.path().join("b.yml"), "tasks:\n  t: {pipeline: c}\n").unwrap();
        let e = Pipelines::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("b.yml:2:3") && e.contains("pipeline 'c', which does not exist"), "{e}");
    }
}
