# Shared by the bench scripts (sourced): a scratch folder removed on exit with
# every process started, free loopback ports, and a server on the bench channels.
ulimit -n "$(ulimit -Hn)"
ROOT="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$ROOT"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_bench_server CONFIG PORT [CPU]: the release binary on core CPU (default
# 0), serving bench/channels and bench/scripts, its store in $ROOT; waits for it
# to listen. Its pid is the last of $PIDS.
start_bench_server() {
    mkdir -p "$ROOT/data.$2"
    RUST_LOG=warn taskset -c "${3:-0}" target/release/switchyard serve --config "$1" --listen "127.0.0.1:$2" \
        --channels bench/channels --scripts bench/scripts --data "$ROOT/data.$2" >"$ROOT/out.$2" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$ROOT/out.$2" && return; sleep 0.1; done
    echo "server on $2 did not start:"; cat "$ROOT/out.$2"; exit 1
}
