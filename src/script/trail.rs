//! What one attempt of a job did, for its job card: each outbound call
//! (`webquery`) with its request and response, and the script's log lines.
//! Bounded (a few calls, short bodies, a few lines), credentials already
//! masked by whoever adds an entry; the secrets' values are masked when the
//! trail is written (see [`Trail::to_json`]).

use std::sync::Mutex;

use serde_json::{json, Value};

/// Calls kept per attempt; later ones are only counted.
pub const MAX_CALLS: usize = 5;
/// Log lines kept per attempt; later ones are only counted.
pub const MAX_LOGS: usize = 50;
/// Bytes of a request or response body kept.
pub const BODY_BYTES: usize = 2048;
/// Headers kept of a request or a response; the rest are counted.
pub const MAX_HEADERS: usize = 32;
/// Bytes of a header's value kept.
pub const HEADER_BYTES: usize = 512;
/// Bytes of a log line kept.
pub const LINE_BYTES: usize = 500;

#[derive(Debug, Default)]
struct Kept {
    calls: Vec<Value>,
    logs: Vec<Value>,
    more_calls: usize,
    more_logs: usize,
}

/// The trail of one attempt, filled while its script runs.
#[derive(Debug, Default)]
pub struct Trail(Mutex<Kept>);

impl Trail {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an outbound call (`{method, url, request, response | error, duration_ms}`).
    pub fn call(&self, call: Value) {
        let mut kept = self.kept();
        if kept.calls.len() < MAX_CALLS {
            kept.calls.push(call);
        } else {
            kept.more_calls += 1;
        }
    }

    /// Adds a log line of the script.
    pub fn log(&self, level: tracing::Level, text: &str) {
        let mut kept = self.kept();
        if kept.logs.len() < MAX_LOGS {
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let level = level.as_str().to_ascii_lowercase();
            kept.logs
                .push(json!({"at": at, "level": level, "text": cut(text, LINE_BYTES)}));
        } else {
            kept.more_logs += 1;
        }
    }

    /// Takes what was kept as the text of `{calls, logs, more_calls?,
    /// more_logs?}` with the secrets' values masked; `None` when the attempt
    /// made no call and wrote no line.
    pub fn take_json(&self) -> Option<String> {
        let kept = std::mem::take(&mut *self.kept());
        if kept.calls.is_empty() && kept.logs.is_empty() {
            return None;
        }
        let mut out = json!({"calls": kept.calls, "logs": kept.logs});
        if kept.more_calls > 0 {
            out["more_calls"] = kept.more_calls.into();
        }
        if kept.more_logs > 0 {
            out["more_logs"] = kept.more_logs.into();
        }
        crate::secrets::redact_json(&mut out);
        Some(out.to_string())
    }
}

/// `text` cut to at most `max` bytes at a character boundary, saying so.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trail_is_bounded_and_says_what_it_left_out() {
        let trail = Trail::default();
        assert_eq!(trail.take_json(), None);
        for n in 0..MAX_CALLS + 2 {
            trail.call(json!({ "n": n }));
        }
        for _ in 0..MAX_LOGS + 1 {
            trail.log(tracing::Level::WARN, &"é".repeat(LINE_BYTES));
        }
        let out: Value = serde_json::from_str(&trail.take_json().unwrap()).unwrap();
        assert_eq!(out["calls"].as_array().unwrap().len(), MAX_CALLS);
        assert_eq!(out["more_calls"], 2);
        assert_eq!(out["more_logs"], 1);
        assert_eq!(out["logs"][0]["level"], "warn");
        let line = out["logs"][0]["text"].as_str().unwrap();
        assert!(line.ends_with(&format!("({} bytes in all)", 2 * LINE_BYTES)));
        // Taken: the next attempt starts empty.
        assert_eq!(trail.take_json(), None);
    }
}
