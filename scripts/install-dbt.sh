#!/usr/bin/env bash
# Installs the dbt reference (dbt-core < 1.12 with dbt-duckdb) into a virtualenv under the
# cache folder. The parity tests and the benchmarks compare Weir against it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -x "$WEIR_DBT_VENV/bin/dbt" ] && "$WEIR_DBT_VENV/bin/dbt" --version >/dev/null 2>&1; then
  exit 0
fi
python3 -m venv "$WEIR_DBT_VENV"
"$WEIR_DBT_VENV/bin/pip" install --quiet --disable-pip-version-check "dbt-core<1.12" "dbt-duckdb<1.12"
"$WEIR_DBT_VENV/bin/dbt" --version
