#!/usr/bin/env bash
# TLS and HTTP/2 figures (SPEC §17), in one run, on the bench channel (the
# harness's POST: parse the JSON body, answer a 4-key map):
#   h1        plain HTTP/1.1                      (wrk)
#   h1+tls    HTTPS, HTTP/1.1 by ALPN             (wrk)
#   h2c       plain HTTP/2, prior knowledge       (h2load)
#   h2+tls    HTTPS, HTTP/2 by ALPN               (h2load)
# each with CONNS connections; the HTTP/2 rows once with 1 request in flight
# per connection (like HTTP/1.1) and once with STREAMS (multiplexed).
# The server is pinned to core 0 and the load generator to core 1 (as the
# shared harness does). A self-signed P-256 certificate made by openssl.
# Loopback only, bounded in time. Prints figures; asserts nothing.
#   bench/tls.sh [SECONDS] [CONNS] [STREAMS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-8}"
CONNS="${2:-32}"
STREAMS="${3:-10}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load is needed: apt-get install nghttp2-client" >&2; exit 1; }
echo "building (release)..." >&2
cargo build --release --quiet --bin switchyard
# shellcheck source=bench/lib.sh
. bench/lib.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$ROOT/key.pem" -out "$ROOT/cert.pem" 2>/dev/null
cp bench/switchyard.toml "$ROOT/plain.toml"
{ cat bench/switchyard.toml; echo "tls_cert = \"$ROOT/cert.pem\""; echo "tls_key = \"$ROOT/key.pem\""; } >"$ROOT/tls.toml"

PLAIN=$(free_port); TLS=$(free_port)
start_bench_server "$ROOT/plain.toml" "$PLAIN"
start_bench_server "$ROOT/tls.toml" "$TLS"
PATH_Q="/channels/bench/api?token=bench-token"
BODY='{"qid":1,"data":{"name":"bench","value":42,"tags":["a","b"]}}'
printf '%s' "$BODY" >"$ROOT/body.json"

wrk_row() { # name url
    local out
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s bench/post.lua "$2")
    printf '%-28s %10s req/s   p50 %8s   p99 %8s\n' "$1" \
        "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
        "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}
h2_row() { # name url streams
    local out
    out=$(taskset -c 1 h2load -D "$SECS" -c "$CONNS" -m "$3" -t 1 -d "$ROOT/body.json" \
        -H 'content-type: application/json' "$2" 2>&1)
    local ok
    ok=$(awk '/^requests:/ {print $8}' <<<"$out")
    printf '%-28s %10s req/s   mean %7s   max %8s   (%s succeeded)\n' "$1" \
        "$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")" \
        "$(awk '/^time for request:/ {print $6}' <<<"$out")" \
        "$(awk '/^time for request:/ {print $5}' <<<"$out")" "$ok"
}

echo "bench channel, $CONNS connections, ${SECS}s each, server on core 0, load on core 1"
taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s bench/post.lua "http://127.0.0.1:$PLAIN$PATH_Q" >/dev/null
taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s bench/post.lua "https://127.0.0.1:$TLS$PATH_Q" >/dev/null
wrk_row "HTTP/1.1 plain" "http://127.0.0.1:$PLAIN$PATH_Q"
wrk_row "HTTP/1.1 TLS" "https://127.0.0.1:$TLS$PATH_Q"
h2_row "HTTP/2 h2c, 1 in flight" "http://127.0.0.1:$PLAIN$PATH_Q" 1
h2_row "HTTP/2 TLS, 1 in flight" "https://127.0.0.1:$TLS$PATH_Q" 1
h2_row "HTTP/2 h2c, $STREAMS in flight" "http://127.0.0.1:$PLAIN$PATH_Q" "$STREAMS"
h2_row "HTTP/2 TLS, $STREAMS in flight" "https://127.0.0.1:$TLS$PATH_Q" "$STREAMS"
