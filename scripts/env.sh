# Shared settings for Weir's scripts: one build directory for the quickstart, the tests and
# CI, so the bundled DuckDB (25-40 minutes of C++) is compiled once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export WEIR_DBT_VENV="${WEIR_DBT_VENV:-$HOME/.cache/weir/dbt-venv}"
WEIR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WEIR_ROOT
