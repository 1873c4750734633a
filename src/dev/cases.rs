//! `switchyard test` and `switchyard try` (SPEC §15): script test cases and
//! dry runs offline, against the channels and scripts folders, with no server
//! and no store: kv reads come from the case's fixture (or are empty), and
//! every side effect is captured by the dry run's host.
//!
//! A case file (`cases/*.json`) holds the cases of one channel:
//!
//! ```json
//! {"channel": "orders", "cases": [
//!   {"name": "an unknown order is 404",
//!    "request": {"method": "GET", "path": "/orders/9999"},
//!    "expect": {"status": 404, "body": {"error": "order_not_found"}}}
//! ]}
//! ```
//!
//! or, without `cases`, is one case itself. See the README, "Developing scripts".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::dry::{self, DryHost, Input, Reads};
use crate::config::Config;
use crate::registry::{self, Snapshot};
use crate::script::ScriptEngine;

/// Where the cases are, and the folders they run against.
pub struct Layout {
    pub cases: PathBuf,
    pub config: Config,
}

impl Layout {
    /// `DIR` as given to `switchyard test`: a project folder (with a
    /// `channels/` folder: its `channels/`, `scripts/` and `cases/`) or the
    /// cases folder itself (channels and scripts from `config`). No `DIR`:
    /// `./cases`.
    pub fn resolve(dir: Option<&Path>, mut config: Config, folders_given: bool) -> Self {
        match dir {
            Some(dir) if dir.join("channels").is_dir() && !folders_given => {
                config.channels = dir.join("channels");
                config.scripts = dir.join("scripts");
                Layout {
                    cases: dir.join("cases"),
                    config,
                }
            }
            Some(dir) => Layout {
                cases: dir.to_owned(),
                config,
            },
            None => Layout {
                cases: PathBuf::from("cases"),
                config,
            },
        }
    }
}

/// One case, read from a file.
struct Case {
    file: String,
    channel: String,
    name: String,
    doc: Value,
}

fn read_cases(dir: &Path) -> Result<Vec<Case>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the cases folder {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        let channel = doc["channel"].as_str().unwrap_or("").to_owned();
        let list = match doc.get("cases") {
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err(format!("{file}: \"cases\" is a list")),
            None => vec![doc.clone()],
        };
        for (i, case) in list.into_iter().enumerate() {
            let name = case["name"]
                .as_str()
                .map_or_else(|| format!("case {}", i + 1), str::to_owned);
            let channel = case["channel"]
                .as_str()
                .map_or(channel.clone(), str::to_owned);
            out.push(Case {
                file: file.clone(),
                channel,
                name,
                doc: case,
            });
        }
    }
    Ok(out)
}

/// The input a case (or `switchyard try`) describes.
pub fn input_of(code: &str, case: &Value) -> Result<Input, String> {
    if let Some(req) = case.get("request") {
        return super::api::http_input(code, req).map_err(|e| e.to_string());
    }
    if let Some(frame) = case.get("frame") {
        return Ok(Input::Ws {
            data: frame.get("data").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(job) = case.get("job") {
        return Ok(Input::Send {
            data: job.get("data").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(s) = case.get("schedule") {
        return Ok(Input::Schedule {
            entry: s.get("entry").and_then(Value::as_u64).unwrap_or(0) as usize,
            time: s
                .get("time")
                .and_then(Value::as_str)
                .map_or_else(|| chrono::Utc::now().to_rfc3339(), str::to_owned),
        });
    }
    Err(
        "a case has \"request\" (HTTP), \"frame\" (websocket), \"job\" (send) or \"schedule\""
            .into(),
    )
}

/// Runs one dry run offline: the outcome of §15, or why it could not run.
pub async fn dry_run_offline(
    engine: &ScriptEngine,
    snapshot: &Snapshot,
    config: &Config,
    code: &str,
    case: &Value,
    draft: Option<&str>,
) -> Result<Value, String> {
    let channel = snapshot
        .channel(code)
        .cloned()
        .ok_or_else(|| format!("no channel {code:?}"))?;
    let input = input_of(code, case)?;
    let at = dry::Setting {
        engine,
        channel: &channel,
        scripts: &snapshot.scripts,
        identity: crate::auth::channel_identity(&channel, config),
    };
    let script = at.script(&input, draft).map_err(|e| e.to_string())?;
    let kv = case
        .get("kv")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let files = case
        .get("files")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let stubs = super::api::stubs_of(case).map_err(|e| e.to_string())?;
    let host = Arc::new(DryHost::new(Reads::Fixture { kv, files }, stubs));
    Ok(dry::run(&at, script, &input, host).await)
}

/// Where `actual` differs from the subset `expected`: one line per difference.
/// Objects: every expected key, recursively; arrays: the same length, item by
/// item; anything else: equal.
pub fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(got) => differences(&at, v, got, out),
                    None => out.push(format!("{at}: expected {v}, got nothing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (v, got)) in e.iter().zip(a).enumerate() {
                differences(&format!("{path}[{i}]"), v, got, out);
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// Where the outcome of a case differs from its `expect`.
fn check(expect: &Value, outcome: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let answer = &outcome["answer"];
    if let Some(e) = expect.as_object() {
        for (k, v) in e {
            match k.as_str() {
                "effects" => effects_in_order(v, &outcome["effects"], &mut out),
                "no_effects" => {
                    for f in v.as_array().into_iter().flatten() {
                        let hit = outcome["effects"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|x| &x["fn"] == f);
                        if hit {
                            out.push(format!("effects: expected no {f}, got one"));
                        }
                    }
                }
                "logs" => effects_in_order(v, &outcome["logs"], &mut out),
                _ => match answer.get(k) {
                    Some(got) => differences(k, v, got, &mut out),
                    None => out.push(format!("{k}: expected {v}, got nothing (answer: {answer})")),
                },
            }
        }
    }
    out
}

/// Every expected item (a subset) appears in `actual`, in this order.
fn effects_in_order(expected: &Value, actual: &Value, out: &mut Vec<String>) {
    let actual: Vec<&Value> = actual.as_array().into_iter().flatten().collect();
    let mut from = 0;
    for e in expected.as_array().into_iter().flatten() {
        let found = actual[from..].iter().position(|a| {
            let mut d = Vec::new();
            differences("", e, a, &mut d);
            d.is_empty()
        });
        match found {
            Some(i) => from += i + 1,
            None => {
                let got: Vec<String> = actual.iter().map(|a| a.to_string()).collect();
                out.push(format!(
                    "expected {e} (in this order), got [{}]",
                    got.join(", ")
                ));
                return;
            }
        }
    }
}

/// `switchyard test`: runs every case, prints a line each (and a diff for a
/// failure), then `N passed, M failed`; `true` when all passed.
pub async fn run_all(layout: &Layout) -> Result<bool, String> {
    let engine = ScriptEngine::new();
    let loaded = registry::load(&layout.config, &engine, None);
    for p in &loaded.problems {
        eprintln!("{p}");
    }
    let snapshot = loaded.snapshot;
    let cases = read_cases(&layout.cases)?;
    let (mut passed, mut failed) = (0, 0);
    let started = Instant::now();
    for case in &cases {
        let t = Instant::now();
        let result = dry_run_offline(
            &engine,
            &snapshot,
            &layout.config,
            &case.channel,
            &case.doc,
            None,
        )
        .await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let problems = match &result {
            Err(e) => vec![e.clone()],
            Ok(outcome) => check(case.doc.get("expect").unwrap_or(&json!({})), outcome),
        };
        if problems.is_empty() {
            passed += 1;
            println!("ok    {} › {} ({ms:.1} ms)", case.file, case.name);
        } else {
            failed += 1;
            println!("FAIL  {} › {} ({ms:.1} ms)", case.file, case.name);
            for p in &problems {
                println!("      {p}");
            }
            if let Ok(outcome) = &result {
                for log in outcome["logs"].as_array().into_iter().flatten() {
                    println!(
                        "      log {}: {}",
                        log["level"].as_str().unwrap_or(""),
                        log["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed ({:.0} ms)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(failed == 0)
}

/// `switchyard try`: one dry run offline; the outcome as pretty JSON.
pub async fn try_one(
    config: &Config,
    code: &str,
    case: &Value,
    draft: Option<&str>,
) -> Result<String, String> {
    let engine = ScriptEngine::new();
    let loaded = registry::load(config, &engine, None);
    let outcome = dry_run_offline(&engine, &loaded.snapshot, config, code, case, draft).await?;
    Ok(serde_json::to_string_pretty(&outcome).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_match_and_differences_name_the_place() {
        let mut d = Vec::new();
        differences("body", &json!({"a": 1}), &json!({"a": 1, "b": 2}), &mut d);
        assert!(d.is_empty());
        differences(
            "body",
            &json!({"a": {"x": [1, 2]}}),
            &json!({"a": {"x": [1, 3]}}),
            &mut d,
        );
        assert_eq!(d, ["body.a.x[1]: expected 2, got 3"]);
    }

    #[test]
    fn effects_match_in_order_as_subsets() {
        let actual = json!([{"fn": "kv_get"}, {"fn": "kv_set", "args": ["a", 1]}, {"fn": "emit_event", "args": ["x", {}]}]);
        let mut d = Vec::new();
        effects_in_order(
            &json!([{"fn": "kv_set"}, {"fn": "emit_event", "args": ["x", {}]}]),
            &actual,
            &mut d,
        );
        assert!(d.is_empty(), "{d:?}");
        let mut d = Vec::new();
        effects_in_order(
            &json!([{"fn": "emit_event"}, {"fn": "kv_set"}]),
            &actual,
            &mut d,
        );
        assert_eq!(d.len(), 1);
    }
}
