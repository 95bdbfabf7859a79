# Shared by the bench/ scripts (sourced, never run). Builds what they need, starts and stops
# the processes they measure, and formats figures. Every script runs its baseline in the same
# run, so the ratios it prints hold on a busy machine even when the absolute figures do not.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# SMOKE=1 (or --smoke as the first argument): a few seconds per script, for CI, so the
# scripts keep working; its figures mean nothing.
SMOKE=${SMOKE:-0}
if [[ "${1:-}" == "--smoke" ]]; then
    SMOKE=1
    shift
fi
export SMOKE

# wasmtime-cli for the `wasmtime serve` baseline: built once into a bench-local root, never
# into the CI image (`cargo install` takes about 10 minutes on two cores).
WASMTIME_VERSION=48.0.8
TOOLS="$ROOT/bench/.tools"
WASMTIME="$TOOLS/bin/wasmtime"

FEATURES=(--features rag-core/docs,rag-core/sqlite)
# BENCH_HOST=path measures another runner binary (an older build copied aside, say), so two
# builds can be alternated on the same busy machine.
HOST=${BENCH_HOST:-"$ROOT/target/release/host"}
CLIENT=${BENCH_CLIENT:-"$ROOT/target/release/examples/bench_client"}
BARE="$ROOT/target/release/examples/bare_axum"
DOUBLES="$ROOT/target/release/serve-doubles"

PIDS=()
TMP=$(mktemp -d)
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

# The runner, the bench client, the ceiling and the doubles, with the feature set the tests
# use (another set would rebuild the workspace).
# BENCH_SKIP_BUILD=1 measures what is already built (repeated runs).
build_all() {
    [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] && return 0
    scripts/build-components >/dev/null
    local bins=(--bin host --example bench_client --example bare_axum)
    if [[ -f tests/doubles/src/bin/serve-doubles.rs ]]; then
        bins+=(--bin serve-doubles)
        cargo build --locked --release -q -p host -p upstream-doubles "${FEATURES[@]}" "${bins[@]}"
    else
        cargo build --locked --release -q -p host "${FEATURES[@]}" "${bins[@]}"
    fi
}

# bench/guest (its own workspace, its own target folder): one .wasm both hosts can run.
BENCH_GUEST="$ROOT/target/bench-guest/wasm32-wasip2/release/bench_guest.wasm"
build_bench_guest() {
    [[ "${BENCH_SKIP_BUILD:-0}" == 1 && -f "$BENCH_GUEST" ]] && return 0
    (cd bench/guest && cargo build --locked --release -q --target wasm32-wasip2 --target-dir "$ROOT/target/bench-guest")
}

ensure_wasmtime() {
    if [[ -x "$WASMTIME" ]] && "$WASMTIME" --version | grep -q "$WASMTIME_VERSION"; then
        return 0
    fi
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        return 1
    fi
    say "installing wasmtime-cli $WASMTIME_VERSION into $TOOLS (about 10 minutes)"
    cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$TOOLS" >&2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_ok URL [seconds]: until URL answers 2xx.
wait_ok() {
    local url=$1 limit=${2:-60} i
    for ((i = 0; i < limit * 20; i++)); do
        curl -sf -o /dev/null "$url" && return 0
        sleep 0.05
    done
    say "no 2xx from $url within ${limit}s"
    return 1
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# start_runner PORT DATA_DIR [VAR=value...]: the runner on 127.0.0.1:PORT, rate limits off
# (one load generator is one client), sets RUNNER_PID; ready when READY_PATH (default /health)
# answers 2xx.
start_runner() {
    local port=$1 data=$2
    shift 2
    env PORT="$port" BIND_ADDR=127.0.0.1 DATA_DIR="$data" RUST_LOG=${RUST_LOG:-warn} \
        COMPILE_CACHE_DIR="${COMPILE_CACHE_DIR:-$ROOT/target/bench-compile-cache}" \
        RATE_LIMIT_PER_MINUTE=0 "$@" ${RUNNER_PREFIX:-} "$HOST" serve >"$TMP/runner-$port.log" 2>&1 &
    RUNNER_PID=$!
    PIDS+=("$RUNNER_PID")
    wait_ok "http://127.0.0.1:$port${READY_PATH:-/health}" 120 || { tail -20 "$TMP/runner-$port.log" >&2; return 1; }
}

# start_doubles [flags...]: serve-doubles on a free port, sets DOUBLES_URL and DOUBLES_PID.
start_doubles() {
    [[ -x "$DOUBLES" ]] || { say "serve-doubles is not built (tests/doubles/src/bin/serve-doubles.rs)"; return 1; }
    local port
    port=$(free_port)
    "$DOUBLES" --listen "127.0.0.1:$port" "$@" >"$TMP/doubles-$port.log" 2>&1 &
    DOUBLES_PID=$!
    PIDS+=("$DOUBLES_PID")
    DOUBLES_URL="http://127.0.0.1:$port"
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q '^listening' "$TMP/doubles-$port.log" 2>/dev/null && return 0
        sleep 0.05
    done
    say "serve-doubles did not start"
    return 1
}

# The environment that points the runner (or `host ingest`) at the doubles.
doubles_env() {
    echo COHERE_API_KEY=bench COHERE_BASE_URL="$DOUBLES_URL" QDRANT_URL="$DOUBLES_URL" \
        OPENAI_API_KEY=bench OPENAI_BASE_URL="$DOUBLES_URL/v1"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wrk_run URL SECONDS CONNECTIONS [wrk args...]: prints "req/s p50_ms p99_ms"; fails on any
# non-2xx answer or socket error, so a run that measured error pages is never reported.
wrk_run() {
    local url=$1 secs=$2 conns=$3 out
    shift 3
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url")
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        say "errors from $url:"
        say "$out"
        return 1
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%s %.2f %.2f\n", rps, p50, p99 }' <<<"$out"
}

# A keyless data folder with the sample book indexed (what `scripts/run` serves).
book_data_dir() {
    local dir=$1
    mkdir -p "$dir"
    DATA_DIR="$dir" "$HOST" ingest --target sqlite book/docs >/dev/null
}

machine() {
    echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
        "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)," \
        "load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# cost_per_request URL PID SECONDS CONNECTIONS [wrk args...]: what the process PID (all
# threads, user and kernel) spends per answered request under wrk load: CPU microseconds
# (perf stat task-clock; this machine's VM exposes no hardware counters), page faults, and
# the machine's TLB-shootdown interrupts (from /proc/interrupts, so counting any other process
# too). These move much less than requests/s when other work shares the machine. Prints
# "cpu_us page_faults tlb_shootdowns requests" (per request, except requests).
cost_per_request() {
    local url=$1 pid=$2 secs=$3 conns=$4 out tlb_before tlb_after
    shift 4
    tlb() { awk '$1 == "TLB:" {s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s}' /proc/interrupts; }
    tlb_before=$(tlb)
    perf stat -x, -e task-clock,page-faults -p "$pid" -o "$TMP/perf-stat" -- sleep "$secs" &
    local perf_pid=$!
    out=$(wrk -t1 -c"$conns" -d"${secs}s" "$@" "$url")
    wait "$perf_pid" || true
    tlb_after=$(tlb)
    local requests
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -F, -v n="$requests" -v tlb=$((tlb_after - tlb_before)) '
        $3 ~ /^task-clock/ {ms = $1} $3 ~ /^page-faults/ {pf = $1}
        END {printf "%.1f %.2f %.2f %d\n", ms * 1000 / n, pf / n, tlb / n, n}' "$TMP/perf-stat"
}
