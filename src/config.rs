//! `switchyard.toml`: every key optional, defaults in one place (`Default`).
//!
//! Unknown keys and values of the wrong type stop start-up with a message that
//! names the key (serde's `deny_unknown_fields` plus toml's located errors).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Folder of channel documents (`<code>.json`).
    pub channels: PathBuf,
    /// Folder of service scripts (`<code>.rhai`).
    pub scripts: PathBuf,
    /// Folder of the embedded store.
    pub data: PathBuf,
    /// Bearer token for `/admin`; empty: admin only through IAM role `admin`.
    pub admin_token: String,
    /// Peers whose `X-Forwarded-For` is believed.
    #[serde(deserialize_with = "de_cidrs")]
    pub trusted_proxies: Vec<IpNet>,
    /// Extra channel types that behave like `general`.
    pub solution_types: Vec<String>,
    /// Put the script's error message and position into 500 answers.
    pub expose_script_errors: bool,
    /// Largest inbound HTTP body.
    pub max_body_bytes: u64,
    /// Largest file of the files API.
    pub max_file_bytes: u64,
    /// Messages run at once per websocket connection.
    pub ws_max_inflight: usize,
    /// Largest websocket frame.
    pub ws_max_frame_bytes: usize,
    /// Frames a second per websocket connection; 0: no limit.
    pub ws_max_rate: u32,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one sender address at most.
    pub max_connections_per_ip: usize,
    /// Time a client has to take an answer or a frame before it is disconnected.
    #[serde(deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    /// Bytes of the request line and headers; more: 431.
    pub max_header_bytes: usize,
    /// Largest script file; bigger: 413 through the API, not loaded when written by hand.
    pub max_script_bytes: usize,
    /// Age after which finished schedule runs are pruned.
    #[serde(deserialize_with = "de_duration")]
    pub schedule_run_retention: Duration,
    /// TLS certificate chain (PEM); with `tls_key`: HTTPS (SPEC §17).
    pub tls_cert: String,
    /// TLS private key (PEM).
    pub tls_key: String,
    /// OpenTelemetry OTLP/HTTP endpoint (SPEC §11, not built yet); empty: off.
    pub otlp_endpoint: String,
    /// Cluster mode (SPEC §13); empty `nats_url`: embedded mode.
    pub cluster: ClusterConfig,
    /// Time to receive complete request headers.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// Time a request body may stall.
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// Events kept per offline events channel.
    pub event_queue_max: usize,
    /// Age after which queued events are dropped.
    #[serde(deserialize_with = "de_duration")]
    pub event_ttl: Duration,
    /// Age after which finished jobs are pruned.
    #[serde(deserialize_with = "de_duration")]
    pub job_retention: Duration,
    /// Requests waiting in one channel's inbox (`issync = false`); more: 429 `inbox_full`.
    pub inbox_max: usize,
    /// Keys in one channel's kv map; a `kv_set` of a new key past it is a script error.
    pub kv_max_keys: usize,
    /// Files of one channel's files API; more: 507 `insufficient_storage`.
    pub files_max_count: usize,
    /// Bytes of all files of one channel; more: 507 `insufficient_storage`.
    pub files_max_bytes: u64,
    /// Let `webquery` reach any host, not only the channel's `url` origin.
    pub outbound_any_host: bool,
    /// Versions kept per channel and per script (SPEC §19); the current one always.
    pub versions_keep: usize,
    /// Age after which audit entries are pruned (SPEC §19).
    #[serde(deserialize_with = "de_duration")]
    pub audit_retention: Duration,
    /// The key of the secrets (SPEC §20): 32 random bytes, base64; made (0600)
    /// at first start when absent. Empty: `<data>/secrets.key`.
    pub secrets_key_file: PathBuf,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// IAM (JWT) verification.
    pub iam: IamConfig,
    /// Known users and their roles.
    pub users: Vec<User>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[iam]`: how IAM JWTs are verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IamConfig {
    /// HS256 shared secret.
    pub jwt_secret: String,
    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub jwt_public_key_file: String,
}

/// `[[users]]`: a user scripts can act for, with roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user id (`opts.userid`, a JWT's `sub`).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Roles added to whoever acts as this user.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            channels: "channels".into(),
            scripts: "scripts".into(),
            data: "data".into(),
            admin_token: String::new(),
            trusted_proxies: Vec::new(),
            solution_types: Vec::new(),
            expose_script_errors: false,
            max_body_bytes: 1024 * 1024,
            max_file_bytes: 10 * 1024 * 1024,
            ws_max_inflight: 64,
            ws_max_frame_bytes: 1024 * 1024,
            ws_max_rate: 0,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_script_bytes: 1024 * 1024,
            schedule_run_retention: Duration::from_secs(24 * 3600),
            tls_cert: String::new(),
            tls_key: String::new(),
            otlp_endpoint: String::new(),
            cluster: ClusterConfig::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            event_queue_max: 10_000,
            event_ttl: Duration::from_secs(24 * 3600),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            inbox_max: 10_000,
            kv_max_keys: 100_000,
            files_max_count: 1_000,
            files_max_bytes: 100 * 1024 * 1024,
            outbound_any_host: false,
            versions_keep: 100,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            secrets_key_file: PathBuf::new(),
            log_format: LogFormat::Text,
            iam: IamConfig::default(),
            users: Vec::new(),
        }
    }
}

/// `[cluster]` (SPEC §13).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URL(s); empty: embedded mode.
    pub nats_url: String,
    /// This node's name; empty: `<hostname>:<listen port>`.
    pub node: String,
    /// Prefix of every stream, bucket and subject.
    pub prefix: String,
    /// JetStream replicas of streams and buckets.
    pub replicas: usize,
    /// Deliveries of one inbox request or send job before the cluster gives
    /// it up and records it failed (a node that dies running it, a channel
    /// no node has, each stop that gives it back count one).
    pub max_deliver: i64,
    /// NATS credentials file.
    pub creds_file: String,
    /// NATS token.
    pub token: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            node: String::new(),
            prefix: "switchyard".into(),
            replicas: 1,
            max_deliver: 50,
            creds_file: String::new(),
            token: String::new(),
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid for this schema; the message names the key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// toml's message, naming the key and its position.
        message: String,
    },
}

impl Config {
    /// Reads `path`; `required = false` turns a missing file into the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the TOML text of a configuration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.ws_max_inflight == 0 {
            return Err("ws_max_inflight: must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        if self.max_connections_per_ip == 0 {
            return Err("max_connections_per_ip: must be at least 1".into());
        }
        if self.versions_keep == 0 {
            return Err(
                "versions_keep: must be at least 1 (the current version is always kept)".into(),
            );
        }
        if self.max_header_bytes < 8192 {
            return Err("max_header_bytes: must be at least 8192".into());
        }
        // Known keys of features still to come: refused rather than silently ignored,
        // so nobody believes they serve HTTPS or run a cluster when they do not.
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err("tls_cert and tls_key: give both (HTTPS) or neither (plain HTTP)".into());
        }
        if !self.otlp_endpoint.is_empty()
            && !self.otlp_endpoint.starts_with("http://")
            && !self.otlp_endpoint.starts_with("https://")
        {
            return Err(format!(
                "otlp_endpoint: {:?} is not an http:// or https:// URL",
                self.otlp_endpoint
            ));
        }
        let prefix = &self.cluster.prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "cluster.prefix: {prefix:?} must be letters, digits, '-' and '_' (it names streams and buckets)"
            ));
        }
        if self.cluster.max_deliver < 1 {
            return Err("cluster.max_deliver: must be at least 1".into());
        }
        if !(1..=5).contains(&self.cluster.replicas) {
            return Err("cluster.replicas: must be 1 to 5 (JetStream's limit)".into());
        }
        let mut seen = std::collections::HashSet::new();
        for user in &self.users {
            if !seen.insert(&user.id) {
                return Err(format!("users: id {:?} is listed twice", user.id));
            }
        }
        for t in &self.solution_types {
            if t == "general" || t == "events" || t.is_empty() {
                return Err(format!("solution_types: {t:?} is not a solution type name"));
            }
        }
        Ok(())
    }

    /// The roles of a configured user, if any.
    pub fn user_roles(&self, id: &str) -> &[String] {
        self.users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.roles.as_slice())
            .unwrap_or(&[])
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
}

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| crate::net::parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.job_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.event_ttl, Duration::from_secs(86_400));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("listen = \"127.0.0.1:1\"\nbogus_key = 1\n").unwrap_err();
        assert!(e.contains("bogus_key"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("max_body_bytes = \"lots\"\n").unwrap_err();
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = Config::parse("[iam]\njwt_secret = 5\n").unwrap_err();
        assert!(e.contains("jwt_secret"), "{e}");
    }

    #[test]
    fn durations_cidrs_and_users_parse() {
        let c = Config::parse(
            "body_timeout = \"2m\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
             [[users]]\nid = \"u1\"\nroles = [\"a\"]\n",
        )
        .unwrap();
        assert_eq!(c.body_timeout, Duration::from_secs(120));
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.user_roles("u1"), ["a".to_string()]);
        assert!(c.user_roles("nobody").is_empty());
        let e = Config::parse("trusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.contains("trusted_proxies"), "{e}");
    }
}
