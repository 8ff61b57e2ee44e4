//! The endpoints, their JSON shapes and the OpenAPI document generated from them.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use weir_orchestrate::schedule::parse_time;
use weir_orchestrate::{DataInterval, Pipeline, RunRequest, TaskKind};
use weir_store::{PipelineRun, Store};

use crate::AppState;

/// The OpenAPI 3.1 document of this API, served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Weir", description = "Pipelines, runs, task instances and logs of a Weir project; trigger runs, clear tasks, pause pipelines; send events to the event log; follow the stream jobs; the asset graph and column lineage."),
    paths(
        health,
        openapi_json,
        list_pipelines,
        get_pipeline,
        pause_pipeline,
        unpause_pipeline,
        list_runs,
        get_grid,
        trigger_run,
        get_run,
        get_task,
        task_log,
        clear_task,
        clear_run,
        list_workers,
        produce_records,
        list_streams,
        get_stream,
        crate::assets::asset_graph,
        crate::assets::asset_detail,
        crate::assets::asset_lineage,
        crate::assets::check_history,
        crate::assets::load_history,
        crate::assets::rejected_rows,
        crate::cdc::list_cdc
    ),
    components(schemas(
        Health,
        PipelineInfo,
        TaskInfo,
        RunInfo,
        Grid,
        TaskInstanceInfo,
        AttemptInfo,
        TaskDetail,
        TriggerRequest,
        ClearRequest,
        ClearRunRequest,
        ClearResponse,
        WorkerInfo,
        Produced,
        Placed,
        StreamInfo,
        StreamEvents,
        PartitionProgress,
        ResultLatency,
        crate::assets::AssetGraph,
        crate::assets::AssetNode,
        crate::assets::AssetDetail,
        crate::assets::AssetColumn,
        crate::assets::BuildInfo,
        crate::assets::Lineage,
        crate::assets::LineageStep,
        crate::assets::CheckHistory,
        crate::assets::CheckSeries,
        crate::assets::CheckPoint,
        crate::assets::LoadHistory,
        crate::assets::LoadRunInfo,
        crate::assets::RejectedRows,
        crate::cdc::CdcInfo,
        ApiError
    )),
    modifiers(&BearerAuth, &Truthful),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The router with every endpoint, the token check and JSON errors.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/pipelines", get(list_pipelines))
        .route("/api/v1/pipelines/{pipeline}", get(get_pipeline))
        .route("/api/v1/pipelines/{pipeline}/pause", post(pause_pipeline))
        .route("/api/v1/pipelines/{pipeline}/unpause", post(unpause_pipeline))
        .route("/api/v1/pipelines/{pipeline}/runs", get(list_runs).post(trigger_run))
        .route("/api/v1/pipelines/{pipeline}/grid", get(get_grid))
        .route("/api/v1/pipelines/{pipeline}/runs/{run_id}", get(get_run))
        .route("/api/v1/pipelines/{pipeline}/runs/{run_id}/clear", post(clear_run))
        .route("/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}", get(get_task))
        .route("/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/logs", get(task_log))
        .route("/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/clear", post(clear_task))
        .route("/api/v1/workers", get(list_workers))
        .route("/api/v1/topics/{topic}/records", post(produce_records))
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/streams/{job}", get(get_stream))
        .route("/api/v1/assets", get(crate::assets::asset_graph))
        .route("/api/v1/assets/{id}", get(crate::assets::asset_detail))
        .route("/api/v1/assets/{id}/lineage", get(crate::assets::asset_lineage))
        .route("/api/v1/assets/{id}/checks", get(crate::assets::check_history))
        .route("/api/v1/assets/{id}/loads", get(crate::assets::load_history))
        .route("/api/v1/assets/{id}/rejected", get(crate::assets::rejected_rows))
        .route("/api/v1/cdc", get(crate::cdc::list_cdc))
        .nest_service("/registry", crate::registry::routes(&state))
        .merge(crate::ui::routes())
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "no such endpoint; the API is described at /api/v1/openapi.json".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

struct BearerAuth;

/// What the handlers' attributes cannot say themselves: every operation under the token
/// answers 401, and the bodies of a trigger and a clear may be empty, too large (413) or
/// stall (408).
struct Truthful;

impl utoipa::Modify for Truthful {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, Required, ResponseBuilder};
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                // The open operations say `security(())`; the rest take the document's token.
                let mut errors = vec![];
                if op.security.is_none() {
                    errors.push(("401", "A missing or wrong token"));
                }
                if let Some(body) = &mut op.request_body {
                    body.required = Some(Required::False);
                    errors.extend([("408", "The body stopped arriving"), ("413", "The body is over the size limit")]);
                }
                for (status, description) in errors {
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content("application/json", Content::new(Some(Ref::from_schema_name("ApiError"))))
                        .build();
                    op.responses.responses.entry(status.into()).or_insert(response.into());
                }
            }
        }
    }
}

/// Gives every error the API's `{"error": ...}` shape, including those axum answers before a
/// handler runs (a query string that does not parse, a body over the size limit, a method
/// the path does not take).
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes() == crate::registry::CONTENT_TYPE.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut r = Failure(status, message).into_response();
    for (name, value) in parts.headers.iter().filter(|(n, _)| *n == header::ALLOW || *n == header::WWW_AUTHENTICATE) {
        r.headers_mut().insert(name, value.clone());
    }
    r
}

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", scheme);
    }
}

/// An error, as every endpoint returns them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// A status and a message, rendered as `{"error": message}`.
pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(ApiError { error: self.1 })).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<weir_store::StoreError> for Failure {
    fn from(e: weir_store::StoreError) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<weir_orchestrate::OrchestrateError> for Failure {
    fn from(e: weir_orchestrate::OrchestrateError) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub(crate) type Reply<T> = Result<Json<T>, Failure>;

/// Open: `health` and the documents. Reads: open with `open_reads`, else the token.
/// Writes: the token, which must be configured.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/api/v1/health" || path == "/api/v1/openapi.json" || path == "/registry/openapi.json" || crate::ui::is_ui(path) {
        return next.run(req).await;
    }
    let registry = path == "/registry" || path.starts_with("/registry/");
    if s.config.open_reads
        && (req.method() == Method::GET || req.method() == Method::HEAD || (registry && crate::registry::is_read(req.method(), path)))
    {
        return next.run(req).await;
    }
    let refuse = |status: StatusCode, message: &str| {
        if registry { crate::registry::refusal(status, message) } else { Failure(status, message.into()).into_response() }
    };
    let Some(expected) = s.config.token.as_deref() else {
        let m = "this server has no API token configured: set $WEIR_API_TOKEN, or server.token in weir.yml";
        return refuse(StatusCode::FORBIDDEN, m);
    };
    match presented_token(&req, registry) {
        None => refuse(StatusCode::UNAUTHORIZED, "missing token: send Authorization: Bearer <token>"),
        Some(g) if bool::from(g.trim().as_bytes().ct_eq(expected.as_bytes())) => next.run(req).await,
        Some(_) => refuse(StatusCode::UNAUTHORIZED, "wrong token"),
    }
}

/// The token a request presents: `Authorization: Bearer <token>`, or for the registry, whose
/// clients often know only basic authentication, `Basic` with the token as the password.
fn presented_token(req: &Request, registry: bool) -> Option<String> {
    use base64::Engine;
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    // The scheme is case-insensitive (RFC 9110): `bearer x` is `Bearer x`.
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if registry && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_string());
    }
    None
}

/// The server is up, as which worker, on which kind of store. Open to anyone, so it names
/// no path or host.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub worker: String,
    /// sqlite or postgresql.
    pub store: String,
    pub version: String,
}

#[utoipa::path(get, path = "/api/v1/health", security(()), responses((status = 200, body = Health)))]
async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        worker: s.worker_id.clone(),
        store: if s.exec.store().description().starts_with("sqlite:") { "sqlite" } else { "postgresql" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[utoipa::path(get, path = "/api/v1/openapi.json", security(()), responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A pipeline: its schedule, whether it is paused, and its tasks.
#[derive(Serialize, ToSchema)]
pub struct PipelineInfo {
    pub name: String,
    pub description: Option<String>,
    /// A cron expression or preset; none for a pipeline run only when asked.
    pub schedule: Option<String>,
    pub timezone: String,
    pub paused: bool,
    pub catchup: bool,
    pub max_active_runs: usize,
    /// When the schedule next ticks (a run for the interval ending then is queued).
    pub next_run_at: Option<DateTime<Utc>>,
    pub tasks: Vec<TaskInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskInfo {
    pub name: String,
    /// build, load, sql, shell, http, sensor or pipeline.
    pub kind: String,
    pub after: Vec<String>,
    pub trigger_rule: String,
    pub retries: u32,
}

fn pipeline_info(p: &Pipeline, store: &Store) -> Result<PipelineInfo, Failure> {
    let kind = |k: &TaskKind| match k {
        TaskKind::Build { .. } => "build",
        TaskKind::Load { .. } => "load",
        TaskKind::Sql { .. } => "sql",
        TaskKind::Shell { .. } => "shell",
        TaskKind::Http(_) => "http",
        TaskKind::Sensor(_) => "sensor",
        TaskKind::Pipeline { .. } => "pipeline",
    };
    Ok(PipelineInfo {
        name: p.name.clone(),
        description: p.description.clone(),
        schedule: p.schedule.as_ref().map(|s| s.expr.clone()),
        timezone: p.tz.to_string(),
        paused: store.is_paused(&p.name)?,
        catchup: p.catchup,
        max_active_runs: p.max_active_runs,
        next_run_at: p.schedule.as_ref().and_then(|s| s.next_after(Utc::now())),
        tasks: p
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: t.name.clone(),
                kind: kind(&t.kind).into(),
                after: t.after.clone(),
                trigger_rule: t.trigger_rule.name().into(),
                retries: t.retry.retries,
            })
            .collect(),
    })
}

fn find<'a>(s: &'a AppState, name: &str) -> Result<&'a Pipeline, Failure> {
    s.exec.pipelines().by_name.get(name).ok_or_else(|| {
        let known: Vec<&str> = s.exec.pipelines().by_name.keys().map(String::as_str).collect();
        Failure(StatusCode::NOT_FOUND, format!("no pipeline '{name}' (pipelines: {})", known.join(", ")))
    })
}

#[utoipa::path(get, path = "/api/v1/pipelines", responses((status = 200, body = [PipelineInfo]), (status = 401, body = ApiError)))]
async fn list_pipelines(State(s): State<AppState>) -> Reply<Vec<PipelineInfo>> {
    let store = s.exec.store();
    Ok(Json(s.exec.pipelines().by_name.values().map(|p| pipeline_info(p, store)).collect::<Result<_, _>>()?))
}

#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}", params(("pipeline" = String, Path)),
    responses((status = 200, body = PipelineInfo), (status = 404, body = ApiError)))]
async fn get_pipeline(State(s): State<AppState>, Path(name): Path<String>) -> Reply<PipelineInfo> {
    Ok(Json(pipeline_info(find(&s, &name)?, s.exec.store())?))
}

#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/pause", params(("pipeline" = String, Path)),
    responses((status = 200, body = PipelineInfo), (status = 404, body = ApiError)))]
async fn pause_pipeline(State(s): State<AppState>, Path(name): Path<String>) -> Reply<PipelineInfo> {
    set_paused(&s, &name, true)
}

#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/unpause", params(("pipeline" = String, Path)),
    responses((status = 200, body = PipelineInfo), (status = 404, body = ApiError)))]
async fn unpause_pipeline(State(s): State<AppState>, Path(name): Path<String>) -> Reply<PipelineInfo> {
    let r = set_paused(&s, &name, false);
    s.wake.notify_one();
    r
}

fn set_paused(s: &AppState, name: &str, paused: bool) -> Reply<PipelineInfo> {
    let p = find(s, name)?;
    s.exec.store().set_paused(name, paused)?;
    Ok(Json(pipeline_info(p, s.exec.store())?))
}

/// A pipeline run; `tasks` is filled when one run is asked for.
#[derive(Serialize, ToSchema)]
pub struct RunInfo {
    pub pipeline: String,
    pub run_id: String,
    /// manual, scheduled or backfill.
    pub run_type: String,
    /// queued, running, success or failed.
    pub state: String,
    pub data_interval_start: Option<DateTime<Utc>>,
    pub data_interval_end: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub params: J,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
    /// The worker running it (or that ran it last).
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskInstanceInfo>>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskInstanceInfo {
    pub task: String,
    /// none, running, up_for_retry, up_for_reschedule, success, failed, skipped or upstream_failed.
    pub state: String,
    pub try_number: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
}

fn run_info(r: PipelineRun, tasks: Option<Vec<TaskInstanceInfo>>) -> RunInfo {
    RunInfo {
        params: serde_json::from_str(&r.params).unwrap_or(J::Object(Map::new())),
        pipeline: r.pipeline,
        run_id: r.run_id,
        run_type: r.run_type,
        state: r.state,
        data_interval_start: r.interval_start,
        data_interval_end: r.interval_end,
        queued_at: r.queued_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        message: r.message,
        owner: r.owner,
        tasks,
    }
}

fn task_infos(store: &Store, pipeline: &str, run_id: &str) -> Result<Vec<TaskInstanceInfo>, Failure> {
    Ok(store.task_instances(pipeline, run_id)?.into_iter().map(task_instance_info).collect())
}

fn task_instance_info(t: weir_store::TaskInstance) -> TaskInstanceInfo {
    TaskInstanceInfo {
        task: t.task,
        state: t.state,
        try_number: t.try_number,
        started_at: t.started_at,
        finished_at: t.finished_at,
        message: t.message,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// At most this many, newest first (default 25, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only runs in this state.
    state: Option<String>,
    /// Only runs queued at or after this time (a date, or an RFC 3339 date-time).
    #[param(schema_with = date_or_time_param)]
    since: Option<String>,
    /// Only runs queued before this time (a date, or an RFC 3339 date-time).
    #[param(schema_with = date_or_time_param)]
    until: Option<String>,
}

impl RunsQuery {
    /// The store's filter and the limit, or why the query is wrong.
    fn filter(&self, default_limit: usize) -> Result<(weir_store::RunFilter, usize), Failure> {
        let limit = limit(self.limit, default_limit)?;
        let time = |name: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, Failure> {
            v.as_deref()
                .map(|t| parse_time(t, chrono_tz::UTC).map_err(|m| Failure(StatusCode::BAD_REQUEST, format!("{name}: {m}"))))
                .transpose()
        };
        let filter =
            weir_store::RunFilter { state: self.state.clone(), since: time("since", &self.since)?, until: time("until", &self.until)? };
        Ok((filter, limit))
    }
}

#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/runs", params(("pipeline" = String, Path), RunsQuery),
    responses((status = 200, body = [RunInfo]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn list_runs(State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<RunsQuery>) -> Reply<Vec<RunInfo>> {
    find(&s, &name)?;
    let (filter, limit) = q.filter(25)?;
    let runs = s.exec.store().find_runs(&name, &filter, limit)?;
    Ok(Json(runs.into_iter().map(|r| run_info(r, None)).collect()))
}

/// A list's `limit` (`default` when not given), which must be from 1 to 1000.
pub(crate) fn limit(given: Option<usize>, default: usize) -> Result<usize, Failure> {
    let limit = given.unwrap_or(default);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(Failure(StatusCode::BAD_REQUEST, format!("limit must be from 1 to 1000, not {limit}")))
    }
}

/// The grid of a pipeline's runs by its tasks: the tasks in an order where each comes after
/// those it waits for, and the newest runs, each with its task instances.
#[derive(Serialize, ToSchema)]
pub struct Grid {
    pub tasks: Vec<TaskInfo>,
    pub runs: Vec<RunInfo>,
}

/// The newest runs with their task instances, in one answer (default 25 runs).
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/grid", params(("pipeline" = String, Path), RunsQuery),
    responses((status = 200, body = Grid), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn get_grid(State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<RunsQuery>) -> Reply<Grid> {
    let p = find(&s, &name)?;
    let (filter, limit) = q.filter(25)?;
    let store = s.exec.store();
    let runs = store.find_runs(&name, &filter, limit)?;
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
    let mut cells: std::collections::HashMap<String, Vec<TaskInstanceInfo>> = std::collections::HashMap::new();
    for t in store.task_instances_of(&name, &ids)? {
        cells.entry(t.run_id.clone()).or_default().push(task_instance_info(t));
    }
    let runs = runs
        .into_iter()
        .map(|r| {
            let tasks = cells.remove(&r.run_id).unwrap_or_default();
            run_info(r, Some(tasks))
        })
        .collect();
    Ok(Json(Grid { tasks: in_order(pipeline_info(p, store)?.tasks), runs }))
}

/// Tasks in an order where each comes after every task it waits for (ties in file order).
fn in_order(mut tasks: Vec<TaskInfo>) -> Vec<TaskInfo> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(tasks.len());
    while !tasks.is_empty() {
        let ready = tasks.iter().position(|t| t.after.iter().all(|a| done.contains(a))).unwrap_or(0);
        let t = tasks.remove(ready);
        done.insert(t.name.clone());
        out.push(t);
    }
    out
}

/// A run to queue. Every field is optional; an empty body runs with the default params.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Params overriding the pipeline's defaults (only those it declares).
    #[schema(value_type = Option<Object>)]
    pub params: Option<Map<String, J>>,
    /// The run's id (default `manual__<time>`); must be new. 1 to 250 characters, not `.` or
    /// `..`, without `/` or control characters.
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^(?:[^./\x00-\x1f\x7f-\x9f]|\.[^./\x00-\x1f\x7f-\x9f]|\.\.[^/\x00-\x1f\x7f-\x9f])[^/\x00-\x1f\x7f-\x9f]*$"
    )]
    pub run_id: Option<String>,
    /// The logical date: the run processes the schedule's interval containing it (a date, or
    /// a date and time with an offset; one without is read in the pipeline's time zone, like
    /// 2024-03-01T02:00).
    #[schema(schema_with = date_or_time)]
    pub date: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/runs", params(("pipeline" = String, Path)), request_body = TriggerRequest,
    responses((status = 201, body = RunInfo), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 422, description = "A param the pipeline does not declare, or a date outside its schedule", body = ApiError)))]
async fn trigger_run(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RunInfo>), Failure> {
    let p = find(&s, &name)?;
    let req: TriggerRequest = json_body(body)?;
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    // Well-formed, but not what this pipeline has: a param it does not declare, a date
    // outside its schedule.
    let unprocessable = |m: String| Failure(StatusCode::UNPROCESSABLE_ENTITY, m);
    let params = p.resolve_params(&req.params.unwrap_or_default()).map_err(|e| unprocessable(e.to_string()))?;
    let interval = match &req.date {
        None => None,
        Some(d) => {
            let t = parse_time(d, p.tz).map_err(|m| bad(format!("date: {m}")))?;
            Some(match &p.schedule {
                Some(sch) => {
                    sch.interval_containing(t).ok_or_else(|| unprocessable(format!("date {d}: the schedule has no interval there")))?
                }
                None => DataInterval { start: t, end: t },
            })
        }
    };
    if let Some(id) = &req.run_id {
        weir_orchestrate::run_id::check(id).map_err(|m| bad(format!("run_id: {m}")))?;
    }
    let rr = RunRequest { run_type: "manual".into(), interval, params: params.clone(), run_id: req.run_id.clone(), keep_failed: false };
    // A generated id that meets another trigger's (the same microsecond) is made again: two
    // triggers never collide; a given id that exists is refused.
    for _ in 0..10 {
        let (interval, run_id) = s.exec.plan(p, &rr);
        let run = PipelineRun {
            pipeline: name.clone(),
            run_id: run_id.clone(),
            run_type: "manual".into(),
            state: "queued".into(),
            interval_start: Some(interval.start),
            interval_end: Some(interval.end),
            params: J::Object(params.clone()).to_string(),
            queued_at: Utc::now(),
            started_at: None,
            finished_at: None,
            message: None,
            owner: None,
        };
        if s.exec.store().enqueue_run(&run)? {
            s.wake.notify_one();
            return Ok((StatusCode::CREATED, Json(run_info(run, None))));
        }
        if req.run_id.is_some() {
            return Err(Failure(StatusCode::CONFLICT, format!("pipeline '{name}' already has a run '{run_id}'")));
        }
    }
    Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "no free run id could be made; try again".into()))
}

/// A date (`2024-03-01`) or an RFC 3339 date-time, as `date` takes them (or null).
fn date_or_time() -> utoipa::openapi::Schema {
    date_or_time_schema(true)
}

/// A date or an RFC 3339 date-time, as `since` and `until` take them.
fn date_or_time_param() -> utoipa::openapi::Schema {
    date_or_time_schema(false)
}

fn date_or_time_schema(nullable: bool) -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let string = |format| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)));
    let any = AnyOfBuilder::new().item(string(KnownFormat::Date)).item(string(KnownFormat::DateTime));
    if nullable { any.item(ObjectBuilder::new().schema_type(Type::Null)) } else { any }.build().into()
}

/// A request's body, or the error that says why it did not arrive (408 when it stalled).
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Failure> {
    body.map_err(|r| {
        let stalled = std::iter::successors(std::error::Error::source(&r), |e| e.source()).any(|e| e.is::<TimeoutError>());
        match stalled {
            true => Failure(StatusCode::REQUEST_TIMEOUT, "the request body stopped arriving; the connection is closed".into()),
            false => Failure(r.status(), r.body_text()),
        }
    })
}

/// A JSON body, where an empty one means the defaults. A body that stops arriving for the
/// read timeout is a 408; one over the size limit a 413.
fn json_body<T: for<'de> Deserialize<'de> + Default>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let body = body_bytes(body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let invalid = |e: serde_json::Error| Failure(StatusCode::BAD_REQUEST, format!("the request body is not valid here: {e}"));
    // serde would read a struct from an array of its fields too; the API takes objects only.
    let value: J = serde_json::from_slice(&body).map_err(invalid)?;
    if !value.is_object() {
        return Err(Failure(StatusCode::BAD_REQUEST, "the request body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(invalid)
}

fn find_run(s: &AppState, name: &str, run_id: &str) -> Result<PipelineRun, Failure> {
    find(s, name)?;
    s.exec
        .store()
        .pipeline_run(name, run_id)?
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("pipeline '{name}' has no run '{run_id}'")))
}

#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/runs/{run_id}", params(("pipeline" = String, Path), ("run_id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError)))]
async fn get_run(State(s): State<AppState>, Path((name, run_id)): Path<(String, String)>) -> Reply<RunInfo> {
    let run = find_run(&s, &name, &run_id)?;
    let tasks = task_infos(s.exec.store(), &name, &run_id)?;
    Ok(Json(run_info(run, Some(tasks))))
}

/// One attempt of a task.
#[derive(Serialize, ToSchema)]
pub struct AttemptInfo {
    pub attempt: u32,
    /// running, success, failed or timed_out.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub worker: Option<String>,
}

/// A task instance with every attempt.
#[derive(Serialize, ToSchema)]
pub struct TaskDetail {
    pub instance: Option<TaskInstanceInfo>,
    pub attempts: Vec<AttemptInfo>,
}

#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}",
    params(("pipeline" = String, Path), ("run_id" = String, Path), ("task" = String, Path)),
    responses((status = 200, body = TaskDetail), (status = 404, body = ApiError)))]
async fn get_task(State(s): State<AppState>, Path((name, run_id, task)): Path<(String, String, String)>) -> Reply<TaskDetail> {
    find_task(&s, &name, &run_id, &task)?;
    let store = s.exec.store();
    let instance = task_infos(store, &name, &run_id)?.into_iter().find(|t| t.task == task);
    let attempts = store
        .task_attempts(&name, &run_id, &task)?
        .into_iter()
        .map(|a| AttemptInfo {
            attempt: a.attempt,
            state: a.state,
            started_at: a.started_at,
            finished_at: a.finished_at,
            exit_code: a.exit_code,
            message: a.message,
            worker: a.worker,
        })
        .collect();
    Ok(Json(TaskDetail { instance, attempts }))
}

fn find_task(s: &AppState, name: &str, run_id: &str, task: &str) -> Result<PipelineRun, Failure> {
    let run = find_run(s, name, run_id)?;
    if find(s, name)?.task(task).is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("pipeline '{name}' has no task '{task}'")));
    }
    Ok(run)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Which attempt, counted from 1 (default: the last).
    #[param(minimum = 1)]
    attempt: Option<u32>,
    /// Only the log from this byte on (for following a running attempt: pass the size read
    /// so far, which the `Weir-Log-Size` header of each answer gives).
    #[param(minimum = 0)]
    offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/logs",
    params(("pipeline" = String, Path), ("run_id" = String, Path), ("task" = String, Path), LogQuery),
    responses((status = 200, description = "The attempt's log", content_type = "text/plain", body = String), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn task_log(
    State(s): State<AppState>,
    Path((name, run_id, task)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, Failure> {
    if q.attempt == Some(0) {
        return Err(Failure(StatusCode::BAD_REQUEST, "attempts are counted from 1".into()));
    }
    if q.offset.is_some_and(|o| o < 0) {
        return Err(Failure(StatusCode::BAD_REQUEST, "offset is a byte count, 0 or more".into()));
    }
    find_task(&s, &name, &run_id, &task)?;
    let attempts = s.exec.store().task_attempts(&name, &run_id, &task)?;
    let chosen = match q.attempt {
        Some(n) => attempts.iter().find(|a| a.attempt == n),
        None => attempts.last(),
    }
    .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("task '{task}' of run '{run_id}' has no such attempt")))?;
    let text = chosen
        .log_path
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .or_else(|| chosen.log_tail.clone().map(String::into_bytes))
        .unwrap_or_default();
    let size = text.len();
    let from = q.offset.map_or(0, |o| usize::try_from(o).unwrap_or(0).min(size));
    let rest = String::from_utf8_lossy(&text[from..]).into_owned();
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
        (header::HeaderName::from_static("weir-log-size"), size.to_string()),
    ];
    Ok((headers, rest).into_response())
}

/// What to clear besides the task.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Also clear every task downstream of it.
    #[serde(default)]
    pub downstream: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ClearResponse {
    pub cleared: Vec<String>,
    pub run: RunInfo,
}

#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/clear",
    params(("pipeline" = String, Path), ("run_id" = String, Path), ("task" = String, Path)), request_body = ClearRequest,
    responses((status = 200, body = ClearResponse), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn clear_task(
    State(s): State<AppState>,
    Path((name, run_id, task)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Reply<ClearResponse> {
    let run = find_task(&s, &name, &run_id, &task)?;
    let req: ClearRequest = json_body(body)?;
    clear(&s, run, BTreeSet::from([task]), req.downstream)
}

/// Which tasks of a run to clear.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRunRequest {
    /// Only the tasks that failed (or were not run because an upstream task failed); else
    /// every task. Default true.
    #[serde(default = "yes")]
    pub only_failed: bool,
}

impl Default for ClearRunRequest {
    fn default() -> Self {
        ClearRunRequest { only_failed: yes() }
    }
}

fn yes() -> bool {
    true
}

/// Clears a finished run's failed tasks (or all of them), so the scheduler runs them again:
/// a retry of the run, in one step.
#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/runs/{run_id}/clear",
    params(("pipeline" = String, Path), ("run_id" = String, Path)), request_body = ClearRunRequest,
    responses((status = 200, body = ClearResponse), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn clear_run(
    State(s): State<AppState>,
    Path((name, run_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Reply<ClearResponse> {
    let run = find_run(&s, &name, &run_id)?;
    let req: ClearRunRequest = json_body(body)?;
    let p = find(&s, &name)?;
    let tasks: BTreeSet<String> = if req.only_failed {
        let failed =
            s.exec.store().task_instances(&name, &run_id)?.into_iter().filter(|t| t.state == "failed" || t.state == "upstream_failed");
        failed.map(|t| t.task).collect()
    } else {
        p.tasks.iter().map(|t| t.name.clone()).collect()
    };
    if tasks.is_empty() {
        return Err(Failure(StatusCode::CONFLICT, format!("run '{run_id}' has no failed task to clear")));
    }
    clear(&s, run, tasks, true)
}

/// Clears `tasks` of a finished run, and with `downstream` every task after them.
fn clear(s: &AppState, run: PipelineRun, tasks: BTreeSet<String>, downstream: bool) -> Reply<ClearResponse> {
    let (name, run_id) = (run.pipeline, run.run_id);
    if run.state != "success" && run.state != "failed" {
        return Err(Failure(StatusCode::CONFLICT, format!("run '{run_id}' is {}; clear its tasks once it has finished", run.state)));
    }
    let p = find(s, &name)?;
    let mut cleared = tasks;
    if downstream {
        // Tasks list their upstream; walk it the other way until nothing is added.
        let mut grew = true;
        while grew {
            grew = false;
            for t in &p.tasks {
                if !cleared.contains(&t.name) && t.after.iter().any(|a| cleared.contains(a)) {
                    cleared.insert(t.name.clone());
                    grew = true;
                }
            }
        }
    }
    let cleared: Vec<String> = cleared.into_iter().collect();
    let store = s.exec.store();
    if !store.clear_tasks(&name, &run_id, &cleared, &format!("cleared: {}", cleared.join(", ")))? {
        let now = find_run(s, &name, &run_id)?;
        return Err(Failure(
            StatusCode::CONFLICT,
            format!("run '{run_id}' is {} (cleared or triggered again); clear its tasks once it has finished", now.state),
        ));
    }
    s.wake.notify_one();
    let run = find_run(s, &name, &run_id)?;
    let tasks = task_infos(store, &name, &run_id)?;
    Ok(Json(ClearResponse { cleared, run: run_info(run, Some(tasks)) }))
}

/// A live worker: a scheduler or a foreground `weir pipeline run`.
#[derive(Serialize, ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub kind: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, body = [WorkerInfo])))]
async fn list_workers(State(s): State<AppState>) -> Reply<Vec<WorkerInfo>> {
    Ok(Json(
        s.exec
            .store()
            .live_workers()?
            .into_iter()
            .map(|w| WorkerInfo {
                worker_id: w.worker_id,
                kind: w.kind,
                host: w.host,
                pid: w.pid,
                started_at: w.started_at,
                heartbeat_at: w.heartbeat_at,
            })
            .collect(),
    ))
}

/// Where each event went, in the order they were sent.
#[derive(Serialize, ToSchema)]
pub struct Produced {
    pub topic: String,
    pub offsets: Vec<Placed>,
}

#[derive(Serialize, ToSchema)]
pub struct Placed {
    pub partition: u32,
    pub offset: u64,
}

/// The request headers of `POST /api/v1/topics/{topic}/records`, for the document (the
/// handler reads them from the request).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct RecordHeaders {
    /// NAME=VALUE: a header of every record appended (NAME alone: an empty value); repeatable.
    #[param(rename = "Weir-Record-Header", required = false, nullable = false)]
    weir_record_header: String,
}

/// Appends events to a topic of the project's event log: the body is a JSON array of events
/// (objects, as the topic's columns describe them), each keyed by the topic's key column.
/// Each `Weir-Record-Header: NAME=VALUE` of the request is a record header of every event (as
/// `weir log produce --header`; `NAME` alone has an empty value). Durable when the answer comes.
#[utoipa::path(post, path = "/api/v1/topics/{topic}/records", params(("topic" = String, Path), RecordHeaders),
    request_body(content = Vec<Object>, description = "The events, as a JSON array"),
    responses((status = 200, body = Produced), (status = 400, body = ApiError),
        (status = 404, description = "No topic of that name is declared in streams/*.yml or made", body = ApiError)))]
async fn produce_records(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    request_headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply<Produced> {
    let not_found = |topic: &str| Failure(StatusCode::NOT_FOUND, format!("no topic named '{topic}': declare it in streams/*.yml"));
    let mut headers: weir_log::Headers = vec![];
    for v in request_headers.get_all("weir-record-header") {
        let text = String::from_utf8_lossy(v.as_bytes());
        let (name, value) = text.split_once('=').unwrap_or((&text, ""));
        headers.push((name.trim().to_string(), value.as_bytes().to_vec()));
    }
    let events = s.events.clone().ok_or_else(|| not_found(&topic))?;
    let body = body_bytes(body)?;
    let declared = events.topics.iter().find(|t| t.name == topic).cloned();
    let name = topic.clone();
    let placed = tokio::task::spawn_blocking(move || -> Result<Vec<(u32, u64)>, Failure> {
        let log = events.logs.for_topic(&topic).map_err(|e| Failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        match &declared {
            Some(t) => {
                log.create_topic(&t.spec()).map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            }
            None if log.describe(&topic).is_ok() => {}
            None => return Err(not_found(&topic)),
        }
        // An empty body is an empty list: nothing to append.
        let items = if body.iter().all(u8::is_ascii_whitespace) {
            vec![]
        } else {
            match serde_json::from_slice::<J>(&body) {
                Ok(J::Array(items)) => items,
                Ok(_) => return Err(Failure(StatusCode::BAD_REQUEST, "the request body must be a JSON array of events".into())),
                Err(e) => return Err(Failure(StatusCode::BAD_REQUEST, format!("the request body is not JSON: {e}"))),
            }
        };
        if let Some(i) = items.iter().position(|e| !e.is_object()) {
            return Err(Failure(StatusCode::BAD_REQUEST, format!("event {i} of the request body is not a JSON object")));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let key = declared.as_ref().and_then(|t| t.key.as_deref());
        let records: Vec<weir_log::Record> =
            items.iter().map(|e| weir_log::Record { headers: headers.clone(), ..weir_graph::streams::event_record(e, key, now) }).collect();
        log.append(&topic, None, &records).map_err(|e| match e {
            weir_log::LogError::Invalid(m) => Failure(StatusCode::BAD_REQUEST, m),
            other => Failure(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let offsets = placed.into_iter().map(|(partition, offset)| Placed { partition, offset }).collect();
    Ok(Json(Produced { topic: name, offsets }))
}

/// A stream job: what it reads and writes, whether `weir serve` runs it, and its progress.
#[derive(Serialize, ToSchema)]
pub struct StreamInfo {
    pub name: String,
    /// Its file, from the project folder.
    pub path: String,
    pub topic: String,
    /// The topic of the stream joined to it, in an interval join of two streams.
    pub joined_topic: Option<String>,
    /// The table it writes (`schema.table`).
    pub sink: String,
    /// `tumble 60s`, `hop 300s every 60s`, `session gap 30s`, `none (each event)`,
    /// `none (running per key)` or `joined with payments from 0s to 3600s`.
    pub window: String,
    /// Whether `weir serve` runs it (`config(enabled=false)` leaves it to `weir stream run`).
    pub enabled: bool,
    /// `running`, `retrying` (its sink refuses writes; it retries with backoff),
    /// `restarting` (after a failure, until `next_start_at`), `disabled`, `stopped`, `died`
    /// (its last status is old and says running) or `never run`; a job another process runs
    /// shows that process's state.
    pub state: String,
    /// Times the supervisor started it again after a failure.
    pub restarts: u32,
    pub last_error: Option<String>,
    pub next_start_at: Option<DateTime<Utc>>,
    pub events: StreamEvents,
    pub events_per_second: f64,
    /// Events not read yet, over all partitions (of both topics, for a join).
    pub lag: u64,
    pub watermark: Option<DateTime<Utc>>,
    /// The windows its state holds open (for a join of two streams, the events it holds).
    pub windows_held: u64,
    pub partitions: Vec<PartitionProgress>,
    pub checkpointed_at: Option<DateTime<Utc>>,
    /// When its status was last written.
    pub updated_at: Option<DateTime<Utc>>,
    pub result_latency_ms: Option<ResultLatency>,
}

/// Where every event read went: read = counted + late + rejected + filtered.
#[derive(Serialize, ToSchema, Default)]
pub struct StreamEvents {
    pub read: u64,
    pub counted: u64,
    pub late: u64,
    pub rejected: u64,
    pub filtered: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PartitionProgress {
    /// The topic (a join of two streams reads two).
    pub topic: String,
    pub partition: u32,
    /// The next offset the job reads.
    pub offset: u64,
    pub lag: u64,
}

/// From the append of the event that closed a window to its result's commit in the sink.
#[derive(Serialize, ToSchema)]
pub struct ResultLatency {
    pub p50: i64,
    pub p99: i64,
}

fn stream_info(s: &crate::Streams, run: &weir_stream::job::JobRun) -> StreamInfo {
    let supervised = s.states.lock().ok().and_then(|m| m.get(&run.job.name).cloned());
    let status = weir_stream::job::Status::read(&run.dir);
    let time = |ms: Option<i64>| ms.and_then(DateTime::<Utc>::from_timestamp_millis);
    let now = Utc::now().timestamp_millis();
    let written = status.as_ref().map(|st| if st.died(now) { "died".to_string() } else { st.state.clone() });
    let state = match supervised.as_ref().map(|s| s.state.as_str()) {
        // Another process runs it, or it is left to one: its own status says how it goes.
        None | Some("elsewhere" | "disabled") => {
            written.unwrap_or_else(|| if run.job.config.enabled { "never run" } else { "disabled" }.to_string())
        }
        // Running here: its own status says when its sink refuses writes.
        Some("running") if written.as_deref() == Some("retrying") => "retrying".to_string(),
        Some(state) => state.to_string(),
    };
    let st = status.unwrap_or_default();
    let c = &st.counts;
    StreamInfo {
        name: run.job.name.clone(),
        path: run.job.path.display().to_string(),
        topic: run.plan.topic.clone(),
        joined_topic: run.joined.as_ref().map(|t| t.name.clone()),
        sink: run.sink_text(),
        window: run.plan.window_text(),
        enabled: run.job.config.enabled,
        state,
        restarts: supervised.as_ref().map_or(0, |s| s.restarts),
        // The job's own error while it lasts, else why it was last started again.
        last_error: st.last_error.clone().or(supervised.as_ref().and_then(|s| s.last_error.clone())),
        next_start_at: time(supervised.as_ref().and_then(|s| s.next_start_at)),
        events: StreamEvents { read: c.read, counted: c.counted, late: c.late, rejected: c.rejected, filtered: c.filtered },
        events_per_second: st.events_per_second,
        lag: st.lag.values().sum(),
        watermark: time(st.watermark),
        windows_held: st.windows_held as u64,
        partitions: st
            .positions
            .iter()
            .map(|((t, p), o)| PartitionProgress {
                topic: t.clone(),
                partition: *p,
                offset: *o,
                lag: st.lag.get(&(t.clone(), *p)).copied().unwrap_or(0),
            })
            .collect(),
        checkpointed_at: time(st.checkpointed_at),
        updated_at: time(Some(st.updated_at).filter(|t| *t > 0)),
        result_latency_ms: st.latency_ms.map(|(p50, p99)| ResultLatency { p50, p99 }),
    }
}

/// Every stream job of the project (`streams/*.sql`), with its state and progress.
#[utoipa::path(get, path = "/api/v1/streams", responses((status = 200, body = [StreamInfo])))]
async fn list_streams(State(s): State<AppState>) -> Reply<Vec<StreamInfo>> {
    let Some(streams) = s.streams.clone() else { return Ok(Json(vec![])) };
    Ok(Json(streams.jobs.iter().map(|r| stream_info(&streams, r)).collect()))
}

/// One stream job, with its state and progress.
#[utoipa::path(get, path = "/api/v1/streams/{job}", params(("job" = String, Path)),
    responses((status = 200, body = StreamInfo), (status = 404, description = "No stream job of that name", body = ApiError)))]
async fn get_stream(State(s): State<AppState>, Path(job): Path<String>) -> Reply<StreamInfo> {
    let streams = s.streams.clone();
    let found = streams.as_ref().and_then(|st| st.jobs.iter().find(|r| r.job.name == job).map(|r| stream_info(st, r)));
    found.map(Json).ok_or_else(|| {
        let known: Vec<String> = streams.iter().flat_map(|st| st.jobs.iter().map(|r| r.job.name.clone())).collect();
        Failure(StatusCode::NOT_FOUND, format!("no stream job '{job}' in streams/*.sql (jobs: {})", known.join(", ")))
    })
}
