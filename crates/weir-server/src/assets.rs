//! The asset graph over HTTP: every node of the project (loads, seeds, models, snapshots,
//! tests, checks, stream jobs, sources) with its last build's status, one node's compiled SQL,
//! columns, builds, tests and neighbours, and a column's lineage.
//!
//! The project is read once, when `weir serve` starts; the warehouse is asked for columns per
//! request and let go after it, so builds in other processes get the DuckDB file back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_graph::{Graph, Node, ResourceType, Selector};
use weir_transform::Session;
use weir_transform::lineage::ProjectLineage;

use crate::AppState;
use crate::api::{Failure, Reply};

/// The project as `weir serve` read it at start.
pub struct Assets {
    /// The manifest and the warehouse.
    pub session: Arc<Session>,
    pub graph: Graph,
}

/// A node of the asset graph.
#[derive(Serialize, ToSchema)]
pub struct AssetNode {
    /// The unique id (`model.shop.daily_revenue`).
    pub id: String,
    /// load, cdc (a load following a database's log), seed, model, snapshot, test, check,
    /// stream or source.
    pub kind: String,
    pub name: String,
    pub package: String,
    /// The relation it builds or reads, as the warehouse names it.
    pub relation: Option<String>,
    /// The nodes it reads (or, for a test or check, the ones it tests).
    pub depends_on: Vec<String>,
    /// Its last build's status (success, error, pass, warn, fail, skipped); none if never built.
    pub status: Option<String>,
    pub last_built_at: Option<DateTime<Utc>>,
}

/// The asset graph: the nodes a selection picks, or all.
#[derive(Serialize, ToSchema)]
pub struct AssetGraph {
    pub nodes: Vec<AssetNode>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GraphQuery {
    /// A selection in dbt's syntax (`+daily_revenue`, `tag:nightly`, `path:models/marts`);
    /// default all.
    select: Option<String>,
    /// Nodes to leave out, in the same syntax.
    exclude: Option<String>,
}

/// One node, with what its page shows.
#[derive(Serialize, ToSchema)]
pub struct AssetDetail {
    #[serde(flatten)]
    pub node: AssetNode,
    pub description: String,
    /// Its file, from the project folder.
    pub path: String,
    /// view, table, incremental, ... for a model.
    pub materialized: Option<String>,
    /// The SQL it runs, macros and refs rendered (models, snapshots, tests and stream jobs).
    pub compiled_sql: Option<String>,
    /// Why it could not be compiled, if it could not.
    pub compile_error: Option<String>,
    pub columns: Vec<AssetColumn>,
    /// Its last builds, newest first.
    pub builds: Vec<BuildInfo>,
    /// The tests and checks on it.
    pub tests: Vec<AssetNode>,
    /// The ids of the nodes it reads, and of those that read it.
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
}

/// A column: as the warehouse has it, with its description from the YAML files.
#[derive(Serialize, ToSchema)]
pub struct AssetColumn {
    pub name: String,
    /// The warehouse's type, or the declared one if it is not built.
    pub data_type: Option<String>,
    pub description: String,
}

/// One build of a node.
#[derive(Serialize, ToSchema)]
pub struct BuildInfo {
    pub invocation: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub seconds: f64,
    pub rows: Option<u64>,
    pub message: Option<String>,
    /// The pipeline and run that built it, when one did.
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LineageQuery {
    /// The column.
    column: String,
}

/// A column's lineage: what feeds it (`up`, depth first) and what it feeds (`down`).
#[derive(Serialize, ToSchema)]
pub struct Lineage {
    pub node: String,
    pub column: String,
    pub steps: Vec<LineageStep>,
}

/// One column on the way from or to the column asked about.
#[derive(Serialize, ToSchema)]
pub struct LineageStep {
    /// 0 for the column asked about; each step away from it adds one.
    pub depth: usize,
    /// up (what feeds it) or down (what it feeds).
    pub direction: String,
    /// The node the column belongs to; none for a table the project does not know.
    pub node: Option<String>,
    /// The relation read, for a column of a node that is not a model or snapshot.
    pub relation: Option<String>,
    pub column: String,
    /// The SQL expression that makes it, for a model's or snapshot's column.
    pub expression: Option<String>,
    /// Why it is not traced further.
    pub opaque: Option<String>,
}

/// The kinds the graph shows: what is built, read, tested or run.
fn shown(n: &Node) -> bool {
    use ResourceType as R;
    matches!(n.resource_type, R::Load | R::Seed | R::Model | R::Snapshot | R::Test | R::Check | R::Stream | R::Source)
}

fn assets(s: &AppState) -> Result<Arc<Assets>, Failure> {
    s.assets.clone().ok_or_else(|| Failure(StatusCode::NOT_FOUND, "this server has no project to show".into()))
}

fn asset_node(a: &Assets, n: &Node, last: &BTreeMap<String, weir_store::NodeRun>) -> AssetNode {
    let run = last.get(&n.unique_id);
    AssetNode {
        id: n.unique_id.clone(),
        kind: if n.load.as_ref().is_some_and(|l| l.cdc().is_some()) { "cdc" } else { n.resource_type.as_str() }.into(),
        name: n.name.clone(),
        package: n.package.clone(),
        relation: n.relation.as_ref().map(|r| a.session.warehouse.render(r)),
        depends_on: n.depends_on.clone(),
        status: run.map(|r| r.status.clone()),
        last_built_at: run.map(|r| r.completed_at),
    }
}

fn last_runs(s: &AppState) -> Result<BTreeMap<String, weir_store::NodeRun>, Failure> {
    Ok(s.exec.store().last_node_runs()?.into_iter().map(|r| (r.unique_id.clone(), r)).collect())
}

/// The asset graph: the project's loads, seeds, models, snapshots, tests, checks, stream jobs
/// and sources, each with what it depends on and its last status.
#[utoipa::path(get, path = "/api/v1/assets", params(GraphQuery),
    responses((status = 200, body = AssetGraph), (status = 400, description = "A selection that does not parse", body = crate::api::ApiError),
        (status = 404, description = "The server has no project", body = crate::api::ApiError)))]
pub(crate) async fn asset_graph(State(s): State<AppState>, Query(q): Query<GraphQuery>) -> Reply<AssetGraph> {
    let a = assets(&s)?;
    let m = &a.session.manifest;
    let bad = |e: weir_graph::GraphError| Failure(StatusCode::BAD_REQUEST, e.to_string());
    let pick = |text: &Option<String>| -> Result<Option<BTreeSet<String>>, Failure> {
        let sel = Selector::parse(&text.iter().cloned().collect::<Vec<_>>()).map_err(bad)?;
        if sel.is_empty() { Ok(None) } else { Ok(Some(sel.select(m, &a.graph).map_err(bad)?)) }
    };
    let chosen = pick(&q.select)?;
    let excluded = pick(&q.exclude)?.unwrap_or_default();
    let last = last_runs(&s)?;
    let nodes = m
        .nodes
        .values()
        .filter(|n| shown(n) && n.enabled())
        .filter(|n| chosen.as_ref().is_none_or(|c| c.contains(&n.unique_id)) && !excluded.contains(&n.unique_id))
        .map(|n| asset_node(&a, n, &last))
        .collect();
    Ok(Json(AssetGraph { nodes }))
}

/// Whether `t` is a test or check on node `id`.
fn tests_on(t: &Node, id: &str) -> bool {
    matches!(t.resource_type, ResourceType::Test | ResourceType::Check) && t.depends_on.iter().any(|d| d == id)
}

fn find_node<'a>(a: &'a Assets, id: &str) -> Result<&'a Node, Failure> {
    a.session.manifest.node(id).filter(|n| shown(n)).ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no node '{id}' in the project")))
}

/// One node: its compiled SQL, columns, last builds, tests and checks, and neighbours.
#[utoipa::path(get, path = "/api/v1/assets/{id}", params(("id" = String, Path, description = "The node's unique id")),
    responses((status = 200, body = AssetDetail), (status = 404, body = crate::api::ApiError)))]
pub(crate) async fn asset_detail(State(s): State<AppState>, Path(id): Path<String>) -> Reply<AssetDetail> {
    let a = assets(&s)?;
    find_node(&a, &id)?;
    let store = s.exec.store();
    let builds = store.node_runs(&id, 20)?;
    // The last build of the node and of each test or check on it: a query each, on the index,
    // rather than every node's last build.
    let mut last = BTreeMap::new();
    last.extend(builds.first().map(|r| (id.clone(), r.clone())));
    for t in a.session.manifest.nodes.values().filter(|t| tests_on(t, &id)) {
        last.extend(store.node_runs(&t.unique_id, 1)?.into_iter().map(|r| (r.unique_id.clone(), r)));
    }
    let detail = tokio::task::spawn_blocking(move || {
        let n = find_node(&a, &id)?;
        let m = &a.session.manifest;
        let compiled = match (&n.stream, n.resource_type) {
            (Some(job), _) => Some(Ok(job.sql.clone())),
            (None, ResourceType::Model | ResourceType::Snapshot | ResourceType::Test) => {
                let host = weir_transform::session::ExecHost::new(a.session.clone(), Arc::new(Mutex::new(None)));
                Some(weir_transform::compile::compile(&host, n).map_err(|e| e.to_string()))
            }
            _ => None,
        };
        let columns = columns(&a, n);
        a.session.warehouse.release();
        let tests = m.nodes.values().filter(|t| tests_on(t, &n.unique_id)).map(|t| asset_node(&a, t, &last)).collect();
        let downstream =
            m.nodes.values().filter(|c| shown(c) && c.depends_on.contains(&n.unique_id)).map(|c| c.unique_id.clone()).collect();
        Ok::<_, Failure>(AssetDetail {
            node: asset_node(&a, n, &last),
            description: n.description.clone(),
            path: n.original_file_path.clone(),
            materialized: (n.resource_type == ResourceType::Model).then(|| n.materialized().to_string()),
            compiled_sql: compiled.as_ref().and_then(|c| c.as_ref().ok().cloned()),
            compile_error: compiled.and_then(Result::err),
            columns,
            builds: builds
                .into_iter()
                .map(|r| BuildInfo {
                    seconds: (r.completed_at - r.started_at).num_milliseconds() as f64 / 1000.0,
                    invocation: r.invocation,
                    status: r.status,
                    started_at: r.started_at,
                    completed_at: r.completed_at,
                    rows: r.rows,
                    message: r.message,
                    pipeline: r.pipeline,
                    run_id: r.run_id,
                })
                .collect(),
            tests,
            upstream: n.depends_on.clone(),
            downstream,
        })
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(detail))
}

/// The warehouse's columns of the node's relation, described from the YAML files; the
/// declared columns where it is not built.
fn columns(a: &Assets, n: &Node) -> Vec<AssetColumn> {
    let described = |name: &str| n.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    let built = n.relation.as_ref().and_then(|r| a.session.warehouse.connect().ok()?.columns(r).ok()).filter(|c| !c.is_empty());
    match built {
        Some(cols) => cols
            .into_iter()
            .map(|c| AssetColumn {
                description: described(&c.name).map(|d| d.description.clone()).unwrap_or_default(),
                data_type: Some(c.data_type),
                name: c.name,
            })
            .collect(),
        None => n
            .columns
            .iter()
            .map(|c| AssetColumn { name: c.name.clone(), data_type: c.data_type.clone(), description: c.description.clone() })
            .collect(),
    }
}

/// A column's lineage: the columns that feed it, through which expressions, back to the
/// seeds, sources, loads and stream jobs; and the columns built on it. Read from the compiled
/// SQL, with the warehouse's columns for `select *`.
#[utoipa::path(get, path = "/api/v1/assets/{id}/lineage", params(("id" = String, Path, description = "A model's, snapshot's or stream job's unique id"), LineageQuery),
    responses((status = 200, body = Lineage), (status = 400, description = "No column asked for", body = crate::api::ApiError), (status = 404, body = crate::api::ApiError),
        (status = 422, description = "No such column, or a node whose columns are not traced", body = crate::api::ApiError)))]
pub(crate) async fn asset_lineage(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<LineageQuery>) -> Reply<Lineage> {
    let a = assets(&s)?;
    find_node(&a, &id)?;
    let traced = tokio::task::spawn_blocking(move || {
        let lineage = ProjectLineage::new(a.session.clone());
        let steps = lineage.trace(&id, &q.column);
        drop(lineage);
        a.session.warehouse.release();
        steps.map(|steps| Lineage {
            node: id,
            column: q.column,
            steps: steps
                .into_iter()
                .map(|s| LineageStep {
                    depth: s.depth,
                    direction: match s.direction {
                        weir_transform::lineage::Direction::Up => "up".into(),
                        weir_transform::lineage::Direction::Down => "down".into(),
                    },
                    node: s.node,
                    relation: s.relation,
                    column: s.column,
                    expression: s.expression,
                    opaque: s.opaque,
                })
                .collect(),
        })
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    traced.map(Json).map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// How many runs back (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A check suite's history: each check's measured values over its runs, with its threshold.
#[derive(Serialize, ToSchema)]
pub struct CheckHistory {
    /// The dataset checked, as the warehouse names it.
    pub dataset: String,
    pub checks: Vec<CheckSeries>,
}

/// One check of a suite and its history, oldest first.
#[derive(Serialize, ToSchema)]
pub struct CheckSeries {
    /// The check as written (`missing_count(email) = 0`).
    pub check: String,
    /// `file:line` of the check.
    pub location: String,
    /// What it was held against the last time (`= 0`, `between 10 and 20`).
    pub threshold: Option<String>,
    /// The numbers in the threshold, for drawing it.
    pub threshold_values: Vec<f64>,
    pub points: Vec<CheckPoint>,
    /// The last failing rows kept, as JSON objects.
    #[schema(value_type = Option<Vec<Object>>)]
    pub samples: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckPoint {
    pub run_id: String,
    pub measured_at: DateTime<Utc>,
    pub value: Option<f64>,
    /// pass, warn, fail or error.
    pub status: String,
    pub message: Option<String>,
}

/// A check suite's history: each of its checks, with every value measured (from the last
/// `limit` runs), its threshold and its last failing rows.
#[utoipa::path(get, path = "/api/v1/assets/{id}/checks", params(("id" = String, Path, description = "A check suite's unique id"), HistoryQuery),
    responses((status = 200, body = CheckHistory), (status = 400, body = crate::api::ApiError), (status = 404, body = crate::api::ApiError)))]
pub(crate) async fn check_history(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<HistoryQuery>) -> Reply<CheckHistory> {
    let a = assets(&s)?;
    let limit = crate::api::limit(q.limit, 50)?;
    let n = find_node(&a, &id)?;
    let suite = n.check.as_ref().ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("{id} is not a check suite")))?;
    let m = &a.session.manifest;
    let dataset = n.depends_on.first().and_then(|d| m.node(d)).and_then(|d| d.relation.as_ref()).map(|r| a.session.warehouse.render(r));
    let dataset = dataset.unwrap_or_default();
    let records = s.exec.store().dataset_checks(&dataset, (limit * suite.checks.len().max(1)).min(50_000))?;
    let checks = suite
        .checks
        .iter()
        .map(|c| {
            let mine: Vec<&weir_store::CheckRecord> = records.iter().filter(|r| r.check == c.text).collect();
            let threshold = mine.last().map(|r| r.threshold.clone());
            let skip = mine.len().saturating_sub(limit);
            CheckSeries {
                check: c.text.clone(),
                location: c.location.to_string(),
                threshold_values: threshold.as_deref().map(numbers).unwrap_or_default(),
                threshold,
                samples: mine.last().and_then(|r| r.samples.as_deref()).and_then(|t| serde_json::from_str(t).ok()),
                points: mine
                    .into_iter()
                    .skip(skip)
                    .map(|r| CheckPoint {
                        run_id: r.run_id.clone(),
                        measured_at: r.measured_at,
                        value: r.value,
                        status: r.status.clone(),
                        message: r.message.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(CheckHistory { dataset, checks }))
}

/// The numbers a threshold holds (`between 10 and 20` gives 10 and 20; `< 5%` gives 5).
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .filter_map(|t| t.trim_matches(|c: char| c == 'e' || c == '.').parse::<f64>().ok())
        .collect()
}

/// A load's runs and where its cursor stands.
#[derive(Serialize, ToSchema)]
pub struct LoadHistory {
    /// The table it writes, as the warehouse names it.
    pub destination: String,
    /// The incremental cursor's high-water mark now (none for a load without one).
    pub cursor: Option<String>,
    /// Newest first.
    pub runs: Vec<LoadRunInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct LoadRunInfo {
    pub load_id: String,
    /// running, committed or failed.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows_read: Option<u64>,
    pub rows_loaded: Option<u64>,
    pub rows_rejected: Option<u64>,
    /// The cursor's high-water mark after the run.
    pub cursor: Option<String>,
    pub message: Option<String>,
}

/// A load's last runs: rows read, loaded and rejected, and the cursor after each.
#[utoipa::path(get, path = "/api/v1/assets/{id}/loads", params(("id" = String, Path, description = "A load's unique id"), HistoryQuery),
    responses((status = 200, body = LoadHistory), (status = 400, body = crate::api::ApiError), (status = 404, body = crate::api::ApiError)))]
pub(crate) async fn load_history(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<HistoryQuery>) -> Reply<LoadHistory> {
    let a = assets(&s)?;
    let limit = crate::api::limit(q.limit, 50)?;
    let n = find_node(&a, &id)?;
    if n.load.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("{id} is not a load")));
    }
    let destination = n.relation.as_ref().map(|r| a.session.warehouse.render(r)).unwrap_or_default();
    let store = s.exec.store();
    let runs = store
        .load_runs(&n.name, limit)?
        .into_iter()
        .map(|r| LoadRunInfo {
            load_id: r.load_id,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            rows_read: r.rows_read,
            rows_loaded: r.rows_loaded,
            rows_rejected: r.rows_rejected,
            cursor: r.cursor,
            message: r.message,
        })
        .collect();
    Ok(Json(LoadHistory { cursor: store.load_cursor(&destination)?, destination, runs }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RejectedQuery {
    /// The run whose rejected rows to show.
    load_id: String,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Rows a load run rejected, with why: read from the warehouse's `_weir_rejected` beside the
/// load's table.
#[derive(Serialize, ToSchema)]
pub struct RejectedRows {
    pub columns: Vec<String>,
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<weir_core::Datum>>,
}

/// The rows one run of a load rejected: where each was (`file:line`), as it was, and why.
#[utoipa::path(get, path = "/api/v1/assets/{id}/rejected", params(("id" = String, Path, description = "A load's unique id"), RejectedQuery),
    responses((status = 200, body = RejectedRows), (status = 400, body = crate::api::ApiError), (status = 404, body = crate::api::ApiError)))]
pub(crate) async fn rejected_rows(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RejectedQuery>,
) -> Reply<RejectedRows> {
    let a = assets(&s)?;
    let limit = crate::api::limit(q.limit, 100)?;
    let n = find_node(&a, &id)?;
    let Some(rel) = n.relation.clone().filter(|_| n.load.is_some()) else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("{id} is not a load")));
    };
    let rejected = weir_core::Relation::new(&rel.database, &rel.schema, weir_connect::load::REJECTED_TABLE);
    let table = a.session.warehouse.render(&rejected);
    let sql = format!(
        "select position, raw, reason, rejected_at from {table} where cast(load_id as varchar) = '{}' order by rejected_at, position limit {limit}",
        q.load_id.replace('\'', "''")
    );
    let rows = tokio::task::spawn_blocking(move || {
        let result = a
            .session
            .warehouse
            .connect()
            .and_then(|mut c| if c.columns(&rejected)?.is_empty() { Ok(None) } else { c.query(&sql).map(Some) });
        a.session.warehouse.release();
        result
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let columns = ["position", "raw", "reason", "rejected_at"].map(String::from).to_vec();
    Ok(Json(RejectedRows { columns, rows: rows.map(|r| r.rows).unwrap_or_default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thresholds_numbers_are_what_its_chart_draws() {
        assert_eq!(numbers("between 1 and 10"), [1.0, 10.0]);
        assert_eq!(numbers("< 5%"), [5.0]);
        assert_eq!(numbers(">= -0.5"), [-0.5]);
        assert_eq!(numbers("between -50% and 100%"), [-50.0, 100.0]);
        assert_eq!(numbers("= 0"), [0.0]);
        assert!(numbers("required columns present").is_empty());
    }
}
