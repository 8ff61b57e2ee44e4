//! The nodes of the graph: models, seeds, tests, snapshots, analyses, sources, and Weir's
//! loads and checks, with the config, dependencies and relation each resolved to; and the
//! status a node's run ends in.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value as J;
use weir_core::Relation;
use weir_project::ConfigMap;
use weir_project::schema::ColumnDef;

/// What a node is, named as dbt names it in `unique_id`s and selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Model,
    Seed,
    Test,
    Snapshot,
    Analysis,
    Source,
    /// A suite of data-quality checks on one dataset (`checks/*.yml`).
    Check,
    /// A stream job (`streams/*.sql`): its sink table is a relation models `ref()` and
    /// checks check; `weir build` brings it up to date with the events the log holds.
    Stream,
    /// An extract-and-load job writing a raw table (`loads/*.yml`).
    Load,
    /// A model's SQL run on fixed rows and compared to expected rows (`unit_tests:`).
    UnitTest,
    /// A semantic layer query (`saved_queries:`); `build` reports it, as dbt does, as no-op.
    SavedQuery,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Model => "model",
            ResourceType::Seed => "seed",
            ResourceType::Test => "test",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Analysis => "analysis",
            ResourceType::Source => "source",
            ResourceType::Check => "check",
            ResourceType::Stream => "stream",
            ResourceType::Load => "load",
            ResourceType::UnitTest => "unit_test",
            ResourceType::SavedQuery => "saved_query",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        Some(match s {
            "model" => ResourceType::Model,
            "seed" => ResourceType::Seed,
            "test" | "data_test" => ResourceType::Test,
            "snapshot" => ResourceType::Snapshot,
            "analysis" => ResourceType::Analysis,
            "source" => ResourceType::Source,
            "check" => ResourceType::Check,
            "stream" => ResourceType::Stream,
            "load" => ResourceType::Load,
            "unit_test" => ResourceType::UnitTest,
            "saved_query" => ResourceType::SavedQuery,
            _ => return None,
        })
    }
}

/// What a node's run ended in, named as dbt names it in `run_results.json`: the vocabulary
/// every executor reports in and the build walk decides on (a blocking status skips what is
/// downstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    Error,
    Skipped,
    Pass,
    Fail,
    Warn,
    /// Nothing to do here (a saved query: dbt Cloud runs its exports).
    NoOp,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::NoOp => "no-op",
        }
    }

    /// Whether downstream nodes must be skipped.
    pub fn blocks(self) -> bool {
        matches!(self, Status::Error | Status::Fail | Status::Skipped)
    }
}

/// A `ref()` call as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefCall {
    pub package: Option<String>,
    pub name: String,
}

/// What a generic test was called with.
#[derive(Debug, Clone)]
pub struct TestMeta {
    pub name: String,
    pub namespace: Option<String>,
    pub kwargs: serde_json::Map<String, J>,
    pub column_name: Option<String>,
    /// The model, seed or source the test is attached to.
    pub attached_node: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub unique_id: String,
    pub resource_type: ResourceType,
    pub package: String,
    pub name: String,
    pub fqn: Vec<String>,
    /// Path under the resource folder (`staging/stg_orders.sql`).
    pub path: String,
    /// Path under the package root (`models/staging/stg_orders.sql`).
    pub original_file_path: String,
    /// Absolute path of the file that defines the node.
    pub file: PathBuf,
    pub raw_code: String,
    pub config: ConfigMap,
    pub description: String,
    pub columns: Vec<ColumnDef>,
    pub refs: Vec<RefCall>,
    pub sources: Vec<(String, String)>,
    /// Resolved dependencies (unique ids of models, seeds, snapshots, sources).
    pub depends_on: Vec<String>,
    /// Where it is built (or read, for a source). None for tests and analyses.
    pub relation: Option<Relation>,
    pub test: Option<TestMeta>,
    /// The schema YAML file that described it, if any.
    pub patch_path: Option<String>,
    /// For sources: the source's name and table name.
    pub source: Option<(String, String)>,
    /// For checks: the suite; `depends_on[0]` is the dataset it checks.
    pub check: Option<Arc<crate::checks::Suite>>,
    /// For loads: what it extracts and how it writes `relation`.
    pub load: Option<Arc<crate::loads::Load>>,
    /// For stream jobs: the job, whose sink table is `relation`.
    pub stream: Option<Arc<crate::stream_jobs::StreamJob>>,
    /// For unit tests: the test and the model it tests (`depends_on[0]`).
    pub unit: Option<Arc<weir_project::schema::UnitTestDef>>,
    /// For a versioned model: its version and its model's latest (`ref('m')` is the latest).
    pub version: Option<String>,
    pub latest_version: Option<String>,
}

impl Node {
    pub fn materialized(&self) -> &str {
        self.config.get("materialized").and_then(J::as_str).unwrap_or(match self.resource_type {
            ResourceType::Seed => "seed",
            ResourceType::Test => "test",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Check => "check",
            ResourceType::Load => "load",
            ResourceType::Stream => "stream",
            ResourceType::UnitTest => "unit",
            ResourceType::SavedQuery => "saved_query",
            _ => "view",
        })
    }

    pub fn is_ephemeral(&self) -> bool {
        self.resource_type == ResourceType::Model && self.materialized() == "ephemeral"
    }

    /// An incremental model with `incremental_strategy: microbatch`: built in event-time
    /// batches whose processed intervals the metadata store records.
    pub fn is_microbatch(&self) -> bool {
        self.resource_type == ResourceType::Model
            && self.materialized() == "incremental"
            && self.config_str("incremental_strategy").as_deref() == Some("microbatch")
    }

    pub fn tags(&self) -> Vec<String> {
        weir_project::config::as_list(self.config.get("tags")).iter().filter_map(|t| t.as_str().map(str::to_string)).collect()
    }

    pub fn enabled(&self) -> bool {
        self.config.get("enabled").and_then(J::as_bool).unwrap_or(true)
    }

    pub fn config_str(&self, key: &str) -> Option<String> {
        match self.config.get(key)? {
            J::String(s) => Some(s.clone()),
            J::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// A config that is a string or a list of strings (`unique_key`, `check_cols`).
    pub fn config_list(&self, key: &str) -> Vec<String> {
        weir_project::config::as_list(self.config.get(key))
            .into_iter()
            .filter_map(|v| match v {
                J::String(s) => Some(s),
                J::Null => None,
                other => Some(other.to_string()),
            })
            .collect()
    }

    /// Whether the node has a relation that tools can read (not a test or ephemeral).
    pub fn is_relational(&self) -> bool {
        matches!(
            self.resource_type,
            ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot | ResourceType::Source | ResourceType::Stream
        ) && !self.is_ephemeral()
    }

    /// `model` in Jinja: the node as dbt exposes it to macros.
    pub fn to_jinja(&self) -> J {
        let rel = self.relation.clone().unwrap_or_default_relation();
        serde_json::json!({
            "unique_id": self.unique_id,
            "name": self.name,
            "alias": rel.identifier,
            "schema": rel.schema,
            "database": rel.database,
            "resource_type": self.resource_type.as_str(),
            "package_name": self.package,
            "path": self.path,
            "original_file_path": self.original_file_path,
            "fqn": self.fqn,
            "config": self.config,
            "tags": self.tags(),
            "description": self.description,
            "raw_code": self.raw_code,
            "raw_sql": self.raw_code,
            "columns": self.columns.iter().map(|c| (c.name.clone(), serde_json::json!({"name": c.name, "description": c.description, "data_type": c.data_type, "meta": c.meta}))).collect::<serde_json::Map<_, _>>(),
            "refs": self.refs.iter().map(|r| serde_json::json!({"name": r.name, "package": r.package})).collect::<Vec<_>>(),
            "sources": self.sources.iter().map(|(s, t)| serde_json::json!([s, t])).collect::<Vec<_>>(),
            "depends_on": {"nodes": self.depends_on},
            "version": self.version,
            "latest_version": self.latest_version,
        })
    }
}

trait DefaultRelation {
    fn unwrap_or_default_relation(self) -> Relation;
}

impl DefaultRelation for Option<Relation> {
    fn unwrap_or_default_relation(self) -> Relation {
        self.unwrap_or_else(|| Relation::new("", "", ""))
    }
}
