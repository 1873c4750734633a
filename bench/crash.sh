#!/usr/bin/env bash
# Crash-safety run: the durable inbox, events queued for an offline channel and
# send jobs under load while the server is killed with SIGKILL ROUNDS times; then
# checks every acknowledged request ran, every queued event arrived once and in
# order, every started job finished. Loopback only, bounded. Not part of CI.
#   bench/crash.sh [ROUNDS]            # one embedded node
#   bench/crash.sh --cluster [ROUNDS]  # 3 nodes on nats-server, one killed per round
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin switchyard --example crash_run
if [ "${1:-}" = "--cluster" ]; then
  nats=${SWITCHYARD_NATS_SERVER:-$(command -v nats-server)}
  exec target/release/examples/crash_run "$PWD/target/release/switchyard" "${2:-6}" "$nats"
fi
target/release/examples/crash_run "$PWD/target/release/switchyard" "${1:-5}"
