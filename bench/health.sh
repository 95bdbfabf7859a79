#!/usr/bin/env bash
# Throughput of the runner's GET /health (a WebAssembly component per request) against a bare
# axum endpoint answering the same JSON (the ceiling), with the same load generator in one run.
# Prints requests/s for each and the ratio. Needs wrk (apt install wrk).
#   bench/health.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-32}
command -v wrk >/dev/null || { echo "wrk is not installed (apt install wrk)"; exit 1; }

scripts/build-components >/dev/null
cargo build --locked --release -p host --bin host --example bare_axum 2>/dev/null

HOST_PORT=17860
BARE_PORT=17870
DATA=$(mktemp -d)
# One load generator is one client: without this the per-client rate limit would answer 429.
PORT=$HOST_PORT BIND_ADDR=127.0.0.1 DATA_DIR="$DATA" RUST_LOG=warn RATE_LIMIT_PER_MINUTE=0 target/release/host serve &
HOST_PID=$!
PORT=$BARE_PORT target/release/examples/bare_axum &
BARE_PID=$!
trap 'kill $HOST_PID $BARE_PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
    curl -sf "localhost:$HOST_PORT/health" >/dev/null && curl -sf "localhost:$BARE_PORT/health" >/dev/null && break
    sleep 0.2
done

# Requests/s, refusing to report a run in which any answer was not a 2xx.
rps() {
    local out
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "$1")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers from $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$HOST_PORT/health" >/dev/null   # warm up
HOST_RPS=$(rps "http://127.0.0.1:$HOST_PORT/health")
BARE_RPS=$(rps "http://127.0.0.1:$BARE_PORT/health")
echo "wrk -t1 -c$CONNS -d${SECS}s, $(nproc) cores"
printf "%-28s %10s req/s   RSS %6s KiB\n" "runner /health (wasm)" "$HOST_RPS" "$(rss_kb $HOST_PID)"
printf "%-28s %10s req/s   RSS %6s KiB\n" "bare axum /health (ceiling)" "$BARE_RPS" "$(rss_kb $BARE_PID)"
awk -v h="$HOST_RPS" -v b="$BARE_RPS" 'BEGIN { printf "ratio runner/ceiling: %.3f\n", h / b }'
