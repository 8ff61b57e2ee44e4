#!/usr/bin/env bash
# Installs the C headers the build links against from Debian's packages: OpenSSL's, for
# librdkafka's TLS and SASL/SCRAM (the Kafka backend). Quick when they are there already.
set -euo pipefail
if [ -f /usr/include/openssl/ssl.h ] || ! command -v apt-get >/dev/null 2>&1; then
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  as_root=(sudo -n)
fi
"${as_root[@]}" apt-get install -y -qq libssl-dev >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq libssl-dev >/dev/null; }
