//! MySQL and MariaDB sources: a table or a query, streamed row by row over the text protocol
//! and decoded into Arrow record batches for the destination's binary bulk path, with the
//! column types read from the result's metadata.
//!
//! MySQL accepts values no other engine does (`0000-00-00` dates, `TIME` past 24 hours);
//! a row holding one is kept in `_weir_rejected` with the reason rather than loaded wrong.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use mysql::consts::{ColumnFlags, ColumnType as My};
use mysql::prelude::Queryable;
use weir_core::ColumnType;
use weir_store::redact;
use weir_warehouse::RecordBatch;
use weir_warehouse::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use weir_warehouse::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::files::Rejected;
use weir_warehouse::batches::{self, BATCH_ROWS, Decoded, ReadError, days, decimal, time_of_day};

/// An open connection to the source, its session set to UTC.
pub struct MysqlSource {
    conn: mysql::Conn,
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
        Ok(MysqlSource { conn })
    }

    /// The columns a query returns, with their types, without reading its rows.
    pub fn columns(&mut self, query: &str) -> Result<Vec<(String, ColumnType)>, String> {
        let sql = format!("select * from ({query}) as _weir_source limit 0");
        let result = self.conn.query_iter(&sql).map_err(|e| format!("{e}\n  in: {query}"))?;
        let columns = result.columns();
        Ok(columns.as_ref().iter().map(|c| (c.name_str().into_owned(), column_type(c))).collect())
    }

    /// Streams a query's rows to `emit` as record batches, decoded on a thread of their own
    /// ahead of it ([`batches::ahead`]); `tell` hears the rows and bytes read so far. `key`
    /// names the columns that identify a rejected row in its position (the primary key), when
    /// there is one. Returns the rows that hold a value no other engine takes.
    pub fn read(
        &mut self,
        sql: &str,
        key: &[String],
        tell: &mut dyn FnMut(u64, u64),
        emit: &mut dyn FnMut(&RecordBatch) -> weir_warehouse::Result<()>,
    ) -> Result<Vec<Rejected>, ReadError> {
        batches::ahead(|sender| self.decode(sql, key, sender), tell, emit).map(|(_, rejected)| rejected)
    }

    /// The decoding side of [`MysqlSource::read`]: sends batches until the rows end, something
    /// fails or the receiver is gone. Returns the rows and bytes read and the rejected rows.
    fn decode(&mut self, sql: &str, key: &[String], sender: &SyncSender<Decoded>) -> Result<(u64, u64, Vec<Rejected>), ReadError> {
        let mut result = self.conn.query_iter(sql).map_err(|e| ReadError::Start(e.to_string()))?;
        let columns: Vec<mysql::Column> = result.columns().as_ref().to_vec();
        let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
        let cells: Vec<Cell> = columns.iter().map(cell).collect();
        let schema: SchemaRef =
            Arc::new(Schema::new(names.iter().zip(&cells).map(|(n, c)| Field::new(n, c.data_type(), true)).collect::<Vec<_>>()));
        let key_at: Vec<usize> = key.iter().filter_map(|k| names.iter().position(|n| n.eq_ignore_ascii_case(k))).collect();
        let mut batch = Batch::new(&cells);
        let mut rejected = vec![];
        let (mut read, mut bytes) = (0u64, 0u64);
        let mut parsed: Vec<Parsed> = Vec::with_capacity(cells.len());
        let Some(set) = result.iter() else { return Ok((0, 0, rejected)) };
        for row in set {
            let row = row.map_err(|e| ReadError::Lost { rows: read, message: e.to_string() })?;
            read += 1;
            let values = row.unwrap();
            parsed.clear();
            let mut problem = None;
            for (i, value) in values.iter().enumerate() {
                let raw = match value {
                    mysql::Value::NULL => None,
                    mysql::Value::Bytes(b) => Some(b.as_slice()),
                    // The text protocol sends every value as bytes; anything else is shown.
                    other => {
                        problem = Some(format!("value of {} {} arrived in binary form", names[i], other.as_sql(true)));
                        break;
                    }
                };
                bytes += raw.map_or(0, |b| b.len() as u64);
                match raw.map(|b| cells[i].parse(b)).transpose() {
                    Ok(v) => parsed.push(v.unwrap_or(Parsed::Null)),
                    Err(why) => {
                        problem = Some(format!("value of {} {why}", names[i]));
                        break;
                    }
                }
            }
            match problem {
                None => batch.push(&parsed, &values),
                Some(reason) => rejected.push(reject(read, &names, &values, &key_at, reason)),
            }
            if batch.rows == BATCH_ROWS && sender.send((batch.finish(&schema)?, read, bytes)).is_err() {
                // The destination stopped; its error is the one to report.
                return Ok((read, bytes, rejected));
            }
        }
        if batch.rows > 0 {
            let _ = sender.send((batch.finish(&schema)?, read, bytes));
        }
        Ok((read, bytes, rejected))
    }
}

/// How a result column crosses: the Arrow column it becomes, which is the binary form of the
/// stage column its [`column_type`] makes.
#[derive(Clone, Copy)]
enum Cell {
    /// `tinyint(1)`, MySQL's `boolean`: 0 or 1.
    Bool,
    Int32,
    Int64,
    /// `BIT(n)`: big-endian bytes, as a number.
    Bit,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Double,
    Text,
    /// Binary strings and blobs, as hex text: the destinations read text.
    Hex,
    Date,
    Timestamp,
    Time,
}

/// A value decoded from its text, before the row it belongs to is known to be whole.
#[derive(Debug)]
enum Parsed {
    Null,
    Bool(bool),
    Int(i64),
    Decimal(i128),
    Double(f64),
    /// The text as it arrived (checked to be UTF-8).
    Text,
    Hex,
    Days(i32),
    Micros(i64),
}

fn cell(c: &mysql::Column) -> Cell {
    if c.column_type() == My::MYSQL_TYPE_BIT {
        return Cell::Bit;
    }
    if is_binary(c) {
        return Cell::Hex;
    }
    match column_type(c) {
        ColumnType::Boolean => Cell::Bool,
        ColumnType::Integer => Cell::Int32,
        ColumnType::BigInt => Cell::Int64,
        ColumnType::Decimal { precision, scale } => Cell::Decimal { precision, scale },
        ColumnType::Double => Cell::Double,
        ColumnType::Date => Cell::Date,
        ColumnType::Timestamp => Cell::Timestamp,
        ColumnType::Time => Cell::Time,
        _ => Cell::Text,
    }
}

impl Cell {
    fn data_type(self) -> DataType {
        match self {
            Cell::Bool => DataType::Boolean,
            Cell::Int32 => DataType::Int32,
            Cell::Int64 | Cell::Bit => DataType::Int64,
            Cell::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
            Cell::Double => DataType::Float64,
            Cell::Text | Cell::Hex => DataType::Utf8,
            Cell::Date => DataType::Date32,
            Cell::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Cell::Time => DataType::Time64(TimeUnit::Microsecond),
        }
    }

    /// Decodes a value's text, or says why it cannot be loaded as the column's type.
    fn parse(self, raw: &[u8]) -> Result<Parsed, String> {
        let text = match self {
            Cell::Bit => {
                let bits = bit_value(raw);
                return i64::try_from(bits).map(Parsed::Int).map_err(|_| format!("{bits} does not fit a bigint"));
            }
            Cell::Hex => return Ok(Parsed::Hex),
            _ => std::str::from_utf8(raw).map_err(|e| format!("is not UTF-8 text ({e})"))?,
        };
        let not = |what: &str| format!("'{text}' is not {what}");
        Ok(match self {
            Cell::Bool => match text {
                "0" => Parsed::Bool(false),
                "1" => Parsed::Bool(true),
                _ => return Err(format!("'{text}' is not 0 or 1 (tinyint(1) is MySQL's boolean and loads as one)")),
            },
            Cell::Int32 => Parsed::Int(i64::from(text.parse::<i32>().map_err(|_| not("an integer"))?)),
            Cell::Int64 => Parsed::Int(text.parse::<i64>().map_err(|_| not("a bigint"))?),
            Cell::Decimal { precision, scale } => Parsed::Decimal(decimal(text, precision, scale)?),
            Cell::Double => Parsed::Double(text.parse::<f64>().map_err(|_| not("a number"))?),
            Cell::Date => Parsed::Days(days(text).ok_or_else(|| not("a valid date"))?),
            Cell::Timestamp => {
                let micros = text.split_once(' ').and_then(|(d, t)| Some(i64::from(days(d)?) * 86_400_000_000 + time_of_day(t)?));
                Parsed::Micros(micros.ok_or_else(|| not("a valid date"))?)
            }
            Cell::Time => {
                Parsed::Micros(time_of_day(text).ok_or_else(|| not("a time of day (MySQL TIME may exceed 24 hours or be negative)"))?)
            }
            // Bit and Hex were answered above, without reading text.
            Cell::Text | Cell::Bit | Cell::Hex => Parsed::Text,
        })
    }
}

/// The Arrow builders of one batch, a column each.
struct Batch {
    columns: Vec<Builder>,
    rows: usize,
}

enum Builder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Decimal(Decimal128Builder),
    Double(Float64Builder),
    Text(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl Batch {
    fn new(cells: &[Cell]) -> Batch {
        let columns = cells
            .iter()
            .map(|c| match *c {
                Cell::Bool => Builder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
                Cell::Int32 => Builder::Int32(Int32Builder::with_capacity(BATCH_ROWS)),
                Cell::Int64 | Cell::Bit => Builder::Int64(Int64Builder::with_capacity(BATCH_ROWS)),
                Cell::Decimal { precision, scale } => Builder::Decimal(
                    Decimal128Builder::with_capacity(BATCH_ROWS).with_data_type(DataType::Decimal128(precision, scale as i8)),
                ),
                Cell::Double => Builder::Double(Float64Builder::with_capacity(BATCH_ROWS)),
                Cell::Text | Cell::Hex => Builder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)),
                Cell::Date => Builder::Date(Date32Builder::with_capacity(BATCH_ROWS)),
                Cell::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS)),
                Cell::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(BATCH_ROWS)),
            })
            .collect();
        Batch { columns, rows: 0 }
    }

    /// Appends a row whose every value decoded; `values` holds the texts [`Parsed::Text`] and
    /// [`Parsed::Hex`] stand for.
    fn push(&mut self, parsed: &[Parsed], values: &[mysql::Value]) {
        for (i, (builder, value)) in self.columns.iter_mut().zip(parsed).enumerate() {
            let raw = || match &values[i] {
                mysql::Value::Bytes(b) => b.as_slice(),
                _ => &[],
            };
            match (builder, value) {
                (Builder::Bool(b), Parsed::Bool(v)) => b.append_value(*v),
                (Builder::Int32(b), Parsed::Int(v)) => b.append_value(*v as i32),
                (Builder::Int64(b), Parsed::Int(v)) => b.append_value(*v),
                (Builder::Decimal(b), Parsed::Decimal(v)) => b.append_value(*v),
                (Builder::Double(b), Parsed::Double(v)) => b.append_value(*v),
                // Checked to be UTF-8 when parsed.
                (Builder::Text(b), Parsed::Text) => b.append_value(String::from_utf8_lossy(raw())),
                (Builder::Text(b), Parsed::Hex) => b.append_value(hex(raw())),
                (Builder::Date(b), Parsed::Days(v)) => b.append_value(*v),
                (Builder::Timestamp(b), Parsed::Micros(v)) => b.append_value(*v),
                (Builder::Time(b), Parsed::Micros(v)) => b.append_value(*v),
                (b, _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ReadError> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| ReadError::Value(e.to_string()))
    }
}

impl Builder {
    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Double(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// Weir's type for a result column, from MySQL's wire type, flags and length.
fn column_type(c: &mysql::Column) -> ColumnType {
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    match c.column_type() {
        // `boolean` in MySQL is `tinyint(1)`: the display width is all that tells them apart.
        My::MYSQL_TYPE_TINY if c.column_length() == 1 => ColumnType::Boolean,
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

fn reject(n: u64, names: &[String], values: &[mysql::Value], key_at: &[usize], reason: String) -> Rejected {
    let text = |v: &mysql::Value| match v {
        mysql::Value::NULL => serde_json::Value::Null,
        mysql::Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        other => serde_json::Value::String(other.as_sql(true)),
    };
    let raw: serde_json::Map<String, serde_json::Value> = names.iter().cloned().zip(values.iter().map(text)).collect();
    let mut position = format!("row {n}");
    if !key_at.is_empty() {
        let shown = |v: &mysql::Value| match text(v) {
            serde_json::Value::String(s) => s,
            _ => "null".into(),
        };
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
    weir_core::duration::parse_interval(lookback).map(|(n, unit)| format!("interval {n} {unit}"))
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
        assert_eq!(bit_value(&[1, 2]), 258);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }

    #[test]
    fn values_decode_from_their_text_or_say_why_not() {
        let ok = |c: Cell, t: &str| c.parse(t.as_bytes()).map_err(|e| e.to_string());
        assert!(matches!(ok(Cell::Date, "1970-01-02"), Ok(Parsed::Days(1))));
        assert!(ok(Cell::Date, "0000-00-00").unwrap_err().contains("'0000-00-00' is not a valid date"));
        assert!(ok(Cell::Timestamp, "2024-02-30 10:00:00").is_err());
        assert!(matches!(ok(Cell::Timestamp, "1970-01-01 00:00:01.5"), Ok(Parsed::Micros(1_500_000))));
        assert!(matches!(ok(Cell::Time, "00:01:00.25"), Ok(Parsed::Micros(60_250_000))));
        assert!(matches!(ok(Cell::Timestamp, "1969-12-31 23:59:59.000001"), Ok(Parsed::Micros(-999_999))));
        assert!(matches!(ok(Cell::Date, "2024-02-29"), Ok(Parsed::Days(19_782))));
        assert!(ok(Cell::Time, "838:59:59").unwrap_err().contains("exceed 24 hours"));
        for bad in ["-01:00:00", "24:00:00", "12:60:00", "12:00:00.", "12:00:00.1234567", "1:00:00"] {
            assert!(ok(Cell::Time, bad).is_err(), "{bad}");
        }
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "2024-01-01x", "2024-01-01 10:00"] {
            assert!(ok(Cell::Date, bad).is_err(), "{bad}");
            assert!(ok(Cell::Timestamp, &format!("{bad} 00:00:00")).is_err(), "{bad}");
        }
        assert!(matches!(ok(Cell::Int32, "-5"), Ok(Parsed::Int(-5))));
        assert!(ok(Cell::Int32, "4294967295").is_err(), "an integer column holds 32 bits");
        assert!(matches!(Cell::Bit.parse(&[1, 2]), Ok(Parsed::Int(258))));
        assert!(Cell::Bit.parse(&[0xff; 8]).is_err(), "BIT(64) past a bigint");
        assert!(Cell::Text.parse(&[0xff]).unwrap_err().contains("UTF-8"));
        assert!(matches!(Cell::Hex.parse(&[0xff]), Ok(Parsed::Hex)));
    }

    #[test]
    fn decimals_scale_and_round_like_the_engines() {
        assert_eq!(decimal("1.50", 8, 2), Ok(150));
        assert_eq!(decimal("-0.005", 8, 2), Ok(-1));
        assert_eq!(decimal("7", 8, 2), Ok(700));
        assert_eq!(decimal("18446744073709551615", 20, 0), Ok(18_446_744_073_709_551_615));
        assert_eq!(decimal(".5", 4, 1), Ok(5));
        assert!(decimal("1000000.00", 8, 2).unwrap_err().contains("does not fit decimal(8,2)"));
        assert!(decimal("1e5", 8, 2).is_err());
        assert!(decimal("-", 8, 2).is_err());
    }
}
