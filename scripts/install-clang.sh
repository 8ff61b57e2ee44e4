#!/usr/bin/env bash
# Installs clang 22 from Debian's packages: the compiler of DuckDB's own Linux builds, which
# compiles the bundled DuckDB into faster scans than the system's GCC (bench/README.md,
# "The bundled DuckDB's compiler"). scripts/env.sh hands it to the build when it is there;
# where it cannot be installed (no apt, no root), the build keeps the system's C++ compiler.
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
