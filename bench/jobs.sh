#!/usr/bin/env bash
# Durable inbox and send-job figures for Switchyard:
#   1. inbox (issync = false): 202s per second, each request committed before its answer
#      (wrk, 32 connections, POST /channels/inbox/api)
#   2. send jobs completed per second, each one webquery to a loopback upstream
#      (the same server's bench channel stands in for the external system)
# Loopback only, bounded in time. Prints figures; asserts nothing.
#   bench/jobs.sh [SECONDS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-8}"
JOBS="${2:-5000}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard --example jobs_bench
WORK="$(mktemp -d)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cp -r bench/channels bench/scripts "$WORK/"
printf 'admin_token = "bench-admin"\n' >"$WORK/switchyard.toml"
RUST_LOG=warn taskset -c 1 target/release/switchyard serve --config "$WORK/switchyard.toml" --listen 127.0.0.1:0 \
    --channels "$WORK/channels" --scripts "$WORK/scripts" --data "$WORK/data" >"$WORK/out" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
BASE="$(sed -n 's#listening on ##p' "$WORK/out")"
# The send channel's url is this server's bench channel (written now that the port is known).
printf '{"code":"bench_send","token_local":"bench-token","url":"%s/channels/bench/","token_remote":"bench-token","send_svcscriptcode":"bench_send","opts":{"send_retries":0}}\n' "$BASE" \
    >"$WORK/channels/bench_send.json"
sleep 1

echo "server pinned to CPU 1, load on CPU 0, $(date -u +%FT%TZ)"
taskset -c 0 wrk -t1 -c32 -d"${SECS}s" --latency -s bench/post.lua "$BASE/channels/inbox/api?token=bench-token" \
    | awk '/Requests\/sec/ {print "inbox: " $2 " acknowledged/s"} / 50%/ {print "inbox: p50 " $2} / 99%/ {print "inbox: p99 " $2} /Non-2xx/ {print "inbox: non-2xx " $4}'
taskset -c 0 timeout 200 target/release/examples/jobs_bench "$BASE" bench-admin bench_send "$JOBS" | tail -1
