#!/usr/bin/env bash
# Keyless chat (SQLite FTS5 retrieval, extractive answer, a new SQLite session stored with its
# question and answer) at 8 connections: requests/s, p50, p99. Baseline in the same run: the
# runner's /health (one instantiation, no database) at the same connection count, so the ratio
# says how much the chat itself costs over the wasm path.
#   bench/keyless-chat.sh [--smoke] [seconds] [connections] [rounds]
# PROFILE=1 also records the runner with `perf record -g` during one extra run and prints
# the top symbols (needs linux-perf).
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    SECS=${1:-1} CONNS=${2:-8} ROUNDS=${3:-1}
else
    SECS=${1:-10} CONNS=${2:-8} ROUNDS=${3:-3}
fi
command -v wrk >/dev/null || { say "wrk is not installed (apt-get install -y wrk)"; exit 1; }
build_all
DATA="$TMP/data"
book_data_dir "$DATA"
PORT=$(free_port)
# shellcheck disable=SC2086
start_runner "$PORT" "$DATA" CHAT_RATE_LIMIT_PER_MINUTE=0 SESSION_WRITE_RATE_LIMIT_PER_MINUTE=0 ${RUNNER_ENV:-}
CHAT="http://127.0.0.1:$PORT/chat"
HEALTH="http://127.0.0.1:$PORT/health"
machine
echo "wrk -t1 -c$CONNS -d${SECS}s --latency -s bench/chat.lua, $ROUNDS rounds"
wrk -t1 -c"$CONNS" -d1s -s bench/chat.lua "$CHAT" >/dev/null
for ((round = 1; round <= ROUNDS; round++)); do
    read -r rps p50 p99 < <(wrk_run "$CHAT" "$SECS" "$CONNS" -s bench/chat.lua)
    printf "round %d  chat    %9s req/s  p50 %7s ms  p99 %7s ms\n" "$round" "$rps" "$p50" "$p99"
    echo "$rps $p99" >>"$TMP/chat"
    read -r rps p50 p99 < <(wrk_run "$HEALTH" "$SECS" "$CONNS")
    printf "round %d  health  %9s req/s  p50 %7s ms  p99 %7s ms\n" "$round" "$rps" "$p50" "$p99"
    echo "$rps" >>"$TMP/health"
done
# CPU per chat: the figure that stays put when other work shares the machine.
read -r cpu_us faults _ requests < <(cost_per_request "$CHAT" "$RUNNER_PID" "$SECS" "$CONNS" -s bench/chat.lua)
printf "cost chat    %8s us CPU  %7s page faults per request  (%s requests)\n" "$cpu_us" "$faults" "$requests"
read -r cpu_us faults _ requests < <(cost_per_request "$HEALTH" "$RUNNER_PID" "$SECS" "$CONNS")
printf "cost health  %8s us CPU  %7s page faults per request  (%s requests)\n" "$cpu_us" "$faults" "$requests"
echo "runner RSS $(rss_kib "$RUNNER_PID") KiB, database $(du -k "$DATA/default.db" | cut -f1) KiB"
sort -g "$TMP/chat" | awk '{r[NR] = $1; p[NR] = $2} END {m = int((NR + 1) / 2)
    printf "median chat %s req/s, p99 %s ms: goal >= 2000 req/s with p99 <= 20 ms: %s\n", r[m], p[m], (r[m] >= 2000 && p[m] <= 20 ? "met" : "not met")}'
paste "$TMP/chat" "$TMP/health" | awk '{c += $1; h += $3} END {printf "ratio chat/health: %.3f\n", c / h}'

if [[ "${PROFILE:-0}" == 1 ]]; then
    command -v perf >/dev/null || { say "perf is not installed (apt-get install -y linux-perf)"; exit 1; }
    perf record -F 499 -g -o "$TMP/perf.data" -p "$RUNNER_PID" -- sleep "$SECS" >/dev/null 2>&1 &
    PERF=$!
    wrk -t1 -c"$CONNS" -d"${SECS}s" -s bench/chat.lua "$CHAT" >/dev/null
    wait "$PERF" || true
    echo "== perf: top symbols by self time (runner, during chat load)"
    perf report -i "$TMP/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -40 || true
    echo "== perf: by shared object"
    perf report -i "$TMP/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -15 || true
fi
