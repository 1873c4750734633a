#!/usr/bin/env bash
# Slow-client attacks with slowhttptest (Debian package `slowhttptest`): the latency
# of normal clients before and during
#   1. slowloris: CONNS connections sending their headers a few bytes at a time;
#   2. slow body (R-U-Dead-Yet): CONNS connections trickling a declared body.
# Normal load is wrk, 4 connections, on the bench channel. Loopback only, bounded
# in time. Prints figures; asserts nothing.
#   bench/slowloris.sh [CONNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-200}"
SECS="${2:-8}"
command -v slowhttptest >/dev/null || { echo "slowhttptest missing: apt-get install slowhttptest" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard
ulimit -n "$(ulimit -Hn)"
WORK="$(mktemp -d)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; pkill -f "slowhttptest.*$PORT" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# The defaults of the contract: header_timeout and body_timeout are 10 s / 30 s.
printf 'admin_token = "bench-admin"\n' >"$WORK/switchyard.toml"
RUST_LOG=warn taskset -c 1 target/release/switchyard serve --config "$WORK/switchyard.toml" \
    --listen 127.0.0.1:0 --channels bench/channels --scripts bench/scripts --data "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
BASE="$(sed -n 's#listening on ##p' "$WORK/out")"
PORT="${BASE##*:}"
URL="$BASE/channels/bench/api?token=bench-token"

load() { # label
    taskset -c 0 wrk -t1 -c4 -d"${SECS}s" --latency -s bench/post.lua "$URL" >"$WORK/wrk"
    local rate p50 p99
    rate="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk")"
    p50="$(awk '$1 == "50%" {print $2}' "$WORK/wrk")"
    p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk")"
    printf '%-34s %10s req/s  p50 %-8s p99 %-8s open=%s\n' "$1" "$rate" "$p50" "$p99" \
        "$(ss -Htn state established "( sport = :$PORT )" | wc -l)"
}

server_cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
echo "server pinned to CPU 1, clients on CPU 0, $(date -u +%FT%TZ), $CONNS attacking connections"
load "no attack"
# Control: slowhttptest spins a core, so wrk (on the same core: there are two) loses
# CPU to it whatever the server does. A niced spinner alone shows that share.
taskset -c 0 nice -n 19 timeout $((SECS + 2)) sh -c 'while :; do :; done' &
SPIN=$!
sleep 0.5
load "control: niced spinner, no attack"
kill "$SPIN" 2>/dev/null || true; wait "$SPIN" 2>/dev/null || true
for mode in H B; do
    name=$([ "$mode" = H ] && echo "slowloris (slow headers)" || echo "slow body (R-U-Dead-Yet)")
    # -i 5: one trickle every 5 s per connection; -r: open them all at once.
    # slowhttptest spins a whole core: niced, so wrk (same core) still gets its share.
    taskset -c 0 nice -n 19 timeout $((SECS + 30)) slowhttptest -"$mode" -c "$CONNS" -r "$CONNS" -i 5 -l $((SECS + 20)) \
        -u "$URL" -t POST -s 8192 -x 10 -p 3 >"$WORK/slow-$mode" 2>&1 &
    SLOW=$!
    sleep 3
    before=$(server_cpu)
    load "during $name"
    echo "    server CPU time during the run: $(( $(server_cpu) - before )) ticks of $(getconf CLK_TCK)/s"
    kill "$SLOW" 2>/dev/null || true; wait "$SLOW" 2>/dev/null || true
    sleep 1
done
load "after"
echo "slow clients answered 408 and closed by the server (header_timeout 10 s, body_timeout 30 s):"
curl -s "$BASE/metrics" | grep -E '^switchyard_http_requests_total\{.*status="408"' || echo "  (none)"
