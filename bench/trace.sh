#!/usr/bin/env bash
# What tracing costs (SPEC §11), in one run, on the bench channel (the
# harness's POST; each request is a request span and a script span):
#   off       no otlp_endpoint (the default): ids only, nothing recorded
#   on        otlp_endpoint set: every span recorded and exported over
#             OTLP/HTTP to a sink (examples/otlp_sink) that counts them
# wrk with CONNS connections, server pinned to core 0, load generator and
# sink to core 1. Loopback only, bounded in time. Prints figures; asserts nothing.
#   bench/trace.sh [SECONDS] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-8}"
CONNS="${2:-32}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard --example otlp_sink
# shellcheck source=bench/lib.sh
. bench/lib.sh

SINK=$(free_port)
taskset -c 1 target/release/examples/otlp_sink "$SINK" &
PIDS+=($!)
cp bench/switchyard.toml "$ROOT/off.toml"
{ cat bench/switchyard.toml; echo "otlp_endpoint = \"http://127.0.0.1:$SINK\""; } >"$ROOT/on.toml"

OFF=$(free_port); ON=$(free_port)
start_bench_server "$ROOT/off.toml" "$OFF"
start_bench_server "$ROOT/on.toml" "$ON"
PATH_Q="/channels/bench/api?token=bench-token"

row() { # name port
    local out
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s bench/post.lua "http://127.0.0.1:$2$PATH_Q")
    printf '%-22s %10s req/s   p50 %8s   p99 %8s\n' "$1" \
        "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
        "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "bench channel, $CONNS connections, ${SECS}s each, server on core 0, load and sink on core 1"
for port in "$OFF" "$ON"; do
    taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s bench/post.lua "http://127.0.0.1:$port$PATH_Q" >/dev/null
done
before=$(curl -s "http://127.0.0.1:$SINK/count" | sed 's/.*spans=\([0-9]*\).*/\1/')
row "tracing off" "$OFF"
row "tracing on (OTLP)" "$ON"
sleep 2
after=$(curl -s "http://127.0.0.1:$SINK/count")
echo "sink: $after (spans during the 'on' row: $(( $(sed 's/.*spans=\([0-9]*\).*/\1/' <<<"$after") - before )))"
row "tracing off, again" "$OFF"
