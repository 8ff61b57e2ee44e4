//! The schema registry's HTTP API under `/registry`: Confluent's paths, bodies, content
//! type and error shapes (`{"error_code": 40401, "message": "..."}`), so Confluent's
//! clients (serializers, `SchemaRegistryClient`, Kafka Connect converters) take
//! `http://HOST:PORT/registry` as their registry URL.
//!
//! Bodies are read whatever their content type says (clients send
//! `application/vnd.schemaregistry.v1+json`), and answers carry that type.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use weir_registry::{Error, Registered, Registry, SchemaRequest, SchemaType, VersionRef};

use crate::AppState;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes, to be nested under `/registry`.
pub fn routes(state: &AppState) -> Router {
    let registry = Registry::new(state.exec.store().clone());
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/openapi.json", get(|| async { reply(serde_json::to_value(RegistryDoc::openapi()).unwrap_or_default()) }))
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(raw_version))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/compatibility/subjects/{subject}/versions", post(check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_one))
        .route("/config", get(get_global_config).put(put_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(get_config).put(put_config).delete(delete_config))
        .route("/mode", get(get_global_mode).put(put_global_mode).delete(delete_global_mode))
        .route("/mode/{subject}", get(get_mode).put(put_mode).delete(delete_mode))
        .fallback(|| async { Confluent(404, 404, "HTTP 404 Not Found".into()).into_response() })
        .layer(middleware::from_fn(confluent_errors))
        .with_state(registry)
}

/// The registry's OpenAPI document, served at `/registry/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Weir schema registry", description = "Confluent's schema registry API, served by weir serve under /registry: schemas by id, subjects and versions, compatibility checks, levels and modes."),
    paths(
        types, schema_by_id, raw_schema_by_id, subjects_by_id, versions_by_id, subjects, lookup, delete_subject, versions, register,
        version, delete_version, raw_version, referenced_by, check_all, check_one, get_global_config, put_global_config,
        delete_global_config, get_config, put_config, delete_config, get_global_mode, put_global_mode, delete_global_mode,
        get_mode, put_mode, delete_mode
    ),
    components(schemas(SchemaBody, ReferenceBody, SchemaInfo, IdInfo, SubjectVersionInfo, CompatibilityInfo, ConfigBody, ConfigInfo, ConfigSet, ModeBody, RegistryError)),
    modifiers(&RegistryAuth),
    security(("bearer" = []), ("basic" = []))
)]
pub struct RegistryDoc;

struct RegistryAuth;

impl utoipa::Modify for RegistryAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
        openapi.servers = Some(vec![utoipa::openapi::Server::new("/registry")]);
        // Every answer is of the registry's content type.
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    if let utoipa::openapi::RefOr::T(r) = response
                        && let Some(content) = r.content.shift_remove("application/json")
                    {
                        r.content.insert(CONTENT_TYPE.to_string(), content);
                    }
                }
            }
        }
    }
}

/// An error, as Confluent's registry renders it.
#[derive(Serialize, ToSchema)]
pub struct RegistryError {
    /// 40401 subject, 40402 version, 40403 schema not found; 40404-40407 soft-delete order;
    /// 40408/40409 no subject-level level/mode; 409 incompatible; 42201 invalid schema;
    /// 42202 version; 42203 level; 42204 mode; 42205 not permitted; 42206 referenced; 50001 store.
    pub error_code: u32,
    pub message: String,
}

/// A schema to register, look up or check.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaBody {
    /// The schema's text: Avro or JSON Schema JSON, `.proto` text or a base64 `FileDescriptorProto`.
    pub schema: String,
    /// AVRO (the default), JSON or PROTOBUF.
    #[serde(default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<ReferenceBody>,
    /// IMPORT mode only: the id to keep.
    #[serde(default)]
    pub id: Option<i64>,
    /// IMPORT mode only: the version to keep.
    #[serde(default)]
    pub version: Option<i64>,
}

/// A schema another one refers to, under the name the referring schema uses.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReferenceBody {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

impl From<SchemaBody> for SchemaRequest {
    fn from(b: SchemaBody) -> SchemaRequest {
        let references =
            b.references.into_iter().map(|r| weir_registry::Reference { name: r.name, subject: r.subject, version: r.version }).collect();
        SchemaRequest { schema: b.schema, schema_type: b.schema_type, references, id: b.id, version: b.version }
    }
}

/// A schema, with its subject, version and id where the path names a version.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Left out for AVRO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ReferenceBody>,
    pub schema: String,
}

/// The id a registration got.
#[derive(Serialize, ToSchema)]
pub struct IdInfo {
    pub id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectVersionInfo {
    pub subject: String,
    pub version: i64,
}

/// The answer to a compatibility check; `messages` with `?verbose=true`.
#[derive(Serialize, ToSchema)]
pub struct CompatibilityInfo {
    pub is_compatible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<String>>,
}

/// A level to set: `compatibility` (or `compatibilityLevel`) is NONE, BACKWARD, ...
#[derive(Deserialize, ToSchema)]
pub struct ConfigBody {
    pub compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigInfo {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigSet {
    pub compatibility: String,
}

/// A mode: READWRITE, READONLY or IMPORT.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ModeBody {
    pub mode: String,
}

/// An error as Confluent's registry renders it.
struct Confluent(u16, u32, String);

impl IntoResponse for Confluent {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, json!({"error_code": self.1, "message": self.2}).to_string()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        r
    }
}

impl From<Error> for Confluent {
    fn from(e: Error) -> Confluent {
        Confluent(e.status(), e.code(), e.to_string())
    }
}

type Answer = Result<Response, Confluent>;

/// Posts that only read: looking a schema up under a subject, checking compatibility
/// (`open_reads` opens them with the GETs, as serializers that do not register need them).
pub fn is_read(method: &axum::http::Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/registry/") else { return false };
    method == axum::http::Method::POST
        && (rest.starts_with("compatibility/") || rest.strip_prefix("subjects/").is_some_and(|s| !s.is_empty() && !s.contains('/')))
}

/// A refusal by the token check, in the registry's shape.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let mut r = Confluent(status.as_u16(), status.as_u16() as u32, message.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn reply(v: J) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// Errors axum answers before a handler (a method a path does not take, a body over the
/// limit) get the registry's shape too.
async fn confluent_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let ours = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == CONTENT_TYPE.as_bytes());
    if ours || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut r = Confluent(status.as_u16(), status.as_u16() as u32, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        r.headers_mut().insert(header::ALLOW, allow.clone());
    }
    r
}

/// The query flags the registry's paths take, read as Confluent's registry reads them: an
/// unknown flag is ignored, a repeated one takes its first value, and a boolean is true only
/// when it says `true` in any case (Java's `Boolean.parseBoolean`; Python's client sends
/// `True` and `False`).
#[derive(Default)]
struct Flags {
    deleted: bool,
    permanent: bool,
    verbose: bool,
    force: bool,
    default_to_global: bool,
    subject: Option<String>,
    subject_prefix: Option<String>,
    format: Option<String>,
}

impl Flags {
    fn parse(query: Option<String>) -> Flags {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let flag = |name: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Flags {
            deleted: flag("deleted"),
            permanent: flag("permanent"),
            verbose: flag("verbose"),
            force: flag("force"),
            default_to_global: flag("defaultToGlobal"),
            subject: get("subject"),
            subject_prefix: get("subjectPrefix"),
            format: get("format"),
        }
    }
}

fn answer<T: Serialize>(v: T) -> Answer {
    Ok(reply(serde_json::to_value(v).map_err(|e| Confluent(500, 50001, e.to_string()))?))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Confluent> {
    serde_json::from_slice(bytes).map_err(|e| Confluent(422, 422, format!("Unprocessable body: {e}")))
}

fn schema_body(bytes: &Bytes) -> Result<SchemaRequest, Confluent> {
    body::<SchemaBody>(bytes).map(SchemaRequest::from)
}

fn id(raw: &str) -> Result<i64, Confluent> {
    raw.parse().map_err(|_| Confluent::from(Error::SchemaNotFound(raw.to_string())))
}

fn version_ref(raw: &str) -> Result<VersionRef, Confluent> {
    VersionRef::parse(raw).map_err(Confluent::from)
}

/// A schema as the registry shows it: the type and references only when they say
/// something (AVRO and none are the defaults).
fn schema_info(r: Registered, with_version: bool) -> SchemaInfo {
    SchemaInfo {
        subject: with_version.then(|| r.subject.clone()),
        version: with_version.then_some(r.version),
        id: with_version.then_some(r.id),
        schema_type: (r.schema_type != SchemaType::Avro).then(|| r.schema_type.name().to_string()),
        references: r.references.into_iter().map(|x| ReferenceBody { name: x.name, subject: x.subject, version: x.version }).collect(),
        schema: r.schema,
    }
}

/// A schema's text alone: JSON for Avro and JSON Schema, a string for `.proto`.
fn raw_schema(s: &Registered) -> Response {
    match serde_json::from_str::<J>(&s.schema) {
        Ok(v) => reply(v),
        Err(_) => reply(J::String(s.schema.clone())),
    }
}

#[utoipa::path(get, path = "/schemas/types", responses((status = 200, body = [String])))]
async fn types() -> Answer {
    answer(SchemaType::ALL.map(SchemaType::name))
}

#[utoipa::path(get, path = "/schemas/ids/{id}", params(("id" = i64, Path), ("subject" = Option<String>, Query, description = "Only if this subject has it"), ("format" = Option<String>, Query, description = "serialized: a Protobuf schema as a base64 FileDescriptorProto")),
    responses((status = 200, body = SchemaInfo), (status = 404, body = RegistryError)))]
async fn schema_by_id(State(r): State<Registry>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    let mut s = r.schema(id(&raw)?, f.subject.as_deref())?;
    s.schema = r.formatted(&s, f.format.as_deref())?;
    answer(schema_info(s, false))
}

#[utoipa::path(get, path = "/schemas/ids/{id}/schema", params(("id" = i64, Path), ("subject" = Option<String>, Query, description = "Only if this subject has it")),
    responses((status = 200, description = "The schema alone"), (status = 404, body = RegistryError)))]
async fn raw_schema_by_id(State(r): State<Registry>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    Ok(raw_schema(&r.schema(id(&raw)?, f.subject.as_deref())?))
}

#[utoipa::path(get, path = "/schemas/ids/{id}/subjects", params(("id" = i64, Path), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")),
    responses((status = 200, body = [String]), (status = 404, body = RegistryError)))]
async fn subjects_by_id(State(r): State<Registry>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    let mut subjects: Vec<String> = r.schema_versions(id(&raw)?, f.deleted)?.into_iter().map(|v| v.subject).collect();
    subjects.dedup();
    answer(subjects)
}

#[utoipa::path(get, path = "/schemas/ids/{id}/versions", params(("id" = i64, Path), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")),
    responses((status = 200, body = [SubjectVersionInfo]), (status = 404, body = RegistryError)))]
async fn versions_by_id(State(r): State<Registry>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    let versions = r.schema_versions(id(&raw)?, f.deleted)?;
    answer(versions.into_iter().map(|v| SubjectVersionInfo { subject: v.subject, version: v.version }).collect::<Vec<_>>())
}

#[utoipa::path(get, path = "/subjects", params(("subjectPrefix" = Option<String>, Query, description = "Only subjects starting with this"), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")), responses((status = 200, body = [String])))]
async fn subjects(State(r): State<Registry>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(r.subjects(f.subject_prefix.as_deref(), f.deleted)?)
}

#[utoipa::path(post, path = "/subjects/{subject}", params(("subject" = String, Path), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")), request_body = SchemaBody,
    responses((status = 200, body = SchemaInfo), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn lookup(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery, bytes: Bytes) -> Answer {
    let f = Flags::parse(q);
    answer(schema_info(r.lookup(&subject, &schema_body(&bytes)?, f.deleted)?, true))
}

#[utoipa::path(delete, path = "/subjects/{subject}", params(("subject" = String, Path), ("permanent" = Option<String>, Query, description = "true: delete for good, after a soft delete")),
    responses((status = 200, body = [i64]), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn delete_subject(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(r.delete_subject(&subject, f.permanent)?)
}

#[utoipa::path(get, path = "/subjects/{subject}/versions", params(("subject" = String, Path), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")),
    responses((status = 200, body = [i64]), (status = 404, body = RegistryError)))]
async fn versions(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(r.versions(&subject, f.deleted)?)
}

#[utoipa::path(post, path = "/subjects/{subject}/versions", params(("subject" = String, Path)), request_body = SchemaBody,
    responses((status = 200, body = IdInfo), (status = 409, body = RegistryError), (status = 422, body = RegistryError)))]
async fn register(State(r): State<Registry>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    answer(IdInfo { id: r.register(&subject, &schema_body(&bytes)?)?.id })
}

#[utoipa::path(get, path = "/subjects/{subject}/versions/{version}", params(("subject" = String, Path), ("version" = String, Path, description = "A number, or latest"), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too"), ("format" = Option<String>, Query, description = "serialized: a Protobuf schema as a base64 FileDescriptorProto")),
    responses((status = 200, body = SchemaInfo), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn version(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    let mut found = r.version(&subject, version_ref(&v)?, f.deleted)?;
    found.schema = r.formatted(&found, f.format.as_deref())?;
    answer(schema_info(found, true))
}

#[utoipa::path(delete, path = "/subjects/{subject}/versions/{version}", params(("subject" = String, Path), ("version" = String, Path), ("permanent" = Option<String>, Query, description = "true: delete for good, after a soft delete")),
    responses((status = 200, body = i64), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn delete_version(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(r.delete_version(&subject, version_ref(&v)?, f.permanent)?)
}

#[utoipa::path(get, path = "/subjects/{subject}/versions/{version}/schema", params(("subject" = String, Path), ("version" = String, Path), ("deleted" = Option<String>, Query, description = "true: soft-deleted ones too")),
    responses((status = 200, description = "The schema alone"), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn raw_version(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    Ok(raw_schema(&r.version(&subject, version_ref(&v)?, f.deleted)?))
}

#[utoipa::path(get, path = "/subjects/{subject}/versions/{version}/referencedby", params(("subject" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = [i64]), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn referenced_by(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>) -> Answer {
    answer(r.referenced_by(&subject, version_ref(&v)?)?)
}

fn compatibility(messages: Vec<String>, verbose: bool) -> Answer {
    answer(CompatibilityInfo { is_compatible: messages.is_empty(), messages: verbose.then_some(messages) })
}

#[utoipa::path(post, path = "/compatibility/subjects/{subject}/versions", params(("subject" = String, Path), ("verbose" = Option<String>, Query, description = "true: say why not")), request_body = SchemaBody,
    responses((status = 200, body = CompatibilityInfo), (status = 422, body = RegistryError)))]
async fn check_all(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery, bytes: Bytes) -> Answer {
    let f = Flags::parse(q);
    compatibility(r.check(&subject, None, &schema_body(&bytes)?)?, f.verbose)
}

#[utoipa::path(post, path = "/compatibility/subjects/{subject}/versions/{version}", params(("subject" = String, Path), ("version" = String, Path), ("verbose" = Option<String>, Query, description = "true: say why not")),
    request_body = SchemaBody, responses((status = 200, body = CompatibilityInfo), (status = 404, body = RegistryError), (status = 422, body = RegistryError)))]
async fn check_one(State(r): State<Registry>, Path((subject, v)): Path<(String, String)>, RawQuery(q): RawQuery, bytes: Bytes) -> Answer {
    let f = Flags::parse(q);
    compatibility(r.check(&subject, Some(version_ref(&v)?), &schema_body(&bytes)?)?, f.verbose)
}

fn level_of(bytes: &Bytes) -> Result<String, Confluent> {
    let b: ConfigBody = body(bytes)?;
    b.compatibility.or(b.compatibility_level).ok_or_else(|| Confluent::from(Error::InvalidCompatibility(String::new())))
}

fn level(l: weir_registry::Level) -> ConfigInfo {
    ConfigInfo { compatibility_level: l.name().to_string() }
}

#[utoipa::path(get, path = "/config", responses((status = 200, body = ConfigInfo)))]
async fn get_global_config(State(r): State<Registry>) -> Answer {
    answer(level(r.compatibility(None, true)?))
}

#[utoipa::path(put, path = "/config", request_body = ConfigBody, responses((status = 200, body = ConfigSet), (status = 422, body = RegistryError)))]
async fn put_global_config(State(r): State<Registry>, bytes: Bytes) -> Answer {
    answer(ConfigSet { compatibility: r.set_compatibility(None, &level_of(&bytes)?)?.name().to_string() })
}

#[utoipa::path(delete, path = "/config", responses((status = 200, body = ConfigInfo, description = "The level it had")))]
async fn delete_global_config(State(r): State<Registry>) -> Answer {
    answer(level(r.delete_compatibility(None)?))
}

#[utoipa::path(get, path = "/config/{subject}", params(("subject" = String, Path), ("defaultToGlobal" = Option<String>, Query, description = "true: the global one when the subject has none")),
    responses((status = 200, body = ConfigInfo), (status = 404, body = RegistryError)))]
async fn get_config(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(level(r.compatibility(Some(&subject), f.default_to_global)?))
}

#[utoipa::path(put, path = "/config/{subject}", params(("subject" = String, Path)), request_body = ConfigBody,
    responses((status = 200, body = ConfigSet), (status = 422, body = RegistryError)))]
async fn put_config(State(r): State<Registry>, Path(subject): Path<String>, bytes: Bytes) -> Answer {
    answer(ConfigSet { compatibility: r.set_compatibility(Some(&subject), &level_of(&bytes)?)?.name().to_string() })
}

#[utoipa::path(delete, path = "/config/{subject}", params(("subject" = String, Path)),
    responses((status = 200, body = ConfigInfo, description = "The level it had"), (status = 404, body = RegistryError)))]
async fn delete_config(State(r): State<Registry>, Path(subject): Path<String>) -> Answer {
    answer(level(r.delete_compatibility(Some(&subject))?))
}

fn mode(m: weir_registry::Mode) -> ModeBody {
    ModeBody { mode: m.name().to_string() }
}

#[utoipa::path(get, path = "/mode", responses((status = 200, body = ModeBody)))]
async fn get_global_mode(State(r): State<Registry>) -> Answer {
    answer(mode(r.mode(None, true)?))
}

#[utoipa::path(put, path = "/mode", params(("force" = Option<String>, Query, description = "true: IMPORT though subjects exist")), request_body = ModeBody,
    responses((status = 200, body = ModeBody), (status = 422, body = RegistryError)))]
async fn put_global_mode(State(r): State<Registry>, RawQuery(q): RawQuery, bytes: Bytes) -> Answer {
    let f = Flags::parse(q);
    let b: ModeBody = body(&bytes)?;
    answer(mode(r.set_mode(None, &b.mode, f.force)?))
}

#[utoipa::path(delete, path = "/mode", responses((status = 200, body = ModeBody, description = "The mode it had")))]
async fn delete_global_mode(State(r): State<Registry>) -> Answer {
    answer(mode(r.delete_mode(None)?))
}

#[utoipa::path(get, path = "/mode/{subject}", params(("subject" = String, Path), ("defaultToGlobal" = Option<String>, Query, description = "true: the global one when the subject has none")),
    responses((status = 200, body = ModeBody), (status = 404, body = RegistryError)))]
async fn get_mode(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let f = Flags::parse(q);
    answer(mode(r.mode(Some(&subject), f.default_to_global)?))
}

#[utoipa::path(put, path = "/mode/{subject}", params(("subject" = String, Path), ("force" = Option<String>, Query, description = "true: IMPORT though subjects exist")), request_body = ModeBody,
    responses((status = 200, body = ModeBody), (status = 422, body = RegistryError)))]
async fn put_mode(State(r): State<Registry>, Path(subject): Path<String>, RawQuery(q): RawQuery, bytes: Bytes) -> Answer {
    let f = Flags::parse(q);
    let b: ModeBody = body(&bytes)?;
    answer(mode(r.set_mode(Some(&subject), &b.mode, f.force)?))
}

#[utoipa::path(delete, path = "/mode/{subject}", params(("subject" = String, Path)),
    responses((status = 200, body = ModeBody, description = "The mode it had"), (status = 404, body = RegistryError)))]
async fn delete_mode(State(r): State<Registry>, Path(subject): Path<String>) -> Answer {
    answer(mode(r.delete_mode(Some(&subject))?))
}
