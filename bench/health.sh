#!/usr/bin/env bash
# Requests/s of one cheap GET through the wasm path, against its baselines in the same run:
#   runner  /health      the real health component (spin.toml)
#   runner  /ok          bench/guest (answers "ok"; only WASI imports), alone in a manifest,
#                        reusing instances as spin.toml's stateless components do
#                        (GUEST_REUSE=0: a fresh instance per request)
#   wasmtime serve /ok   the same .wasm under `wasmtime serve` 48.0.8
#   bare axum /health    the same JSON with no WebAssembly at all (the ceiling)
# Rounds alternate the targets, so load from elsewhere on the machine hits them alike; every
# round prints its figures, then the ratios of the medians.
#   bench/health.sh [--smoke] [seconds] [connections] [rounds]
# RUNNER_PREFIX="taskset -c 0" runs the runner under a prefix (e.g. to try CPU pinning);
# RUNNER_ENV="VAR=value ..." passes it settings.
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    SECS=${1:-1} CONNS=${2:-8} ROUNDS=${3:-1}
else
    SECS=${1:-10} CONNS=${2:-32} ROUNDS=${3:-3}
fi
command -v wrk >/dev/null || { say "wrk is not installed (apt-get install -y wrk)"; exit 1; }

build_all
build_bench_guest
HAVE_WASMTIME=1
if [[ $SMOKE == 1 ]]; then BENCH_NO_INSTALL=1; fi
ensure_wasmtime || { HAVE_WASMTIME=0; say "wasmtime $WASMTIME_VERSION is not in $TOOLS: the wasmtime serve baseline is left out"; }

GUEST="$BENCH_GUEST"
cat >"$TMP/guest.toml" <<EOF
spin_manifest_version = 2
[application]
name = "bench-guest"
[[trigger.http]]
route = "/..."
component = "guest"
[component.guest]
source = "$GUEST"
EOF
GUEST_REUSE=${GUEST_REUSE:-1000}
if [[ $GUEST_REUSE != 0 ]]; then
    printf '[component.guest.tool.runner]\nreuse_instances = %s\n' "$GUEST_REUSE" >>"$TMP/guest.toml"
fi

HEALTH_PORT=$(free_port)
GUEST_PORT=$(free_port)
BARE_PORT=$(free_port)
WT_PORT=$(free_port)
# shellcheck disable=SC2086
start_runner "$HEALTH_PORT" "$TMP/data-health" ${RUNNER_ENV:-}
HEALTH_PID=$RUNNER_PID
# shellcheck disable=SC2086
READY_PATH=/ok start_runner "$GUEST_PORT" "$TMP/data-guest" SPIN_MANIFEST="$TMP/guest.toml" ${RUNNER_ENV:-}
GUEST_PID=$RUNNER_PID
PORT=$BARE_PORT "$BARE" &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_ok "http://127.0.0.1:$BARE_PORT/health"
TARGETS=(runner_health runner_guest bare)
declare -A URL=(
    [runner_health]="http://127.0.0.1:$HEALTH_PORT/health"
    [runner_guest]="http://127.0.0.1:$GUEST_PORT/ok"
    [bare]="http://127.0.0.1:$BARE_PORT/health"
)
declare -A PID_OF=([runner_health]=$HEALTH_PID [runner_guest]=$GUEST_PID [bare]=$BARE_PID)
if [[ $HAVE_WASMTIME == 1 ]]; then
    "$WASMTIME" serve --addr "127.0.0.1:$WT_PORT" -Scli "$GUEST" >"$TMP/wasmtime.log" 2>&1 &
    WT_PID=$!
    PIDS+=("$WT_PID")
    wait_ok "http://127.0.0.1:$WT_PORT/ok"
    TARGETS+=(wasmtime_serve)
    URL[wasmtime_serve]="http://127.0.0.1:$WT_PORT/ok"
    PID_OF[wasmtime_serve]=$WT_PID
fi

machine
echo "wrk -t1 -c$CONNS -d${SECS}s --latency, $ROUNDS rounds${RUNNER_PREFIX:+, runner under: $RUNNER_PREFIX}${RUNNER_ENV:+, runner env: $RUNNER_ENV}"
if [[ $SMOKE != 1 ]]; then
    for target in "${TARGETS[@]}"; do
        wrk -t1 -c"$CONNS" -d1s "${URL[$target]}" >/dev/null # warm up
    done
fi
declare -A ALL
for ((round = 1; round <= ROUNDS; round++)); do
    for target in "${TARGETS[@]}"; do
        read -r rps p50 p99 < <(wrk_run "${URL[$target]}" "$SECS" "$CONNS")
        ALL[$target]+="$rps "
        printf "round %d  %-15s %10s req/s  p50 %7s ms  p99 %7s ms  RSS %6s KiB\n" \
            "$round" "$target" "$rps" "$p50" "$p99" "$(rss_kib "${PID_OF[$target]}")"
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
declare -A MED
for target in "${TARGETS[@]}"; do
    MED[$target]=$(median "${ALL[$target]}")
    printf "median %-15s %10s req/s  (rounds: %s)\n" "$target" "${MED[$target]}" "${ALL[$target]% }"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "ratio runner_health/bare:  $(ratio "${MED[runner_health]}" "${MED[bare]}")   (goal >= 0.25)"
echo "ratio runner_guest/bare:   $(ratio "${MED[runner_guest]}" "${MED[bare]}")"
if [[ $HAVE_WASMTIME == 1 ]]; then
    echo "ratio runner_guest/wasmtime_serve:  $(ratio "${MED[runner_guest]}" "${MED[wasmtime_serve]}")   (goal >= 2.0)"
    echo "ratio runner_health/wasmtime_serve: $(ratio "${MED[runner_health]}" "${MED[wasmtime_serve]}")"
fi

# Per-request CPU cost, the figure that stays put on a busy machine (perf stat; needs perf).
if command -v perf >/dev/null && [[ "${COST:-$((1 - SMOKE))}" == 1 ]]; then
    echo "CPU per request (perf stat, all threads, user + kernel), ${SECS}s of wrk -c$CONNS each:"
    for target in "${TARGETS[@]}"; do
        read -r cpu_us faults tlb requests < <(cost_per_request "${URL[$target]}" "${PID_OF[$target]}" "$SECS" "$CONNS")
        printf "cost %-15s %8s us CPU  %7s page faults  %6s TLB shootdowns per request  (%s requests)\n" "$target" "$cpu_us" "$faults" "$tlb" "$requests"
    done
fi
