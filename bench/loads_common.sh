# Shared by bench/loads.sh and bench/loads_mysql.sh (sourced after bench/common.sh): the
# reference tools in a virtualenv of their own, and the helpers that time and compare runs.
#
# dlt (PyPI) with the drivers its `sql_table` uses (ConnectorX among them, the backend dlt's
# docs recommend for speed), and Sling's engine from PyPI's
# `sling-linux-amd64` wheel; Sling writes into DuckDB through DuckDB's CLI, which comes from
# PyPI's `duckdb-cli` with the extensions it loads (`duckdb-extension-*`), so nothing is
# fetched from GitHub at run time.
VENV="${WEIR_LOAD_VENV:-$HOME/.cache/weir/load-venv}"
# Sling's last engine wheel on PyPI, and the DuckDB CLI and extensions of the version it is
# told to use (DUCKDB_VERSION).
SLING_DUCKDB=1.5.5
if ! "$VENV/bin/python" -c "import dlt, pyarrow, psycopg2, pymysql, sqlalchemy, connectorx, sling_linux_amd64, duckdb_cli" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "dlt[duckdb,postgres]==1.31.0" "sqlalchemy>=2" pyarrow psycopg2-binary pymysql connectorx==0.4.6 \
    sling-linux-amd64==1.4.11 "duckdb-cli==$SLING_DUCKDB" "duckdb-extension-json==$SLING_DUCKDB" \
    "duckdb-extension-httpfs==$SLING_DUCKDB" "duckdb-extension-icu==$SLING_DUCKDB"
fi
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
SLING="$site/sling_linux_amd64/bin/sling-linux-amd64"
dlt_version=$("$VENV/bin/python" -c "import dlt; print(dlt.__version__)")

# Sling, run in a home of its own under $1, where DuckDB finds its extensions as if installed:
# `sling_in DIR` sets the array `sling` to the command line, to which SRC and DST are added.
sling_in() {
  local home="$1/sling-home"
  mkdir -p "$home/.duckdb/extensions/v$SLING_DUCKDB/linux_amd64"
  cp "$site"/duckdb_extension_*/extensions/v$SLING_DUCKDB/*.duckdb_extension \
    "$home/.duckdb/extensions/v$SLING_DUCKDB/linux_amd64/"
  sling=(env HOME="$home" SLING_HOME_DIR="$home/.sling" SLING_DISABLE_TELEMETRY=true
    DUCKDB_PATH="$site/duckdb_cli/duckdb" DUCKDB_VERSION="$SLING_DUCKDB")
}

# `/usr/bin/time` of one command after a fresh start: "wall_seconds peak_rss_mb".
timed() {
  /usr/bin/time -f "%e %M" -o time.txt "$@" > run.log 2>&1 || { cat run.log >&2; exit 1; }
  awk '{ printf "%s %d\n", $1, $2 / 1024 }' time.txt
}
fresh() { rm -rf bench.duckdb bench.duckdb.wal .weir dlt.duckdb dlt.duckdb.wal dlt_work base.duckdb base.duckdb.wal sling.duckdb sling.duckdb.wal; }
median_of() { cut -d' ' -f"$1" | median; }
max_of() { cut -d' ' -f"$1" | sort -n | tail -1; }
count() { "$PY" -c "import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True).execute(sys.argv[2]).fetchone()[0])" "$1" "$2"; }
rate() { python3 -c "print(f'{$1 / $2 / 1e6:.2f}M')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }

# Times `weir load orders`, dlt and Sling each moving the table `orders` of one database into
# a fresh DuckDB file (raw.orders), and prints their table: $1 the heading, $2 the database's
# URL, $3 the table's schema (a MySQL database), $4 the URL as Sling takes it, $5 a note on
# dlt's driver. Run in the directory `sling_in` was given; leaves w_rss (Weir's peak) set.
compare_loads() {
  local weir_runs dlt_runs cx_runs sling_runs w d cx cx_rss s_time d_rss s_rss weir_rows dlt_rows cx_rows sling_rows sling_version
  weir_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$WEIR" load orders; done)
  weir_rows=$(count bench.duckdb "select count(*) from raw.orders")
  w=$(echo "$weir_runs" | median_of 1); w_rss=$(echo "$weir_runs" | max_of 2)
  dlt_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$VENV/bin/python" "$WEIR_ROOT/bench/loads_dlt.py" "$2" "$3" orders dlt.duckdb dlt_work; done)
  dlt_rows=$(count dlt.duckdb "select count(*) from raw.orders")
  d=$(echo "$dlt_runs" | median_of 1); d_rss=$(echo "$dlt_runs" | max_of 2)
  cx_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$VENV/bin/python" "$WEIR_ROOT/bench/loads_dlt.py" "$2" "$3" orders dlt.duckdb dlt_work connectorx; done)
  cx_rows=$(count dlt.duckdb "select count(*) from raw.orders")
  cx=$(echo "$cx_runs" | median_of 1); cx_rss=$(echo "$cx_runs" | max_of 2)
  local cmd=("${sling[@]}" SRC="$4" DST="duckdb://$PWD/sling.duckdb" "$SLING")
  sling_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "${cmd[@]}" run --src-conn SRC --src-stream "$3.orders" --tgt-conn DST --tgt-object raw.orders --mode full-refresh; done)
  sling_rows=$(count sling.duckdb "select count(*) from raw.orders")
  s_time=$(echo "$sling_runs" | median_of 1); s_rss=$(echo "$sling_runs" | max_of 2)
  sling_version=$("${cmd[@]}" --version | sed -n 's/^Version: //p')
  echo
  echo "| $1 | rows | wall (s) | rows/s | vs weir | peak RSS (MB) |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| weir load | $weir_rows | $w | $(rate "$weir_rows" "$w") | 1.00x | $w_rss |"
  echo "| dlt $dlt_version (sql_table, pyarrow backend$5) | $dlt_rows | $d | $(rate "$dlt_rows" "$d") | $(ratio "$d" "$w") | $d_rss |"
  echo "| dlt $dlt_version (sql_table, connectorx backend) | $cx_rows | $cx | $(rate "$cx_rows" "$cx") | $(ratio "$cx" "$w") | $cx_rss |"
  echo "| Sling $sling_version (DuckDB CLI $SLING_DUCKDB) | $sling_rows | $s_time | $(rate "$sling_rows" "$s_time") | $(ratio "$s_time" "$w") | $s_rss |"
}
