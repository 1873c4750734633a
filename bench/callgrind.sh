#!/usr/bin/env bash
# User-space instructions per call (callgrind), Switchyard against the harness's
# references, and the costliest functions of Switchyard's call (inclusive).
#   bench/callgrind.sh [http|ws|all] [SECONDS]     (default all, 8 s of load each)
# HTTP: the bench channel's scripted call (wrk -c8) against axum-hello and
# axum + Rhai; websocket: 1 connection × 64 frames in flight against the raw
# echo and axum + Rhai, and Switchyard with 32 connections × 1 in flight.
# SWITCHYARD_BIN=path measures another build of Switchyard (no build then). Counting starts after a warm-up and
# stops before the load ends, so start-up and shutdown are not counted.
# Needs valgrind and the harness's peers (../shared/bench/setup.sh builds them).
# KEEP=DIR keeps the profiles (callgrind_annotate them for more); SWITCHYARD_LOG=info
# counts with the per-call log line (the default is warn; it sets every row's RUST_LOG).
# CACHE=1 also simulates the caches and branch predictor (slower) and prints, per
# call, first-level instruction and data cache misses and mispredicted branches:
# what equal instruction counts can still differ in.
# Loopback only, bounded in time; prints figures, asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
SECS="${2:-8}"
PEERS="../shared/bench/peers/rust/target/release"
for tool in valgrind callgrind_control callgrind_annotate wrk; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind wrk)" >&2; exit 1; }
done
[ -x "$PEERS/axum_peer" ] && [ -x "$PEERS/wsload" ] || { echo "missing the harness's peers: run ../shared/bench/setup.sh" >&2; exit 1; }
BIN="${SWITCHYARD_BIN:-target/release/switchyard}"
if [ -z "${SWITCHYARD_BIN:-}" ]; then
    echo "building (release)..." >&2
    cargo build --release --quiet --bin switchyard
fi
source bench/lib.sh
BODY='{"qid":1,"data":{"name":"bench","value":42,"tags":["a","b"]}}'
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["X-Channel-Token"] = "bench-token"\n' \
    "'$BODY'" >"$ROOT/post.lua"

# load KIND URL SECONDS: the load generator on CPU 0, bounded in time.
load() {
    if [ "$1" = http ]; then
        timeout $(($3 + 30)) taskset -c 0 wrk -t1 -c8 -d"$3s" -s "$ROOT/post.lua" "$2"
    else
        local spec="${1#ws}"
        timeout $(($3 + 30)) taskset -c 0 "$PEERS/wsload" --url "$2" --conns "${spec%x*}" \
            --inflight "${spec#*x}" --warmup 0 --duration "$3"
    fi
}

# measure NAME KIND URL CMD...: runs CMD ("{port}" replaced) under callgrind,
# warms it up, counts the instructions of one bounded load run and prints
# "NAME calls instructions/call"; the profile stays in $ROOT/NAME.cg.
measure() {
    local name="$1" kind="$2" url="$3"; shift 3
    local port; port="$(free_port)"
    local cmd=("${@//\{port\}/$port}")
    url="${url//\{port\}/$port}"
    RUST_LOG="${SWITCHYARD_LOG:-warn}" taskset -c 1 valgrind --tool=callgrind --instr-atstart=no \
        "${SIM[@]}" --callgrind-out-file="$ROOT/$name.cg" "${cmd[@]}" >"$ROOT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1
    done
    # Switchyard's port accepts before its start-up ends (the router and its
    # OpenAPI description are made after the bind): wait for its announcement,
    # so that none of the start-up falls into the counted run.
    if [[ "$name" == *switchyard* ]]; then
        for _ in $(seq 600); do grep -q "listening on" "$ROOT/$name.log" && break; sleep 0.1; done
    fi
    load "$kind" "$url" 2 >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null 2>&1
    load "$kind" "$url" "$SECS" >"$ROOT/$name.load" 2>&1
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    local calls
    if [ "$kind" = http ]; then
        calls="$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$ROOT/$name.load")"
    else
        calls="$(sed -n 's/.* msgs=\([0-9]*\) .*/\1/p' "$ROOT/$name.load")"
    fi
    echo "$calls" >"$ROOT/$name.calls"
    # The totals line: Ir, then (with CACHE=1) Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim,
    # each followed by its percentage.
    callgrind_annotate "$(ls "$ROOT/$name.cg"* | tail -1)" 2>/dev/null \
        | awk -v n="$name" -v c="$calls" '/PROGRAM TOTALS/ && !done { done = 1; gsub(",", "")
            printf "%-34s %8d calls %9.0f instructions/call", n, c, $1 / c
            if (NF > 20) printf "  I1 misses %5.0f  D1 misses %5.0f  mispredicted %5.0f", $7 / c, ($9 + $11) / c, ($21 + $25) / c
            printf "\n" }'
}

# top NAME: the functions of NAME's profile costing over 1 000 instructions per
# call, inclusive, each name once (the tokio and core frames around them left out).
top() {
    local calls; calls="$(cat "$ROOT/$1.calls")"
    echo "$1: functions over 1 000 instructions per call, inclusive"
    callgrind_annotate --inclusive=yes --show=Ir --threshold=100 "$(ls "$ROOT/$1.cg"* | tail -1)" 2>/dev/null \
        | awk -v calls="$calls" '/^ *[0-9,]+ / {
            n = $1; gsub(",", "", n); per = n / calls
            if (per < 1000) next
            $1 = ""; $2 = ""; line = substr($0, 3)
            sub(/ \[[^]]*\]$/, "", line); sub(/^[^:]*:/, "", line)
            if (line ~ /^(<?core::|<?std::|tokio::runtime|__rustc)/ || seen[line]++ || ++shown > 80) next
            printf "  %7.0f  %s\n", per, substr(line, 1, 150) }'
}

SIM=()
[ "${CACHE:-0}" = 1 ] && SIM=(--cache-sim=yes --branch-sim=yes)
SY=("$BIN" serve --config bench/switchyard.toml --listen "127.0.0.1:{port}"
    --channels bench/channels --scripts bench/scripts --data "$ROOT/data")
mkdir -p "$ROOT/data"
HTTP_SY="http://127.0.0.1:{port}/channels/bench/api?token=bench-token"
HTTP_PEER="http://127.0.0.1:{port}/api/channels/bench/recv?token=bench-token"
WS_SY="ws://127.0.0.1:{port}/channels/bench/ws?token=bench-token"
WS_PEER="ws://127.0.0.1:{port}/api/channels/bench/ws?token=bench-token"
WS_ECHO="ws://127.0.0.1:{port}/?token=bench-token"
SCRIPTS=../shared/bench/scripts

echo "user-space instructions per call (callgrind), $(date -u +%FT%TZ), ${SECS}s counted per row"
if [ "$WHAT" = http ] || [ "$WHAT" = all ]; then
    measure http-axum-hello http "$HTTP_PEER" "$PEERS/axum_peer" hello "{port}"
    measure http-axum-rhai http "$HTTP_PEER" "$PEERS/axum_peer" rhai "{port}" "$SCRIPTS/recv.rhai" "$SCRIPTS/ws.rhai"
    measure http-switchyard http "$HTTP_SY" "${SY[@]}"
fi
if [ "$WHAT" = ws ] || [ "$WHAT" = all ]; then
    # 32 × 1 only for Switchyard: under valgrind's one-thread-at-a-time
    # scheduling the peers' 32 connections time out.
    measure ws-1x64-echo ws1x64 "$WS_ECHO" "$PEERS/ws_echo" "{port}"
    measure ws-1x64-axum-rhai ws1x64 "$WS_PEER" "$PEERS/axum_peer" rhai "{port}" "$SCRIPTS/recv.rhai" "$SCRIPTS/ws.rhai"
    measure ws-1x64-switchyard ws1x64 "$WS_SY" "${SY[@]}"
    measure ws-32x1-switchyard ws32x1 "$WS_SY" "${SY[@]}"
fi
echo
for f in "$ROOT"/*switchyard.calls; do top "$(basename "$f" .calls)"; done
if [ -n "${KEEP:-}" ]; then cp "$ROOT"/*.cg* "$ROOT"/*.calls "$KEEP"/; fi
