#!/usr/bin/env bash
# Websocket figures for Switchyard alone (the comparison with peers is bench/run.sh):
#   1. message round trips: 1 connection with 64 in flight
#   2. message round trips: 100 connections, 1 in flight each
#   3. resident memory of the server with 10 000 idle authenticated connections
# Loopback only; every load run is bounded in time. Prints a table; asserts nothing.
#   bench/ws.sh [SECONDS]      (default 8 s per load run)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-8}"
IDLE="${IDLE_CONNS:-10000}"
PEERS="../shared/bench/peers/rust"
TARGET="$PWD/target/bench-peers"

echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard --example ws_idle
cargo build --release --quiet --manifest-path "$PEERS/Cargo.toml" --target-dir "$TARGET" --bin wsload
WSLOAD="$TARGET/release/wsload"

ulimit -n "$(ulimit -Hn)"
DATA="$(mktemp -d)"
OUT="$(mktemp)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$DATA" "$OUT"; }
trap cleanup EXIT

RUST_LOG=warn taskset -c 1 target/release/switchyard serve --config bench/switchyard.toml --listen 127.0.0.1:0 \
    --channels bench/channels --scripts bench/scripts --data "$DATA" >"$OUT" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$OUT" && break; sleep 0.1; done
ADDR="$(sed -n 's#listening on http://##p' "$OUT")"
URL="ws://$ADDR/channels/bench/ws?token=bench-token"

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$PID/status"; }
load() { # conns inflight
    timeout $((SECS + 30)) taskset -c 0 "$WSLOAD" --url "$URL" --conns "$1" --inflight "$2" \
        --warmup 2 --duration "$SECS" | tail -1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

printf '%s\n' "server pinned to CPU 1, load on CPU 0, ${SECS}s per run, $(date -u +%FT%TZ)"
printf '%-36s %12s %10s %10s %8s\n' "run" "msgs/s" "p50 ms" "p99 ms" "errors"
for spec in "1 64" "100 1" "32 1"; do
    set -- $spec
    r="$(load "$1" "$2")"
    printf '%-36s %12s %10s %10s %8s\n' "$1 conn(s) x $2 in flight" \
        "$(echo "$r" | field rate)" \
        "$(echo "$r" | awk '{for(i=1;i<=NF;i++) if ($i ~ /^p50_us=/) {split($i,a,"="); printf "%.3f", a[2]/1000}}')" \
        "$(echo "$r" | awk '{for(i=1;i<=NF;i++) if ($i ~ /^p99_us=/) {split($i,a,"="); printf "%.3f", a[2]/1000}}')" \
        "$(echo "$r" | field errors)"
done

before="$(rss_mb)"
target/release/examples/ws_idle "$URL" "$IDLE" 12 >"$OUT.idle" &
IDLE_PID=$!
for _ in $(seq 1 120); do grep -q "opened=" "$OUT.idle" 2>/dev/null && break; sleep 0.5; done
sleep 2
during="$(rss_mb)"
opened="$(cat "$OUT.idle")"
wait "$IDLE_PID" || true
rm -f "$OUT.idle"
printf '\n%-36s %s\n' "resident memory before" "${before} MB"
printf '%-36s %s (%s)\n' "resident memory, $IDLE idle websockets" "${during} MB" "$opened"
