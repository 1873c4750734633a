//! The channel document (`channels/<code>.json`): serde types and validation.
//!
//! A [`ChannelDoc`] is what is on disk; [`ChannelDoc::validate`] turns it into
//! a [`Channel`], the checked form the runtime serves, or a [`FieldError`]
//! naming the field that is wrong.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::pattern::Pattern;

/// Most recordings a channel keeps (`opts.record`).
pub const MAX_RECORD: u32 = 1000;

/// Longest `opts.recv_timeout`, in seconds.
pub const MAX_RECV_TIMEOUT: u64 = 60;
/// `opts.recv_timeout = 0` means this many seconds.
pub const DEFAULT_RECV_TIMEOUT: u64 = 10;
/// The websocket token APIs a channel may allow in `opts.ws_apis`.
pub const WS_APIS: [&str; 3] = ["subscribe", "unsubscribe", "publish"];

/// A channel document exactly as written (unknown fields are refused).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelDoc {
    /// UUID; filled in when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The channel code, equal to the file name stem.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")]
    pub code: String,
    /// `general`, `events` or a configured solution type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Secret external systems present to call in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_local: Option<String>,
    /// Sender CIDRs allowed to use `token_local` (list or comma string).
    #[serde(
        default,
        deserialize_with = "de_ipmask",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(schema_with = ipmask_schema)]
    pub ipmask: Vec<String>,
    /// Secret scripts use when calling out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_remote: Option<String>,
    /// Second secret for calling out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_remote2: Option<String>,
    /// Base URL of the external system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The external system's test endpoint, used in test mode (`opts.mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_test: Option<String>,
    /// The external system's test secret, used in test mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_remote_test: Option<String>,
    /// Script for inbound HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recv_svcscriptcode: Option<String>,
    /// Script that sends to the external system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_svcscriptcode: Option<String>,
    /// Script for inbound websocket `message` frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recv_svcscriptcode_ws: Option<String>,
    /// Script that pushes to this channel's websocket connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_svcscriptcode_ws: Option<String>,
    /// Options.
    #[serde(default)]
    pub opts: ChannelOpts,
    /// Extra keys; `ct` and `lwt` are set by the runtime.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub ext: Map<String, Value>,
}

/// `opts` of a channel document.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelOpts {
    /// Enables the files API.
    pub allow_files_api: bool,
    /// Websocket token APIs allowed, or `["*"]`.
    pub ws_apis: Vec<String>,
    /// Free text.
    pub comment: String,
    /// The HTTP caller waits for the script (`true`) or gets 202 (`false`).
    pub issync: bool,
    /// Seconds a script may run; 0 means 10.
    pub recv_timeout: u64,
    /// Roles of the channel for IAM callers, or `["*"]`.
    pub roles: Vec<String>,
    /// The user scripts of this channel act for.
    pub userid: String,
    /// Free text.
    pub title: String,
    /// Event patterns queued while the channel is offline (events channels).
    pub events: Vec<String>,
    /// Every inbound call gets 503.
    pub disabled: bool,
    /// Attempts of a send job after the first.
    #[schema(maximum = 4294967295_u64)]
    pub send_retries: u32,
    /// Scripts run on a timer or cron expression.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleEntry>,
    /// The job-processing queue the channel's jobs are listed under; default: the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `false`: the channel is stopped whenever it is loaded, until started. Default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// `"production"` (default) or `"test"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// RFC 3339 time after which `token_local` is no longer accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_valid_until: Option<String>,
    /// Recent inbound requests kept for dry runs and replays (0..1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u32>,
}

impl Default for ChannelOpts {
    fn default() -> Self {
        Self {
            allow_files_api: false,
            ws_apis: Vec::new(),
            comment: String::new(),
            issync: false,
            recv_timeout: 0,
            roles: Vec::new(),
            userid: String::new(),
            title: String::new(),
            events: Vec::new(),
            disabled: false,
            send_retries: 3,
            schedule: Vec::new(),
            queue: None,
            autostart: None,
            mode: None,
            token_valid_until: None,
            record: None,
        }
    }
}

/// One `opts.schedule` entry: `every` or `cron`, and the script to run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// An interval such as `30s` or `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A cron expression with a seconds field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The script code to run.
    pub script: String,
}

/// `ipmask` in the API description: what [`de_ipmask`] takes.
fn ipmask_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let one_of = OneOfBuilder::new()
        .item(ArrayBuilder::new().items(text()))
        .item(text())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Sender CIDRs allowed to use token_local: a list, or one comma-separated string",
        ))
        .build();
    Schema::OneOf(one_of)
}

fn de_ipmask<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mask {
        List(Vec<String>),
        Text(String),
        Null(()),
    }
    let list = match Mask::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a list of CIDRs or a comma-separated string")
    })? {
        Mask::List(list) => list,
        Mask::Text(text) => text.split(',').map(str::to_owned).collect(),
        Mask::Null(()) => Vec::new(),
    };
    Ok(list
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// What kind of channel this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// HTTP and websocket traffic to scripts.
    General,
    /// A system-event subscriber.
    Events,
    /// A configured solution type; behaves like `General`.
    Solution(String),
}

/// A validated channel, ready to serve.
#[derive(Debug, Clone)]
pub struct Channel {
    /// The document, with `id`, `ext.ct` and `ext.lwt` filled in.
    pub doc: ChannelDoc,
    /// The channel's id.
    pub id: Uuid,
    /// Its kind.
    pub kind: ChannelKind,
    /// Parsed `ipmask`; empty: any sender.
    pub ipmask: Vec<IpNet>,
    /// Parsed `opts.events`.
    pub events: Vec<Pattern>,
    /// How long one script run of this channel may take.
    pub timeout: Duration,
    /// Parsed `opts.token_valid_until`.
    pub valid_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The values of the fields written as `"$secret:NAME"` (SPEC §20), by
    /// field, resolved when the channel was loaded; never shown.
    pub secrets: std::collections::BTreeMap<&'static str, String>,
}

impl Channel {
    /// The channel code.
    pub fn code(&self) -> &str {
        &self.doc.code
    }

    /// `true` for a `general` or solution-type channel.
    pub fn is_general(&self) -> bool {
        self.kind != ChannelKind::Events
    }

    /// The script code named by one of the script fields, when set.
    pub fn script_for(&self, which: ScriptField) -> Option<&str> {
        if !self.is_general() {
            return None;
        }
        let field = match which {
            ScriptField::Recv => &self.doc.recv_svcscriptcode,
            ScriptField::Send => &self.doc.send_svcscriptcode,
            ScriptField::RecvWs => &self.doc.recv_svcscriptcode_ws,
            ScriptField::SendWs => &self.doc.send_svcscriptcode_ws,
        };
        field.as_deref().filter(|s| !s.is_empty())
    }

    /// `true` when both versions admit callers alike: the same `token_local`,
    /// `ipmask` and `roles` (a change of any closes the websockets they admitted).
    pub fn same_admission(&self, other: &Channel) -> bool {
        self.token_local() == other.token_local()
            && self.ipmask == other.ipmask
            && self.doc.opts.roles == other.doc.opts.roles
    }

    /// The job-processing queue: `opts.queue`, or the code.
    pub fn queue(&self) -> &str {
        self.doc.opts.queue.as_deref().unwrap_or(&self.doc.code)
    }

    /// `true` in test mode (`opts.mode = "test"`).
    pub fn test_mode(&self) -> bool {
        self.doc.opts.mode.as_deref() == Some("test")
    }

    /// The channel as it would be in test mode (`true`) or in production: a
    /// job runs every attempt in the mode it was created in, whatever the
    /// channel's mode is now.
    pub fn in_mode(self: &std::sync::Arc<Self>, test: bool) -> std::sync::Arc<Self> {
        if self.test_mode() == test {
            return self.clone();
        }
        let mut pinned = Channel::clone(self);
        pinned.doc.opts.mode = Some(if test { "test" } else { "production" }.into());
        std::sync::Arc::new(pinned)
    }

    /// The value of a field that may name a secret: the secret's value when
    /// it does (resolved at load), else the field as written; `None` when empty.
    pub fn field(&self, name: &'static str) -> Option<&str> {
        if let Some(value) = self.secrets.get(name) {
            return Some(value);
        }
        let written = match name {
            "token_local" => &self.doc.token_local,
            "token_remote" => &self.doc.token_remote,
            "token_remote2" => &self.doc.token_remote2,
            "token_remote_test" => &self.doc.token_remote_test,
            "url" => &self.doc.url,
            _ => &self.doc.url_test,
        };
        written.as_deref().filter(|s| !s.is_empty())
    }

    /// The external system's URL: `url_test` in test mode when set, else `url`.
    pub fn outbound_url(&self) -> Option<&str> {
        let test = self.test_mode().then(|| self.field("url_test")).flatten();
        test.or_else(|| self.field("url"))
    }

    /// `token_remote()`: `token_remote_test` in test mode when set, else `token_remote`.
    pub fn remote_token(&self) -> Option<&str> {
        let test = self
            .test_mode()
            .then(|| self.field("token_remote_test"))
            .flatten();
        test.or_else(|| self.field("token_remote"))
    }

    /// `true` once `token_local` is past `opts.token_valid_until`.
    pub fn credential_expired(&self) -> bool {
        self.valid_until.is_some_and(|t| chrono::Utc::now() > t)
    }

    /// `false` when the channel is stopped whenever it is loaded (`opts.autostart = false`).
    pub fn autostart(&self) -> bool {
        self.doc.opts.autostart.unwrap_or(true)
    }

    /// `token_local`, when set (a secret's value when it names one).
    pub fn token_local(&self) -> Option<&str> {
        self.field("token_local")
    }

    /// Every script code this channel names (script fields and schedules).
    pub fn script_codes(&self) -> impl Iterator<Item = &str> {
        ScriptField::ALL
            .iter()
            .filter_map(|f| self.script_for(*f))
            .chain(self.doc.opts.schedule.iter().map(|e| e.script.as_str()))
    }
}

/// The four script fields of a channel document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptField {
    /// `recv_svcscriptcode`
    Recv,
    /// `send_svcscriptcode`
    Send,
    /// `recv_svcscriptcode_ws`
    RecvWs,
    /// `send_svcscriptcode_ws`
    SendWs,
}

impl ScriptField {
    /// All four, in document order.
    pub const ALL: [ScriptField; 4] = [Self::Recv, Self::Send, Self::RecvWs, Self::SendWs];

    /// The field's name in the document.
    pub fn name(self) -> &'static str {
        match self {
            Self::Recv => "recv_svcscriptcode",
            Self::Send => "send_svcscriptcode",
            Self::RecvWs => "recv_svcscriptcode_ws",
            Self::SendWs => "send_svcscriptcode_ws",
        }
    }
}

/// A document that is not valid: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `opts.recv_timeout`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line and column in the source text, when known.
    pub line_col: Option<(usize, usize)>,
    /// A secret it names cannot be used (missing, not allowed, unreadable):
    /// the last good version must not keep serving with the old value.
    pub secret: bool,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            line_col: None,
            secret: false,
        }
    }
}

/// Shown instead of a secret (SPEC §9); sent back in a PUT, it keeps the stored secret.
pub const MASK: &str = "***";

/// The fields that hold tokens: masked wherever a document is shown.
pub const TOKEN_FIELDS: [&str; 4] = [
    "token_local",
    "token_remote",
    "token_remote2",
    "token_remote_test",
];

/// Whether a token field's value is shown as [`MASK`]: a secret, not an
/// empty field nor a reference to a secret (`$secret:NAME`), shown as written.
pub fn masked(value: &str) -> bool {
    !value.is_empty() && crate::secrets::reference(value).is_none()
}

/// A channel document (as JSON) with its tokens masked, as §9 shows it.
pub fn mask_doc(doc: &mut serde_json::Value) {
    for field in TOKEN_FIELDS {
        if let Some(slot) = doc.get_mut(field) {
            if slot.as_str().is_some_and(masked) {
                *slot = MASK.into();
            }
        }
    }
}

/// What validation needs to know besides the document.
pub struct ValidationContext<'a> {
    /// Configured solution types.
    pub solution_types: &'a [String],
    /// Script codes that exist as `scripts/<code>.rhai`.
    pub scripts: &'a HashSet<String>,
}

/// `true` when `code` is a valid channel or script code (`^[A-Za-z0-9_.-]{1,64}$`,
/// not starting with a dot: such files are hidden and never loaded).
pub fn valid_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && !code.starts_with('.')
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl ChannelDoc {
    /// Parses JSON text; the error names the field and its position.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line_col = (inner.line() > 0).then(|| (inner.line(), inner.column()));
            let mut message = inner.to_string();
            // serde_json appends " at line L column C"; the position is reported apart.
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            let field = if path == "." { "document".into() } else { path };
            FieldError {
                field,
                message,
                line_col,
                secret: false,
            }
        })
    }

    /// Checks every field; `stem` is the file name stem when read from disk.
    pub fn validate(
        mut self,
        stem: Option<&str>,
        ctx: &ValidationContext<'_>,
    ) -> Result<Channel, FieldError> {
        if !valid_code(&self.code) {
            return Err(FieldError::new(
                "code",
                format!(
                    "{:?} is not a valid code (1 to 64 of A-Z a-z 0-9 _ . -)",
                    self.code
                ),
            ));
        }
        if let Some(stem) = stem {
            if stem != self.code {
                return Err(FieldError::new(
                    "code",
                    format!("{:?} does not match the file name {stem:?}.json", self.code),
                ));
            }
        }
        let id = match self.id.as_deref() {
            None | Some("") => Uuid::new_v5(&Uuid::NAMESPACE_OID, self.code.as_bytes()),
            Some(text) => Uuid::parse_str(text)
                .map_err(|_| FieldError::new("id", format!("{text:?} is not a UUID")))?,
        };
        self.id = Some(id.to_string());
        let kind = match self.kind.as_deref().unwrap_or("general") {
            "" | "general" => ChannelKind::General,
            "events" => ChannelKind::Events,
            other if ctx.solution_types.iter().any(|t| t == other) => {
                ChannelKind::Solution(other.to_owned())
            }
            other => {
                return Err(FieldError::new(
                    "type",
                    format!("{other:?} is not general, events or a configured solution type"),
                ))
            }
        };
        let ipmask = self
            .ipmask
            .iter()
            .map(|s| crate::net::parse_net(s).map_err(|e| FieldError::new("ipmask", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = &self.opts;
        if opts.recv_timeout > MAX_RECV_TIMEOUT {
            return Err(FieldError::new(
                "opts.recv_timeout",
                format!(
                    "{} is above the maximum of {MAX_RECV_TIMEOUT} seconds",
                    opts.recv_timeout
                ),
            ));
        }
        for api in &opts.ws_apis {
            if api != "*" && !WS_APIS.contains(&api.as_str()) {
                return Err(FieldError::new(
                    "opts.ws_apis",
                    format!("{api:?} is not one of subscribe, unsubscribe, publish or \"*\""),
                ));
            }
        }
        let events = opts
            .events
            .iter()
            .map(|p| Pattern::parse(p).map_err(|e| FieldError::new("opts.events", e)))
            .collect::<Result<Vec<_>, _>>()?;
        for (field, url) in [("url", &self.url), ("url_test", &self.url_test)] {
            // A secret's URL is checked once resolved.
            let url = url
                .as_deref()
                .filter(|u| crate::secrets::reference(u).is_none());
            if let Some(url) = url.filter(|u| !u.is_empty()) {
                let own = url.starts_with('/') && !url.starts_with("//");
                if !(url.starts_with("http://") || url.starts_with("https://") || own) {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "{url:?} is not an http:// or https:// URL (nor a path on this server, /…)"
                        ),
                    ));
                }
            }
        }
        let check_script = |field: &str, code: &str| -> Result<(), FieldError> {
            if !valid_code(code) {
                return Err(FieldError::new(
                    field,
                    format!("{code:?} is not a valid script code"),
                ));
            }
            if !ctx.scripts.contains(code) {
                return Err(FieldError::new(
                    field,
                    format!("script {code:?} does not exist (no scripts/{code}.rhai)"),
                ));
            }
            Ok(())
        };
        if kind != ChannelKind::Events {
            for (field, value) in [
                ("recv_svcscriptcode", &self.recv_svcscriptcode),
                ("send_svcscriptcode", &self.send_svcscriptcode),
                ("recv_svcscriptcode_ws", &self.recv_svcscriptcode_ws),
                ("send_svcscriptcode_ws", &self.send_svcscriptcode_ws),
            ] {
                if let Some(code) = value.as_deref().filter(|s| !s.is_empty()) {
                    check_script(field, code)?;
                }
            }
        }
        for (i, entry) in opts.schedule.iter().enumerate() {
            let field = format!("opts.schedule[{i}]");
            match (&entry.every, &entry.cron) {
                (Some(every), None) => {
                    let d = humantime::parse_duration(every).map_err(|e| {
                        FieldError::new(
                            format!("{field}.every"),
                            format!("{every:?} is not an interval ({e})"),
                        )
                    })?;
                    if d < Duration::from_secs(1) {
                        return Err(FieldError::new(
                            format!("{field}.every"),
                            "the interval must be at least 1s",
                        ));
                    }
                }
                (None, Some(expr)) => {
                    <cron::Schedule as std::str::FromStr>::from_str(expr).map_err(|e| {
                        FieldError::new(
                            format!("{field}.cron"),
                            format!("{expr:?} is not a cron expression with a seconds field ({e})"),
                        )
                    })?;
                }
                _ => {
                    return Err(FieldError::new(
                        field,
                        "needs exactly one of \"every\" and \"cron\"",
                    ))
                }
            }
            check_script(&format!("{field}.script"), &entry.script)?;
        }
        if let Some(queue) = &opts.queue {
            if !valid_code(queue) {
                return Err(FieldError::new(
                    "opts.queue",
                    format!("{queue:?} is not a queue name (1 to 64 of A-Z a-z 0-9 _ . -)"),
                ));
            }
        }
        if let Some(mode) = &opts.mode {
            if mode != "production" && mode != "test" {
                return Err(FieldError::new(
                    "opts.mode",
                    format!("{mode:?} is not \"production\" or \"test\""),
                ));
            }
        }
        let valid_until = match opts.token_valid_until.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| {
                        FieldError::new(
                            "opts.token_valid_until",
                            format!("{text:?} is not an RFC 3339 time ({e})"),
                        )
                    })?
                    .with_timezone(&chrono::Utc),
            ),
        };
        if opts.record.is_some_and(|n| n > MAX_RECORD) {
            return Err(FieldError::new(
                "opts.record",
                format!("at most {MAX_RECORD} recordings"),
            ));
        }
        let timeout = Duration::from_secs(match opts.recv_timeout {
            0 => DEFAULT_RECV_TIMEOUT,
            s => s,
        });
        let secrets = self.resolve_secrets()?;
        Ok(Channel {
            doc: self,
            id,
            kind,
            ipmask,
            events,
            timeout,
            valid_until,
            secrets,
        })
    }

    /// The fields that may name a secret, with their values.
    pub fn secret_fields(&self) -> [(&'static str, &Option<String>); 6] {
        [
            ("token_local", &self.token_local),
            ("token_remote", &self.token_remote),
            ("token_remote2", &self.token_remote2),
            ("token_remote_test", &self.token_remote_test),
            ("url", &self.url),
            ("url_test", &self.url_test),
        ]
    }

    /// Resolves every `"$secret:NAME"` field with the secrets in force: a
    /// missing secret, or one whose `channels` do not name this channel, is
    /// an error naming the field and the secret (never a value). Offline
    /// (no secrets in force) references are left as they are.
    fn resolve_secrets(
        &self,
    ) -> Result<std::collections::BTreeMap<&'static str, String>, FieldError> {
        let mut out = std::collections::BTreeMap::new();
        let Some(table) = crate::secrets::table() else {
            return Ok(out);
        };
        for (field, value) in self.secret_fields() {
            let Some(name) = value.as_deref().and_then(crate::secrets::reference) else {
                continue;
            };
            let resolved = table.lookup(name, &self.code).map_err(|e| FieldError {
                secret: true,
                ..FieldError::new(field, e.to_string())
            })?;
            if field.starts_with("url")
                && !(resolved.starts_with("http://") || resolved.starts_with("https://"))
            {
                return Err(FieldError::new(
                    field,
                    format!("secret {name:?} is not an http:// or https:// URL"),
                ));
            }
            out.insert(field, resolved.to_owned());
        }
        Ok(out)
    }

    /// Sets `ext.ct` and `ext.lwt` to `time` where they are missing.
    pub fn fill_times(&mut self, time: SystemTime) {
        let stamp = rfc3339(time);
        for key in ["ct", "lwt"] {
            self.ext
                .entry(key)
                .or_insert_with(|| Value::String(stamp.clone()));
        }
    }
}

/// RFC 3339 text of a time, in UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Finds where `field` (a dotted path) is written in `text`, for `FILE:LINE:COL`.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let leaf = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or(field);
    let needle = format!("\"{leaf}\"");
    let at = text.find(&needle)?;
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    Some((line, col))
}

/// A channel from JSON text with no scripts and no solution types (unit tests).
#[cfg(test)]
pub(crate) fn test_channel(text: &str) -> Channel {
    ChannelDoc::parse(text)
        .unwrap()
        .validate(
            None,
            &ValidationContext {
                solution_types: &[],
                scripts: &HashSet::new(),
            },
        )
        .unwrap()
}

/// Reads and validates one channel file.
pub fn load_file(path: &Path, ctx: &ValidationContext<'_>) -> Result<Channel, FieldError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FieldError::new("document", format!("cannot read: {e}")))?;
    let mut doc = ChannelDoc::parse(&text)?;
    if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
        doc.fill_times(modified);
    }
    let stem = path.file_stem().and_then(|s| s.to_str());
    doc.validate(stem, ctx).map_err(|mut e| {
        e.line_col = locate(&text, &e.field);
        e
    })
}

/// The path of channel `code` in `dir`.
pub fn file_path(dir: &Path, code: &str) -> PathBuf {
    dir.join(format!("{code}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(scripts: &[&str]) -> (Vec<String>, HashSet<String>) {
        (
            vec!["erp".to_string()],
            scripts.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn check(text: &str) -> Result<Channel, FieldError> {
        let (types, scripts) = ctx_with(&["orders_recv"]);
        let ctx = ValidationContext {
            solution_types: &types,
            scripts: &scripts,
        };
        ChannelDoc::parse(text)?.validate(Some("orders"), &ctx)
    }

    #[test]
    fn the_spec_example_is_valid() {
        let (types, scripts) = ctx_with(&["a", "b", "c", "d"]);
        let ctx = ValidationContext {
            solution_types: &types,
            scripts: &scripts,
        };
        let text = r#"{"id":"0b6f2c1e-7d1a-4a5e-9b1f-3d3c2f7a9e10","code":"orders","type":"general",
          "token_local":"t","ipmask":["127.0.0.0/8","10.20.0.0/16"],"token_remote":"r","token_remote2":"",
          "url":"https://erp.example.com/api/","recv_svcscriptcode":"a","send_svcscriptcode":"b",
          "recv_svcscriptcode_ws":"c","send_svcscriptcode_ws":"d",
          "opts":{"allow_files_api":false,"ws_apis":["subscribe","unsubscribe"],"comment":"","issync":true,
          "recv_timeout":0,"roles":["special01"],"userid":"u","title":"T","events":[],"disabled":false,"send_retries":3},
          "ext":{"ct":"2026-11-22T10:00:00Z","lwt":"2026-11-22T10:00:00Z"}}"#;
        let ch = ChannelDoc::parse(text)
            .unwrap()
            .validate(Some("orders"), &ctx)
            .unwrap();
        assert_eq!(ch.ipmask.len(), 2);
        assert_eq!(ch.timeout, Duration::from_secs(10));
        assert_eq!(ch.script_for(ScriptField::RecvWs), Some("c"));
        assert_eq!(ch.id.to_string(), "0b6f2c1e-7d1a-4a5e-9b1f-3d3c2f7a9e10");
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = check(r#"{"code":"orders","colour":"red"}"#).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        let e = check(r#"{"code":"orders","opts":{"isync":true}}"#).unwrap_err();
        assert_eq!(e.field, "opts.isync");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = check(r#"{"code":"orders","opts":{"issync":"yes"}}"#).unwrap_err();
        assert_eq!(e.field, "opts.issync");
        assert_eq!(e.line_col.map(|(l, _)| l), Some(1));
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            (r#"{"code":"or ders"}"#, "code"),
            (r#"{"code":"other"}"#, "code"),
            (r#"{"code":"orders","ipmask":["10.0.0.0/33"]}"#, "ipmask"),
            (
                r#"{"code":"orders","ipmask":"10.0.0.0/8, nonsense"}"#,
                "ipmask",
            ),
            (
                r#"{"code":"orders","opts":{"recv_timeout":61}}"#,
                "opts.recv_timeout",
            ),
            (
                r#"{"code":"orders","recv_svcscriptcode":"missing"}"#,
                "recv_svcscriptcode",
            ),
            (r#"{"code":"orders","type":"weird"}"#, "type"),
            (r#"{"code":"orders","id":"not-a-uuid"}"#, "id"),
            (
                r#"{"code":"orders","opts":{"ws_apis":["dance"]}}"#,
                "opts.ws_apis",
            ),
            (
                r#"{"code":"orders","opts":{"events":["a.>.b"]}}"#,
                "opts.events",
            ),
            (r#"{"code":"orders","url":"ftp://x"}"#, "url"),
            (
                r#"{"code":"orders","opts":{"schedule":[{"every":"1m","cron":"* * * * * *","script":"orders_recv"}]}}"#,
                "opts.schedule[0]",
            ),
        ];
        for (text, field) in cases {
            let e = check(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn ipmask_accepts_a_comma_string_and_defaults_apply() {
        let ch = check(
            r#"{"code":"orders","ipmask":"127.0.0.0/8, ::1/128","opts":{"recv_timeout":60}}"#,
        )
        .unwrap();
        assert_eq!(ch.ipmask.len(), 2);
        assert_eq!(ch.timeout, Duration::from_secs(60));
        assert_eq!(ch.kind, ChannelKind::General);
        assert_eq!(ch.doc.opts.send_retries, 3);
        // No id: a stable UUID v5 of the code.
        assert_eq!(ch.id, check(r#"{"code":"orders"}"#).unwrap().id);
        assert_eq!(ch.id.get_version_num(), 5);
    }

    #[test]
    fn events_channels_ignore_script_fields_and_solution_types_are_general() {
        let ch =
            check(r#"{"code":"orders","type":"events","recv_svcscriptcode":"missing"}"#).unwrap();
        assert_eq!(ch.script_for(ScriptField::Recv), None);
        let ch = check(r#"{"code":"orders","type":"erp"}"#).unwrap();
        assert!(ch.is_general());
    }

    #[test]
    fn locate_finds_the_field() {
        let text = "{\n  \"code\": \"x\",\n  \"opts\": {\"recv_timeout\": 99}\n}";
        assert_eq!(locate(text, "opts.recv_timeout"), Some((3, 12)));
        assert_eq!(locate(text, "nothing"), None);
    }
}
