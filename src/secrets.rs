//! Secrets (SPEC §20): named values, stored encrypted, resolved into
//! channel documents (`"$secret:NAME"`) and read by scripts (`secret()`).
//!
//! - At rest every value is sealed with ChaCha20-Poly1305 under the key of
//!   `secrets_key_file` (or `SWITCHYARD_SECRETS_KEY`), a fresh random nonce per
//!   write, the secret's name as associated data (a sealed value moved to
//!   another name does not open). The store (SQLite or NATS) never sees a value.
//! - In memory, the opened values live in one [`Table`], swapped whole on
//!   every change (this node's or, in cluster mode, another node's). A change
//!   reloads the registry from the folders, so every channel that names a
//!   secret is resolved again; no document is rewritten (`admin::secrets`
//!   does it: this module knows no server state).
//! - [`redact`] replaces every value of the table (4 bytes or more) with
//!   `***` in what the server writes itself: log lines, recordings, dry-run
//!   results, job records, traces and error messages.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use serde_json::{json, Value};

use crate::config::Config;

/// How a channel document names a secret: `"$secret:NAME"` as a whole value.
pub const PREFIX: &str = "$secret:";

/// The environment variable that gives the key instead of the key file.
pub const KEY_ENV: &str = "SWITCHYARD_SECRETS_KEY";

/// Shorter values are not redacted (they would blank out ordinary text).
const SHORTEST_REDACTED: usize = 4;

/// `true` for a valid secret name: `^[a-z0-9_.-]{1,64}$`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// The name a field's value refers to, when it is `"$secret:NAME"`.
pub fn reference(value: &str) -> Option<&str> {
    value.strip_prefix(PREFIX)
}

/// The 32-byte key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// A new random key.
    pub fn random() -> Key {
        Key(ChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// From its base64 text (32 bytes).
    pub fn parse(text: &str) -> Result<Key, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, a key is 32", b.len()))?;
        Ok(Key(bytes))
    }

    /// Its base64 text.
    pub fn text(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Writes the key to a new file, readable by its owner only (0600).
    pub fn write_new(&self, path: &Path) -> Result<(), String> {
        self.write_file(path, path)
    }

    /// Replaces the key file with this key (0600, atomically: a file beside
    /// it, then a rename).
    pub fn replace(&self, path: &Path) -> Result<(), String> {
        let mut beside = path.as_os_str().to_owned();
        beside.push(".new");
        let beside = PathBuf::from(beside);
        let _ = std::fs::remove_file(&beside);
        self.write_file(&beside, path)?;
        std::fs::rename(&beside, path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::disk::sync_dir(path);
        Ok(())
    }

    fn write_file(&self, path: &Path, named: &Path) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let fail = |e: std::io::Error| format!("{}: {e}", named.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        file.write_all(format!("{}\n", self.text()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(fail)?;
        crate::disk::sync_dir(path);
        Ok(())
    }

    /// Seals `value` for secret `name`: `{nonce, sealed}` in base64.
    pub fn seal(&self, name: &str, value: &str) -> Value {
        let cipher = ChaCha20Poly1305::new(&self.0.into());
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("sealing in memory does not fail");
        let b64 = base64::engine::general_purpose::STANDARD;
        json!({ "nonce": b64.encode(nonce), "sealed": b64.encode(sealed) })
    }

    /// Opens what [`seal`](Key::seal) made; `None` with another key or name.
    pub fn open(&self, name: &str, record: &Value) -> Option<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce: [u8; 12] = b64
            .decode(record["nonce"].as_str()?)
            .ok()?
            .try_into()
            .ok()?;
        let sealed = b64.decode(record["sealed"].as_str()?).ok()?;
        let cipher = ChaCha20Poly1305::new(&self.0.into());
        let plain = cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &sealed,
                    aad: name.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// Where the key file is: `secrets_key_file`, or `<data>/secrets.key`.
pub fn key_file(config: &Config) -> PathBuf {
    if config.secrets_key_file.as_os_str().is_empty() {
        config.data.join("secrets.key")
    } else {
        config.secrets_key_file.clone()
    }
}

/// Where the key in force comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `SWITCHYARD_SECRETS_KEY`.
    Env,
    /// The key file.
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => f.write_str(KEY_ENV),
            KeySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The key in force, if there is one: `SWITCHYARD_SECRETS_KEY`, else the key file.
pub fn read_key(config: &Config) -> Result<Option<(Key, KeySource)>, String> {
    if let Ok(text) = std::env::var(KEY_ENV) {
        return Key::parse(&text)
            .map(|k| Some((k, KeySource::Env)))
            .map_err(|e| format!("{KEY_ENV}: {e}"));
    }
    let path = key_file(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => Key::parse(&text)
            .map(|k| Some((k, KeySource::File(path.clone()))))
            .map_err(|e| format!("secrets_key_file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("secrets_key_file {}: {e}", path.display())),
    }
}

/// The key: [`read_key`], or a new random one written (0600) to the key file
/// when there is none. Returns where it came from too.
pub fn load_key(config: &Config) -> Result<(Key, KeySource), String> {
    match read_key(config)? {
        Some(found) => Ok(found),
        None => {
            let path = key_file(config);
            let key = Key::random();
            key.write_new(&path)?;
            tracing::info!(file = %path.display(), "secrets: a new key was made (keep it: without it the secrets cannot be read)");
            Ok((key, KeySource::File(path)))
        }
    }
}

/// One secret as the node knows it.
#[derive(Clone)]
pub struct Secret {
    /// The value; `None` when it could not be opened (another key).
    pub value: Option<String>,
    /// The channels allowed to use it (`*`: every channel).
    pub channels: Vec<String>,
    /// When it was last set (RFC 3339).
    pub updated: String,
    /// 1, 2, … per name.
    pub version: u64,
}

impl Secret {
    /// What the admin API shows: never the value.
    pub fn shown(&self, name: &str) -> Value {
        json!({"name": name, "channels": self.channels, "updated": self.updated, "version": self.version})
    }

    /// Whether channel `code` may use it.
    pub fn allows(&self, code: &str) -> bool {
        self.channels.iter().any(|c| c == "*" || c == code)
    }
}

/// Why a secret cannot be used; the message names the secret, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No secret of that name.
    #[error("secret {0:?} does not exist")]
    Missing(String),
    /// Its `channels` list does not name the channel.
    #[error("secret {0:?} is not allowed for channel {1:?} (its channels list does not name it)")]
    NotAllowed(String, String),
    /// It was sealed under another key.
    #[error("secret {0:?} cannot be read with this node's secrets key (lost or changed key?)")]
    Unreadable(String),
}

/// Every secret, opened, and the redactor of their values.
pub struct Table {
    secrets: HashMap<String, Secret>,
    redactor: Option<aho_corasick::AhoCorasick>,
}

static TABLE: ArcSwapOption<Table> = ArcSwapOption::const_empty();

impl Table {
    /// The secret `name` for channel `code`.
    pub fn lookup(&self, name: &str, code: &str) -> Result<&str, Refused> {
        let secret = self
            .secrets
            .get(name)
            .ok_or_else(|| Refused::Missing(name.to_owned()))?;
        if !secret.allows(code) {
            return Err(Refused::NotAllowed(name.to_owned(), code.to_owned()));
        }
        secret
            .value
            .as_deref()
            .ok_or_else(|| Refused::Unreadable(name.to_owned()))
    }

    /// Every secret, by name.
    pub fn all(&self) -> &HashMap<String, Secret> {
        &self.secrets
    }
}

/// The table in force; `None` outside a server (offline commands do not
/// resolve secrets).
pub fn table() -> Option<Arc<Table>> {
    TABLE.load_full()
}

/// Puts `secrets` in force (and their redactor).
pub fn install(secrets: HashMap<String, Secret>) {
    let values: Vec<String> = secrets
        .values()
        .filter_map(|s| s.value.as_deref())
        .flat_map(parts)
        .filter(|v| v.len() >= SHORTEST_REDACTED)
        .collect();
    let redactor = (!values.is_empty())
        .then(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&values)
                .ok()
        })
        .flatten();
    TABLE.store(Some(Arc::new(Table { secrets, redactor })));
}

/// Shorter parts of a URL are not redacted (`/orders` is no secret).
const SHORTEST_URL_PART: usize = 8;

/// What of a value is redacted: the value, and when it is a URL also its
/// path, query, user and password of [`SHORTEST_URL_PART`] bytes or more (a
/// request's path or an error's URL holds them without the rest); its
/// scheme, host and port are not secret.
fn parts(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    if let Ok(url) = reqwest::Url::parse(value) {
        let path = url.path().trim_matches('/');
        let more = [
            path,
            url.query().unwrap_or(""),
            url.username(),
            url.password().unwrap_or(""),
        ];
        out.extend(
            more.into_iter()
                .filter(|p| p.len() >= SHORTEST_URL_PART)
                .map(str::to_owned),
        );
    }
    out
}

/// `text` with every secret value replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let table = TABLE.load();
    let Some(table) = table.as_deref() else {
        return Cow::Borrowed(text);
    };
    match &table.redactor {
        Some(r) if r.is_match(text) => {
            let stars = vec!["***"; r.patterns_len()];
            Cow::Owned(r.replace_all(text, &stars))
        }
        _ => Cow::Borrowed(text),
    }
}

/// [`redact`] of bytes (a log line).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let table = TABLE.load();
    let Some(table) = table.as_deref() else {
        return Cow::Borrowed(bytes);
    };
    match &table.redactor {
        Some(r) if r.is_match(bytes) => {
            let stars = vec![&b"***"[..]; r.patterns_len()];
            Cow::Owned(r.replace_all_bytes(bytes, &stars))
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// [`redact`] into an owned string (for a store write).
pub fn redacted(text: &str) -> String {
    redact(text).into_owned()
}

/// [`redact`] of every string inside a JSON value (keys included).
pub fn redact_json(value: &mut Value) {
    if TABLE.load().as_ref().is_none_or(|t| t.redactor.is_none()) {
        return;
    }
    map_strings(value, &redact);
}

/// Rewrites every string of `value`, an object's keys too, with `f` (which
/// borrows what it leaves as it is).
pub fn map_strings(value: &mut Value, f: &impl Fn(&str) -> Cow<'_, str>) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(r) = f(s) {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| map_strings(i, f)),
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    map_strings(&mut v, f);
                    (f(&k).into_owned(), v)
                })
                .collect();
        }
        _ => {}
    }
}

/// Opens every stored record with `key`: the table of a node.
pub fn open_all(key: &Key, records: &[Value]) -> HashMap<String, Secret> {
    let mut out = HashMap::new();
    for r in records {
        let Some(name) = r["name"].as_str() else {
            continue;
        };
        let value = key.open(name, r);
        if value.is_none() {
            tracing::error!(secret = name, "secrets: cannot open this secret with the key in use (lost or changed secrets key?)");
        }
        out.insert(
            name.to_owned(),
            Secret {
                value,
                channels: r["channels"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                updated: r["updated"].as_str().unwrap_or_default().to_owned(),
                version: r["version"].as_u64().unwrap_or(1),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_name_only() {
        let key = Key::random();
        let sealed = key.seal("erp", "s3cret-value");
        assert_eq!(key.open("erp", &sealed).as_deref(), Some("s3cret-value"));
        assert_eq!(key.open("other", &sealed), None, "bound to its name");
        assert_eq!(Key::random().open("erp", &sealed), None, "bound to its key");
        assert_ne!(
            key.seal("erp", "s3cret-value"),
            sealed,
            "a fresh nonce per write"
        );
        assert!(!sealed.to_string().contains("s3cret"));
        assert_eq!(Key::parse(&key.text()).unwrap().0, key.0);
        assert!(Key::parse("c2hvcnQ=").is_err());
    }

    #[test]
    fn a_urls_long_parts_are_redacted_with_it() {
        let parts = parts("https://u:pass-word-1@erp.example.com/tenant-42x7/api?key=abcdefgh");
        assert!(parts.contains(&"tenant-42x7/api".to_owned()));
        assert!(parts.contains(&"key=abcdefgh".to_owned()));
        assert!(parts.contains(&"pass-word-1".to_owned()));
        assert!(!parts
            .iter()
            .any(|p| p == "u" || p.contains("erp.example.com") && p.len() < 20));
        assert_eq!(
            super::parts("https://erp.example.com/orders").len(),
            1,
            "a short path is no secret"
        );
    }

    #[test]
    fn names_and_references() {
        assert!(valid_name("erp.token-2_x"));
        assert!(!valid_name("ERP") && !valid_name("") && !valid_name(&"a".repeat(65)));
        assert_eq!(reference("$secret:erp"), Some("erp"));
        assert_eq!(reference("erp"), None);
    }
}
