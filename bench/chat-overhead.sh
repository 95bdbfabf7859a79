#!/usr/bin/env bash
# What the runner and the chat component add on top of the upstreams' own latency.
#
# serve-doubles answers at fixed latencies (embed 20 ms, Qdrant search 10 ms, first token
# 50 ms after the stream opens, then a token every 5 ms) over the sample book ingested into its
# Qdrant. For each concurrency (1, 50, 200) and mode (stream, JSON):
#   direct  the chat's upstream calls sent straight to the doubles by the bench client, built
#           by the same core code (embed, hybrid query, completion): the doubles' own time;
#   runner  POST /chat through the runner (new session each, so the SQLite session and the two
#           message writes are in it).
# overhead = runner percentile - direct percentile, for the whole answer and, streamed, for
# the first `sources` event (vs the end of retrieval) and the first `delta`.
# ANSWER_WORDS=N makes the model's answer N words (N streamed tokens) instead of about 20.
#   bench/chat-overhead.sh [--smoke] [concurrencies] [requests per client]
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    LEVELS=${1:-"1 4"} PER_CLIENT=${2:-3}
else
    LEVELS=${1:-"1 50 200"} PER_CLIENT=${2:-10}
fi
build_all
start_doubles --embed-ms 20 --search-ms 10 --first-token-ms 50 --token-ms 5 --answer-words "${ANSWER_WORDS:-0}"
# shellcheck disable=SC2046
env $(doubles_env) DATA_DIR="$TMP/ingest" RUST_LOG=warn "$HOST" ingest --target qdrant --json book/docs >"$TMP/ingest.json"
PORT=$(free_port)
# shellcheck disable=SC2046
start_runner "$PORT" "$TMP/data" $(doubles_env) MAX_CONCURRENT_REQUESTS=512 ${RUNNER_ENV:-}

machine
echo "doubles: embed 20 ms, search 10 ms, first token 50 ms, then 5 ms per token${ANSWER_WORDS:+, answers of $ANSWER_WORDS words}"
QUERY="How does a humanoid robot keep its balance?"
row() { # name, key-value output
    awk -v name="$1" '{v[$1] = $2} END {
        printf "%-8s %8s req/s  total p50 %8s p99 %8s", name, v["req_per_s"], v["total_p50_ms"], v["total_p99_ms"]
        if ("sources_p50_ms" in v)
            printf "  sources p50 %8s p99 %8s  first delta p50 %8s p99 %8s  deltas %s", v["sources_p50_ms"], v["sources_p99_ms"], v["first_delta_p50_ms"], v["first_delta_p99_ms"], v["deltas_per_chat"]
        printf "\n" }' "$2"
}
overhead() { # direct file, runner file
    awk 'FNR == NR {d[$1] = $2; next} {r[$1] = $2} END {
        printf "overhead total p50 %.3f ms  p99 %.3f ms", r["total_p50_ms"] - d["total_p50_ms"], r["total_p99_ms"] - d["total_p99_ms"]
        if ("sources_p50_ms" in r)
            printf "  | sources p50 %.3f p99 %.3f  | first delta p50 %.3f p99 %.3f", r["sources_p50_ms"] - d["sources_p50_ms"], r["sources_p99_ms"] - d["sources_p99_ms"], r["first_delta_p50_ms"] - d["first_delta_p50_ms"], r["first_delta_p99_ms"] - d["first_delta_p99_ms"]
        printf "   (goal: p50 <= 1, p99 <= 5)\n" }' "$1" "$2"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for mode in stream json; do
    flag=()
    [[ $mode == stream ]] && flag=(--stream)
    for c in $LEVELS; do
        n=$((c * PER_CLIENT))
        common=(--concurrency "$c" --requests "$n" --warmup 2 --query "$QUERY" "${flag[@]}")
        "$CLIENT" direct --doubles "$DOUBLES_URL" "${common[@]}" >"$TMP/direct"
        cpu_before=$(cpu_ticks "$RUNNER_PID")
        "$CLIENT" chat --url "http://127.0.0.1:$PORT/chat" "${common[@]}" >"$TMP/runner"
        cpu_after=$(cpu_ticks "$RUNNER_PID")
        echo "== $mode, $c concurrent, $n chats"
        row direct "$TMP/direct"
        row runner "$TMP/runner"
        overhead "$TMP/direct" "$TMP/runner"
        # utime + stime of the runner in clock ticks (10 ms): coarse for a few chats.
        awk -v t=$((cpu_after - cpu_before)) -v hz="$(getconf CLK_TCK)" -v n="$((n + 2))" \
            'BEGIN {printf "runner CPU per chat %.0f us (%d chats incl. warm-up)\n", t / hz * 1e6 / n, n}'
    done
done
echo "runner RSS after: $(rss_kib "$RUNNER_PID") KiB"
