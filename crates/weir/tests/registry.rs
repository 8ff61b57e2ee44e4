//! The schema registry as Confluent's own Python client uses it: `SchemaRegistryClient`,
//! the Avro, JSON Schema and Protobuf serializers and deserializers, against `weir serve`;
//! then what they wrote read by Weir's wire format and by a Rust client
//! (`schema_registry_converter`), whose messages Python reads back; and `weir registry` on
//! the same store.

mod common;

use std::path::PathBuf;
use std::process::Command;

use apache_avro::types::Value;
use common::*;
use schema_registry_converter::blocking::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::blocking::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType as SrSchemaType, SubjectNameStrategy, SuppliedSchema};
use serde_json::Value as J;

/// Python with `confluent-kafka[schemaregistry,avro,json,protobuf]`, from scripts/install-kafka.sh.
fn python() -> PathBuf {
    let venv = std::env::var("WEIR_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/kafka-venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-kafka.sh", python.display());
    python
}

/// Registers, serializes and deserializes with Confluent's clients; checks their errors;
/// prints what Weir should read back as one JSON line.
const CLIENT: &str = r#"
import json, os, sys
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema, SchemaReference
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer, JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer, ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

url = os.environ["REGISTRY_URL"]
client = SchemaRegistryClient({"url": url, "basic.auth.user.info": "weir:" + os.environ["TOKEN"]})
ctx = SerializationContext("orders", MessageField.VALUE)

def code(f):
    try:
        f()
    except SchemaRegistryError as e:
        return e.error_code
    raise AssertionError("no error")

# Avro: the serializer registers the schema; the deserializer fetches it by id.
v1 = json.dumps({"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"}, {"name": "item", "type": "string"}]})
ser = AvroSerializer(client, v1)
avro_bytes = ser({"id": 7, "item": "tea"}, ctx)
assert AvroDeserializer(client)(avro_bytes, ctx) == {"id": 7, "item": "tea"}
latest = client.get_latest_version("orders-value")
assert (latest.version, latest.schema.schema_type) == (1, "AVRO"), latest
avro_id = latest.schema_id
assert client.register_schema("other-value", Schema(v1, "AVRO")) == avro_id, "one id wherever registered"

# Compatibility: BACKWARD by default; a field without a default cannot be added.
breaking = json.dumps({"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"}, {"name": "item", "type": "string"}, {"name": "qty", "type": "int"}]})
assert client.test_compatibility("orders-value", Schema(breaking, "AVRO")) is False
assert code(lambda: client.register_schema("orders-value", Schema(breaking, "AVRO"))) == 409
fine = breaking.replace('"type": "int"}', '"type": "int", "default": 1}')
assert client.test_compatibility("orders-value", Schema(fine, "AVRO")) is True
assert client.register_schema("orders-value", Schema(fine, "AVRO")) == avro_id + 1, "a refused schema takes no id"
client.set_compatibility("orders-value", "FULL")
assert client.get_compatibility("orders-value") == "FULL"
assert client.get_versions("orders-value") == [1, 2]
found = client.lookup_schema("orders-value", Schema(v1, "AVRO"))
assert (found.version, found.schema_id) == (1, avro_id), found

# Errors carry Confluent's codes.
assert code(lambda: client.get_latest_version("nobody")) == 40401
assert code(lambda: client.get_version("orders-value", 99)) == 40402
assert code(lambda: client.get_schema(9999)) == 40403
assert code(lambda: client.register_schema("bad", Schema('{"type": "recrod"}', "AVRO"))) == 42201

# JSON Schema.
order_json = json.dumps({"type": "object", "properties": {"id": {"type": "integer"}, "item": {"type": "string"}},
                         "required": ["id"], "additionalProperties": False})
jctx = SerializationContext("orders_json", MessageField.VALUE)
json_bytes = JSONSerializer(order_json, client)({"id": 8, "item": "cake"}, jctx)
assert JSONDeserializer(order_json, schema_registry_client=client)(json_bytes, jctx) == {"id": 8, "item": "cake"}

# Protobuf, with a message type built at run time (no protoc here).
fdp = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3")
first = fdp.message_type.add(name="Header")
first.field.add(name="trace", number=1, type=9, label=1)
msg = fdp.message_type.add(name="Order")
msg.field.add(name="id", number=1, type=3, label=1)
msg.field.add(name="item", number=2, type=9, label=1)
pool = descriptor_pool.DescriptorPool()
pool.Add(fdp)
Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
pctx = SerializationContext("orders_proto", MessageField.VALUE)
proto_bytes = ProtobufSerializer(Order, client, {"use.deprecated.format": False})(Order(id=9, item="jam"), pctx)
back = ProtobufDeserializer(Order, {"use.deprecated.format": False}, client)(proto_bytes, pctx)
assert (back.id, back.item) == (9, "jam"), back
proto_latest = client.get_latest_version("orders_proto-value")
assert proto_latest.schema.schema_type == "PROTOBUF"

print(json.dumps({"avro": avro_bytes.hex(), "avro_id": avro_id, "json": json_bytes.hex(),
                  "proto": proto_bytes.hex(), "proto_id": proto_latest.schema_id}))
"#;

/// Reads with Confluent's AvroDeserializer a message another client wrote (hex in argv).
const READ_PAYMENT: &str = r#"
import json, os, sys
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({"url": os.environ["REGISTRY_URL"], "basic.auth.user.info": "weir:" + os.environ["TOKEN"]})
print(json.dumps(AvroDeserializer(client)(bytes.fromhex(sys.argv[1]), SerializationContext("payments", MessageField.VALUE))))
"#;

#[test]
fn confluent_clients_register_serialize_and_read_back_through_weir_serve() {
    let dir = minimal(&[]);
    let serve = Serve::start(dir.path(), &[]);
    let run = Command::new(python())
        .args(["-c", CLIENT])
        .env("REGISTRY_URL", format!("{}/registry", serve.base))
        .env("TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the Python client failed:\n{stderr}");
    let got: J = serde_json::from_slice(run.stdout.trim_ascii()).unwrap();

    // What Confluent's serializers wrote is in the wire format Weir reads.
    let bytes = |k: &str| {
        (0..got[k].as_str().unwrap().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&got[k].as_str().unwrap()[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let avro = bytes("avro");
    let (id, payload) = weir_registry::wire::split(&avro).unwrap();
    assert_eq!(id as u64, got["avro_id"].as_u64().unwrap());
    assert_eq!(payload, [14, 6, b't', b'e', b'a'], "id 7 as a zig-zag varint, then \"tea\"");
    let json = bytes("json");
    let (_, payload) = weir_registry::wire::split(&json).unwrap();
    assert_eq!(serde_json::from_slice::<J>(payload).unwrap(), serde_json::json!({"id": 8, "item": "cake"}));
    let proto = bytes("proto");
    let (id, rest) = weir_registry::wire::split(&proto).unwrap();
    assert_eq!(id as u64, got["proto_id"].as_u64().unwrap());
    let (indexes, payload) = weir_registry::wire::split_indexes(rest).unwrap();
    assert_eq!(indexes, vec![1], "Order is the file's second message");
    assert_eq!(payload, [8, 9, 18, 3, b'j', b'a', b'm']);

    // A Rust client, schema_registry_converter: reads what Python wrote, and writes (registering
    // its schema) what Python then reads.
    let sr = SrSettings::new_builder(format!("{}/registry", serve.base)).set_token_authorization(TOKEN).build().unwrap();
    let decoded = AvroDecoder::new(sr.clone()).decode(Some(&avro)).unwrap();
    assert_eq!(decoded.value, Value::Record(vec![("id".into(), Value::Long(7)), ("item".into(), Value::String("tea".into()))]));
    let payment =
        r#"{"type":"record","name":"Payment","namespace":"shop","fields":[{"name":"order","type":"long"},{"name":"cents","type":"int"}]}"#;
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "payments".into(),
        false,
        SuppliedSchema::new(Some("shop.Payment".into()), SrSchemaType::Avro, payment.into()),
    );
    let written = AvroEncoder::new(sr).encode(vec![("order", Value::Long(7)), ("cents", Value::Int(450))], &strategy).unwrap();
    let hex: String = written.iter().map(|b| format!("{b:02x}")).collect();
    let read = Command::new(python())
        .args(["-c", READ_PAYMENT, &hex])
        .env("REGISTRY_URL", format!("{}/registry", serve.base))
        .env("TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(serde_json::from_slice::<J>(read.stdout.trim_ascii()).unwrap(), serde_json::json!({"order": 7, "cents": 450}));

    // The server's answers, raw: Confluent's content type and error shape.
    let http = reqwest::blocking::Client::new();
    let resp = http.get(format!("{}/registry/subjects/nobody/versions", serve.base)).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.headers()["content-type"], "application/vnd.schemaregistry.v1+json");
    let body: J = resp.json().unwrap();
    assert_eq!(body["error_code"], 40401);
    let resp = http.post(format!("{}/registry/subjects/x/versions", serve.base)).body("{\"schema\":\"1\"}").send().unwrap();
    assert_eq!(resp.status().as_u16(), 401, "writes need the token");
    assert_eq!(resp.json::<J>().unwrap()["error_code"], 401);
    let invalid = http
        .post(format!("{}/registry/subjects/x/versions", serve.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({"schema": "{\"type\": \"record\",\n\"name\": }"}).to_string())
        .send()
        .unwrap();
    assert_eq!(invalid.status().as_u16(), 422);
    let body: J = invalid.json().unwrap();
    assert_eq!(body["error_code"], 42201);
    assert!(body["message"].as_str().unwrap().contains("line 2 column 9"), "{body}");

    // `weir registry` reads the same store.
    let o = weir(dir.path(), &["registry", "subjects"]);
    let listing = text(&o);
    assert!(o.status.success(), "{listing}");
    assert!(listing.contains("orders-value  2 versions, latest 2"), "{listing}");
    assert!(listing.contains("FULL"), "{listing}");
    let avsc = dir.path().join("order.avsc");
    std::fs::write(&avsc, r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"}]}"#).unwrap();
    let o = weir(dir.path(), &["registry", "check", "orders-value", avsc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/item"), "{}", text(&o));
    let o = weir(dir.path(), &["registry", "register", "new-value", avsc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("'new-value' version 1 is schema id"), "{}", text(&o));
    let o = weir(dir.path(), &["registry", "show", "new-value"]);
    assert!(text(&o).contains("\"namespace\": \"shop\""), "{}", text(&o));
    serve.terminate();
}
