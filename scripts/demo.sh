#!/usr/bin/env bash
# Quickstart, command 1: build Weir and run the example pipeline (examples/shop) on an
# embedded DuckDB file: pipelines/daily.yml waits for the raw orders, lands them, builds staging
# and marts with their tests and checks, and reports the revenue, each task in order.
set -euo pipefail
bash "$(dirname "$0")/install-clang.sh"
source "$(dirname "$0")/env.sh"
cd "$WEIR_ROOT"
# --all-targets resolves dependencies exactly as the tests do, so both share one build.
cargo build --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/debug/weir"
cd examples/shop
"$WEIR" pipeline run daily "$@"
echo
"$WEIR" show --select daily_revenue --limit 5
