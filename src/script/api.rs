//! The functions scripts can call, registered once on the shared engine.
//!
//! Functions that depend on the run (startparam, the caller, the channel's
//! secrets, log tags) read the run's context from the worker thread.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, INT};
use sha2::{Digest, Sha256};

use super::{convert, with_context};

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(message: impl Into<String>) -> Fallible<T> {
    Err(EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into())
}

/// Registers the whole script API on `engine`.
pub(super) fn register(engine: &mut Engine) {
    if crate::telemetry::fault_injection() {
        engine.register_fn("fault_panic", |message: &str| {
            panic!("injected fault: {message}");
        });
    }
    engine.register_fn("startparam", |n: INT| -> ImmutableString {
        with_context(|c| {
            if let Some(lazy) = c.and_then(|c| c.lazy.as_ref()) {
                if usize::try_from(n).ok() == Some(lazy.n) {
                    return lazy.get();
                }
            }
            c.and_then(|c| {
                usize::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| c.params.get(i).cloned())
            })
            .unwrap_or_default()
        })
    });

    engine.register_fn("parse_json", |text: &str| -> Fallible<Dynamic> {
        super::heavy(text.len())?;
        convert::parse(text).or_else(|e| fail(format!("parse_json: {e}")))
    });
    engine.register_fn("to_json", json_text);
    // Override the package's map/array `to_json` so every value converts the same way.
    engine.register_fn("to_json", |m: Map| json_text(Dynamic::from_map(m)));
    engine.register_fn("to_json", |a: rhai::Array| {
        json_text(Dynamic::from_array(a))
    });
    engine.register_fn("parse_query", |query: &str| -> Fallible<Map> {
        super::heavy(query.len())?;
        Ok(crate::auth::query_pairs(query.trim_start_matches('?'))
            .map(|(k, v)| (k.as_ref().into(), Dynamic::from(v.into_owned())))
            .collect())
    });

    // A log line is a side effect: an inline attempt would write it twice.
    engine.register_fn("log_info", |msg: Dynamic| -> Fallible<()> {
        super::no_side_effects_inline()?;
        log(tracing::Level::INFO, &msg);
        Ok(())
    });
    engine.register_fn("log_warn", |msg: Dynamic| -> Fallible<()> {
        super::no_side_effects_inline()?;
        log(tracing::Level::WARN, &msg);
        Ok(())
    });
    engine.register_fn("log_error", |msg: Dynamic| -> Fallible<()> {
        super::no_side_effects_inline()?;
        log(tracing::Level::ERROR, &msg);
        Ok(())
    });
    engine.on_print(|text| log(tracing::Level::INFO, &Dynamic::from(text.to_owned())));
    engine.on_debug(|text, _, pos| {
        log(
            tracing::Level::DEBUG,
            &Dynamic::from(format!("{text} ({pos})")),
        )
    });

    engine.register_fn("now", || -> ImmutableString {
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into()
    });
    engine.register_fn("uuid", || -> ImmutableString {
        uuid::Uuid::new_v4().to_string().into()
    });
    engine.register_fn("has_role", |role: &str| -> bool {
        with_context(|c| c.is_some_and(|c| c.identity.has_role(role)))
    });
    engine.register_fn("user_id", || -> ImmutableString {
        with_context(|c| {
            c.map(|c| c.identity.user_id.as_str().into())
                .unwrap_or_default()
        })
    });
    engine.register_fn("token_remote", || -> ImmutableString {
        with_context(|c| {
            c.and_then(|c| c.channel.remote_token().map(Into::into))
                .unwrap_or_default()
        })
    });
    engine.register_fn("channel_mode", || -> ImmutableString {
        with_context(|c| {
            if c.is_some_and(|c| c.channel.test_mode()) {
                "test".into()
            } else {
                "production".into()
            }
        })
    });
    engine.register_fn("token_remote2", || -> ImmutableString {
        with_context(|c| {
            c.and_then(|c| c.channel.field("token_remote2").map(Into::into))
                .unwrap_or_default()
        })
    });

    // A secret's value (SPEC §20), when its `channels` name the running channel.
    engine.register_fn("secret", |name: &str| -> Fallible<ImmutableString> {
        let code = with_context(|c| c.map(|c| c.channel.code().to_owned()));
        let Some(code) = code else {
            return fail("secret(): no channel is running");
        };
        match crate::secrets::table() {
            None => fail(format!(
                "secret({name:?}): no secrets here (an offline run)"
            )),
            Some(table) => table
                .lookup(name, &code)
                .map(Into::into)
                .or_else(|e| fail(format!("secret(): {e}"))),
        }
    });

    engine.register_fn("md5_hex", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        Ok(hex::encode(Md5::digest(s.as_bytes())).into())
    });
    engine.register_fn("sha256_hex", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        Ok(hex::encode(Sha256::digest(s.as_bytes())).into())
    });
    engine.register_fn(
        "hmac_sha256_hex",
        |key: &str, msg: &str| -> Fallible<ImmutableString> {
            super::heavy(key.len() + msg.len())?;
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .expect("HMAC takes a key of any size");
            mac.update(msg.as_bytes());
            Ok(hex::encode(mac.finalize().into_bytes()).into())
        },
    );
    engine.register_fn("base64_encode", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        Ok(base64::engine::general_purpose::STANDARD
            .encode(s.as_bytes())
            .into())
    });
    engine.register_fn("base64_decode", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()))
            .or_else(|_| fail("base64_decode: not valid base64"))?;
        String::from_utf8(bytes)
            .map(Into::into)
            .or_else(|_| fail("base64_decode: the decoded bytes are not UTF-8 text"))
    });

    // Blocking the worker would hold a script slot for nothing; scripts wait with jobs instead.
    engine.register_fn(
        "channel_send_ws",
        |code: &str, data: Dynamic| -> Fallible<()> {
            let data = json_value(&data)?;
            with_host(|host, _| host.channel_send_ws(code, data))
        },
    );
    engine.register_fn("ws_send", |data: Dynamic| -> Fallible<INT> {
        let data = json_value(&data)?;
        with_host(|host, channel| host.ws_send(channel, None, data)).map(|n| n as INT)
    });
    engine.register_fn("ws_send_to", |id: &str, data: Dynamic| -> Fallible<bool> {
        let data = json_value(&data)?;
        with_host(|host, channel| host.ws_send(channel, Some(id), data)).map(|n| n > 0)
    });
    engine.register_fn(
        "emit_event",
        |name: &str, data: Dynamic| -> Fallible<ImmutableString> {
            let data = json_value(&data)?;
            with_host(|host, channel| host.emit_event(channel, name, data)).map(Into::into)
        },
    );

    engine.register_fn(
        "channel_send",
        |code: &str, data: Dynamic| -> Fallible<ImmutableString> {
            let data = json_value(&data)?;
            with_host(|host, _| host.channel_send(code, data, &[])).map(Into::into)
        },
    );
    engine.register_fn(
        "channel_send",
        |code: &str, data: Dynamic, options: Map| -> Fallible<ImmutableString> {
            let data = json_value(&data)?;
            let tags = send_tags(&options)?;
            with_host(|host, _| host.channel_send(code, data, &tags)).map(Into::into)
        },
    );
    engine.register_fn("job_tag", |tag: &str| -> Fallible<()> {
        super::no_side_effects_inline()?;
        let Some(job) = with_context(|c| c.and_then(|c| c.job.clone())) else {
            return fail(
                "job_tag is only available in a job's run (send, inbox and schedule scripts)",
            );
        };
        with_host(|host, _| host.job_tag(&job.id, tag))
    });
    // Uncatchable: ends the run, and the job, as failed with no further retry.
    engine.register_fn("fail", |message: Dynamic| -> Fallible<()> {
        let text = convert::to_text(&message).unwrap_or_else(|e| e);
        Err(EvalAltResult::ErrorTerminated(
            Dynamic::from(super::Failed(text.into())),
            Position::NONE,
        )
        .into())
    });
    engine.register_fn("webquery", |request: Map| -> Fallible<Dynamic> {
        super::no_side_effects_inline()?;
        let request = json_value(&Dynamic::from_map(request))?;
        let budget = super::remaining();
        let answer = with_context(|c| match c {
            Some(c) => c.host.webquery(
                &c.channel,
                request,
                budget,
                &c.trace,
                c.job.as_ref().map(|j| &j.trail),
            ),
            None => Err("not available outside a run".into()),
        });
        answer.map(|v| convert::from_json(&v)).or_else(fail)
    });
    engine.register_fn("job_wait", |seconds: INT| -> Fallible<()> {
        super::no_side_effects_inline()?;
        let job = with_context(|c| c.and_then(|c| c.job.clone()));
        match job {
            Some(job) if job.can_wait => {
                let max = super::limits::JOB_WAIT.as_secs();
                let secs = u64::try_from(seconds)
                    .ok()
                    .filter(|s| (1..=max).contains(s));
                let Some(secs) = secs else {
                    return fail(format!(
                        "job_wait: seconds must be a whole number from 1 to {max} (30 days)"
                    ));
                };
                with_host(|host, _| host.job_wait(&job, secs))
            }
            _ => fail("job_wait is only available in send scripts"),
        }
    });
    engine.register_fn("kv_get", |key: &str| -> Fallible<Dynamic> {
        with_host(|host, channel| host.kv_get(channel, key))
            .map(|v| v.map_or(Dynamic::UNIT, |v| convert::from_json(&v)))
    });
    engine.register_fn("kv_set", |key: &str, value: Dynamic| -> Fallible<()> {
        let value = if value.is_unit() {
            None
        } else {
            Some(json_value(&value)?)
        };
        with_host(|host, channel| host.kv_set(channel, key, value, None))
    });
    engine.register_fn(
        "kv_set",
        |key: &str, value: Dynamic, ttl_secs: INT| -> Fallible<()> {
            let Some(ttl) = u64::try_from(ttl_secs).ok().filter(|s| *s > 0) else {
                return fail("kv_set: the TTL is a whole number of seconds, 1 or more");
            };
            let value = if value.is_unit() {
                None
            } else {
                Some(json_value(&value)?)
            };
            let ttl = Some(std::time::Duration::from_secs(ttl));
            with_host(|host, channel| host.kv_set(channel, key, value, ttl))
        },
    );
    engine.register_fn("kv_delete", |key: &str| -> Fallible<bool> {
        with_host(|host, channel| host.kv_delete(channel, key))
    });
    engine.register_fn("kv_keys", |prefix: &str| -> Fallible<rhai::Array> {
        with_host(|host, channel| host.kv_keys(channel, prefix))
            .map(|keys| keys.into_iter().map(Dynamic::from).collect())
    });
    engine.register_fn("kv_incr", |key: &str, n: INT| -> Fallible<INT> {
        with_host(|host, channel| host.kv_incr(channel, key, n))
    });
    engine.register_fn(
        "kv_cas",
        |key: &str, expected: Dynamic, new: Dynamic| -> Fallible<bool> {
            let optional = |v: &Dynamic| -> Fallible<Option<serde_json::Value>> {
                if v.is_unit() {
                    Ok(None)
                } else {
                    json_value(v).map(Some)
                }
            };
            let (expected, new) = (optional(&expected)?, optional(&new)?);
            with_host(|host, channel| host.kv_cas(channel, key, expected, new))
        },
    );
    engine.register_fn("file_read", |name: &str| -> Fallible<ImmutableString> {
        super::no_side_effects_inline()?;
        let text = with_context(|c| match c {
            Some(c) => c.host.file_read(&c.channel, name),
            None => Err("not available outside a run".into()),
        });
        text.map(Into::into).or_else(fail)
    });
    engine.register_fn("file_write", |name: &str, text: &str| -> Fallible<()> {
        super::no_side_effects_inline()?;
        let done = with_context(|c| match c {
            Some(c) => c.host.file_write(&c.channel, name, text),
            None => Err("not available outside a run".into()),
        });
        done.or_else(fail)
    });

    // Rhai's own sleep(INT) and sleep(FLOAT) are overridden: the engine's global
    // namespace is searched before its packages.
    engine.register_fn("sleep", |_: INT| -> Fallible<()> { no_sleep() });
    engine.register_fn("sleep", |_: rhai::FLOAT| -> Fallible<()> { no_sleep() });
    engine.register_fn("sleep", |_: Dynamic| -> Fallible<()> { no_sleep() });
}

/// The tags of `channel_send(code, data, #{tag})`: a string or an array of strings.
fn send_tags(options: &Map) -> Fallible<Vec<String>> {
    for key in options.keys() {
        if key != "tag" {
            return fail(format!(
                "channel_send: unknown option {key:?}; the options are: tag"
            ));
        }
    }
    let Some(tag) = options.get("tag") else {
        return Ok(Vec::new());
    };
    if let Some(s) = tag.read_lock::<ImmutableString>() {
        return Ok(vec![s.to_string()]);
    }
    if let Some(list) = tag.read_lock::<rhai::Array>() {
        let mut out = Vec::new();
        for t in list.iter() {
            match t.read_lock::<ImmutableString>() {
                Some(s) => out.push(s.to_string()),
                None => return fail("channel_send: tag is a string or an array of strings"),
            }
        }
        return Ok(out);
    }
    fail("channel_send: tag is a string or an array of strings")
}

fn json_value(value: &Dynamic) -> Fallible<serde_json::Value> {
    convert::to_json(value).or_else(fail)
}

/// Calls `f` with the run's host and channel code; a failure becomes a script error.
fn with_host<T>(f: impl FnOnce(&dyn super::Host, &str) -> Result<T, String>) -> Fallible<T> {
    super::no_side_effects_inline()?;
    let result = with_context(|c| match c {
        Some(c) => f(c.host.as_ref(), c.channel.code()),
        None => Err("not available outside a run".into()),
    });
    result.or_else(fail)
}

fn no_sleep() -> Fallible<()> {
    fail("sleep is not available in Switchyard scripts")
}

fn json_text(value: Dynamic) -> Fallible<ImmutableString> {
    super::heavy_value(&value)?;
    match convert::to_json_text(&value) {
        Ok(text) => Ok(text.into()),
        Err(e) => fail(format!("to_json: {e}")),
    }
}

fn log(level: tracing::Level, msg: &Dynamic) {
    let text = convert::to_text(msg).unwrap_or_else(|e| e);
    with_context(|c| match c {
        Some(c) => {
            if let Some(job) = &c.job {
                job.trail.log(level, &text);
            }
            c.host.log(level, c.channel.code(), &c.request_id, &text)
        }
        None => super::trace(level, "", "", &text),
    });
}

#[cfg(test)]
mod tests {
    use crate::script::ScriptEngine;

    fn eval(src: &str) -> String {
        let e = ScriptEngine::new();
        e.engine.eval::<rhai::Dynamic>(src).unwrap().to_string()
    }

    #[test]
    fn crypto_and_encoding_match_known_vectors() {
        assert_eq!(
            eval(r#"md5_hex("abc")"#),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            eval(r#"sha256_hex("abc")"#),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            eval(r#"hmac_sha256_hex("Jefe", "what do ya want for nothing?")"#),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(eval(r#"base64_encode("héllo")"#), "aMOpbGxv");
        assert_eq!(eval(r#"base64_decode("aMOpbGxv")"#), "héllo");
    }

    #[test]
    fn json_and_query_helpers() {
        assert_eq!(eval(r#"parse_json("{\"a\":[1,2]}").a[1]"#), "2");
        assert_eq!(
            eval(r#"to_json(#{a: [1, ()], b: "x"})"#),
            r#"{"a":[1,null],"b":"x"}"#
        );
        assert_eq!(eval(r#"to_json("q")"#), r#""q""#);
        assert_eq!(eval(r#"parse_query("a=1&b=x%20y&c").b"#), "x y");
        let e = ScriptEngine::new();
        assert!(e
            .engine
            .eval::<rhai::Dynamic>(r#"parse_json("{bad")"#)
            .is_err());
        assert!(e
            .engine
            .eval::<rhai::Dynamic>(r#"base64_decode("***")"#)
            .is_err());
    }

    #[test]
    fn now_and_uuid_have_their_formats() {
        let now = eval("now()");
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
        assert!(uuid::Uuid::parse_str(&eval("uuid()")).is_ok());
    }
}
