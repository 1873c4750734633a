//! Webhook signatures (SPEC §10): `webhook_verify` for the common schemes, and
//! the byte-level functions (`Blob`s) to write any other in a few lines.
//!
//! Every comparison of a signature is constant-time, against the exact bytes
//! received; several signatures in one header (secret rotation) pass when any
//! one matches; a timestamp further than the tolerance from now, in either
//! direction, is stale.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rhai::{Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(message: impl Into<String>) -> Fallible<T> {
    Err(EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into())
}

/// The schemes `webhook_verify` knows.
pub const SCHEMES: &[&str] = &["standard", "stripe", "github", "shopify", "slack"];

/// Signatures tried at most from one header (secret rotation needs a few).
pub const MAX_SIGNATURES: usize = 16;

/// Timestamps this far from now (seconds) pass by default.
pub const DEFAULT_TOLERANCE_S: i64 = 300;

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any size");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The bytes of a string or a Blob argument.
fn bytes(value: &Dynamic, what: &str) -> Fallible<Vec<u8>> {
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(s.as_bytes().to_vec());
    }
    if let Some(b) = value.read_lock::<Blob>() {
        return Ok(b.clone());
    }
    fail(format!("{what} must be a string or a Blob"))
}

/// The outcome of a verification.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The signature matches.
    Ok,
    /// A header the scheme needs is absent.
    MissingSignature,
    /// No signature matches.
    BadSignature,
    /// The timestamp is too far from now.
    StaleTimestamp,
    /// The secret is not of the scheme's form (`whsec_` + base64).
    BadSecret,
}

impl Verdict {
    fn reason(&self) -> &'static str {
        match self {
            Verdict::Ok => "",
            Verdict::MissingSignature => "missing_signature",
            Verdict::BadSignature => "bad_signature",
            Verdict::StaleTimestamp => "stale_timestamp",
            Verdict::BadSecret => "bad_secret",
        }
    }
}

fn fresh(timestamp: &str, now: i64, tolerance: i64) -> bool {
    timestamp
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|t| now.checked_sub(t))
        .and_then(i64::checked_abs)
        .is_some_and(|d| d <= tolerance)
}

/// Verifies `body` signed by `scheme` with `secret`; `headers` lower-case.
pub fn verify(
    scheme: &str,
    secret: &str,
    headers: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<Verdict, String> {
    // An empty key signs for anyone who knows the scheme (a channel whose
    // token_remote is not set passes ""): it never verifies anything.
    if SCHEMES.contains(&scheme) && secret.trim().is_empty() {
        return Ok(Verdict::BadSecret);
    }
    let hex_of = |msg: &[u8]| hex::encode(hmac(secret.as_bytes(), msg));
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(match scheme {
        "standard" => {
            let pick = |name: &str| {
                headers(&format!("webhook-{name}")).or_else(|| headers(&format!("svix-{name}")))
            };
            let (Some(id), Some(ts), Some(sigs)) =
                (pick("id"), pick("timestamp"), pick("signature"))
            else {
                return Ok(Verdict::MissingSignature);
            };
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            let Ok(key) = b64.decode(encoded.trim()) else {
                return Ok(Verdict::BadSecret);
            };
            if key.is_empty() {
                return Ok(Verdict::BadSecret);
            }
            if !fresh(&ts, now, tolerance) {
                return Ok(Verdict::StaleTimestamp);
            }
            let mut signed = format!("{id}.{ts}.").into_bytes();
            signed.extend_from_slice(body);
            let expected = b64.encode(hmac(&key, &signed));
            let any = sigs
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .take(MAX_SIGNATURES)
                .any(|s| eq(s.as_bytes(), expected.as_bytes()));
            if any {
                Verdict::Ok
            } else {
                Verdict::BadSignature
            }
        }
        "stripe" => {
            let Some(header) = headers("stripe-signature") else {
                return Ok(Verdict::MissingSignature);
            };
            let mut ts = None;
            let mut sigs = Vec::new();
            for part in header.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => ts = Some(t.to_owned()),
                    Some(("v1", s)) => sigs.push(s.to_owned()),
                    _ => {}
                }
            }
            let Some(ts) = ts.filter(|_| !sigs.is_empty()) else {
                return Ok(Verdict::MissingSignature);
            };
            if !fresh(&ts, now, tolerance) {
                return Ok(Verdict::StaleTimestamp);
            }
            let mut signed = format!("{ts}.").into_bytes();
            signed.extend_from_slice(body);
            let expected = hex_of(&signed);
            if sigs
                .iter()
                .take(MAX_SIGNATURES)
                .any(|s| eq(s.as_bytes(), expected.as_bytes()))
            {
                Verdict::Ok
            } else {
                Verdict::BadSignature
            }
        }
        "github" => {
            let Some(header) = headers("x-hub-signature-256") else {
                return Ok(Verdict::MissingSignature);
            };
            let sent = header.trim().strip_prefix("sha256=").unwrap_or("");
            if eq(sent.as_bytes(), hex_of(body).as_bytes()) {
                Verdict::Ok
            } else {
                Verdict::BadSignature
            }
        }
        "shopify" => {
            let Some(header) = headers("x-shopify-hmac-sha256") else {
                return Ok(Verdict::MissingSignature);
            };
            let expected = b64.encode(hmac(secret.as_bytes(), body));
            if eq(header.trim().as_bytes(), expected.as_bytes()) {
                Verdict::Ok
            } else {
                Verdict::BadSignature
            }
        }
        "slack" => {
            let (Some(sig), Some(ts)) = (
                headers("x-slack-signature"),
                headers("x-slack-request-timestamp"),
            ) else {
                return Ok(Verdict::MissingSignature);
            };
            if !fresh(&ts, now, tolerance) {
                return Ok(Verdict::StaleTimestamp);
            }
            let mut signed = format!("v0:{}:", ts.trim()).into_bytes();
            signed.extend_from_slice(body);
            let expected = format!("v0={}", hex_of(&signed));
            if eq(sig.trim().as_bytes(), expected.as_bytes()) {
                Verdict::Ok
            } else {
                Verdict::BadSignature
            }
        }
        other => {
            return Err(format!(
                "webhook_verify: unknown scheme {other:?}; the schemes are {}",
                SCHEMES.join(", ")
            ))
        }
    })
}

/// `webhook_verify(scheme, secret, headers, body[, #{tolerance_s}])` as a script call.
fn script_verify(
    scheme: &str,
    secret: &str,
    headers: Dynamic,
    body: &str,
    options: Option<Map>,
) -> Fallible<Map> {
    let headers: Map = if let Some(text) = headers.read_lock::<ImmutableString>() {
        match super::convert::parse(&text)
            .ok()
            .and_then(|v| v.try_cast::<Map>())
        {
            Some(map) => map,
            None => return fail("webhook_verify: headers must be a map or JSON object text"),
        }
    } else if let Some(map) = headers.read_lock::<Map>() {
        map.clone()
    } else {
        return fail("webhook_verify: headers must be a map or JSON object text");
    };
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| super::convert::to_text(v).unwrap_or_default())
    };
    let tolerance = match options.as_ref().and_then(|o| o.get("tolerance_s")) {
        None => DEFAULT_TOLERANCE_S,
        Some(v) => match v.as_int() {
            Ok(n) if n >= 0 => n,
            _ => return fail("webhook_verify: tolerance_s must be a whole number of seconds"),
        },
    };
    let now = chrono::Utc::now().timestamp();
    let verdict = verify(scheme, secret, &lookup, body.as_bytes(), now, tolerance).or_else(fail)?;
    let mut out = Map::new();
    out.insert("ok".into(), (verdict == Verdict::Ok).into());
    out.insert("reason".into(), verdict.reason().into());
    Ok(out)
}

/// Registers `webhook_verify` and the Blob functions (public for `examples/webhook_bench.rs`).
pub fn register(engine: &mut Engine) {
    engine.register_fn(
        "webhook_verify",
        |scheme: &str, secret: &str, headers: Dynamic, body: &str| {
            script_verify(scheme, secret, headers, body, None)
        },
    );
    engine.register_fn(
        "webhook_verify",
        |scheme: &str, secret: &str, headers: Dynamic, body: &str, options: Map| {
            script_verify(scheme, secret, headers, body, Some(options))
        },
    );
    engine.register_fn(
        "hmac_sha256",
        |key: Dynamic, msg: Dynamic| -> Fallible<Blob> {
            let (key, msg) = (
                bytes(&key, "hmac_sha256: key")?,
                bytes(&msg, "hmac_sha256: msg")?,
            );
            super::heavy(key.len() + msg.len())?;
            Ok(hmac(&key, &msg))
        },
    );
    engine.register_fn("sha256", |x: Dynamic| -> Fallible<Blob> {
        let x = bytes(&x, "sha256: its argument")?;
        super::heavy(x.len())?;
        Ok(Sha256::digest(&x).to_vec())
    });
    engine.register_fn("base64_encode", |b: Blob| -> Fallible<ImmutableString> {
        super::heavy(b.len())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(b).into())
    });
    engine.register_fn("hex_encode", |x: Dynamic| -> Fallible<ImmutableString> {
        let x = bytes(&x, "hex_encode: its argument")?;
        super::heavy(x.len())?;
        Ok(hex::encode(x).into())
    });
    engine.register_fn("base64_decode_blob", |s: &str| -> Fallible<Blob> {
        super::heavy(s.len())?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()))
            .or_else(|_| fail("base64_decode_blob: not valid base64"))
    });
    engine.register_fn("hex_decode", |s: &str| -> Fallible<Blob> {
        super::heavy(s.len())?;
        hex::decode(s.trim()).or_else(|_| fail("hex_decode: not valid hex"))
    });
    engine.register_fn("eq_ct", |a: Dynamic, b: Dynamic| -> Fallible<bool> {
        Ok(eq(&bytes(&a, "eq_ct: a")?, &bytes(&b, "eq_ct: b")?))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_signature_made_with_an_empty_key_is_refused_by_every_scheme() {
        let now = 1_700_000_000;
        let body = br#"{"id":1}"#;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ts = now.to_string();
        let hex_empty = |msg: &[u8]| hex::encode(hmac(b"", msg));
        let standard = format!(
            "v1,{}",
            b64.encode(hmac(b"", format!("m.{now}.{{\"id\":1}}").as_bytes()))
        );
        let stripe = format!(
            "t={now},v1={}",
            hex_empty(format!("{now}.{{\"id\":1}}").as_bytes())
        );
        let github = format!("sha256={}", hex_empty(body));
        let shopify = b64.encode(hmac(b"", body));
        let slack = format!(
            "v0={}",
            hex_empty(format!("v0:{now}:{{\"id\":1}}").as_bytes())
        );
        let cases: [(&str, Vec<(&str, &str)>); 5] = [
            (
                "standard",
                vec![
                    ("webhook-id", "m"),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", &standard),
                ],
            ),
            ("stripe", vec![("stripe-signature", &stripe)]),
            ("github", vec![("x-hub-signature-256", &github)]),
            ("shopify", vec![("x-shopify-hmac-sha256", &shopify)]),
            (
                "slack",
                vec![
                    ("x-slack-signature", &slack),
                    ("x-slack-request-timestamp", &ts),
                ],
            ),
        ];
        for (scheme, h) in &cases {
            let empty_key: &[&str] = if *scheme == "standard" {
                &["", "  ", "whsec_"]
            } else {
                &["", "  "]
            };
            for secret in empty_key {
                assert_eq!(
                    verify(scheme, secret, &headers(h), body, now, 300),
                    Ok(Verdict::BadSecret),
                    "{scheme} with {secret:?}"
                );
            }
        }
    }

    #[test]
    fn each_scheme_accepts_its_own_signature_and_refuses_others() {
        let now = 1_700_000_000;
        let body = br#"{"id":1}"#;
        let b64 = base64::engine::general_purpose::STANDARD;
        // Standard Webhooks: key = base64-decoded bytes of whsec_…
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = format!("whsec_{}", b64.encode(key));
        let sig = b64.encode(hmac(key, format!("msg_1.{now}.{{\"id\":1}}").as_bytes()));
        let good = format!("v1,bm9wZQ== v1,{sig}");
        let ts = now.to_string();
        let h = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", good.as_str()),
        ];
        assert_eq!(
            verify("standard", &secret, &headers(&h), body, now, 300),
            Ok(Verdict::Ok)
        );
        assert_eq!(
            verify("standard", &secret, &headers(&h), b"tampered", now, 300),
            Ok(Verdict::BadSignature)
        );
        assert_eq!(
            verify("standard", &secret, &headers(&h), body, now + 301, 300),
            Ok(Verdict::StaleTimestamp)
        );
        assert_eq!(
            verify("standard", "whsec_***", &headers(&h), body, now, 300),
            Ok(Verdict::BadSecret)
        );
        assert_eq!(
            verify("standard", &secret, &headers(&[]), body, now, 300),
            Ok(Verdict::MissingSignature)
        );
        // Stripe: t.body, hex, any v1.
        let sig = hex::encode(hmac(b"sk", format!("{now}.{{\"id\":1}}").as_bytes()));
        let header = format!("t={now},v1=00,v1={sig}");
        let h = [("stripe-signature", header.as_str())];
        assert_eq!(
            verify("stripe", "sk", &headers(&h), body, now, 300),
            Ok(Verdict::Ok)
        );
        assert_eq!(
            verify("stripe", "sk", &headers(&h), body, now - 1000, 300),
            Ok(Verdict::StaleTimestamp)
        );
        // GitHub: sha256=hex(body).
        let header = format!("sha256={}", hex::encode(hmac(b"gh", body)));
        let h = [("x-hub-signature-256", header.as_str())];
        assert_eq!(
            verify("github", "gh", &headers(&h), body, now, 300),
            Ok(Verdict::Ok)
        );
        assert_eq!(
            verify("github", "no", &headers(&h), body, now, 300),
            Ok(Verdict::BadSignature)
        );
        // Shopify: base64(body).
        let header = b64.encode(hmac(b"shp", body));
        let h = [("x-shopify-hmac-sha256", header.as_str())];
        assert_eq!(
            verify("shopify", "shp", &headers(&h), body, now, 300),
            Ok(Verdict::Ok)
        );
        // Slack: v0:ts:body.
        let sig = format!(
            "v0={}",
            hex::encode(hmac(b"sl", format!("v0:{now}:{{\"id\":1}}").as_bytes()))
        );
        let h = [
            ("x-slack-signature", sig.as_str()),
            ("x-slack-request-timestamp", ts.as_str()),
        ];
        assert_eq!(
            verify("slack", "sl", &headers(&h), body, now, 300),
            Ok(Verdict::Ok)
        );
        // Hostile timestamps: not a number, or one that overflows.
        let h = [
            ("x-slack-signature", sig.as_str()),
            ("x-slack-request-timestamp", "-9223372036854775808"),
        ];
        assert_eq!(
            verify("slack", "sl", &headers(&h), body, now, 300),
            Ok(Verdict::StaleTimestamp)
        );
        let h = [("stripe-signature", "t=abc,v1=00")];
        assert_eq!(
            verify("stripe", "sk", &headers(&h), body, now, 300),
            Ok(Verdict::StaleTimestamp)
        );
        let h = [
            ("x-slack-signature", sig.as_str()),
            ("x-slack-request-timestamp", ts.as_str()),
        ];
        assert!(verify("nope", "x", &headers(&h), body, now, 300)
            .unwrap_err()
            .contains("standard, stripe, github, shopify, slack"));
    }
}
