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
