#!/usr/bin/env bash
# The pictures of docs/ui.md: the example shop (scripts/demo.sh) served by `weir serve`, with a
# few runs of its pipeline, each page opened in Chromium by Playwright and saved to docs/ui/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$WEIR_ROOT"
bash scripts/install-browser.sh >/dev/null
bash scripts/demo.sh >/dev/null
WEIR="$CARGO_TARGET_DIR/debug/weir"
port=18660
(cd examples/shop && WEIR_API_TOKEN=docs exec "$WEIR" serve --bind "127.0.0.1:$port" >/dev/null 2>&1) &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && break; sleep 0.2; done
WEIR_URL="http://127.0.0.1:$port" WEIR_TOKEN=docs WEIR_SHOTS="$WEIR_ROOT/docs/ui" node scripts/ui-screenshots.mjs
