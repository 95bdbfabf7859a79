#!/usr/bin/env bash
# RSS of the runner process (and any children) holding 0, 100 and 1,000 open SSE chat
# streams. The model double sends its first token only after 10 minutes, so every stream stays
# open after its `sources` event; the client opens them, waits for every `sources`, waits 2 s,
# then reads /proc/PID/status. The baseline in the same run is the idle runner (0 streams).
#   bench/open-streams.sh [--smoke] [steps, default 0,100,1000]
# PACE_MS (default 20): the client opens 50 streams, then pauses this long; slower arrivals
# mean fewer chats being set up at once, and so fewer instances alive at the peak.
# SNAPSHOT=DIR: once the last step's streams are all open, and while they still are, writes
# DIR/smaps.txt (the runner's mappings grouped by file and size) and DIR/threads.txt; with
# SNAPSHOT_KILL=1 it then kills the runner, so that a profiler in RUNNER_PREFIX (heaptrack)
# records the open streams and not their teardown.
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

# The runner itself, also when RUNNER_PREFIX starts it as a child of a wrapper.
runner_pid() { pgrep -P "$RUNNER_PID" -f "$HOST" || echo "$RUNNER_PID"; }

snapshot() {
    local pid
    pid=$(runner_pid)
    mkdir -p "$SNAPSHOT"
    python3 - "/proc/$pid/smaps" >"$SNAPSHOT/smaps.txt" <<'PY'
import re, sys
from collections import defaultdict
groups = defaultdict(lambda: [0, 0, 0])
key = None
for line in open(sys.argv[1]):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        key = (fields[5] if len(fields) > 5 else "anon", (end - start) // 1024, fields[1])
        groups[key][0] += 1
    elif line.startswith(("Rss:", "Anonymous:")):
        groups[key][1 if line.startswith("Rss:") else 2] += int(line.split()[1])
print(f"{'mappings':>8} {'size KiB':>9} {'perm':>5} {'Rss KiB':>8} {'Anon KiB':>8}  name")
for (name, size, perm), (count, rss, anon) in sorted(groups.items(), key=lambda g: -g[1][1])[:20]:
    print(f"{count:>8} {size:>9} {perm:>5} {rss:>8} {anon:>8}  {name}")
PY
    grep -E 'VmRSS|RssAnon|RssFile' "/proc/$pid/status" >>"$SNAPSHOT/smaps.txt"
    cat "/proc/$pid"/task/*/comm | sort | uniq -c >"$SNAPSHOT/threads.txt"
    if [[ ${SNAPSHOT_KILL:-0} == 1 ]]; then
        kill -9 "$pid"
    fi
}

# Passes the client's lines on as they come; at the first line of the last step, snapshots.
LAST=${STEPS##*,}
snapshot_at_last_step() {
    local line taken=0
    while IFS= read -r line; do
        printf '%s\n' "$line"
        if [[ -n ${SNAPSHOT:-} && $taken == 0 && $line == "streams $LAST "* ]]; then
            taken=1
            snapshot
        fi
    done
}
if [[ -n ${SNAPSHOT:-} ]]; then
    # The last step once more: the client waits there with every stream still open.
    STEPS="$STEPS,$LAST"
    rm -f "$SNAPSHOT/smaps.txt"
fi
"$CLIENT" hold --url "http://127.0.0.1:$PORT/chat" --pid "$RUNNER_PID" --steps "$STEPS" --query "How does a humanoid robot keep its balance?" --pace-ms "${PACE_MS:-20}" |
    snapshot_at_last_step |
    awk '{printf "%5d open streams: runner RSS %7d KiB = %6.1f MiB (file-backed %6.1f MiB), PSS %6.1f MiB, %d threads\n", $2, $4, $4 / 1024, $6 / 1024, $8 / 1024, $10; n = $2; last = $4}
         END {if (n >= 1000) printf "goal: 1,000 streams in <= 64 MiB: %s\n", (last / 1024 <= 64 ? "met" : "not met")}' ||
    # A snapshot that killed the runner ends the client's streams early, as it should.
    [[ ${SNAPSHOT_KILL:-0} == 1 && -f ${SNAPSHOT:-}/smaps.txt ]]
