#!/usr/bin/env bash
# What the per-call log line costs (issue #17 point 1): the harness's project rows
# with RUST_LOG=warn (no line) and RUST_LOG=info (one line per request or message),
# run in alternating pairs (warn/info, then info/warn, ...) so that the machine's
# drift falls on both sides alike, and the median of the pairs' ratios.
#   bench/logcost.sh [PAIRS] [harness options]      (default 4 pairs)
#   bench/logcost.sh 6 --duration 5 --no-ws
# Each run is one harness invocation (bench/run.sh --targets project), bounded in
# time like every harness run; loopback only; prints figures, asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=4
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then PAIRS="$1"; shift; fi
RESULTS="../shared/bench/results"
cargo build --release --quiet --bin switchyard
ROWS="$(mktemp)"
trap 'rm -f "$ROWS"' EXIT

# run LEVEL PAIR: one harness run; appends "pair level proto rate p99_us other%" rows.
run() {
    local before after
    mkdir -p "$RESULTS"
    before="$(ls -1 "$RESULTS" | tail -1)"
    SWITCHYARD_LOG="$1" bench/run.sh --no-build --targets project "${@:3}" >/dev/null 2>&1
    after="$(ls -1 "$RESULTS" | tail -1)"
    [ "$after" != "$before" ] || { echo "the harness wrote no results" >&2; exit 1; }
    awk -F'\t' -v pair="$2" -v level="$1" 'NR > 1 && $2 == "project" {
        print pair, level, $1, $3, $5, $9 }' "$RESULTS/$after/results.tsv" >>"$ROWS"
}

for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then order="warn info"; else order="info warn"; fi
    for level in $order; do
        run "$level" "$pair" "$@"
        echo "pair $pair $level: $(awk -v p="$pair" -v l="$level" \
            '$1 == p && $2 == l { printf "%s %s/s p99 %s µs (other %s %%)  ", $3, $4, $5, $6 }' "$ROWS")" >&2
    done
done

# Per protocol: each pair's info/warn rate ratio and p99 difference, then the medians.
awk '
    { rate[$3, $1, $2] = $4; p99[$3, $1, $2] = $5; protos[$3] = 1; if ($1 > pairs) pairs = $1 }
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        printf "%-5s %-5s %10s %10s %9s %9s %12s\n", "proto", "pair", "warn/s", "info/s", "rate", "p99 warn", "p99 +info"
        for (proto in protos) {
            n = 0
            for (p = 1; p <= pairs; p++) {
                if (rate[proto, p, "warn"] == "" || rate[proto, p, "info"] == "") continue
                n++
                r[n] = (rate[proto, p, "info"] / rate[proto, p, "warn"] - 1) * 100
                d[n] = (p99[proto, p, "info"] - p99[proto, p, "warn"]) / 1000
                printf "%-5s %-5s %10d %10d %+8.1f%% %7.2fms %+10.3fms\n", proto, p,
                    rate[proto, p, "warn"], rate[proto, p, "info"], r[n], p99[proto, p, "warn"] / 1000, d[n]
            }
            if (n) printf "%-5s median of %d pairs: rate %+.1f %%, p99 %+.3f ms\n", proto, n, median(r, n), median(d, n)
        }
    }' "$ROWS"
