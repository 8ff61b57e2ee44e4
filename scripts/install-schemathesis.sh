#!/usr/bin/env bash
# Installs schemathesis into a virtualenv under the cache folder. The API tests run it
# against the OpenAPI document `weir serve` serves, with all its checks.
set -euo pipefail
source "$(dirname "$0")/env.sh"
version=4.32.5
if [ -x "$WEIR_SCHEMATHESIS_VENV/bin/st" ] && "$WEIR_SCHEMATHESIS_VENV/bin/st" --version 2>/dev/null | grep -qx ".*, version $version"; then
  exit 0
fi
python3 -m venv "$WEIR_SCHEMATHESIS_VENV"
"$WEIR_SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
"$WEIR_SCHEMATHESIS_VENV/bin/st" --version
