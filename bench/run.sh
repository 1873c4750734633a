#!/usr/bin/env bash
# Runs the shared comparison harness (../shared/bench/run.sh: nginx + Lua, Node-RED,
# axum hello, axum + Rhai, raw websocket echo) with Switchyard as its "project" row,
# serving bench/channels and bench/scripts. Extra arguments go to the harness, e.g.
#   bench/run.sh                                   # every row (installs the peers first)
#   REPEAT=3 bench/run.sh                          # the figures to report
#   bench/run.sh --targets axum-hello,axum-rhai,project --duration 5
#   SWITCHYARD_LOG=info bench/run.sh --targets project   # with the per-request log line (default warn)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HARNESS="$ROOT/../shared/bench/run.sh"
[ -x "$HARNESS" ] || { echo "no harness at $HARNESS" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin switchyard
export PROJECT_HTTP_PATH=/channels/bench/api
export PROJECT_WS_PATH=/channels/bench/ws
export PROJECT_CMD="ulimit -n \$(ulimit -Hn); RUST_LOG=${SWITCHYARD_LOG:-warn} exec $ROOT/target/release/switchyard serve --config $ROOT/bench/switchyard.toml \
--listen 127.0.0.1:{port} --channels $ROOT/bench/channels --scripts $ROOT/bench/scripts --data \$(mktemp -d)"
exec "$HARNESS" "$@"
