#!/usr/bin/env bash
# Quickstart, command 2: the whole test suite. Unit, integration and CLI tests, including
# the PostgreSQL tests (against the server on 127.0.0.1:5432), the dbt parity harness and
# schemathesis against the API, the Kafka tests against a broker they start, and the web
# UI's tests in Chromium.
set -euo pipefail
bash "$(dirname "$0")/install-clang.sh"
bash "$(dirname "$0")/install-libs.sh"
source "$(dirname "$0")/env.sh"
cd "$WEIR_ROOT"
bash scripts/install-dbt.sh
bash scripts/install-schemathesis.sh
bash scripts/install-kafka.sh
bash scripts/install-browser.sh
cargo test --workspace "$@"
