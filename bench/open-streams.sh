#!/usr/bin/env bash
# RSS of the runner process (and any children) holding 0, 100 and 1,000 open SSE chat
# streams. The model double sends its first token only after 10 minutes, so every stream stays
# open after its `sources` event; the client opens them, waits for every `sources`, waits 2 s,
# then reads /proc/PID/status. The baseline in the same run is the idle runner (0 streams).
#   bench/open-streams.sh [--smoke] [steps, default 0,100,1000]
# PACE_MS (default 20): the client opens 50 streams, then pauses this long; slower arrivals
# mean fewer chats being set up at once, and so fewer instances alive at the peak.
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    STEPS=${1:-0,10}
else
    STEPS=${1:-0,100,1000}
fi
build_all
# Two sockets per stream in the runner (client and model), one in the client and the double.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
start_doubles --first-token-ms 600000 --token-ms 600000
# shellcheck disable=SC2046
env $(doubles_env) DATA_DIR="$TMP/ingest" RUST_LOG=warn "$HOST" ingest --target qdrant --json book/docs >/dev/null
PORT=$(free_port)
# shellcheck disable=SC2046
start_runner "$PORT" "$TMP/data" $(doubles_env) MAX_CONCURRENT_REQUESTS=1100 ${RUNNER_ENV:-}
machine
"$CLIENT" hold --url "http://127.0.0.1:$PORT/chat" --pid "$RUNNER_PID" --steps "$STEPS" --query "How does a humanoid robot keep its balance?" --pace-ms "${PACE_MS:-20}" |
    awk '{printf "%5d open streams: runner RSS %7d KiB = %6.1f MiB (file-backed %6.1f MiB), PSS %6.1f MiB, %d threads\n", $2, $4, $4 / 1024, $6 / 1024, $8 / 1024, $10; n = $2; last = $4}
         END {if (n >= 1000) printf "goal: 1,000 streams in <= 64 MiB: %s\n", (last / 1024 <= 64 ? "met" : "not met")}'
