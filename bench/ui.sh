#!/usr/bin/env bash
# The web UI with a long history: the grid of the last 100 runs and the run list, with
# 10,000 runs of a 50-task pipeline in the store, and the asset graph of a 1,000-model
# project. Anyone can run it:
#
#   bash bench/ui.sh
#   BENCH_RUNS=2000 bash bench/ui.sh       # a shorter history
#
# The history is written straight into the SQLite store (bench/ui_history.py: runs a minute
# apart, each task a few seconds, one run in twenty failed), as a scheduler would have left it.
# The 1,000-model project is bench/generate_project.py's. `weir serve` runs on each, and:
#   - the API calls the pages make are timed with curl, median of 20 after a warm-up;
#   - each page is opened in Debian's Chromium driven by Playwright (scripts/install-browser.sh)
#     BENCH_REPEAT times, each in a new tab; the page times itself from before its API call
#     to after the browser has laid out what it drew (bench/ui.mjs reads the figure).
REPEAT="${BENCH_REPEAT:-5}"
source "$(dirname "$0")/common.sh"
bash scripts/install-browser.sh >/dev/null
RUNS="${BENCH_RUNS:-10000}"
work="$BENCH_DIR/ui"
rm -rf "$work" && mkdir -p "$work/history/pipelines" "$work/models"
TOKEN=bench-token

# A 50-task pipeline: five chains of ten, joined at the end.
{
  echo "tasks:"
  for c in 0 1 2 3 4; do
    for i in 0 1 2 3 4 5 6 7 8 9; do
      echo "  t${c}_${i}:"
      echo "    shell: 'true'"
      if [ "$i" -gt 0 ]; then echo "    after: t${c}_$((i - 1))"; fi
    done
  done
} > "$work/history/pipelines/big.yml"
duckdb_project "$work/history" history
(cd "$work/history" && "$WEIR" pipeline list >/dev/null)
python3 bench/ui_history.py "$work/history/.weir/weir.db" big "$RUNS"

python3 bench/generate_project.py "$work/models" --models 1000 >/dev/null

serve() { # dir port
  (cd "$1" && WEIR_API_TOKEN=$TOKEN exec "$WEIR" serve --bind "127.0.0.1:$2" > "$work/serve-$2.log" 2>&1) &
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/api/v1/health" >/dev/null && return; sleep 0.2; done
  echo "weir serve on $1 did not start" >&2; exit 1
}
api_ms() { # url: the median of 20 calls, after one
  curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$1"
  for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$1"; done \
    | sort -n | sed -n 10p | python3 -c "import sys; print(f'{float(sys.stdin.read()) * 1000:.1f}')"
}
serve "$work/history" 18651
serve "$work/models" 18652
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

echo "API, median of 20 (ms):"
echo "  grid, last 100 runs x 50 tasks: $(api_ms "http://127.0.0.1:18651/api/v1/pipelines/big/grid?limit=100")"
echo "  run list, last 100 runs:        $(api_ms "http://127.0.0.1:18651/api/v1/pipelines/big/runs?limit=100")"
echo "  asset graph, 1,000 models:      $(api_ms "http://127.0.0.1:18652/api/v1/assets")"
echo "In Chromium, median of $REPEAT (ms):"
WEIR_TOKEN=$TOKEN REPEAT=$REPEAT node bench/ui.mjs \
  "grid=http://127.0.0.1:18651/ui/#/pipelines/big?limit=100" \
  "runs=http://127.0.0.1:18651/ui/#/pipelines/big?tab=runs&limit=100" \
  "assets=http://127.0.0.1:18652/ui/#/assets"
