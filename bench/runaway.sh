#!/usr/bin/env bash
# A runaway script beside normal traffic: the bench channel under wrk (64
# connections, as the harness) alone, then while RUNAWAYS clients keep calling
# a channel whose script is `loop {}` with recv_timeout = 1 s. Prints the bench
# channel's rate and latency in both phases and how long past its 1 s timeout
# each runaway call was answered (504). Server pinned to CPU 1, clients on CPU 0.
# Loopback only, bounded in time; asserts nothing.
#   bench/runaway.sh [RUNAWAYS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNAWAYS="${1:-4}"
SECS="${2:-8}"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
BIN="${BIN:-}"   # a binary to measure instead of building this tree
if [ -z "$BIN" ]; then
    echo "building (release)..." >&2
    cargo build --release --quiet --bin switchyard
    BIN=target/release/switchyard
fi
WORK="$(mktemp -d)"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; jobs -p | xargs -r kill 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/channels" "$WORK/scripts"
cp bench/channels/bench.json "$WORK/channels/"
cp bench/scripts/*.rhai "$WORK/scripts/"
echo '{"code":"runaway","token_local":"runaway-token","recv_svcscriptcode":"spin","opts":{"issync":true,"recv_timeout":1}}' \
    >"$WORK/channels/runaway.json"
echo 'let n = 0; loop { n += 1; }' >"$WORK/scripts/spin.rhai"
RUST_LOG=warn taskset -c 1 "$BIN" serve --listen 127.0.0.1:0 --channels "$WORK/channels" \
    --scripts "$WORK/scripts" --data "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
BASE="$(sed -n 's#listening on ##p' "$WORK/out")"
URL="$BASE/channels/bench/api?token=bench-token"

load() { # label
    taskset -c 0 wrk -t1 -c64 -d"${SECS}s" --latency -s ../shared/bench/wrk/post.lua "$URL" >"$WORK/wrk" 2>&1 \
        || taskset -c 0 wrk -t1 -c64 -d"${SECS}s" --latency -s bench/post.lua "$URL" >"$WORK/wrk"
    printf '%-30s %10s req/s  p50 %-8s p99 %-8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk")" \
        "$(awk '$1 == "50%" {print $2}' "$WORK/wrk")" "$(awk '$1 == "99%" {print $2}' "$WORK/wrk")"
}

echo "server pinned to CPU 1, clients on CPU 0, $(date -u +%FT%TZ)"
taskset -c 0 wrk -t1 -c64 -d2s -s bench/post.lua "$URL" >/dev/null
load "bench channel alone"
# Each runaway client is one curl process calling again and again (no process
# start per call on the client core, which would itself disturb wrk's latency).
RUNAWAY_URL="$BASE/channels/runaway/api?token=runaway-token"
for i in $(seq 1 "$RUNAWAYS"); do
    urls=(); for _ in $(seq 1 $((SECS + 3))); do urls+=(-o /dev/null "$RUNAWAY_URL"); done
    taskset -c 0 curl -s -w '%{http_code} %{time_total}\n' "${urls[@]}" >"$WORK/runaway.$i" &
done
sleep 1
load "with $RUNAWAYS runaway clients"
for job in $(jobs -p); do [ "$job" = "$PID" ] || wait "$job" 2>/dev/null || true; done
cat "$WORK"/runaway.* | awk '{ printf "%s %.1f\n", $1, ($2 - 1.0) * 1000 }' | sort -k2 -n | awk '
    { n++; if ($1 != 504) bad++; v[n] = $2 }
    END { printf "runaway calls: %d answered, %d not 504; answered past the 1 s timeout by: median %.1f ms, max %.1f ms\n",
          n, bad, v[int((n + 1) / 2)], v[n] }'
