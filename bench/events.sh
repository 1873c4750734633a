#!/usr/bin/env bash
# System-event figures for Switchyard:
#   1. one event fanned out to 1 000 events channels (one connection each):
#      publish-to-receive latency, p50 / p99, over EVENTS events
#   2. sustained events/s into one events channel held by 4 connections
# Loopback only, bounded in count and time. Prints figures; asserts nothing.
#   bench/events.sh [CHANNELS] [EVENTS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CHANNELS="${1:-1000}"
EVENTS="${2:-200}"
SECS="${3:-8}"

echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard --example events_bench
ulimit -n "$(ulimit -Hn)"
WORK="$(mktemp -d)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/channels" "$WORK/scripts"
for i in $(seq 0 $((CHANNELS - 1))); do
    printf '{"code":"fan%d","type":"events","token_local":"fan-token","opts":{"events":["bench.>"]}}\n' "$i" \
        >"$WORK/channels/fan$i.json"
done
printf 'admin_token = "bench-admin"\n' >"$WORK/switchyard.toml"

RUST_LOG=warn taskset -c 1 target/release/switchyard serve --config "$WORK/switchyard.toml" \
    --listen 127.0.0.1:0 --channels "$WORK/channels" --scripts "$WORK/scripts" --data "$WORK/data" >"$WORK/out" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
BASE="$(sed -n 's#listening on ##p' "$WORK/out")"

echo "server pinned to CPU 1, clients on CPU 0, $(date -u +%FT%TZ)"
taskset -c 0 timeout 300 target/release/examples/events_bench fanout "$BASE" bench-admin "$CHANNELS" "$EVENTS" | tail -1
kill "$PID"; wait "$PID" 2>/dev/null || true

# Sustained: a server whose only events channel is fan0 (with 999 offline channels
# every event would also be committed to 999 durable queues: a different figure).
rm -rf "$WORK/data" && find "$WORK/channels" -name 'fan*.json' ! -name 'fan0.json' -delete
RUST_LOG=warn taskset -c 1 target/release/switchyard serve --config "$WORK/switchyard.toml" \
    --listen 127.0.0.1:0 --channels "$WORK/channels" --scripts "$WORK/scripts" --data "$WORK/data" >"$WORK/out" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
BASE="$(sed -n 's#listening on ##p' "$WORK/out")"
taskset -c 0 timeout $((SECS + 60)) target/release/examples/events_bench sustained "$BASE" bench-admin "$SECS" | tail -1
