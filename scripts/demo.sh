#!/usr/bin/env bash
# Quickstart, command 1: build Weir and run the example pipeline (examples/shop) on an
# embedded DuckDB file. The shop's order system exports its orders as daily CSV files and,
# where PostgreSQL answers on this machine, its customers live in a small `shop` database;
# pipelines/daily.yml loads what is new from both into the raw layer, builds staging and marts
# with their tests and checks, and reports the revenue, each task in order. Run it again: the
# files and rows already loaded are not loaded twice, and no table changes.
#
# Then the real-time path: the order system's live events (scripts/generate_events.py) go to
# the `order_events` topic of the project's event log and their payments to `payment_events`,
# the stream jobs of streams/*.sql read them to the end (revenue per country per minute,
# customer sessions, orders paired with their payments), and the model
# models/realtime/live_vs_daily.sql puts the live day beside the nightly marts: one
# `weir build`, as the stream jobs are nodes of the graph that models ref().
set -euo pipefail
bash "$(dirname "$0")/install-clang.sh"
bash "$(dirname "$0")/install-libs.sh"
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
echo
# The live events are sent once: the log keeps them, and the jobs remember where they are.
sent() { "$WEIR" --log-format json log describe "$1" 2>/dev/null | grep -q '"end": *[1-9]'; }
if ! sent order_events; then
  python3 scripts/generate_events.py > events.jsonl
  "$WEIR" log produce order_events -f events.jsonl
fi
if ! sent payment_events; then
  python3 scripts/generate_events.py --payments > payments.jsonl
  "$WEIR" log produce payment_events -f payments.jsonl
fi
"$WEIR" build --select resource_type:stream path:models/realtime
"$WEIR" stream status live_revenue
"$WEIR" show --select live_vs_daily --limit 5
echo
echo "To look at it all in the web UI: (cd examples/shop && WEIR_API_TOKEN=demo $WEIR serve)"
echo "then open http://127.0.0.1:8080/ui/ and sign in with the token demo."
