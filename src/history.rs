//! The last hour of each channel's requests, for the console's charts
//! (SPEC §16.5): requests, errors (status ≥ 500) and the p99 latency per
//! minute, in memory.
//!
//! A channel's history is a ring of [`MINUTES`] one-minute buckets, each two
//! counters and a latency histogram of [`LATENCY_BUCKETS`] exponential
//! buckets (0.1 ms × 2ⁱ): `size_of::<Minute>()` bytes a minute, about 6.8 KB a
//! channel whatever the number of requests. Recording one request is a map
//! lookup, a lock and three increments.

use std::sync::{Mutex, OnceLock};

use dashmap::DashMap;
use serde_json::{json, Value};

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Latency buckets: bucket `i` holds durations under 0.1 ms × 2^(i+1).
pub const LATENCY_BUCKETS: usize = 24;

#[derive(Clone, Copy, Default)]
struct Minute {
    /// Minutes since the Unix epoch this bucket counts; 0: empty.
    at: u64,
    requests: u32,
    errors: u32,
    latency: [u32; LATENCY_BUCKETS],
}

struct ChannelHistory {
    minutes: [Minute; MINUTES],
    last_request_ms: u64,
}

fn all() -> &'static DashMap<String, Mutex<ChannelHistory>> {
    static ALL: OnceLock<DashMap<String, Mutex<ChannelHistory>>> = OnceLock::new();
    ALL.get_or_init(DashMap::new)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn bucket_of(duration_ms: f64) -> usize {
    let mut limit = 0.2;
    for i in 0..LATENCY_BUCKETS {
        if duration_ms < limit {
            return i;
        }
        limit *= 2.0;
    }
    LATENCY_BUCKETS - 1
}

/// Counts one answered request of `channel`.
pub fn record(channel: &str, status: u16, duration_ms: f64) {
    if channel.is_empty() {
        return;
    }
    let now = now_ms();
    let minute = now / 60_000;
    let add = |h: &mut ChannelHistory| {
        let slot = &mut h.minutes[(minute % MINUTES as u64) as usize];
        if slot.at != minute {
            *slot = Minute {
                at: minute,
                ..Minute::default()
            };
        }
        slot.requests += 1;
        if status >= 500 {
            slot.errors += 1;
        }
        slot.latency[bucket_of(duration_ms)] += 1;
        h.last_request_ms = now;
    };
    if let Some(entry) = all().get(channel) {
        add(&mut entry.lock().unwrap_or_else(|p| p.into_inner()));
        return;
    }
    let mut fresh = ChannelHistory {
        minutes: [Minute::default(); MINUTES],
        last_request_ms: 0,
    };
    add(&mut fresh);
    all()
        .entry(channel.to_owned())
        .or_insert_with(|| Mutex::new(fresh));
}

/// The p99 of a minute's latency histogram (the upper edge of its bucket).
fn p99(latency: &[u32; LATENCY_BUCKETS]) -> f64 {
    let total: u64 = latency.iter().map(|n| u64::from(*n)).sum();
    if total == 0 {
        return 0.0;
    }
    let wanted = (total * 99).div_ceil(100);
    let mut seen = 0;
    let mut limit = 0.2;
    for n in latency {
        seen += u64::from(*n);
        if seen >= wanted {
            return limit;
        }
        limit *= 2.0;
    }
    limit
}

/// The last hour of each of `channels`, oldest minute first:
/// `{code: {"requests": [60], "errors": [60], "p99_ms": [60], "last_request"}}`.
pub fn last_hour(channels: &[String]) -> Value {
    let now_minute = now_ms() / 60_000;
    let mut out = serde_json::Map::new();
    for code in channels {
        let (mut requests, mut errors, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = Value::Null;
        if let Some(entry) = all().get(code) {
            let h = entry.lock().unwrap_or_else(|p| p.into_inner());
            for back in (0..MINUTES as u64).rev() {
                let minute = now_minute.saturating_sub(back);
                let slot = &h.minutes[(minute % MINUTES as u64) as usize];
                let live = slot.at == minute;
                requests.push(if live { slot.requests } else { 0 });
                errors.push(if live { slot.errors } else { 0 });
                p99s.push(if live { p99(&slot.latency) } else { 0.0 });
            }
            if h.last_request_ms > 0 {
                let at =
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(h.last_request_ms);
                last = chrono::DateTime::<chrono::Utc>::from(at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into();
            }
        } else {
            requests = vec![0; MINUTES];
            errors = vec![0; MINUTES];
            p99s = vec![0.0; MINUTES];
        }
        out.insert(
            code.clone(),
            json!({ "requests": requests, "errors": errors, "p99_ms": p99s, "last_request": last }),
        );
    }
    Value::Object(out)
}

/// Bytes one channel's history holds.
pub fn bytes_per_channel() -> usize {
    std::mem::size_of::<ChannelHistory>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_counts_requests_errors_and_its_p99() {
        for i in 0..100 {
            record(
                "hist-test",
                if i < 3 { 500 } else { 200 },
                if i == 99 { 50.0 } else { 1.0 },
            );
        }
        let h = last_hour(&["hist-test".to_owned(), "never".to_owned()]);
        let now = &h["hist-test"];
        assert_eq!(now["requests"].as_array().unwrap().len(), MINUTES);
        assert_eq!(now["requests"][MINUTES - 1], 100);
        assert_eq!(now["errors"][MINUTES - 1], 3);
        // 99 of 100 under 1.6 ms: the p99 is that bucket's edge.
        assert_eq!(now["p99_ms"][MINUTES - 1], 1.6);
        assert_eq!(h["never"]["requests"][0], 0);
        assert!(bytes_per_channel() < 8 * 1024, "{}", bytes_per_channel());
    }
}
