#!/usr/bin/env bash
# Weir's transformation benchmarks, side by side with dbt-duckdb. Anyone can run it:
#
#   bash bench/run.sh            # 1,000 and 10,000 models
#   BENCH_SIZES="1000" bash bench/run.sh
#
# It builds Weir (the same profile as the quickstart and the tests), installs the dbt reference,
# generates synthetic projects (bench/generate_project.py) under $BENCH_DIR and prints one table
# of figures. Times are wall-clock seconds, the median of $BENCH_REPEAT runs after one warm-up
# run, each timing the whole process (parse and compile from a cold target/); memory is the
# peak resident set size from getrusage (bench/timeit.py).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$WEIR_ROOT"
SIZES="${BENCH_SIZES:-1000 10000}"
REPEAT="${BENCH_REPEAT:-3}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/weir/bench}"
RUN_MODELS="${BENCH_RUN_MODELS:-1000}"
DBT_PARSE_MAX="${BENCH_DBT_PARSE_MAX:-10000}"
DBT_COMPILE_MAX="${BENCH_DBT_COMPILE_MAX:-1000}"   # dbt compile of 10,000 models takes minutes a run

cargo build --quiet --workspace --all-targets
bash scripts/install-dbt.sh >/dev/null
WEIR="$CARGO_TARGET_DIR/debug/weir"
DBT="$WEIR_DBT_VENV/bin/dbt"
PY="$WEIR_DBT_VENV/bin/python"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false DO_NOT_TRACK=1
mkdir -p "$BENCH_DIR/baseline"

# timed DIR CMD...: one warm-up run, then $REPEAT timed runs of CMD in DIR (bench/timeit.py);
# prints "median_seconds peak_rss_mb".
timed() {
  local dir="$1"; shift
  (cd "$dir" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" "$@")
}

fresh_db() { rm -f "$1"/bench.duckdb "$1"/bench.duckdb.wal; rm -rf "$1"/target "$1"/logs; }

# Both tools start every timed run from a cold target/: no partial-parse file, no compiled
# output left from the run before.
echo "## Parse and compile (cold target/)"
echo
echo "| models | dbt parse (s) | weir parse (s) | speed-up | dbt compile (s) | weir compile (s) | speed-up | peak RSS dbt / weir, compile (MB) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in $SIZES; do
  dir="$BENCH_DIR/project_$n"
  rm -rf "$dir"
  python3 bench/generate_project.py "$dir" --models "$n" >/dev/null
  read -r wp_s _ < <(timed "$dir" --fresh target "$WEIR" parse)
  read -r wc_s wc_mb < <(timed "$dir" --fresh target "$WEIR" compile)
  dp_s="-" dc_s="-" dc_mb="-" parse_x="-" compile_x="-"
  if (( n <= DBT_PARSE_MAX )); then
    read -r dp_s _ < <(timed "$dir" --fresh target "$DBT" parse --no-partial-parse --profiles-dir .)
    parse_x=$(python3 -c "print(f'{$dp_s / max($wp_s, 0.001):.0f}x')")
  fi
  if (( n <= DBT_COMPILE_MAX )); then
    read -r dc_s dc_mb < <(timed "$dir" --fresh target "$DBT" compile --profiles-dir .)
    compile_x=$(python3 -c "print(f'{$dc_s / max($wc_s, 0.001):.0f}x')")
  fi
  echo "| $n | $dp_s | $wp_s | $parse_x | $dc_s | $wc_s | $compile_x | $dc_mb / $wc_mb |"
done

echo
echo "## Run overhead per model ($RUN_MODELS models, one thread)"
echo
dir="$BENCH_DIR/project_run_$RUN_MODELS"
rm -rf "$dir"
python3 bench/generate_project.py "$dir" --models "$RUN_MODELS" >/dev/null
# wall CMD...: seconds CMD takes, from the shell's clock.
wall() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  python3 -c "print(f'{($t1 - $t0) / 1e9:.3f}')"
}
run_weir() { fresh_db "$dir"; (cd "$dir" && wall "$WEIR" run --threads 1); }
run_dbt() { fresh_db "$dir"; (cd "$dir" && wall "$DBT" run --threads 1 --profiles-dir .); }
median() { sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
d_run=$(for _ in $(seq "$REPEAT"); do run_dbt; done | median)
w_run=$(for _ in $(seq "$REPEAT"); do run_weir; done | median)
# The baseline replays the SQL Weir compiled (left in target/ by the last weir run).
base=$(for _ in $(seq "$REPEAT"); do "$PY" bench/duckdb_baseline.py "$dir" "$BENCH_DIR/baseline/bench.duckdb" | cut -d' ' -f2; done | median)
echo "| tool | wall (s) | DuckDB's own time (s) | overhead per model (ms) |"
echo "|---|---:|---:|---:|"
for row in "dbt-duckdb $d_run" "weir $w_run"; do
  set -- $row
  per=$(python3 -c "print(f'{($2 - $base) * 1000 / $RUN_MODELS:.1f}')")
  echo "| $1 | $2 | $base | $per |"
done
echo
echo "dbt $("$DBT" --version 2>/dev/null | sed -n 's/.*installed: *//p' | head -1), duckdb (python) $("$PY" -c 'import duckdb; print(duckdb.__version__)'), $(nproc) cores"
