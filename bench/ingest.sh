#!/usr/bin/env bash
# `host ingest` throughput over a Docusaurus docs folder (default: the Docusaurus site's own
# docs in ../shared/corpora), in chunks/s:
#   dry run  parse and chunk only, nothing written (the baseline: what the stores add is the
#            difference)
#   sqlite   into a new embedded FTS5 index, then the unchanged re-run
#   qdrant   into the Qdrant double with Cohere-double embeddings (no added latency), then the
#            unchanged re-run with Cohere pointed at a closed port: it succeeds only if it makes
#            no embedding call, which its own `embedded` count must also say (0).
#   bench/ingest.sh [--smoke] [docs folder] [rounds]
source "$(dirname "$0")/lib.sh"
if [[ $SMOKE == 1 ]]; then
    DOCS=${1:-book/docs} ROUNDS=${2:-1}
else
    DOCS=${1:-$ROOT/../shared/corpora/docusaurus-docs/docs} ROUNDS=${2:-3}
fi
[[ -d "$DOCS" ]] || { say "no docs folder at $DOCS"; exit 1; }
build_all
machine
echo "docs: $DOCS ($(find "$DOCS" -name '*.md' -o -name '*.mdx' | wc -l) files)"
# One JSON summary line -> "chunks embedded written unchanged elapsed_ms".
fields() { python3 -c 'import json,sys; s=json.loads(sys.stdin.read()); print(s["chunks"], s["embedded"], s["written"], s["unchanged"], s["elapsed_ms"])'; }
line() { # label, fields
    read -r chunks embedded written unchanged ms <<<"$2"
    awk -v l="$1" -v c="$chunks" -v e="$embedded" -v w="$written" -v u="$unchanged" -v ms="$ms" \
        'BEGIN {printf "%-22s %5d chunks in %7.1f ms = %8.0f chunks/s  (embedded %d, written %d, unchanged %d)\n", l, c, ms, c / (ms > 0 ? ms : 1) * 1000, e, w, u}'
}
start_doubles
CLOSED=$(free_port)
for ((round = 1; round <= ROUNDS; round++)); do
    echo "== round $round"
    dir="$TMP/r$round"
    line "dry run (would write)" "$(DATA_DIR="$dir" "$HOST" ingest --target sqlite --dry-run --json "$DOCS" | fields)"
    line "sqlite" "$(DATA_DIR="$dir" "$HOST" ingest --target sqlite --json "$DOCS" | fields)"
    line "sqlite unchanged" "$(DATA_DIR="$dir" "$HOST" ingest --target sqlite --json "$DOCS" | fields)"
    collection="bench$round"
    # shellcheck disable=SC2046
    line "qdrant double" "$(env $(doubles_env) QDRANT_COLLECTION="$collection" DATA_DIR="$dir" "$HOST" ingest --target qdrant --json "$DOCS" | fields)"
    # shellcheck disable=SC2046
    out=$(env $(doubles_env) COHERE_BASE_URL="http://127.0.0.1:$CLOSED" QDRANT_COLLECTION="$collection" \
        DATA_DIR="$dir" "$HOST" ingest --target qdrant --json "$DOCS" | fields)
    line "qdrant unchanged" "$out"
    read -r _ embedded _ _ _ <<<"$out"
    [[ $embedded == 0 ]] || { say "the unchanged re-run embedded $embedded chunks"; exit 1; }
done
echo "unchanged re-runs: 0 embedding calls (Cohere unreachable during them, and embedded = 0)"
