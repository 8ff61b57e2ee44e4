//! PostgreSQL, for teams past one machine. Plain TCP connections (no TLS yet), one per worker
//! thread, configured by dbt-postgres's profile fields.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::Type;
use postgres::{Client, NoTls, SimpleQueryMessage};
use serde_json::{Map, Value as J};
use weir_core::{Column, ColumnType, Datum, QueryResult, Relation, RelationKind};

use ::duckdb::arrow::array::{AsArray, BinaryArray};
use ::duckdb::arrow::compute::cast;
use ::duckdb::arrow::datatypes::{DataType, Field, IntervalMonthDayNanoType, IntervalUnit, Schema};
use ::duckdb::arrow::error::ArrowError;
use bytes::BytesMut;
use pgpq::ArrowToPostgresBinaryEncoder;

use crate::{BatchFeed, Connection, RecordBatch, Result, Warehouse, WarehouseError, literal, quoted};

/// Connection settings from a `type: postgres` target.
pub struct Postgres {
    config: postgres::Config,
    database: String,
    host: String,
    port: u16,
    user: String,
    role: Option<String>,
    search_path: Option<String>,
}

impl Postgres {
    pub fn from_fields(fields: &Map<String, J>) -> Result<Postgres> {
        let text = |k: &str| -> Option<String> {
            match fields.get(k)? {
                J::String(s) => Some(s.clone()),
                J::Null => None,
                other => Some(other.to_string()),
            }
        };
        let bad = |m: String| WarehouseError::Config { adapter: "postgres".into(), message: m };
        let host = text("host").unwrap_or_else(|| "localhost".into());
        let port: u16 = match text("port") {
            Some(p) => p.parse().map_err(|_| bad(format!("port '{p}' is not a number")))?,
            None => 5432,
        };
        let user = text("user").or_else(|| text("username")).ok_or_else(|| bad("'user' is required".into()))?;
        let database = text("dbname").or_else(|| text("database")).ok_or_else(|| bad("'dbname' is required".into()))?;
        let mut config = postgres::Config::new();
        config.host(&host).port(port).user(&user).dbname(&database).application_name("weir");
        if let Some(p) = text("password").or_else(|| text("pass")) {
            config.password(p);
        }
        if let Some(t) = text("connect_timeout").and_then(|t| t.parse::<u64>().ok()) {
            config.connect_timeout(Duration::from_secs(t));
        } else {
            config.connect_timeout(Duration::from_secs(10));
        }
        if let Some(mode) = text("sslmode").filter(|m| m != "disable" && m != "prefer" && m != "allow") {
            return Err(bad(format!("sslmode '{mode}' needs TLS, which Weir's PostgreSQL adapter does not support yet")));
        }
        Ok(Postgres { config, database, host, port, user, role: text("role"), search_path: text("search_path") })
    }
}

impl Warehouse for Postgres {
    fn adapter_type(&self) -> &'static str {
        "postgres"
    }

    fn snapshot_time_sql(&self) -> &'static str {
        "now()::timestamp without time zone"
    }

    fn connect(&self) -> Result<Box<dyn Connection>> {
        let mut client =
            self.config.connect(NoTls).map_err(|e| WarehouseError::Connect { target: self.describe(), message: e.to_string() })?;
        let mut setup = String::new();
        if let Some(role) = &self.role {
            setup.push_str(&format!("set role {};", self.quote(role)));
        }
        if let Some(sp) = &self.search_path {
            setup.push_str(&format!("set search_path to {sp};"));
        }
        if !setup.is_empty() {
            client.batch_execute(&setup).map_err(|e| WarehouseError::query(pg_message(&e), &setup))?;
        }
        Ok(Box::new(PgConnection { client }))
    }

    fn describe(&self) -> String {
        format!("postgres://{}@{}:{}/{}", self.user, self.host, self.port, self.database)
    }

    fn create_schema_sql(&self, _database: &str, schema: &str) -> String {
        format!("create schema if not exists {}", self.quote(schema))
    }

    fn regex_match_sql(&self, expr: &str, pattern: &str) -> String {
        format!("cast({expr} as text) ~ {}", crate::literal(&format!("^(?:{pattern})$")))
    }

    fn percentile_sql(&self, expr: &str, fraction: f64) -> String {
        format!("percentile_cont({fraction}) within group (order by {expr})")
    }

    fn count_if_sql(&self, cond: &str) -> String {
        format!("count(*) filter (where {cond})")
    }

    fn type_sql(&self, t: &ColumnType) -> String {
        match t {
            ColumnType::Double => "double precision".into(),
            ColumnType::Varchar => "text".into(),
            ColumnType::Blob => "bytea".into(),
            ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::List(element) if element.is_list_element() => format!("{}[]", self.type_sql(element)),
            // Structs, lists of lists and the like arrive as their text.
            ColumnType::Other(_) | ColumnType::List(_) => "text".into(),
            other => other.to_string(),
        }
    }

    fn row_json_sql(&self, alias: &str) -> String {
        format!("cast(row_to_json({alias}) as text)")
    }

    fn json_object_sql(&self, pairs: &[(String, String)]) -> String {
        let args: Vec<String> = pairs.iter().map(|(k, e)| format!("{}, {e}", literal(k))).collect();
        format!("cast(json_build_object({}) as text)", args.join(", "))
    }

    fn json_field_sql(&self, record: &str, key: &str, t: &ColumnType) -> String {
        let key = literal(key);
        match t {
            ColumnType::Other(_) | ColumnType::Json | ColumnType::List(_) => format!("(cast({record} as jsonb) -> {key})"),
            ColumnType::Varchar => format!("(cast({record} as jsonb) ->> {key})"),
            _ => format!("cast(cast({record} as jsonb) ->> {key} as {})", self.type_sql(t)),
        }
    }

    fn known_target_keys(&self) -> &'static [&'static str] {
        &[
            "type",
            "host",
            "port",
            "user",
            "username",
            "password",
            "pass",
            "dbname",
            "database",
            "schema",
            "threads",
            "keepalives_idle",
            "connect_timeout",
            "retries",
            "search_path",
            "role",
            "sslmode",
            "sslcert",
            "sslkey",
            "sslrootcert",
            "application_name",
        ]
    }
}

struct PgConnection {
    client: Client,
}

/// The server's message, with its detail and hint, rather than the driver's wrapper text.
pub fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!("\nDETAIL: {d}"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("\nHINT: {h}"));
            }
            m
        }
        None => e.to_string(),
    }
}

impl Connection for PgConnection {
    fn execute(&mut self, sql: &str) -> Result<u64> {
        let msgs = self.client.simple_query(sql).map_err(|e| WarehouseError::query(pg_message(&e), sql))?;
        Ok(msgs.iter().rev().find_map(|m| if let SimpleQueryMessage::CommandComplete(n) = m { Some(*n) } else { None }).unwrap_or(0))
    }

    fn query(&mut self, sql: &str) -> Result<QueryResult> {
        // Types come from preparing the statement; values from the text protocol, which
        // renders every type (numeric, dates, json) the way psql shows it.
        let types: Option<Vec<(String, Type)>> =
            self.client.prepare(sql).ok().map(|s| s.columns().iter().map(|c| (c.name().to_string(), c.type_().clone())).collect());
        let msgs = self.client.simple_query(sql).map_err(|e| WarehouseError::query(pg_message(&e), sql))?;
        let mut columns: Vec<Column> = vec![];
        let mut rows = vec![];
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(desc) if columns.is_empty() => {
                    columns = desc
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let t =
                                types.as_ref().and_then(|t| t.get(i)).map(|(_, t)| t.name().to_string()).unwrap_or_else(|| "text".into());
                            Column::new(c.name(), t)
                        })
                        .collect();
                }
                SimpleQueryMessage::Row(row) => {
                    let mut out = Vec::with_capacity(row.len());
                    for i in 0..row.len() {
                        let t = types.as_ref().and_then(|t| t.get(i)).map(|(_, t)| t.clone()).unwrap_or(Type::TEXT);
                        out.push(match row.get(i) {
                            None => Datum::Null,
                            Some(s) => typed(s, &t),
                        });
                    }
                    rows.push(out);
                }
                _ => {}
            }
        }
        Ok(QueryResult { columns, rows })
    }

    fn list_relations(&mut self, database: &str, schemas: &[String]) -> Result<Vec<(Relation, RelationKind)>> {
        let _ = database;
        let mut sql = "select table_catalog, table_schema, table_name, table_type from information_schema.tables \
                       where table_schema not in ('pg_catalog', 'information_schema')"
            .to_string();
        if !schemas.is_empty() {
            let list: Vec<String> = schemas.iter().map(|s| literal(s)).collect();
            sql.push_str(&format!(" and table_schema in ({})", list.join(", ")));
        }
        crate::duckdb::relations_from(self.query(&sql)?)
    }

    fn columns(&mut self, r: &Relation) -> Result<Vec<Column>> {
        // An array's `data_type` is `ARRAY`; its element type is in `udt_name` (`_int4`).
        let sql = format!(
            "select column_name, case when data_type = 'ARRAY' then format_type((quote_ident(udt_schema) || '.' || quote_ident(udt_name))::regtype, null) else data_type end
             from information_schema.columns where table_schema = {} and table_name = {} order by ordinal_position",
            literal(&r.schema),
            literal(&r.identifier)
        );
        Ok(self.query(&sql)?.rows.into_iter().map(|row| Column::new(row[0].to_string(), row[1].to_string())).collect())
    }

    fn describe_query(&mut self, sql: &str) -> Result<Vec<Column>> {
        let stmt = self.client.prepare(sql).map_err(|e| WarehouseError::query(pg_message(&e), sql))?;
        let mut out = vec![];
        for c in stmt.columns() {
            let name = self.canonical_type(c.type_().name())?;
            out.push(Column::new(c.name(), name));
        }
        Ok(out)
    }

    fn canonical_type(&mut self, declared: &str) -> Result<String> {
        let sql = format!("select format_type({}::regtype, null)", literal(declared));
        Ok(self.query(&sql)?.scalar().map(|d| d.to_string()).unwrap_or_else(|| declared.to_string()))
    }

    fn copy_csv(&mut self, target: &str, columns: &[String], path: &Path, delimiter: char) -> Result<u64> {
        let cols: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
        let sql = format!(
            "copy {target} ({}) from stdin with (format csv, header true, delimiter {})",
            cols.join(", "),
            literal(&delimiter.to_string())
        );
        let data = std::fs::read(path).map_err(|e| WarehouseError::Io(format!("{}: {e}", path.display())))?;
        let mut writer = self.client.copy_in(&sql).map_err(|e| WarehouseError::query(pg_message(&e), &sql))?;
        writer.write_all(&data).map_err(|e| WarehouseError::query(e.to_string(), &sql))?;
        writer.finish().map_err(|e| WarehouseError::query(pg_message(&e), &sql))
    }

    fn server_version(&mut self) -> Result<String> {
        Ok(self.query("select version()")?.scalar().map(|d| d.to_string()).unwrap_or_default())
    }

    /// `COPY ... FROM STDIN (FORMAT binary)`, the batches encoded by `pgpq`: the server
    /// parses no text, and the encoding is a copy of the values a megabyte at a time.
    fn copy_in_batches(&mut self, target: &Relation, feed: &mut BatchFeed<'_>) -> Result<u64> {
        let sql = format!(
            "copy {}.{}.{} from stdin with (format binary)",
            quoted(&target.database),
            quoted(&target.schema),
            quoted(&target.identifier)
        );
        let mut writer = self.client.copy_in(&sql).map_err(|e| WarehouseError::query(pg_message(&e), &sql))?;
        let mut encoder: Option<ArrowToPostgresBinaryEncoder> = None;
        let mut buf = BytesMut::with_capacity(1 << 21);
        let encoding = |e: &dyn std::fmt::Display| WarehouseError::query(format!("cannot encode the rows for PostgreSQL: {e}"), &sql);
        let sending = |e: std::io::Error| WarehouseError::query(e.to_string(), &sql);
        feed(&mut |batch| {
            let batch = &for_pgpq(batch).map_err(|e| encoding(&e))?;
            let enc = match &mut encoder {
                Some(enc) => enc,
                None => {
                    let mut enc = ArrowToPostgresBinaryEncoder::try_new(&batch.schema()).map_err(|e| encoding(&e))?;
                    enc.write_header(&mut buf);
                    encoder.insert(enc)
                }
            };
            enc.write_batch(batch, &mut buf).map_err(|e| encoding(&e))?;
            if buf.len() >= 1 << 20 {
                writer.write_all(&buf).map_err(sending)?;
                buf.clear();
            }
            Ok(())
        })?;
        // No batch at all: an empty copy is a header and the trailer, whatever the columns.
        let mut enc = match encoder {
            Some(enc) => enc,
            None => {
                let mut enc = ArrowToPostgresBinaryEncoder::try_new(&Schema::empty()).map_err(|e| encoding(&e))?;
                enc.write_header(&mut buf);
                enc
            }
        };
        enc.write_footer(&mut buf).map_err(|e| encoding(&e))?;
        writer.write_all(&buf).map_err(sending)?;
        writer.finish().map_err(|e| WarehouseError::query(pg_message(&e), &sql))
    }
}

/// `batch` with the columns pgpq has no encoder for as the bytes PostgreSQL's binary `COPY`
/// reads for them: binary `COPY` carries each value's bytes alone, so a UUID's 16 bytes go as
/// variable-size binary, and an interval as microseconds, days and months.
fn for_pgpq(batch: &RecordBatch) -> std::result::Result<Cow<'_, RecordBatch>, ArrowError> {
    let foreign = |f: &Field| matches!(f.data_type(), DataType::FixedSizeBinary(_) | DataType::Interval(IntervalUnit::MonthDayNano));
    if !batch.schema().fields().iter().any(|f| foreign(f)) {
        return Ok(Cow::Borrowed(batch));
    }
    let mut fields = vec![];
    let mut columns = vec![];
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if !foreign(f) {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
            continue;
        }
        fields.push(Field::new(f.name(), DataType::Binary, true));
        columns.push(match c.as_primitive_opt::<IntervalMonthDayNanoType>() {
            Some(intervals) => Arc::new(
                intervals
                    .iter()
                    .map(|v| {
                        v.map(|v| {
                            let mut bytes = [0u8; 16];
                            bytes[..8].copy_from_slice(&(v.nanoseconds / 1000).to_be_bytes());
                            bytes[8..12].copy_from_slice(&v.days.to_be_bytes());
                            bytes[12..].copy_from_slice(&v.months.to_be_bytes());
                            bytes
                        })
                    })
                    .collect::<BinaryArray>(),
            ),
            None => cast(c, &DataType::Binary)?,
        });
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map(Cow::Owned)
}

fn typed(s: &str, t: &Type) -> Datum {
    match *t {
        Type::BOOL => Datum::Bool(s == "t"),
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => s.parse().map(Datum::Int).unwrap_or_else(|_| Datum::Text(s.into())),
        Type::FLOAT4 | Type::FLOAT8 => s.parse().map(Datum::Float).unwrap_or_else(|_| Datum::Text(s.into())),
        _ => Datum::Text(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Map<String, J> {
        serde_json::json!({"type": "postgres", "host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn missing_user_is_a_config_error() {
        let mut f = fields();
        f.remove("user");
        let e = Postgres::from_fields(&f).err().unwrap().to_string();
        assert!(e.contains("'user' is required"), "{e}");
    }

    #[test]
    fn queries_the_real_server_with_types() {
        let pg = Postgres::from_fields(&fields()).unwrap();
        let mut c = pg.connect().unwrap();
        let r =
            c.query("select 1::int as a, 'x'::text as b, 1.5::float8 as c, null::int as d, true as e, 2.50::numeric(5,2) as f").unwrap();
        assert_eq!(
            r.rows[0],
            vec![Datum::Int(1), Datum::Text("x".into()), Datum::Float(1.5), Datum::Null, Datum::Bool(true), Datum::Text("2.50".into())]
        );
        assert_eq!(c.canonical_type("int").unwrap(), "integer");
        assert_eq!(c.canonical_type("varchar").unwrap(), "character varying");
    }
}
