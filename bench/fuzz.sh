#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for SECONDS with libFuzzer (cargo-fuzz).
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# Crashes land in fuzz/artifacts/<target>/: turn each into a regression test. Not CI.
#   bench/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in ws_frame channel_doc event_pattern ipmask json_rhai; do
    echo "== $target (${SECS}s)"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$SECS" 2>&1 \
        | grep -E "^(Done|#[0-9]+ +DONE)|SUMMARY|crash-|Test unit written" || true
done
