#!/usr/bin/env bash
# Quickstart, command 1: build Weir and run the example pipeline (examples/shop) on an
# embedded DuckDB file: seed the raw orders, build staging and marts, run every test.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$WEIR_ROOT"
# --all-targets resolves dependencies exactly as the tests do, so both share one build.
cargo build --workspace --all-targets
WEIR="$CARGO_TARGET_DIR/debug/weir"
cd examples/shop
"$WEIR" build "$@"
echo
"$WEIR" show --select daily_revenue --limit 5
