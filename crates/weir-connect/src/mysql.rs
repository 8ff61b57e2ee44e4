//! MySQL and MariaDB sources: a table or a query, streamed row by row over the text protocol
//! into a [`Spool`], with the column types read from the result's metadata.
//!
//! MySQL accepts values no other engine does (`0000-00-00` dates, `TIME` past 24 hours);
//! a row holding one is kept in `_weir_rejected` with the reason rather than loaded wrong.

use mysql::consts::{ColumnFlags, ColumnType as My};
use mysql::prelude::Queryable;
use weir_core::ColumnType;
use weir_store::redact;

use crate::files::Rejected;
use crate::spool::Spool;

/// An open connection to the source, its session set to UTC.
pub struct MysqlSource {
    conn: mysql::Conn,
    url: String,
}

/// What one extraction read.
pub struct Extraction {
    pub spool: Spool,
    pub rejected: Vec<Rejected>,
}

impl MysqlSource {
    /// Connects; `mariadb://` URLs are accepted as `mysql://` ones.
    pub fn connect(url: &str) -> Result<MysqlSource, String> {
        let normal = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let opts = mysql::Opts::from_url(&normal).map_err(|e| format!("invalid MySQL URL {}: {e}", redact(url)))?;
        // The driver would switch a loopback TCP address to the server's Unix socket, which,
        // behind an SSH tunnel or a proxy on 127.0.0.1, is another server: connect where the
        // URL says unless it asks for the socket (`?prefer_socket=true`).
        let asked = normal.contains("prefer_socket=true");
        let opts: mysql::Opts = mysql::OptsBuilder::from_opts(opts).prefer_socket(asked).into();
        let mut conn = mysql::Conn::new(opts).map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
        // TIMESTAMP columns leave the source in UTC, whatever the server's zone.
        conn.query_drop("set time_zone = '+00:00'").map_err(|e| format!("{}: {e}", redact(url)))?;
        Ok(MysqlSource { conn, url: url.to_string() })
    }

    /// The columns a query returns, with their types, without reading its rows.
    pub fn columns(&mut self, query: &str) -> Result<Vec<(String, ColumnType)>, String> {
        let sql = format!("select * from ({query}) as _weir_source limit 0");
        let result = self.conn.query_iter(&sql).map_err(|e| format!("{e}\n  in: {query}"))?;
        let columns = result.columns();
        Ok(columns.as_ref().iter().map(|c| (c.name_str().into_owned(), column_type(c))).collect())
    }

    /// Streams a query's rows into a spool. `key` names the columns that identify a rejected
    /// row in its position (the primary key), when there is one; `progress` hears (rows,
    /// bytes) as they come.
    pub fn extract(&mut self, sql: &str, key: &[String], progress: &dyn Fn(u64, u64)) -> Result<Extraction, String> {
        let url = redact(&self.url);
        let mut result = self.conn.query_iter(sql).map_err(|e| format!("{e}\n  in: {sql}"))?;
        let columns: Vec<mysql::Column> = result.columns().as_ref().to_vec();
        let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
        let types: Vec<ColumnType> = columns.iter().map(column_type).collect();
        let bits: Vec<bool> = columns.iter().map(|c| c.column_type() == My::MYSQL_TYPE_BIT).collect();
        let binary: Vec<bool> = columns.iter().map(is_binary).collect();
        let key_at: Vec<usize> = key.iter().filter_map(|k| names.iter().position(|n| n.eq_ignore_ascii_case(k))).collect();
        let mut spool = Spool::new(&names).map_err(|e| format!("cannot spool rows: {e}"))?;
        let mut rejected = vec![];
        let mut read: u64 = 0;
        let mut converted: Vec<Option<Vec<u8>>> = Vec::with_capacity(names.len());
        let Some(set) = result.iter() else { return Ok(Extraction { spool, rejected }) };
        for row in set {
            let row = row.map_err(|e| format!("lost the source {url} after {read} rows: {e}"))?;
            read += 1;
            converted.clear();
            let mut problem = None;
            for (i, value) in row.unwrap().into_iter().enumerate() {
                let bytes = match value {
                    mysql::Value::NULL => None,
                    mysql::Value::Bytes(b) => Some(b),
                    other => Some(other.as_sql(true).into_bytes()),
                };
                let bytes = match bytes {
                    Some(b) if bits[i] => Some(bit_value(&b).to_string().into_bytes()),
                    Some(b) if binary[i] => Some(hex(&b).into_bytes()),
                    other => other,
                };
                if problem.is_none()
                    && let Some(b) = &bytes
                {
                    problem = invalid_value(&types[i], b).map(|why| format!("value of {} {why}", names[i]));
                }
                converted.push(bytes);
            }
            match problem {
                None => spool.row(converted.iter().map(|v| v.as_deref())).map_err(|e| format!("cannot spool rows: {e}"))?,
                Some(reason) => rejected.push(reject(read, &names, &converted, &key_at, reason)),
            }
            if read.is_multiple_of(50_000) {
                progress(read, spool.bytes);
            }
        }
        progress(read, spool.bytes);
        Ok(Extraction { spool, rejected })
    }
}

/// Weir's type for a result column, from MySQL's wire type, flags and length.
fn column_type(c: &mysql::Column) -> ColumnType {
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    match c.column_type() {
        My::MYSQL_TYPE_TINY | My::MYSQL_TYPE_SHORT | My::MYSQL_TYPE_INT24 | My::MYSQL_TYPE_YEAR => ColumnType::Integer,
        My::MYSQL_TYPE_LONG if unsigned => ColumnType::BigInt,
        My::MYSQL_TYPE_LONG => ColumnType::Integer,
        My::MYSQL_TYPE_LONGLONG if unsigned => ColumnType::Decimal { precision: 20, scale: 0 },
        My::MYSQL_TYPE_LONGLONG | My::MYSQL_TYPE_BIT => ColumnType::BigInt,
        My::MYSQL_TYPE_FLOAT | My::MYSQL_TYPE_DOUBLE => ColumnType::Double,
        My::MYSQL_TYPE_DECIMAL | My::MYSQL_TYPE_NEWDECIMAL => {
            let scale = c.decimals();
            // The display length counts the sign and the point.
            let precision = c.column_length().saturating_sub(u32::from(scale > 0) + u32::from(!unsigned));
            match u8::try_from(precision) {
                Ok(p) if p <= 38 && p > 0 => ColumnType::Decimal { precision: p, scale },
                // Wider than DuckDB and most engines hold exactly: kept exact, as text.
                _ => ColumnType::Varchar,
            }
        }
        My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => ColumnType::Date,
        My::MYSQL_TYPE_DATETIME | My::MYSQL_TYPE_DATETIME2 | My::MYSQL_TYPE_TIMESTAMP | My::MYSQL_TYPE_TIMESTAMP2 => ColumnType::Timestamp,
        My::MYSQL_TYPE_TIME | My::MYSQL_TYPE_TIME2 => ColumnType::Time,
        My::MYSQL_TYPE_JSON => ColumnType::Json,
        _ => ColumnType::Varchar,
    }
}

/// Binary strings and blobs (charset 63) arrive as hex text: the destinations read text.
fn is_binary(c: &mysql::Column) -> bool {
    c.character_set() == 63
        && matches!(
            c.column_type(),
            My::MYSQL_TYPE_STRING
                | My::MYSQL_TYPE_VAR_STRING
                | My::MYSQL_TYPE_VARCHAR
                | My::MYSQL_TYPE_BLOB
                | My::MYSQL_TYPE_TINY_BLOB
                | My::MYSQL_TYPE_MEDIUM_BLOB
                | My::MYSQL_TYPE_LONG_BLOB
                | My::MYSQL_TYPE_GEOMETRY
        )
}

/// Why a value cannot be loaded as its column's type, for values MySQL allows and others
/// do not.
fn invalid_value(t: &ColumnType, value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    match t {
        ColumnType::Date | ColumnType::Timestamp => {
            let date = text.get(..10).unwrap_or(&text);
            match chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
                Ok(_) => None,
                Err(_) => Some(format!("'{text}' is not a valid date")),
            }
        }
        ColumnType::Time => match chrono::NaiveTime::parse_from_str(&text, "%H:%M:%S%.f") {
            Ok(_) => None,
            Err(_) => Some(format!("'{text}' is not a time of day (MySQL TIME may exceed 24 hours or be negative)")),
        },
        _ => None,
    }
}

fn reject(n: u64, names: &[String], values: &[Option<Vec<u8>>], key_at: &[usize], reason: String) -> Rejected {
    let text = |v: &Option<Vec<u8>>| match v {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    };
    let raw: serde_json::Map<String, serde_json::Value> = names.iter().cloned().zip(values.iter().map(text)).collect();
    let mut position = format!("row {n}");
    if !key_at.is_empty() {
        let shown = |v: &Option<Vec<u8>>| v.as_deref().map(String::from_utf8_lossy).unwrap_or("null".into()).into_owned();
        let key: Vec<String> = key_at.iter().map(|&i| format!("{}={}", names[i], shown(&values[i]))).collect();
        position.push_str(&format!(" ({})", key.join(", ")));
    }
    Rejected { position, raw: serde_json::Value::Object(raw).to_string(), reason }
}

/// A `BIT(n)` value: big-endian bytes.
fn bit_value(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// MySQL's form of a lookback (`2 hours` -> `interval 2 hour`).
pub fn interval_sql(lookback: &str) -> Option<String> {
    let mut parts = lookback.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.to_ascii_lowercase();
    if parts.next().is_some() {
        return None;
    }
    let unit = match unit.trim_end_matches('s') {
        "second" => "second",
        "minute" => "minute",
        "hour" => "hour",
        "day" => "day",
        "week" => "week",
        "month" => "month",
        "year" => "year",
        _ => return None,
    };
    Some(format!("interval {n} {unit}"))
}

/// MySQL's type to cast a cursor literal to.
pub fn cast_type(t: &ColumnType) -> &'static str {
    match t {
        ColumnType::Date => "date",
        ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)",
        ColumnType::Integer | ColumnType::BigInt => "signed",
        ColumnType::Decimal { .. } | ColumnType::Double => "decimal(65,10)",
        _ => "char",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookbacks_and_values() {
        assert_eq!(interval_sql("2 hours").as_deref(), Some("interval 2 hour"));
        assert_eq!(interval_sql("1 day").as_deref(), Some("interval 1 day"));
        assert_eq!(interval_sql("soon"), None);
        assert_eq!(interval_sql("2 fortnights"), None);
        assert!(invalid_value(&ColumnType::Date, b"0000-00-00").is_some());
        assert!(invalid_value(&ColumnType::Timestamp, b"2024-02-30 10:00:00").is_some());
        assert!(invalid_value(&ColumnType::Timestamp, b"2024-02-29 10:00:00.123").is_none());
        assert!(invalid_value(&ColumnType::Time, b"838:59:59").is_some());
        assert_eq!(bit_value(&[1, 2]), 258);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
