#!/usr/bin/env bash
# Installs clang 22 from Debian's packages: the compiler of DuckDB's own Linux builds. Built
# by it, the bundled DuckDB's scans ran 0-10% behind DuckDB's Python wheel, where GCC 12's
# build ran 5-20% behind (bench/README.md, "Data-quality checks"). scripts/env.sh hands it to
# the build when it is there; where it cannot be installed (no apt, no root), the build keeps
# the system's C++ compiler.
set -euo pipefail
if command -v clang++-22 >/dev/null 2>&1; then
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  as_root=(sudo -n)
fi
if command -v apt-get >/dev/null 2>&1; then
  if "${as_root[@]}" apt-get install -y -qq clang-22 >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq clang-22; } >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "note: clang-22 could not be installed; the bundled DuckDB is compiled by the system's C++ compiler" >&2
