#!/usr/bin/env bash
# Installs what the web UI's browser tests drive: Debian's Chromium, and Playwright's
# playwright-core from npm (which drives an installed browser and downloads none) under the
# cache folder. Quick when they are there already.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if ! command -v chromium >/dev/null 2>&1; then
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    as_root=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq chromium >/dev/null; }
fi
if [ ! -f "$WEIR_BROWSER_DIR/node_modules/playwright-core/package.json" ]; then
  mkdir -p "$WEIR_BROWSER_DIR"
  npm install --prefix "$WEIR_BROWSER_DIR" --no-audit --no-fund --silent "playwright-core@1.64.1"
fi
