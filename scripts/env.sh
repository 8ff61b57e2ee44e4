# Shared settings for Weir's scripts: one build directory for the quickstart, the tests and
# CI, so the bundled DuckDB (25-40 minutes of C++) is compiled once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export WEIR_DBT_VENV="${WEIR_DBT_VENV:-$HOME/.cache/weir/dbt-venv}"
export WEIR_SCHEMATHESIS_VENV="${WEIR_SCHEMATHESIS_VENV:-$HOME/.cache/weir/schemathesis-venv}"
export WEIR_KAFKA_VENV="${WEIR_KAFKA_VENV:-$HOME/.cache/weir/kafka-venv}"
export WEIR_BROWSER_DIR="${WEIR_BROWSER_DIR:-$HOME/.cache/weir/browser}"
WEIR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WEIR_ROOT
# The bundled DuckDB's C++ compiler: clang 22 where scripts/install-clang.sh could install it
# (DuckDB's own Linux builds use it; its scans run faster than GCC 12's build). Changing it
# recompiles DuckDB, so a compiler already chosen in the environment wins.
if [ -z "${CXX:-}" ] && command -v clang++-22 >/dev/null 2>&1; then
  export CXX=clang++-22
fi
