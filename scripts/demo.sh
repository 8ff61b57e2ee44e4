#!/usr/bin/env bash
# Quickstart, command 1: build Weir and run the example pipeline (examples/shop) on an
# embedded DuckDB file. The shop's order system exports its orders as daily CSV files and,
# where PostgreSQL answers on this machine, its customers live in a small `shop` database;
# pipelines/daily.yml loads what is new from both into the raw layer, builds staging and marts
# with their tests and checks, and reports the revenue, each task in order. Run it again: the
# files and rows already loaded are not loaded twice, and no table changes.
set -euo pipefail
bash "$(dirname "$0")/install-clang.sh"
source "$(dirname "$0")/env.sh"
cd "$WEIR_ROOT"
# --all-targets resolves dependencies exactly as the tests do, so both share one build.
cargo build --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/debug/weir"
cd examples/shop
python3 scripts/generate_orders.py
if command -v psql >/dev/null 2>&1 && psql -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -d postgres -Atqc "select 1" >/dev/null 2>&1; then
  SHOP_SOURCE_URL="$(bash scripts/create_source_db.sh)"
  export SHOP_SOURCE_URL
  echo "the customer database: $SHOP_SOURCE_URL"
else
  echo "no PostgreSQL here: the example runs without its customer database"
fi
"$WEIR" pipeline run daily "$@"
echo
"$WEIR" show --select daily_revenue --limit 5
