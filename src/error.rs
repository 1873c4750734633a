//! One error type for every HTTP answer that is not a script's own.
//!
//! [`AppError`] becomes a response carrying an [`ErrorBody`] extension; the
//! request layer (`telemetry::request_layer`) renders it as the JSON body
//! `{"error", "message"?, "request_id"}`, so the request id is added in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer: status, `error` code and an optional human message.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404 `unknown_channel`.
    #[error("unknown channel")]
    UnknownChannel,
    /// 404 `not_found`: no such route or object.
    #[error("not found")]
    NotFound,
    /// 401 `unauthorized`.
    #[error("unauthorized")]
    Unauthorized,
    /// 403 `forbidden_ip`.
    #[error("sender address not allowed")]
    ForbiddenIp,
    /// 403 with a specific code: a console session may not do this
    /// (`read_only` for a viewer, `csrf` without the session's CSRF token).
    #[error("{1}")]
    Forbidden(&'static str, String),
    /// 503 `channel_disabled`.
    #[error("channel disabled")]
    ChannelDisabled,
    /// 503 `channel_stopped`.
    #[error("channel stopped")]
    ChannelStopped,
    /// 429 `throttled`, with `Retry-After` seconds.
    #[error("too many failed authentications")]
    Throttled(u64),
    /// 501 `no_script`.
    #[error("the channel has no script for this")]
    NoScript,
    /// 500 `script_error`; the message only when `expose_script_errors` is on.
    #[error("script error")]
    Script(Option<String>),
    /// 504 `timeout`.
    #[error("script timed out")]
    Timeout,
    /// 413 `payload_too_large`.
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(u64),
    /// 431 `headers_too_large`: the request line and headers past `max_header_bytes`.
    #[error("the request line and headers are larger than {0} bytes (max_header_bytes)")]
    HeadersTooLarge(usize),
    /// 415 `unsupported_body`.
    #[error("body is not UTF-8 text")]
    UnsupportedBody,
    /// 400 `bad_request`.
    #[error("{0}")]
    BadRequest(String),
    /// 408 `request_timeout`.
    #[error("request body not received in time")]
    RequestTimeout,
    /// 400 `invalid_channel`: the message names the field.
    #[error("{0}")]
    InvalidChannel(String),
    /// 404 with a specific code (`unknown_script`…).
    #[error("{1}")]
    Missing(&'static str, String),
    /// 400 with a specific code (`bad_file_name`…).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// 409 with a specific code (`channel_exists`, `script_in_use`).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 422 `compile_error`, with `line` and `col` in the body.
    #[error("{0}")]
    Compile(crate::script::error::CompileError),
    /// 422 with a specific code (`would_not_load`): the content would not load.
    #[error("{1}")]
    Unloadable(&'static str, String),
    /// 429 with a specific code (`inbox_full`): a bound of the channel is reached.
    #[error("{1}")]
    Full(&'static str, String),
    /// 507 `insufficient_storage`: a storage quota (or the disk) has no room.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 503 `cluster_unavailable`: NATS is unreachable and the answer needs
    /// shared state (SPEC §13).
    #[error("the cluster's shared state is unreachable; try again later")]
    ClusterUnavailable,
    /// 501 with a specific code (`unsupported_transfer_coding`).
    #[error("{1}")]
    Unsupported(&'static str, String),
    /// 500 `internal`; details are logged, never sent.
    #[error("internal error")]
    Internal,
}

impl AppError {
    /// A store failure while serving `what`: `507 insufficient_storage` when
    /// the disk is full, `503 cluster_unavailable` when NATS is unreachable,
    /// else `500 internal` (logged either way).
    pub fn store(what: &str, e: &crate::store::StoreError) -> Self {
        if e.is_cluster_unavailable() {
            tracing::warn!("{what}: {e}");
            return Self::ClusterUnavailable;
        }
        tracing::error!("{what}: {e}");
        if e.is_full() {
            Self::InsufficientStorage("no space left for the store; try again later".into())
        } else {
            Self::Internal
        }
    }

    /// A file-system failure while serving `what`: `507` when the disk is full.
    pub fn io(what: &str, e: &std::io::Error) -> Self {
        tracing::error!("{what}: {e}");
        if e.kind() == std::io::ErrorKind::StorageFull {
            Self::InsufficientStorage("no space left on the disk; try again later".into())
        } else {
            Self::Internal
        }
    }
}

/// The error part of a response, turned into JSON by the request layer.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    /// The `error` code.
    pub code: &'static str,
    /// The optional `message`.
    pub message: Option<String>,
    /// Line and column of a compile error.
    pub at: Option<(usize, usize)>,
}

impl ErrorBody {
    /// The body sent, with the request's id.
    pub fn answer<'a>(&'a self, request_id: &'a str) -> ErrorAnswer<'a> {
        ErrorAnswer {
            error: self.code,
            message: self.message.as_deref(),
            request_id,
            line: self.at.map(|a| a.0),
            col: self.at.map(|a| a.1),
        }
    }
}

/// Every error answer's JSON body (SPEC §4, §18).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorAnswer<'a> {
    /// A stable code: `unknown_channel`, `unauthorized`, `bad_request`,
    /// `invalid_channel`, `compile_error`, `channel_stopped`…
    #[schema(example = "unknown_channel")]
    pub error: &'a str,
    /// What went wrong, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// The request's id, as in the `x-request-id` header and the log.
    pub request_id: &'a str,
    /// The line of a `compile_error` (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The column of a `compile_error` (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub col: Option<usize>,
}

impl AppError {
    /// The HTTP status and the `error` code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnknownChannel => (StatusCode::NOT_FOUND, "unknown_channel"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::ForbiddenIp => (StatusCode::FORBIDDEN, "forbidden_ip"),
            Self::Forbidden(code, _) => (StatusCode::FORBIDDEN, code),
            Self::ChannelDisabled => (StatusCode::SERVICE_UNAVAILABLE, "channel_disabled"),
            Self::ChannelStopped => (StatusCode::SERVICE_UNAVAILABLE, "channel_stopped"),
            Self::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Self::NoScript => (StatusCode::NOT_IMPLEMENTED, "no_script"),
            Self::Script(_) => (StatusCode::INTERNAL_SERVER_ERROR, "script_error"),
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::UnsupportedBody => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_body"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::InvalidChannel(_) => (StatusCode::BAD_REQUEST, "invalid_channel"),
            Self::Missing(code, _) => (StatusCode::NOT_FOUND, code),
            Self::Invalid(code, _) => (StatusCode::BAD_REQUEST, code),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, code),
            Self::Compile(_) => (StatusCode::UNPROCESSABLE_ENTITY, "compile_error"),
            Self::Unloadable(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Full(code, _) => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Self::Unsupported(code, _) => (StatusCode::NOT_IMPLEMENTED, code),
            Self::ClusterUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn message(&self) -> Option<String> {
        match self {
            // A script error may quote a secret's value (an outbound error's URL).
            Self::Script(m) => m.as_deref().map(crate::secrets::redacted),
            Self::PayloadTooLarge(_)
            | Self::HeadersTooLarge(_)
            | Self::BadRequest(_)
            | Self::Throttled(_)
            | Self::InvalidChannel(_)
            | Self::Missing(..)
            | Self::Invalid(..)
            | Self::Conflict(..)
            | Self::Full(..)
            | Self::Unloadable(..)
            | Self::Unsupported(..)
            | Self::Forbidden(..)
            | Self::InsufficientStorage(_)
            | Self::ClusterUnavailable => Some(self.to_string()),
            Self::Compile(e) => Some(e.message.clone()),
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = status.into_response();
        match self {
            Self::Throttled(secs) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            // The rest of the body is not wanted; the connection cannot be reused.
            Self::PayloadTooLarge(_) | Self::HeadersTooLarge(_) => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        let at = match &self {
            Self::Compile(e) => Some((e.line, e.col)),
            _ => None,
        };
        response.extensions_mut().insert(ErrorBody {
            code,
            message: self.message(),
            at,
        });
        response
    }
}
