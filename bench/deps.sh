#!/usr/bin/env bash
# `weir deps` against `dbt deps` on a project with ten git packages (local repositories), each
# but the first needing the one before it (so resolution reads nine packages' own packages too).
#
#   bash bench/deps.sh
#
# Two cases, each the median of $BENCH_REPEAT runs after a warm-up (bench/timeit.py):
#   resolve  - no package-lock.yml: resolve every package, write the lock, install
#   locked   - the lock matches packages.yml: install what it pins
# dbt_packages/ is deleted before every run of both.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$WEIR_ROOT"
REPEAT="${BENCH_REPEAT:-5}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/weir/bench}/deps"

cargo build --quiet --workspace --all-targets
bash scripts/install-dbt.sh >/dev/null
WEIR="$CARGO_TARGET_DIR/debug/weir"
DBT="$WEIR_DBT_VENV/bin/dbt"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false DO_NOT_TRACK=1

rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR/repos"
g() { git -c user.name=bench -c user.email=bench@example.com -c init.defaultBranch=main "$@"; }
for i in $(seq -w 1 10); do
  repo="$BENCH_DIR/repos/pkg_$i"
  mkdir -p "$repo/macros" "$repo/models"
  printf "name: pkg_%s\nversion: '1.0.%s'\nconfig-version: 2\n" "$i" "$i" > "$repo/dbt_project.yml"
  for m in 1 2 3 4 5; do
    printf "{%% macro pkg_%s_m%s(x) %%}{{ x }} + %s{%% endmacro %%}\n" "$i" "$m" "$m" > "$repo/macros/m$m.sql"
  done
  printf "select 1 as id\n" > "$repo/models/pkg_${i}_model.sql"
  if [ "$i" != "01" ]; then
    prev=$(printf "%02d" $((10#$i - 1)))
    printf "packages:\n  - git: %s\n    revision: v1\n" "$BENCH_DIR/repos/pkg_$prev" > "$repo/packages.yml"
  fi
  (cd "$repo" && g init -q && g add -A && g commit -q -m one && g tag v1)
done

project="$BENCH_DIR/project"
mkdir -p "$project"
printf "name: deps_bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\n" > "$project/dbt_project.yml"
printf "bench:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: bench.duckdb\n" > "$project/profiles.yml"
{
  echo "packages:"
  for i in $(seq -w 1 10); do printf "  - git: %s\n    revision: v1\n" "$BENCH_DIR/repos/pkg_$i"; done
} > "$project/packages.yml"

timed() { (cd "$project" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" "$@"); }
echo "case     tool  seconds  peak_MB"
read -r s m < <(timed --fresh dbt_packages --fresh package-lock.yml "$WEIR" deps)
echo "resolve  weir  $s  $m"
read -r s m < <(timed --fresh dbt_packages --fresh package-lock.yml "$DBT" deps --profiles-dir .)
echo "resolve  dbt   $s  $m"
"$WEIR" --project-dir "$project" deps >/dev/null
read -r s m < <(timed --fresh dbt_packages "$WEIR" deps)
echo "locked   weir  $s  $m"
read -r s m < <(timed --fresh dbt_packages "$DBT" deps --profiles-dir .)
echo "locked   dbt   $s  $m"
ls "$project/dbt_packages" | wc -l | xargs echo "packages installed:"
