#!/usr/bin/env bash
# Process start to the first `GET /health` 200 of `host serve` (spin.toml, keyless, the
# sample book already indexed), polled every millisecond:
#   cached  the compile cache holds every component (what the container image ships);
#   cold    a new empty COMPILE_CACHE_DIR each run (Cranelift compiles every component).
#   bench/cold-start.sh [--smoke] [runs]
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then RUNS=${1:-1}; else RUNS=${1:-7}; fi
build_all
DATA="$TMP/data"
book_data_dir "$DATA"
PORT=$(free_port)
CACHE="$TMP/cache"
DATA_DIR="$DATA" COMPILE_CACHE_DIR="$CACHE" "$HOST" precompile >/dev/null
RUN=(env PORT="$PORT" BIND_ADDR=127.0.0.1 DATA_DIR="$DATA" RUST_LOG=warn ${RUNNER_ENV:-} "$HOST" serve)
machine
echo "== cached ($RUNS runs)"
# shellcheck disable=SC2068
COMPILE_CACHE_DIR="$CACHE" "$CLIENT" cold-start --port "$PORT" --runs "$RUNS" -- ${RUN[@]} | tee "$TMP/cached"
if [[ $SMOKE == 1 ]]; then COLD_RUNS=1; else COLD_RUNS=3; fi
echo "== cold: no compile cache ($COLD_RUNS runs)"
# shellcheck disable=SC2068
"$CLIENT" cold-start --port "$PORT" --runs "$COLD_RUNS" --fresh-cache-under "$TMP/fresh" -- ${RUN[@]} | tee "$TMP/cold"
awk '/start_to_health_median_ms/ {m = $2} END {printf "goal: cached start to first 200 <= 150 ms (median %s ms): %s\n", m, (m <= 150 ? "met" : "not met")}' "$TMP/cached"
