//! Who is calling: credentials, IP masks, IAM JWTs, roles and the brute-force throttle.
//!
//! The order of checks follows the contract's error table: unknown channel
//! (404, by the caller), throttled (429), no or wrong credential (401), sender
//! outside the mask (403), channel disabled (503, by the caller).

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::channel::Channel;
use crate::config::Config;
use crate::error::AppError;
use crate::net::in_nets;

/// Failed authentications from one address on one channel before it is throttled.
pub const THROTTLE_LIMIT: u32 = 20;
/// The throttle's window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// The paths that take admin credentials instead of a channel's: `/admin` and
/// everything under it, `/events` and `/channels/{code}/send`. It reads a
/// request's path and a route template alike (the guard and the API
/// description both ask it).
pub fn admin_only(path: &str) -> bool {
    let send =
        path.starts_with("/channels/") && path.ends_with("/send") && path.matches('/').count() == 3;
    path == "/admin" || path.starts_with("/admin/") || path == "/events" || send
}

/// The credential a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// None at all.
    Missing,
    /// Exactly one value (it may appear in several places, always the same).
    Given(String),
    /// Different values in different places: refused.
    Conflicting,
}

/// Reads the credential from `Authorization: Bearer` and the `token` query parameter.
pub fn credential(headers: &HeaderMap, query: Option<&str>) -> Credential {
    let mut found: Option<String> = None;
    let mut offer = |value: String| -> bool {
        match &found {
            Some(f) if *f != value => false,
            _ => {
                found = Some(value);
                true
            }
        }
    };
    for value in headers.get_all(header::AUTHORIZATION) {
        // Another scheme (Basic…) is not a credential (SPEC §3).
        let Some(token) = bearer(value.to_str().unwrap_or("")) else {
            continue;
        };
        if !offer(token.to_owned()) {
            return Credential::Conflicting;
        }
    }
    for (key, value) in query_pairs(query.unwrap_or("")) {
        if key == "token" && !offer(value.into_owned()) {
            return Credential::Conflicting;
        }
    }
    match found {
        Some(token) => Credential::Given(token),
        None => Credential::Missing,
    }
}

/// The credential of an `Authorization: Bearer …` value (the scheme word in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Decoded `key=value` pairs of a query string (`+` is a space).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k), decode_component(v))
    })
}

/// A query component decoded; borrowed when there is nothing to decode (a
/// token in every call's query: no allocation for it).
fn decode_component(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let s = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The raw query string without its `token` parameters.
pub fn strip_token(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && decode_component(pair.split('=').next().unwrap_or("")) != "token"
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Constant-time equality of two secrets.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Who a request acts as, once authenticated.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The user id (the channel's `opts.userid`, or the JWT's `sub`).
    pub user_id: String,
    /// All roles of the caller.
    pub roles: Vec<String>,
}

impl Identity {
    fn with_user_roles(user_id: String, mut roles: Vec<String>, config: &Config) -> Self {
        for r in config.user_roles(&user_id) {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        Self { user_id, roles }
    }

    /// `true` when the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The identity a channel's own scripts act as: `opts.userid`, with `opts.roles`
/// and that user's configured roles.
pub fn channel_identity(channel: &Channel, config: &Config) -> Identity {
    let opts = &channel.doc.opts;
    Identity::with_user_roles(opts.userid.clone(), opts.roles.clone(), config)
}

/// Verifies IAM JWTs with the configured key(s); the algorithm is pinned per key.
#[derive(Clone, Default)]
pub struct Iam {
    keys: Vec<(Algorithm, DecodingKey)>,
}

impl Iam {
    /// Builds the verifier from `[iam]`; reads and checks the public key file.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut keys = Vec::new();
        if !config.iam.jwt_secret.is_empty() {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(config.iam.jwt_secret.as_bytes()),
            ));
        }
        let file = &config.iam.jwt_public_key_file;
        if !file.is_empty() {
            let pem = std::fs::read(Path::new(file))
                .map_err(|e| format!("iam.jwt_public_key_file: {file}: {e}"))?;
            let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (Algorithm::ES256, k)
            } else {
                return Err(format!(
                    "iam.jwt_public_key_file: {file}: not an RSA or EC public key in PEM"
                ));
            };
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// `true` when some key is configured.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies `token`; `audience` must be in `aud` when the token has one.
    /// Returns the subject and the roles claim.
    pub fn verify(&self, token: &str, audience: &str) -> Option<(String, Vec<String>)> {
        self.verify_until(token, audience)
            .map(|(sub, roles, _)| (sub, roles))
    }

    /// [`Iam::verify`], with the token's `exp` (seconds since the epoch).
    pub fn verify_until(&self, token: &str, audience: &str) -> Option<(String, Vec<String>, u64)> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let (alg, key) = self.keys.iter().find(|(alg, _)| *alg == header.alg)?;
        let mut validation = Validation::new(*alg);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(token, key, &validation)
            .ok()?
            .claims;
        let aud_ok = match claims.get("aud") {
            None | Some(Value::Null) => true,
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            Some(_) => false,
        };
        if !aud_ok {
            return None;
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let roles = match claims.get("roles") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .max(0.0) as u64;
        Some((sub, roles, exp))
    }
}

/// What a failed authentication was for: the admin API, or one channel (by code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Realm {
    /// `/admin`, `POST /events`, `POST /channels/{code}/send`.
    Admin,
    /// The console's sign-in: its failures do not lock a sender out of the
    /// admin API (a script holding the admin token keeps working while a
    /// browser on the same address mistypes).
    Console,
    /// A channel's own routes.
    Channel(String),
}

/// Counts failed authentications per address and realm in fixed 60 s windows.
/// IPv6 senders are counted by their /64 (one host usually holds a whole /64).
#[derive(Default)]
pub struct Throttle {
    windows: DashMap<(IpAddr, Realm), Window>,
    /// Entries in `windows`: while there are none (no failure in the last
    /// minute, the usual case) a request is let through without a lookup.
    entries: std::sync::atomic::AtomicUsize,
}

struct Window {
    start: Instant,
    failures: u32,
}

/// The address a sender is counted as: itself, or for IPv6 its /64.
fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Throttle {
    /// Seconds to wait when `ip` is throttled in `realm` (made only when
    /// there is something to look up), else `None`.
    pub fn blocked(&self, ip: IpAddr, realm: impl FnOnce() -> Realm) -> Option<u64> {
        if self.entries.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        let w = self.windows.get(&(throttle_key(ip), realm()))?;
        let age = w.start.elapsed();
        if w.failures >= THROTTLE_LIMIT && age < THROTTLE_WINDOW {
            Some((THROTTLE_WINDOW - age).as_secs_f64().ceil().max(1.0) as u64)
        } else {
            None
        }
    }

    /// Records one failed authentication.
    pub fn fail(&self, ip: IpAddr, realm: &Realm) {
        let now = Instant::now();
        let mut w = self
            .windows
            .entry((throttle_key(ip), realm.clone()))
            .or_insert_with(|| {
                self.entries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Window {
                    start: now,
                    failures: 0,
                }
            });
        if now.duration_since(w.start) >= THROTTLE_WINDOW {
            w.start = now;
            w.failures = 0;
        }
        w.failures += 1;
    }

    /// Forgets windows that are over, so the table stays small.
    pub fn sweep(&self) {
        self.windows.retain(|_, w| {
            let keep = w.start.elapsed() < THROTTLE_WINDOW;
            if !keep {
                self.entries
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            keep
        });
    }
}

/// What authentication needs from the server.
pub struct Authenticator {
    /// The configuration (users, proxies).
    pub config: std::sync::Arc<Config>,
    /// The JWT verifier.
    pub iam: Iam,
    /// The brute-force throttle.
    pub throttle: Throttle,
}

impl Authenticator {
    /// Authenticates a caller of `channel` from `sender` (already resolved through proxies).
    pub fn channel_caller(
        &self,
        channel: &Channel,
        sender: IpAddr,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, AppError> {
        if let Some(secs) = self
            .throttle
            .blocked(sender, || Realm::Channel(channel.code().to_owned()))
        {
            return Err(AppError::Throttled(secs));
        }
        let token = match credential(headers, query) {
            Credential::Given(t) if !t.is_empty() => t,
            _ => return Err(self.failed(sender, channel)),
        };
        if let Some(local) = channel.token_local() {
            // Past `opts.token_valid_until` the local token is a wrong credential
            // (the log says why; the caller learns nothing more).
            let matches = secret_eq(&token, local);
            if matches && channel.credential_expired() {
                tracing::warn!(channel = %channel.code(), "token_local refused: it expired (opts.token_valid_until)");
            }
            if matches && !channel.credential_expired() {
                if !channel.ipmask.is_empty() && !in_nets(&channel.ipmask, sender) {
                    return Err(AppError::ForbiddenIp);
                }
                return Ok(channel_identity(channel, &self.config));
            }
        }
        if self.iam.enabled() && token.matches('.').count() == 2 {
            if let Some((sub, roles)) = self.iam.verify(&token, channel.code()) {
                let wanted = &channel.doc.opts.roles;
                let allowed =
                    wanted.iter().any(|r| r == "*") || roles.iter().any(|r| wanted.contains(r));
                if allowed {
                    return Ok(Identity::with_user_roles(sub, roles, &self.config));
                }
            }
        }
        Err(self.failed(sender, channel))
    }

    /// Authenticates an operator of `/admin`: config `admin_token`, or an IAM
    /// JWT with role `admin` (its `aud`, when present, must be `admin`), only
    /// in the `Authorization` header: a request with a `token` query parameter
    /// is refused, since query strings end up in proxies' logs.
    pub fn admin_caller(
        &self,
        sender: IpAddr,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, AppError> {
        if let Some(secs) = self.throttle.blocked(sender, || Realm::Admin) {
            return Err(AppError::Throttled(secs));
        }
        let in_query = query_pairs(query.unwrap_or("")).any(|(k, _)| k == "token");
        if let (false, Credential::Given(token)) = (in_query, credential(headers, None)) {
            let admin_token = &self.config.admin_token;
            if !admin_token.is_empty() && secret_eq(&token, admin_token) {
                return Ok(Identity {
                    user_id: "admin".into(),
                    roles: vec!["admin".into()],
                });
            }
            if self.iam.enabled() {
                if let Some((sub, roles)) = self.iam.verify(&token, "admin") {
                    if roles.iter().any(|r| r == "admin") {
                        return Ok(Identity::with_user_roles(sub, roles, &self.config));
                    }
                }
            }
        }
        self.throttle.fail(sender, &Realm::Admin);
        Err(AppError::Unauthorized)
    }

    /// The console's sign-in (SPEC §16): the admin token, or an IAM JWT with
    /// role `admin` or `viewer`; throttled like the admin API (§3).
    /// The caller signing in to the console, and when its credential ends
    /// (a JWT's `exp`; the admin token does not end).
    pub fn console_caller(
        &self,
        sender: IpAddr,
        token: &str,
    ) -> Result<(Identity, Option<std::time::SystemTime>), AppError> {
        if let Some(secs) = self.throttle.blocked(sender, || Realm::Console) {
            return Err(AppError::Throttled(secs));
        }
        let admin_token = &self.config.admin_token;
        if !token.is_empty() && !admin_token.is_empty() && secret_eq(token, admin_token) {
            let admin = Identity {
                user_id: "admin".into(),
                roles: vec!["admin".into()],
            };
            return Ok((admin, None));
        }
        if self.iam.enabled() {
            if let Some((sub, roles, exp)) = self.iam.verify_until(token, "admin") {
                if roles.iter().any(|r| r == "admin" || r == "viewer") {
                    let ends = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
                    return Ok((
                        Identity::with_user_roles(sub, roles, &self.config),
                        Some(ends),
                    ));
                }
            }
        }
        self.throttle.fail(sender, &Realm::Console);
        Err(AppError::Unauthorized)
    }

    fn failed(&self, sender: IpAddr, channel: &Channel) -> AppError {
        self.throttle
            .fail(sender, &Realm::Channel(channel.code().to_owned()));
        AppError::Unauthorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn credentials_come_from_header_or_query_and_must_agree() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, None), Credential::Missing);
        assert_eq!(
            credential(&h, Some("a=1&token=abc")),
            Credential::Given("abc".into())
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            credential(&h, Some("token=abc")),
            Credential::Given("abc".into())
        );
        assert_eq!(credential(&h, Some("token=xyz")), Credential::Conflicting);
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert_eq!(credential(&h, None), Credential::Conflicting);
        for scheme in ["BEARER abc", "bEaReR abc", "Bearer  abc"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(scheme));
            assert_eq!(
                credential(&h, None),
                Credential::Given("abc".into()),
                "{scheme}"
            );
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(credential(&basic, None), Credential::Missing);
        assert_eq!(
            credential(&basic, Some("token=t")),
            Credential::Given("t".into())
        );
        assert_eq!(strip_token("a=1&token=x&b=2&tok%65n=y"), "a=1&b=2");
        assert_eq!(strip_token("token=x"), "");
    }

    #[test]
    fn jwt_checks_exp_alg_and_audience() {
        let config = Config {
            iam: crate::config::IamConfig {
                jwt_secret: "s3cret".into(),
                jwt_public_key_file: String::new(),
            },
            ..Config::default()
        };
        let iam = Iam::from_config(&config).unwrap();
        let key = EncodingKey::from_secret(b"s3cret");
        let now = chrono::Utc::now().timestamp();
        let tok = |claims: Value| encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let good = tok(serde_json::json!({"sub":"u1","roles":["r"],"exp": now + 60}));
        assert_eq!(
            iam.verify(&good, "orders"),
            Some(("u1".into(), vec!["r".into()]))
        );
        let expired = tok(serde_json::json!({"sub":"u1","exp": now - 3600}));
        assert_eq!(iam.verify(&expired, "orders"), None);
        let no_exp = tok(serde_json::json!({"sub":"u1"}));
        assert_eq!(iam.verify(&no_exp, "orders"), None);
        let early = tok(serde_json::json!({"sub":"u1","nbf": now + 3600,"exp": now + 7200}));
        assert_eq!(iam.verify(&early, "orders"), None, "nbf in the future");
        let begun = tok(serde_json::json!({"sub":"u1","nbf": now - 10,"exp": now + 60}));
        assert!(iam.verify(&begun, "orders").is_some());
        let aud = tok(serde_json::json!({"sub":"u1","aud":"orders","exp": now + 60}));
        assert!(iam.verify(&aud, "orders").is_some());
        assert_eq!(iam.verify(&aud, "other"), None);
        let wrong_key = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": now + 60}),
            &EncodingKey::from_secret(b"nope"),
        )
        .unwrap();
        assert_eq!(iam.verify(&wrong_key, "orders"), None);
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"exp": now + 60}),
            &key,
        )
        .unwrap();
        assert_eq!(iam.verify(&hs384, "orders"), None);
        // alg "none": a header and claims with an empty signature.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"u1","exp":{}}}"#, now + 60))
        );
        assert_eq!(iam.verify(&none, "orders"), None);
    }

    #[test]
    fn throttle_blocks_after_twenty_failures_per_address_and_channel() {
        let t = Throttle::default();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let ch = Realm::Channel("orders".into());
        for _ in 0..THROTTLE_LIMIT - 1 {
            t.fail(a, &ch);
        }
        assert_eq!(t.blocked(a, || ch.clone()), None);
        t.fail(a, &ch);
        let secs = t.blocked(a, || ch.clone()).unwrap();
        assert!((1..=60).contains(&secs));
        assert_eq!(t.blocked(b, || ch.clone()), None);
        assert_eq!(t.blocked(a, || Realm::Channel("other".into())), None);
        assert_eq!(t.blocked(a, || Realm::Admin), None);
        // IPv6 senders count by their /64.
        for _ in 0..THROTTLE_LIMIT {
            t.fail(ip("2001:db8:1:2::1"), &ch);
        }
        assert!(t.blocked(ip("2001:db8:1:2::ffff"), || ch.clone()).is_some());
        assert_eq!(t.blocked(ip("2001:db8:1:3::1"), || ch.clone()), None);
    }
}
