#!/usr/bin/env bash
# Start-up with many channels: N channels (default 1 000), each with its own
# recv script (the shipped orders API script, made distinct per channel) and
# a shared imported module, loaded and compiled at start-up. Prints the
# server's own `load_ms` (read, validate, compile everything) and the wall time
# from exec to "listening on". Loopback only; asserts nothing.
#   bench/startup.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
ROUNDS="${2:-3}"
echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard
WORK="$(mktemp -d)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/channels" "$WORK/scripts"
cp scripts/orders_data.rhai "$WORK/scripts/"
for i in $(seq 0 $((N - 1))); do
    printf '{"code":"ch%d","token_local":"token-%d","recv_svcscriptcode":"api%d","recv_svcscriptcode_ws":"api%d","opts":{"issync":true,"title":"channel %d"}}\n' \
        "$i" "$i" "$i" "$i" "$i" >"$WORK/channels/ch$i.json"
    { echo "// channel $i"; cat scripts/orders_api.rhai; } >"$WORK/scripts/api$i.rhai"
done
lines=$(cat scripts/orders_api.rhai | wc -l)
echo "$N channels, $N recv scripts of $lines lines + 1 module, $(du -sh "$WORK" | cut -f1) on disk, $(date -u +%FT%TZ)"
for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$WORK/data"
    start=$(date +%s%N)
    RUST_LOG=info target/release/switchyard serve --listen 127.0.0.1:0 --channels "$WORK/channels" \
        --scripts "$WORK/scripts" --data "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
    PID=$!
    for _ in $(seq 1 600); do grep -q "listening on" "$WORK/out" && break; sleep 0.01; done
    ready=$(( ($(date +%s%N) - start) / 1000000 ))
    load=$(grep -o 'load_ms=[0-9]*' "$WORK/err" | head -1 | cut -d= -f2)
    base="$(sed -n 's#listening on ##p' "$WORK/out")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base/channels/ch$((N - 1))/api/orders/1002?token=token-$((N - 1))")
    echo "round $r: load_ms=$load  exec-to-listening=${ready} ms  last channel answers $code"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done
