//! The API description (SPEC §18): `GET /admin/openapi.json`, OpenAPI 3.1
//! made by utoipa from the handlers' own `#[utoipa::path]` attributes.
//!
//! The routes of the admin API, the dry runs, the jobs and files routes are
//! registered through `utoipa_axum`'s router from those attributes, so a route
//! cannot exist without its description nor the other way round. This module
//! holds the document's frame (info, security schemes, tags) and the schemas
//! of the bodies the handlers build as JSON; the schemathesis run of
//! `tests/openapi.rs` holds every answer to them.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::channel::ChannelDoc;
pub use crate::error::ErrorAnswer;
use crate::script::lint::Finding;

/// The frame of the document; the paths come from the routers (and the
/// channel API's from `http::ChannelApi`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Scriptable integration channels: the admin API, the channel routes, jobs, files, events and dry runs (SPEC §18).",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorAnswer)),
    modifiers(&Security),
    security(("admin" = [])),
    tags(
        (name = "channels", description = "Channel documents, stop and start, tokens"),
        (name = "scripts", description = "Rhai service scripts"),
        (name = "jobs", description = "The job-processing view"),
        (name = "live", description = "Connections, events, activity"),
        (name = "develop", description = "Recordings, dry runs, replays"),
        (name = "history", description = "Versions, diffs, restore, the audit log"),
        (name = "secrets", description = "Secrets, sealed at rest, never shown"),
        (name = "channel", description = "What external systems call"),
        (name = "server", description = "Health and metrics"),
        (name = "console", description = "The web console's sign-in"),
    )
)]
pub struct Frame;

/// The two ways in: `admin` (config `admin_token` or an IAM JWT with role
/// admin, header only) and a channel's credential (`token_local` or an IAM
/// JWT, header or `?token=`).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = || {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("admin_token or an IAM JWT"))
                    .build(),
            )
        };
        components.add_security_scheme("admin", bearer());
        components.add_security_scheme("channel_bearer", bearer());
        components.add_security_scheme(
            "channel_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}

/// The description as served, made once from the routers' descriptions.
static JSON: OnceLock<String> = OnceLock::new();

/// The whole description: the frame, then what the routers describe.
pub fn document(routers: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut doc = Frame::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.merge(routers);
    add_common_answers(&mut doc);
    // The document refuses unknown keys (`400 invalid_channel`), but GET adds
    // `status`, `state` and `credential` to it and a PUT may send them back.
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(doc))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("ChannelDoc"))
    {
        doc.additional_properties = None;
    }
    // A handler serving several methods has one operationId: one per method.
    for item in doc.paths.paths.values_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        let ids: Vec<Option<String>> = ops
            .iter()
            .map(|(_, op)| op.as_ref().and_then(|o| o.operation_id.clone()))
            .collect();
        for (method, op) in ops {
            let Some(id) = op.as_mut().and_then(|o| o.operation_id.as_mut()) else {
                continue;
            };
            if ids
                .iter()
                .filter(|other| other.as_ref() == Some(id))
                .count()
                > 1
            {
                *id = format!("{id}_{method}");
            }
        }
    }
    doc
}

/// The answers every guarded route may give besides its own: the admin
/// guard's (401, 403 for a console session, 429 throttled), a channel
/// credential's (SPEC §3: 401, 403 `forbidden_ip`, 404, 429, 503 stopped or
/// disabled), a body's bounds (408, 413) and the cluster's (503
/// `cluster_unavailable`).
fn add_common_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if matches!(path.as_str(), "/healthz" | "/metrics") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let admin = crate::auth::admin_only(path);
            let body = op.request_body.is_some();
            let answers = &mut op.responses.responses;
            let mut add = |status: &str, description: &str| {
                answers
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description).into());
            };
            if admin {
                add("401", "No admin credentials (`unauthorized`)");
                add(
                    "403",
                    "A console session without its CSRF token, or a viewer changing something",
                );
                add(
                    "429",
                    "Too many failed authentications from this sender (`throttled`, Retry-After)",
                );
            }
            if !admin && path.starts_with("/channels/") {
                add("401", "No valid channel credential (`unauthorized`)");
                add(
                    "403",
                    "The sender's address is outside the channel's ipmask (`forbidden_ip`)",
                );
                add("404", "No such channel (`unknown_channel`)");
                add(
                    "429",
                    "Too many failed authentications from this sender (`throttled`, Retry-After)",
                );
                add("503", "The channel is stopped or disabled (`channel_stopped`, `channel_disabled`), or, in cluster mode, NATS is unreachable");
            }
            if body {
                add(
                    "408",
                    "The body did not arrive within body_timeout (`request_timeout`)",
                );
                // A route whose body has another bound names it in its own attribute.
                add(
                    "413",
                    "The body is larger than max_body_bytes (`payload_too_large`)",
                );
            }
            if path != "/admin/openapi.json" {
                add("503", "Cluster mode: NATS is unreachable and the answer needs shared state (`cluster_unavailable`)");
            }
        }
    }
}

/// Keeps the description `GET /admin/openapi.json` answers (the first one
/// made: every router of the process describes the same routes).
pub fn publish(routers: utoipa::openapi::OpenApi) {
    JSON.get_or_init(|| document(routers).to_json().unwrap_or_default());
}

/// `GET /admin/openapi.json`.
#[utoipa::path(
    get, path = "/admin/openapi.json", tag = "server",
    security(("admin" = [])),
    responses(
        (status = 200, description = "This description (OpenAPI 3.1)", content_type = "application/json"),
        (status = 401, description = "No admin credentials", body = ErrorAnswer),
    )
)]
pub async fn openapi() -> Response {
    let doc = JSON.get().map(String::as_str).unwrap_or("{}");
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

/// A channel as the admin API shows it: the document with its secrets
/// masked as `"***"`, plus three keys that are not stored.
#[derive(Serialize, ToSchema)]
pub struct ChannelShown {
    #[serde(flatten)]
    pub doc: ChannelDoc,
    pub status: LoadStatus,
    pub state: ChannelState,
    pub credential: Credential,
    /// When its schedule (`opts.schedule`) runs next (RFC 3339); absent
    /// without a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
}

/// `GET /admin/channels`.
#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelShown>,
}

/// Whether a channel or script file loads, and what serves when it does not.
#[derive(Serialize, ToSchema)]
pub struct LoadStatus {
    pub ok: bool,
    /// Why the file does not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Since when (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_at: Option<String>,
    /// `the last good version` or `nothing: …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    /// The authoring checks' warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<Finding>>,
}

/// Whether a channel serves (SPEC §9).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    Running,
    Stopped,
    Disabled,
}

impl ChannelState {
    /// As written in the API and the log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Disabled => "disabled",
        }
    }
}

/// Whether `token_local` is still accepted (`opts.token_valid_until`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    Valid,
    Expired,
}

/// The answer to a stop or start.
#[derive(Serialize, ToSchema)]
pub struct StateChange {
    pub code: String,
    pub state: ChannelState,
}

/// `GET /admin/channels/{code}/token`.
#[derive(Serialize, ToSchema)]
pub struct TokenShown {
    pub code: String,
    pub token_local: String,
    pub token_valid_until: Option<String>,
}

/// `POST /admin/channels/{code}/token`: the new token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct TokenNew {
    pub code: String,
    pub token_local: String,
}

/// `POST /admin/queues/{name}/production`: the channels switched.
#[derive(Serialize, ToSchema)]
pub struct Switched {
    pub queue: String,
    pub switched: Vec<String>,
}

/// `GET /admin/scripts`.
#[derive(Serialize, ToSchema)]
pub struct ScriptList {
    pub scripts: Vec<ScriptEntry>,
}

/// A script in the listing.
#[derive(Serialize, ToSchema)]
pub struct ScriptEntry {
    pub code: String,
    pub status: LoadStatus,
    /// The channels that name it.
    pub used_by: Vec<String>,
}

/// The answer to `PUT /admin/scripts/{code}`.
#[derive(Serialize, ToSchema)]
pub struct ScriptSaved {
    pub code: String,
    pub status: LoadStatus,
}

/// `POST /admin/check`: the script's compile and authoring errors.
#[derive(Serialize, ToSchema)]
pub struct CheckResult {
    pub ok: bool,
    pub errors: Vec<Finding>,
}

/// A job of the job-processing view (SPEC §7).
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub channel: String,
    /// `send`, `recv` or `schedule`.
    pub kind: String,
    /// `queued`, `running`, `waiting`, `succeeded`, `failed`, `timed_out`.
    pub state: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub created: String,
    pub updated: String,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// What the send script or the callback answered.
    pub result: Option<Value>,
    /// Made by a channel in test mode.
    pub test: bool,
    pub tags: Vec<String>,
    /// The job-processing queue of its channel.
    pub queue: String,
    /// Each attempt (one job only, not in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
    /// The data the job was made with, while it is kept (one job only; a
    /// succeeded job's is dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// One attempt of a job.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub started: String,
    pub duration_ms: i64,
    pub outcome: String,
    pub error: Option<String>,
    /// The node that made it, when another node made it (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its outbound calls (`webquery`), at most 5: method, URL and request
    /// (headers, body) with credentials shown as `***`, the response (status,
    /// headers, body up to 2 KiB) or the error, duration. At most 32 headers
    /// a side, each value up to 512 bytes (`"…"` counts the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<Call>>,
    /// The script's log lines in this attempt, at most 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    /// Calls made past the 5 kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_calls: Option<u64>,
    /// Log lines written past the 50 kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_logs: Option<u64>,
    /// Cluster mode: its calls and logs were left out of the job's shared
    /// record, which would not have fitted one NATS message (oldest first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trail_left_out: Option<bool>,
}

/// One outbound call of a job's attempt.
#[derive(Serialize, ToSchema)]
pub struct Call {
    pub method: String,
    /// Without user or password; a credential query parameter's value is `***`.
    pub url: String,
    /// `{headers, body?}`.
    pub request: Value,
    /// `{status, headers, body}`; absent when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// Why the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One log line of a job's attempt.
#[derive(Serialize, ToSchema)]
pub struct LogLine {
    pub at: String,
    /// `info`, `warn`, `error`, `debug`.
    pub level: String,
    pub text: String,
}

/// `GET /admin/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// `GET /admin/queues`.
#[derive(Serialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<Queue>,
}

/// A job-processing queue.
#[derive(Serialize, ToSchema)]
pub struct Queue {
    pub name: String,
    pub channels: Vec<String>,
    /// Jobs by state.
    #[schema(value_type = Object, additional_properties = true)]
    pub jobs: Value,
}

/// `GET /admin/connections`: the open websockets of each channel.
#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    /// Channel code → its connections `{"id", "address", "opened",
    /// "inflight", "queued_bytes", "waiting_bytes", "patterns"}` (and `node` in a cluster).
    #[schema(value_type = Object)]
    pub connections: Value,
}

/// `GET /admin/overview`: each channel's last hour, a bucket a minute.
#[derive(Serialize, ToSchema)]
pub struct Overview {
    pub bucket_secs: u64,
    /// Channel code → `{"requests", "errors", "p99_ms"}` (60 buckets each) and `last_request`.
    #[schema(value_type = Object)]
    pub channels: Value,
    /// `events_published`, `events_delivered`, `events_queued` (counted since
    /// each node started) and `open_websockets` (now), of every node alive.
    #[schema(value_type = Object)]
    pub totals: Value,
    /// Memory the last hour takes per channel, in bytes.
    pub bytes_per_channel: u64,
}

/// The body of `POST /events`.
#[derive(Serialize, ToSchema)]
pub struct EventIn {
    /// Dotted name, such as `order.created`.
    #[schema(pattern = "^[^.*>\\s]+(\\.[^.*>\\s]+)*$", max_length = 256)]
    pub name: String,
    #[serde(default)]
    pub data: Option<Value>,
}

/// The answer to `POST /events`: the event's id.
#[derive(Serialize, ToSchema)]
pub struct EventAccepted {
    pub id: String,
}

/// The answer to `POST /channels/{code}/send`: the new job.
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    pub job_id: String,
}

/// The body of `POST /channels/{code}/jobs/{id}/result`.
#[derive(Serialize, ToSchema)]
pub struct JobResultIn {
    pub success: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// The answer to a job's result.
#[derive(Serialize, ToSchema)]
pub struct JobResultTaken {
    pub id: String,
    pub state: String,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// The node's name (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `connected` or `disconnected` (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `full` while store writes fail for lack of space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// `GET /admin/channels/{code}/requests`: the recordings, newest first.
#[derive(Serialize, ToSchema)]
pub struct RequestList {
    /// `{"id", "ts", "kind", "method", "path", "query", "headers", "body",
    /// "answer", "duration_ms", "script"}` (SPEC §15).
    #[schema(value_type = Vec<Object>)]
    pub requests: Value,
}

/// The body of `POST /admin/channels/{code}/try`.
#[derive(Serialize, ToSchema)]
pub struct TryIn {
    /// The request to run: `{"method", "path", "query", "headers", "body"}`.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub request: Option<Value>,
    /// Or the id of a recorded request.
    #[serde(default)]
    pub record: Option<String>,
    /// `http` (default) or `ws`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The frame's data when `kind` is `ws`.
    #[serde(default)]
    pub data: Option<Value>,
    /// A draft script (Rhai source); default the channel's.
    #[serde(default)]
    pub script: Option<String>,
    /// `{"webquery": [{"status", "headers", "body"}, …]}`.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub stubs: Option<Value>,
}

/// What a dry run did.
#[derive(Serialize, ToSchema)]
pub struct TryResult {
    #[schema(value_type = Object)]
    pub answer: Value,
    #[schema(value_type = Vec<Object>)]
    pub logs: Value,
    /// `{"fn", "args"}` of each effect recorded instead of done.
    #[schema(value_type = Vec<Object>)]
    pub effects: Value,
    pub duration_ms: f64,
    pub operations: u64,
}

/// The body of `POST /admin/channels/{code}/replay`.
#[derive(Serialize, ToSchema)]
pub struct ReplayIn {
    /// The draft (Rhai source).
    pub script: String,
    /// How many recordings, newest first: default 10, taken into 1..1000.
    #[serde(default)]
    #[schema(schema_with = whole_number)]
    pub limit: Option<u64>,
}

/// Any whole number of JSON, or null (no 64-bit bound: larger is taken as the largest).
fn whole_number() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(0))
        .build()
}

/// What a replay found.
#[derive(Serialize, ToSchema)]
pub struct ReplayResult {
    /// `{"request_id", "request", "before", "after", "same"}` per recording
    /// (`request`: its kind, method, path, query and body).
    #[schema(value_type = Vec<Object>)]
    pub results: Value,
    pub changed: u64,
}

/// Who made a version (SPEC §19).
#[derive(Serialize, ToSchema)]
pub struct VersionBy {
    /// `admin`, `user:<id>`, `file` or `node:<name>`.
    pub by: String,
    /// The caller's address (none for a change in the folder).
    pub address: Option<String>,
    /// The request that made it (none for a change in the folder).
    pub request_id: Option<String>,
}

/// One version, without its content.
#[derive(Serialize, ToSchema)]
pub struct VersionSummary {
    pub number: u64,
    /// RFC 3339.
    pub at: String,
    /// `created`, `changed`, `deleted` or `restored`.
    pub kind: String,
    pub by: VersionBy,
    /// SHA-256 of the content (hex; of nothing for a deletion).
    pub sha256: String,
}

/// `GET …/versions`: newest first.
#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionSummary>,
}

/// `GET …/versions/{n}`: the version with its content (a channel document
/// with its secrets masked; a script's text; `null` for a deletion).
#[derive(Serialize, ToSchema)]
pub struct VersionShown {
    #[serde(flatten)]
    pub summary: VersionSummary,
    pub content: Value,
}

/// `GET …/diff`.
#[derive(Serialize, ToSchema)]
pub struct DiffShown {
    /// A unified diff (`---` / `+++` headers name the versions).
    pub diff: String,
}

/// `POST …/restore`.
#[derive(serde::Deserialize, ToSchema)]
pub struct RestoreIn {
    /// The version to bring back.
    pub version: u64,
}

/// One entry of the audit log (SPEC §19).
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    /// RFC 3339.
    pub at: String,
    /// Unix milliseconds of `at`.
    pub ms: i64,
    /// `channel.create`, `channel.change`, `token.show`, `console.sign_in_failed`…
    pub action: String,
    /// The channel, script or secret acted on, when there is one.
    pub code: Option<String>,
    /// `admin`, `user:<id>`, or `anonymous` (refused before the caller was known).
    pub by: String,
    pub address: String,
    pub request_id: String,
    /// The HTTP status answered.
    pub status: u16,
    /// For changes: the current version before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// For changes: the current version after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

/// `GET /admin/audit`: newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// `PUT /admin/secrets/{name}` (SPEC §20).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretIn {
    /// The value; stored sealed, never shown again.
    pub value: String,
    /// The channels that may use it (`["*"]`: every channel; none when left out).
    #[serde(default)]
    pub channels: Vec<String>,
}

/// A secret as the API shows it: never its value.
#[derive(Serialize, ToSchema)]
pub struct SecretShown {
    pub name: String,
    pub channels: Vec<String>,
    /// When it was last set (RFC 3339).
    pub updated: String,
    /// 1, 2, … one more at every set.
    pub version: u64,
}

/// `GET /admin/secrets`.
#[derive(Serialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretShown>,
}
