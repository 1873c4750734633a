#!/usr/bin/env bash
# Switchyard against the harness's axum + Rhai reference over HTTP, in
# alternating pairs so the machine's drift falls on both alike: the rate, and the
# server's user and system CPU per request (from /proc). Instruction counts
# (bench/callgrind.sh) say how much work a call is; this says what it costs in
# time, kernel included, where the two can differ (cache misses, atomics,
# system calls).
#   bench/cpusplit.sh [PAIRS] [SECONDS]      (default 6 pairs of 5 s runs)
# Both servers stay up on CPU 1 (the idle one costs nothing), wrk -t1 -c64 runs
# on CPU 0 with the harness's request. Loopback only, bounded in time; prints
# figures, asserts nothing. Needs wrk and the harness's peers
# (../shared/bench/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS="${1:-6}"
SECS="${2:-5}"
PEERS="../shared/bench/peers/rust/target/release"
HARNESS="../shared/bench"
[ -x "$PEERS/axum_peer" ] || { echo "missing the harness's peers: run ../shared/bench/setup.sh" >&2; exit 1; }
cargo build --release --quiet --bin switchyard
source bench/lib.sh
export BENCH_BODY='{"qid":1,"data":{"name":"bench","value":42,"tags":["a","b"]}}' BENCH_TOKEN=bench-token
TCK="$(getconf CLK_TCK)"

RHAI_PORT="$(free_port)"
SY_PORT="$(free_port)"
RUST_LOG=warn taskset -c 1 "$PEERS/axum_peer" rhai "$RHAI_PORT" "$HARNESS/scripts/recv.rhai" \
    "$HARNESS/scripts/ws.rhai" >"$ROOT/rhai.log" 2>&1 &
RHAI_PID=$!
PIDS+=("$RHAI_PID")
start_bench_server bench/switchyard.toml "$SY_PORT" 1
SY_PID="${PIDS[-1]}"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$RHAI_PORT") 2>/dev/null && break; sleep 0.1; done
RHAI_URL="http://127.0.0.1:$RHAI_PORT/api/channels/bench/recv?token=bench-token"
SY_URL="http://127.0.0.1:$SY_PORT/channels/bench/api?token=bench-token"

# run PID URL SECONDS: prints "rate user_us sys_us" for one wrk run.
run() {
    local u0 s0 u1 s1 out
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$1/stat")
    out="$(timeout $(($3 + 30)) taskset -c 0 wrk -t1 -c64 -d"$3s" --timeout 5s \
        -s "$HARNESS/wrk/post.lua" "$2")"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$1/stat")
    echo "$out" | awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$TCK" '/^RESULT/ {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        printf "%.0f %.2f %.2f\n", f["rate"], u * 1e6 / t / f["reqs"], s * 1e6 / t / f["reqs"] }'
}

run "$RHAI_PID" "$RHAI_URL" 2 >/dev/null
run "$SY_PID" "$SY_URL" 2 >/dev/null
echo "HTTP, wrk -t1 -c64, ${SECS}s a run: rate/s, then user and system CPU µs per request"
ROWS="$ROOT/rows"
for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
        a="$(run "$RHAI_PID" "$RHAI_URL" "$SECS")"; s="$(run "$SY_PID" "$SY_URL" "$SECS")"
    else
        s="$(run "$SY_PID" "$SY_URL" "$SECS")"; a="$(run "$RHAI_PID" "$RHAI_URL" "$SECS")"
    fi
    echo "$a $s" | awk '{ printf "pair %d: axum-rhai %6.0f/s user %5.2f sys %5.2f | switchyard %6.0f/s user %5.2f sys %5.2f | rate %.3f×\n",
        '"$pair"', $1, $2, $3, $4, $5, $6, $4 / $1 }'
    echo "$a $s" >>"$ROWS"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "medians: switchyard/axum-rhai rate $(awk '{printf "%.3f\n", $4 / $1}' "$ROWS" | median)×," \
    "user µs $(awk '{print $5}' "$ROWS" | median) vs $(awk '{print $2}' "$ROWS" | median)," \
    "system µs $(awk '{print $6}' "$ROWS" | median) vs $(awk '{print $3}' "$ROWS" | median)"
