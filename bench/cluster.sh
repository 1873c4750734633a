#!/usr/bin/env bash
# Cluster mode figures (SPEC §13), in one run, for
#   embedded   one node, its SQLite store (the default)
#   nats-1     one node on nats-server -js
#   nats-2     two nodes on the same nats-server (load split between them)
# each with
#   1. HTTP req/s of a kv-free scripted channel (wrk, 32 connections in all)
#   2. inbox acknowledgements/s (issync = false: 202 after the durable write)
#   3. send jobs created/s and completed/s (each a webquery to the bench channel)
#   4. one event fanned out to CHANNELS events channels (one connection each):
#      publish-to-receive p50 / p99 over EVENTS events
# Everything shares this machine's cores (nats-server, the nodes, the load):
# more nodes cannot mean more throughput here. Loopback only, bounded in time
# and count. Prints figures; asserts nothing.
#   bench/cluster.sh [SECONDS] [JOBS] [CHANNELS] [EVENTS] [INBOX_SECONDS]
#   MODES="nats-1" bench/cluster.sh      # some of the modes only
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-6}"
JOBS="${2:-3000}"
CHANNELS="${3:-1000}"
EVENTS="${4:-100}"
# The inbox load is shorter: every request it leaves must run before the next figure.
INBOX_SECS="${5:-2}"
NATS="${SWITCHYARD_NATS_SERVER:-$(command -v nats-server || true)}"
[ -x "$NATS" ] || { echo "nats-server 2.10.23+ is needed (./test.sh installs it)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard --example jobs_bench --example events_bench
# shellcheck source=bench/lib.sh
. bench/lib.sh

# A node's folders; the first node's hold the bench channels and CHANNELS events channels.
project() {
    local dir="$1" full="$2"
    mkdir -p "$dir/channels" "$dir/scripts"
    printf 'admin_token = "bench-admin"\nmax_connections_per_ip = 4096\ninbox_max = 1000000\n' >"$dir/switchyard.toml"
    if [ "$full" = 1 ]; then
        cp bench/channels/*.json "$dir/channels/"
        cp bench/scripts/*.rhai "$dir/scripts/"
        for i in $(seq 0 $((CHANNELS - 1))); do
            printf '{"code":"fan%d","type":"events","token_local":"fan-token","opts":{"events":["bench.>"]}}\n' "$i" \
                >"$dir/channels/fan$i.json"
        done
    fi
}

# start DIR [NATS_URL]: sets BASE to the node's base URL.
start() {
    local dir="$1" url="${2:-}" extra=()
    [ -n "$url" ] && extra=(--cluster "$url")
    RUST_LOG=warn target/release/switchyard serve --config "$dir/switchyard.toml" --listen 127.0.0.1:0 \
        --channels "$dir/channels" --scripts "$dir/scripts" --data "$dir/data" "${extra[@]}" >"$dir/out" 2>"$dir/err" &
    PIDS+=($!)
    for _ in $(seq 1 300); do grep -q "listening on" "$dir/out" && break; sleep 0.1; done
    BASE="$(sed -n 's#listening on ##p' "$dir/out")"
}

run_mode() {
    local mode="$1" nodes="$2" url=""
    local work="$ROOT/$mode"
    mkdir -p "$work"
    if [ "$nodes" -gt 0 ]; then
        local port; port="$(free_port)"
        "$NATS" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >/dev/null 2>&1 &
        PIDS+=($!)
        for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
        url="nats://127.0.0.1:$port"
    fi
    project "$work/n1" 1
    start "$work/n1" "$url"
    local b1="$BASE"
    local bases="$b1" targets=("$b1")
    if [ "$nodes" -eq 2 ]; then
        project "$work/n2" 0
        start "$work/n2" "$url"
        local b2="$BASE"
        bases="$b1,$b2"
        targets+=("$b2")
    fi
    # The send channel calls the bench channel of the first node (written now that its port is known).
    printf '{"code":"bench_send","token_local":"bench-token","url":"%s/channels/bench/","token_remote":"bench-token","send_svcscriptcode":"bench_send","opts":{"send_retries":0}}\n' "$b1" \
        >"$work/n1/channels/bench_send.json"
    sleep 2
    local conns=$((32 / ${#targets[@]}))
    wrk_sum() {
        local path="$1" script="$2" secs="$3" out=()
        for t in "${targets[@]}"; do
            wrk -t1 -c"$conns" -d"${secs}s" --latency $script "$t$path" >"$work/wrk.$(basename "$t" | tr ':' _)" &
            out+=($!)
        done
        wait "${out[@]}"
        cat "$work"/wrk.* | awk '/Requests\/sec/ {rps += $2} / 99%/ {p99 = p99 " " $2} /Non-2xx/ {bad += $5}
            / requests in / {n += $1} END {printf "%.0f/s p99%s non-2xx %d (%d requests)\n", rps, p99, bad, n}'
        rm -f "$work"/wrk.*
    }
    # inbox requests run (state succeeded) on every node, from /metrics.
    inbox_done() {
        for t in "${targets[@]}"; do curl -s "$t/metrics"; done |
            awk '/^switchyard_job_transitions_total\{/ && /channel="inbox"/ && /state="succeeded"/ {n += $NF} END {print n + 0}'
    }
    echo "[$mode] http kv-free: $(wrk_sum "/channels/bench/api?token=bench-token" "-s bench/post.lua" "$SECS")"
    # First, while the events stream holds nothing else: every events channel's
    # consumer sees every event (job.finished of the jobs below included).
    echo "[$mode] fan-out: $(timeout 300 target/release/examples/events_bench fanout "$bases" bench-admin "$CHANNELS" "$EVENTS" | tail -1)"
    local began; began=$(date +%s.%N)
    local acks; acks="$(wrk_sum "/channels/inbox/api?token=bench-token" "-s bench/post.lua" "$INBOX_SECS")"
    echo "[$mode] inbox acks: $acks"
    # Every acknowledged request runs before the next figure is taken.
    local want; want=$(sed -n 's/.*(\([0-9]*\) requests).*/\1/p' <<<"$acks")
    for _ in $(seq 1 1200); do [ "$(inbox_done)" -ge "$want" ] && break; sleep 0.25; done
    echo "[$mode] inbox run: $(inbox_done) of $want in $(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s since the first request"
    echo "[$mode] send jobs: $(timeout 200 target/release/examples/jobs_bench "$bases" bench-admin bench_send "$JOBS" | tail -1)"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

echo "cluster bench: $(nproc) cores shared by everything, $("$NATS" --version), $(date -u +%FT%TZ)"
for mode in ${MODES:-embedded nats-1 nats-2}; do
    case "$mode" in
        embedded) run_mode embedded 0 ;;
        nats-1) run_mode nats-1 1 ;;
        nats-2) run_mode nats-2 2 ;;
        *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
done
