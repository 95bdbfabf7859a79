#!/usr/bin/env bash
# Chat latency with sessions on a PostgreSQL some distance away, as a managed database (Neon,
# say) is from the container: `bench_client relay` delivers every byte DELAY ms late each way,
# so each round trip to the database costs 2 x DELAY more. Keyless retrieval over the sample
# book, JSON answers, one chat at a time: first questions, questions in a held session, and a
# conversation read back (`GET /session/{id}`, what the widget does on every page load); then
# the session actions: `POST /session`, a rating, and `DELETE /session/{id}`; then streamed
# chats answered by a model double whose response head takes MODEL_MS (default 20) ms, timed
# to the first `sources` event, first questions and in a held session.
# Baseline in the same run: the same runner on the same database reached directly. The
# difference of the medians divided by the round trip is how many round trips to the database
# a chat waits for.
#   bench/remote-db.sh [--smoke] [requests] [delay-ms] [rounds]
# Needs PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test) and psql.
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    REQUESTS=${1:-5} DELAY=${2:-5} ROUNDS=${3:-1}
else
    REQUESTS=${1:-40} DELAY=${2:-5} ROUNDS=${3:-3}
fi
command -v psql >/dev/null || { say "psql is not installed (apt-get install -y postgresql-client)"; exit 1; }
ADMIN_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
build_all

# postgres://[user@]host:port/database -> the user part and host:port.
AUTHORITY=${ADMIN_URL#postgres*://}
AUTHORITY=${AUTHORITY%%/*}
USER_PART=""
[[ $AUTHORITY == *@* ]] && USER_PART="${AUTHORITY%@*}@"
SERVER=${AUTHORITY#*@}
DATABASE="bench_remote_db_$$"
psql -q "$ADMIN_URL" -c "CREATE DATABASE $DATABASE" >/dev/null || { say "cannot create a database at $SERVER"; exit 1; }
drop_database() { psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'cleanup; drop_database' EXIT

"$CLIENT" relay --to "$SERVER" --delay-ms "$DELAY" >"$TMP/relay.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 200; i++)); do
    grep -q '^listening' "$TMP/relay.log" 2>/dev/null && break
    sleep 0.05
done
RELAY=$(awk '/^listening/ {print $2}' "$TMP/relay.log")
[[ -n $RELAY ]] || { say "the relay did not start"; exit 1; }

MODEL_MS=${MODEL_MS:-20}
start_doubles --chat-ms "$MODEL_MS"
declare -A URL STREAM_URL
for target in direct relayed; do
    server=$SERVER
    [[ $target == relayed ]] && server=$RELAY
    book_data_dir "$TMP/data-$target"
    for model in none double; do
        port=$(free_port)
        model_env=()
        [[ $model == double ]] && model_env=(OPENAI_API_KEY=bench OPENAI_BASE_URL="$DOUBLES_URL/v1")
        # shellcheck disable=SC2086
        start_runner "$port" "$TMP/data-$target" CHAT_RATE_LIMIT_PER_MINUTE=0 SESSION_WRITE_RATE_LIMIT_PER_MINUTE=0 \
            DATABASE_URL="postgres://$USER_PART$server/$DATABASE?sslmode=disable" "${model_env[@]}" ${RUNNER_ENV:-}
        if [[ $model == none ]]; then
            URL[$target]="http://127.0.0.1:$port/chat"
        else
            STREAM_URL[$target]="http://127.0.0.1:$port/chat"
        fi
    done
done

machine
echo "PostgreSQL $SERVER, relayed with ${DELAY} ms each way (round trip +$((2 * DELAY)) ms); $REQUESTS JSON chats one at a time per figure, $ROUNDS rounds"
p50() { awk '$1 == "total_p50_ms" {print $2}' "$1"; }
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct relayed; do
        common=(--url "${URL[$target]}" --requests "$REQUESTS" --warmup 2)
        "$CLIENT" chat "${common[@]}" >"$TMP/first"
        "$CLIENT" chat --in-session "${common[@]}" >"$TMP/held"
        "$CLIENT" read-back "${common[@]}" >"$TMP/read"
        "$CLIENT" session-actions "${common[@]}" >"$TMP/actions"
        first=$(p50 "$TMP/first") held=$(p50 "$TMP/held") read=$(p50 "$TMP/read")
        printf "round %d  %-8s first question p50 %8s ms   in a session p50 %8s ms   read back p50 %8s ms\n" \
            "$round" "$target" "$first" "$held" "$read"
        echo "$first" >>"$TMP/$target-first"
        echo "$held" >>"$TMP/$target-held"
        echo "$read" >>"$TMP/$target-read"
        printf "round %d  %-8s" "$round" "$target"
        for action in create rate delete; do
            value=$(awk -v key="${action}_p50_ms" '$1 == key {print $2}' "$TMP/actions")
            printf "   %s p50 %8s ms" "$action" "$value"
            echo "$value" >>"$TMP/$target-$action"
        done
        echo
        streamed=(--url "${STREAM_URL[$target]}" --requests "$REQUESTS" --warmup 2 --stream)
        "$CLIENT" chat "${streamed[@]}" >"$TMP/first-streamed"
        "$CLIENT" chat --in-session "${streamed[@]}" >"$TMP/held-streamed"
        first=$(awk '$1 == "sources_p50_ms" {print $2}' "$TMP/first-streamed")
        held=$(awk '$1 == "sources_p50_ms" {print $2}' "$TMP/held-streamed")
        printf "round %d  %-8s streamed, to the first sources event: first question p50 %8s ms   in a session p50 %8s ms\n" \
            "$round" "$target" "$first" "$held"
        echo "$first" >>"$TMP/$target-first-streamed"
        echo "$held" >>"$TMP/$target-held-streamed"
    done
done
median() { sort -g "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
round_trips() { awk -v a="$(median "$TMP/relayed-$1")" -v b="$(median "$TMP/direct-$1")" -v rt=$((2 * DELAY)) 'BEGIN {printf "%.2f", (a - b) / rt}'; }
echo "median first question: direct $(median "$TMP/direct-first") ms, relayed $(median "$TMP/relayed-first") ms"
echo "median in a session:   direct $(median "$TMP/direct-held") ms, relayed $(median "$TMP/relayed-held") ms"
echo "median read back:       direct $(median "$TMP/direct-read") ms, relayed $(median "$TMP/relayed-read") ms"
for action in create rate delete; do
    echo "median $action: direct $(median "$TMP/direct-$action") ms, relayed $(median "$TMP/relayed-$action") ms"
done
echo "round trips to the database per chat: first question $(round_trips first), in a session $(round_trips held); per read back $(round_trips read)"
echo "median streamed first question, to sources: direct $(median "$TMP/direct-first-streamed") ms, relayed $(median "$TMP/relayed-first-streamed") ms"
echo "median streamed in a session, to sources:   direct $(median "$TMP/direct-held-streamed") ms, relayed $(median "$TMP/relayed-held-streamed") ms"
echo "round trips per session action: create $(round_trips create), rate $(round_trips rate), delete $(round_trips delete)"
echo "round trips before the first sources event, streamed (model head ${MODEL_MS} ms): first question $(round_trips first-streamed), in a session $(round_trips held-streamed)"
