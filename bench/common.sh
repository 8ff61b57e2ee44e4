# Shared by the benchmark scripts (sourced, not run): Weir built in the one shared profile,
# and small helpers; `reference_python` installs the dbt reference, whose virtualenv also
# gives the scripts DuckDB's Python API. Set REPEAT before sourcing to change the
# default number of timed runs.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/install-clang.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$WEIR_ROOT"
ROWS="${BENCH_ROWS:-100000000}"
REPEAT="${BENCH_REPEAT:-${REPEAT:-3}}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/weir/bench}"
cargo build --quiet --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/debug/weir"

# Installs dbt-core with dbt-duckdb (scripts/install-dbt.sh) and sets PY to its Python.
reference_python() {
  bash scripts/install-dbt.sh >/dev/null
  PY="$WEIR_DBT_VENV/bin/python"
}

# The median of the numbers on stdin, one per line ($REPEAT of them).
median() { sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
# Seconds between two `date +%s%N` readings.
seconds() { python3 -c "print(f'{($2 - $1) / 1e9:.3f}')"; }

# A project named $2 in the directory $1, on the DuckDB file bench.duckdb with two threads:
# its dbt_project.yml and profiles.yml (a script may append outputs to the latter).
duckdb_project() {
  printf 'name: %s\nprofile: %s\n' "$2" "$2" > "$1/dbt_project.yml"
  printf '%s:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: bench.duckdb\n      threads: 2\n' "$2" > "$1/profiles.yml"
}

# Change data capture (bench/cdc.sh, bench/cdc_mariadb.sh), in the project $dir.
# The first row of a query's result on the project's warehouse, space-separated.
mirror() { (cd "$dir" && "$WEIR" --log-format json sql "$1") | python3 -c "import json, sys; print(*json.load(sys.stdin)['rows'][0])"; }
# Times `weir load bench` on a new mirror (the snapshot), then a plain load of table $3 from
# source kind $1 at URL $2 (the loads' rate on the same rows); prints a table row for each.
snapshot_and_plain_load() {
  local start snap plain
  start=$(date +%s%N)
  (cd "$dir" && "$WEIR" load bench >/dev/null)
  snap=$(seconds "$start" "$(date +%s%N)")
  echo "| snapshot | $ROWS rows | ${snap} s | $(python3 -c "print(f'{$ROWS / $snap:,.0f}')") rows/s |"
  printf 'loads:\n  - name: copy\n    source: {kind: %s, url: "%s", table: %s}\n' "$1" "$2" "$3" > "$dir/loads/copy.yml"
  start=$(date +%s%N)
  (cd "$dir" && "$WEIR" load copy >/dev/null)
  plain=$(seconds "$start" "$(date +%s%N)")
  rm "$dir/loads/copy.yml"
  echo "| plain load of the same table | $ROWS rows | ${plain} s | $(python3 -c "print(f'{$ROWS / $plain:,.0f}')") rows/s |"
}
