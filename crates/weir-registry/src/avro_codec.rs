//! Avro values in Confluent's wire format, for topics declared `format: avro`: reading with
//! the writer's schema fetched from the registry by the id each message carries, and
//! writing under a schema made from a job's output columns and registered under the topic's
//! subject (`<topic>-value`, Confluent's topic name strategy).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::{Value as J, json};

use crate::{Registry, SchemaRequest, SchemaType};

/// Reads Avro messages, each with the schema its id names (kept once fetched: an id's
/// schema never changes).
pub struct AvroReader {
    registry: Registry,
    schemas: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl AvroReader {
    pub fn new(registry: Registry) -> AvroReader {
        AvroReader { registry, schemas: RwLock::new(HashMap::new()) }
    }

    /// The record a message holds, as its fields by name.
    pub fn read(&self, bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
        let (id, mut payload) = crate::wire::split(bytes).map_err(|e| e.to_string())?;
        let schema = self.schema(id)?;
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().map_err(|e| format!("schema {id}: {e}"))?;
        let value = reader.read_value(&mut payload).map_err(|e| format!("not Avro of schema {id}: {e}"))?;
        if !payload.is_empty() {
            return Err(format!("{} bytes left over after the record of schema {id}", payload.len()));
        }
        match value {
            Value::Record(fields) => Ok(fields),
            other => Err(format!("schema {id} is not a record but {:?}", apache_avro::schema::SchemaKind::from(&other))),
        }
    }

    fn schema(&self, id: u32) -> Result<Arc<Schema>, String> {
        if let Some(s) = self.schemas.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let found = self.registry.schema(i64::from(id), None).map_err(|e| format!("schema {id}: {e}"))?;
        if found.schema_type != SchemaType::Avro {
            return Err(format!("schema {id} is {}, not AVRO", found.schema_type.name()));
        }
        let references = self.registry.references_of(&found).map_err(|e| format!("schema {id}: {e}"))?;
        let texts: Vec<&str> = references.iter().map(|(_, t)| t.as_str()).collect();
        let schema = Arc::new(Schema::parse_str_with_list(&found.schema, texts).map_err(|e| format!("schema {id}: {e}"))?.0);
        if let Ok(mut m) = self.schemas.write() {
            m.insert(id, schema.clone());
        }
        Ok(schema)
    }
}

/// Writes Avro messages under one registered schema.
#[derive(Debug)]
pub struct AvroWriter {
    pub id: u32,
    pub subject: String,
    schema: Schema,
}

impl AvroWriter {
    /// Registers the record schema of `columns` (name, SQL type) under `subject`, as its
    /// version if it already is one, else as its next version if the subject's compatibility
    /// level allows it; the registry's refusal (with the rules broken) otherwise.
    pub fn register(registry: &Registry, subject: &str, record: &str, columns: &[(String, String)]) -> Result<AvroWriter, crate::Error> {
        let text = record_schema(record, columns).to_string();
        let req = SchemaRequest { schema: text.clone(), schema_type: Some("AVRO".into()), ..Default::default() };
        let done = registry.register(subject, &req)?;
        let schema = Schema::parse_str(&text).map_err(|e| crate::Error::InvalidSchema(e.to_string()))?;
        Ok(AvroWriter { id: done.id as u32, subject: subject.to_string(), schema })
    }

    /// A message: the wire header and the record of `fields` (in the schema's order).
    pub fn write(&self, fields: Vec<(String, Value)>) -> Result<Vec<u8>, String> {
        let mut out = crate::wire::header(self.id, None);
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema).build().map_err(|e| e.to_string())?;
        let datum = writer.write_value_to_vec(Value::Record(fields)).map_err(|e| e.to_string())?;
        out.extend_from_slice(&datum);
        Ok(out)
    }
}

/// The Avro record for columns of SQL types: every field nullable with a null default, so
/// that adding or dropping a column stays compatible both ways; times as `timestamp-micros`
/// and `date`; numbers as `long` and `double`; the rest as strings.
pub fn record_schema(record: &str, columns: &[(String, String)]) -> J {
    let fields: Vec<J> =
        columns.iter().map(|(name, ty)| json!({"name": avro_name(name), "type": ["null", avro_type(ty)], "default": null})).collect();
    json!({"type": "record", "name": avro_name(record), "namespace": "weir", "fields": fields})
}

/// The Avro type a column of SQL type `ty` is written as.
pub fn avro_type(ty: &str) -> J {
    let t = ty.trim().to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    match base {
        "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT" | "HUGEINT" | "UTINYINT" | "USMALLINT" | "UINTEGER" | "UBIGINT" | "INT2"
        | "INT4" | "INT8" => json!("long"),
        "DOUBLE" | "FLOAT" | "REAL" | "DECIMAL" | "NUMERIC" | "FLOAT4" | "FLOAT8" | "DOUBLE PRECISION" => json!("double"),
        "BOOLEAN" | "BOOL" => json!("boolean"),
        "DATE" => json!({"type": "int", "logicalType": "date"}),
        b if b.starts_with("TIMESTAMP") || b == "DATETIME" => json!({"type": "long", "logicalType": "timestamp-micros"}),
        _ => json!("string"),
    }
}

/// A name Avro takes: `[A-Za-z_][A-Za-z0-9_]*`, other characters as `_`.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_make_a_record_whose_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(Arc::new(weir_store::Store::sqlite(&dir.path().join("w.db")).unwrap()));
        let columns = vec![
            ("k".to_string(), "VARCHAR".to_string()),
            ("window start".to_string(), "TIMESTAMP".to_string()),
            ("n".to_string(), "BIGINT".to_string()),
        ];
        let w = AvroWriter::register(&registry, "counts-value", "counts", &columns).unwrap();
        assert_eq!(w.id, 1);
        let fields = vec![
            ("k".to_string(), Value::Union(1, Box::new(Value::String("a".into())))),
            ("window_start".to_string(), Value::Union(1, Box::new(Value::TimestampMicros(1_000_000)))),
            ("n".to_string(), Value::Union(0, Box::new(Value::Null))),
        ];
        let bytes = w.write(fields.clone()).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
        assert_eq!(AvroReader::new(registry.clone()).read(&bytes).unwrap(), fields);
        assert_eq!(AvroWriter::register(&registry, "counts-value", "counts", &columns).unwrap().id, 1, "registered once");
        // A column changing type breaks old readers: the registry refuses, naming the field.
        let changed = vec![("k".to_string(), "VARCHAR".to_string()), ("n".to_string(), "DOUBLE".to_string())];
        registry.set_compatibility(Some("counts-value"), "FULL").unwrap();
        let err = AvroWriter::register(&registry, "counts-value", "counts", &changed).unwrap_err();
        assert!(err.to_string().contains("/fields/n"), "{err}");
        let e = AvroReader::new(registry).read(&[1, 2, 3]).unwrap_err();
        assert!(e.contains("too short"), "{e}");
    }
}
