//! PostgreSQL's binary `COPY ... TO STDOUT` read as Arrow record batches, for the
//! destinations' binary bulk paths (DuckDB's appender, PostgreSQL's binary `COPY`).
//!
//! In CSV form, the server spends most of an extraction writing numbers, decimals and times
//! as text, and DuckDB spends as long parsing them back. In binary form neither happens:
//! values cross as the server holds them and become Arrow columns here. One-dimensional arrays
//! of those types become Arrow lists, and domains cross as the types they are over. A column of a
//! type with no binary reader here (ranges, network addresses, arrays of other types, ...) is
//! cast to text by the server and crosses as PostgreSQL's own text for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::RecordBatch;
use crate::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder, Float64Builder,
    Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use crate::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, Schema, SchemaRef, TimeUnit};
use crate::postgres::pg_message;
use futures_util::{StreamExt, pin_mut};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{FromSql, Kind as PgKind, Type};
use weir_core::ColumnType;

use crate::batches::{self, BATCH_ROWS, Decoded, ReadError};

/// How each column of a query crosses: its PostgreSQL type and the Arrow column it becomes.
pub struct Plan {
    /// The types as they cross: `text` for a column cast to text.
    types: Vec<Type>,
    kinds: Vec<Kind>,
    schema: SchemaRef,
    /// The stage's columns: the source's, but text for a column that crosses as its text.
    pub stage: Vec<(String, ColumnType)>,
    /// Whether the server casts each column to text.
    as_text: Vec<bool>,
}

impl Plan {
    /// `sql` (the extraction's query) with the columns that cross as text cast to it.
    pub fn select(&self, sql: &str) -> String {
        if !self.as_text.contains(&true) {
            return sql.to_string();
        }
        let columns: Vec<String> = self
            .stage
            .iter()
            .zip(&self.as_text)
            .map(|((name, _), text)| {
                let q = format!("\"{}\"", name.replace('"', "\"\""));
                if *text { format!("cast({q} as text) as {q}") } else { q }
            })
            .collect();
        format!("select {} from ({sql}) as _weir_rows", columns.join(", "))
    }
}

#[derive(Clone)]
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Numeric {
        precision: u8,
        scale: u8,
    },
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Bytea,
    Uuid,
    /// `jsonb`'s binary form: a version byte, then the document's text.
    Jsonb,
    /// Microseconds, days, months.
    Interval,
    /// A one-dimensional array of the element's kind.
    List(Box<Kind>),
}

/// Arrow's name for a UUID column (16 bytes, big-endian), which DuckDB's appender takes as its
/// `UUID`; PostgreSQL's binary `uuid` is the same 16 bytes.
const ARROW_UUID: &str = "arrow.uuid";

/// The binary plan for columns of PostgreSQL types `types` that the stage would receive as
/// `typed`. A column whose type has no binary reader here crosses as its text, into a text
/// column of the stage.
pub fn plan(types: &[Type], typed: &[(String, ColumnType)]) -> Plan {
    let mut plan = Plan { types: vec![], kinds: vec![], schema: Arc::new(Schema::empty()), stage: vec![], as_text: vec![] };
    let mut fields = vec![];
    for (ty, (name, ct)) in types.iter().zip(typed) {
        let twin = binary_twin(ty, ct);
        let as_text = twin.is_none();
        let (kind, data_type, stage) = match twin {
            Some((kind, data_type)) => (kind, data_type, ct.clone()),
            // An engine-specific type is text in the stage already; a known one whose source
            // type has no binary reader here becomes text.
            None => (Kind::Text, DataType::Utf8, if matches!(ct, ColumnType::Other(_)) { ct.clone() } else { ColumnType::Varchar }),
        };
        let field = Field::new(name, data_type, true);
        fields.push(match kind {
            Kind::Uuid => field.with_metadata(HashMap::from([("ARROW:extension:name".to_string(), ARROW_UUID.to_string())])),
            _ => field,
        });
        plan.types.push(if as_text { Type::TEXT } else { ty.clone() });
        plan.kinds.push(kind);
        plan.stage.push((name.clone(), stage));
        plan.as_text.push(as_text);
    }
    plan.schema = Arc::new(Schema::new(fields));
    plan
}

/// How a column of PostgreSQL type `ty`, staged as `ct`, crosses in binary, if it can. A
/// domain's values are in the binary form of the type it is over.
fn binary_twin(ty: &Type, ct: &ColumnType) -> Option<(Kind, DataType)> {
    let ty = undomained(ty);
    // `Type` is compared, not matched: its constants are not patterns.
    let is = |t: &Type| ty == t;
    Some(match ct {
        ColumnType::Boolean if is(&Type::BOOL) => (Kind::Bool, DataType::Boolean),
        ColumnType::Integer if is(&Type::INT2) => (Kind::Int2, DataType::Int32),
        ColumnType::Integer if is(&Type::INT4) => (Kind::Int4, DataType::Int32),
        ColumnType::BigInt if is(&Type::INT8) => (Kind::Int8, DataType::Int64),
        ColumnType::Double if is(&Type::FLOAT4) => (Kind::Float4, DataType::Float64),
        ColumnType::Double if is(&Type::FLOAT8) => (Kind::Float8, DataType::Float64),
        ColumnType::Varchar if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) => (Kind::Text, DataType::Utf8),
        // An enum's binary form is its label; `json`'s is its text.
        ColumnType::Varchar | ColumnType::Other(_) if matches!(ty.kind(), PgKind::Enum(_)) => (Kind::Text, DataType::Utf8),
        ColumnType::Json if is(&Type::JSON) => (Kind::Text, DataType::Utf8),
        ColumnType::Json if is(&Type::JSONB) => (Kind::Jsonb, DataType::Utf8),
        ColumnType::Uuid if is(&Type::UUID) => (Kind::Uuid, DataType::FixedSizeBinary(16)),
        ColumnType::Decimal { precision, scale } if is(&Type::NUMERIC) && *precision <= 38 && scale <= precision => {
            (Kind::Numeric { precision: *precision, scale: *scale }, DataType::Decimal128(*precision, *scale as i8))
        }
        ColumnType::Date if is(&Type::DATE) => (Kind::Date, DataType::Date32),
        ColumnType::Time if is(&Type::TIME) => (Kind::Time, DataType::Time64(TimeUnit::Microsecond)),
        ColumnType::Timestamp if is(&Type::TIMESTAMP) => (Kind::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, None)),
        ColumnType::TimestampTz if is(&Type::TIMESTAMPTZ) => {
            (Kind::TimestampTz, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        }
        ColumnType::Blob if is(&Type::BYTEA) => (Kind::Bytea, DataType::Binary),
        ColumnType::Interval if is(&Type::INTERVAL) => (Kind::Interval, DataType::Interval(IntervalUnit::MonthDayNano)),
        // Both engines hold lists of these, and both bulk paths carry them.
        ColumnType::List(element) if element.is_list_element() => {
            let PgKind::Array(element_type) = ty.kind() else { return None };
            let (kind, data_type) = binary_twin(element_type, element)?;
            (Kind::List(Box::new(kind)), DataType::List(Arc::new(Field::new_list_field(data_type, true))))
        }
        _ => return None,
    })
}

/// The type a domain is over, through domains over domains; any other type as it is.
pub fn undomained(ty: &Type) -> &Type {
    match ty.kind() {
        PgKind::Domain(base) => undomained(base),
        _ => ty,
    }
}

/// Runs `copy` (a `COPY (...) TO STDOUT (FORMAT binary)` of the plan's columns) on a
/// connection of its own, after `setup` (statements run first on that connection: a
/// snapshot's transaction, say; empty for none), decoding ahead of `emit`
/// ([`batches::ahead`]), which gets its rows as record batches; `tell` hears the rows and
/// bytes read so far. Returns the rows read.
pub fn read(
    url: &str,
    setup: &str,
    copy: &str,
    plan: &Plan,
    tell: &mut dyn FnMut(u64, u64),
    emit: &mut dyn FnMut(&RecordBatch) -> crate::Result<()>,
) -> Result<u64, ReadError> {
    batches::ahead(|sender| decode(url, setup, copy, plan, sender).map(|(rows, bytes)| (rows, bytes, ())), tell, emit)
        .map(|(rows, ())| rows)
}

/// The decoding side of [`read`]: reads the copy and sends its batches until the rows end,
/// something fails, or the receiver is gone. Returns the rows and bytes read.
fn decode(url: &str, setup: &str, copy: &str, plan: &Plan, sender: &std::sync::mpsc::SyncSender<Decoded>) -> Result<(u64, u64), ReadError> {
    let start = |e: tokio_postgres::Error| ReadError::Start(pg_message(&e));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ReadError::Start(e.to_string()))?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(start)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        // Times in UTC and ISO dates, as the query's own casts and comparisons expect.
        client.batch_execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'").await.map_err(start)?;
        if !setup.is_empty() {
            client.batch_execute(setup).await.map_err(start)?;
        }
        let stream = client.copy_out(copy).await.map_err(start)?;
        let rows = BinaryCopyOutStream::new(stream, &plan.types);
        pin_mut!(rows);
        let mut batch = Batch::new(plan);
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| ReadError::Lost { rows: n, message: pg_message(&e) })?;
            for (i, kind) in plan.kinds.iter().enumerate() {
                let raw: Option<Raw> = row.try_get(i).map_err(|e| ReadError::Lost { rows: n, message: e.to_string() })?;
                bytes += raw.as_ref().map_or(0, |r| r.0.len() as u64);
                batch.push(i, kind, raw.map(|r| r.0)).map_err(|m| ReadError::Value(format!("{}: {m}", plan.schema.field(i).name())))?;
            }
            n += 1;
            if batch.rows == BATCH_ROWS && sender.send((batch.finish(plan)?, n, bytes)).is_err() {
                // The destination stopped; its error is the one to report.
                return Ok((n, bytes));
            }
        }
        if batch.rows > 0 {
            let _ = sender.send((batch.finish(plan)?, n, bytes));
        }
        Ok((n, bytes))
    })
}

/// A value's bytes as the server sent them; decoding is [`Batch::push`]'s.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The Arrow builders of one batch, a column each.
struct Batch {
    columns: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
}

/// Microseconds and days from PostgreSQL's epoch (2000-01-01) to Arrow's (1970-01-01).
const EPOCH_MICROS: i64 = 946_684_800_000_000;
const EPOCH_DAYS: i32 = 10_957;

impl Batch {
    fn new(plan: &Plan) -> Batch {
        Batch { columns: plan.kinds.iter().map(|k| builder(k, BATCH_ROWS)).collect(), rows: 0 }
    }

    /// Decodes one value of column `i` (PostgreSQL's binary send format) into its builder.
    fn push(&mut self, i: usize, kind: &Kind, raw: Option<&[u8]>) -> Result<(), String> {
        put(self.columns[i].as_mut(), kind, raw)?;
        if i + 1 == self.columns.len() {
            self.rows += 1;
        }
        Ok(())
    }

    fn finish(&mut self, plan: &Plan) -> Result<RecordBatch, ReadError> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(plan.schema.clone(), columns).map_err(|e| ReadError::Value(e.to_string()))
    }
}

/// The Arrow builder for values of `kind`, room made for `rows`.
fn builder(kind: &Kind, rows: usize) -> Box<dyn ArrayBuilder> {
    match kind {
        Kind::Bool => Box::new(BooleanBuilder::with_capacity(rows)),
        Kind::Int2 | Kind::Int4 => Box::new(Int32Builder::with_capacity(rows)),
        Kind::Int8 => Box::new(Int64Builder::with_capacity(rows)),
        Kind::Float4 | Kind::Float8 => Box::new(Float64Builder::with_capacity(rows)),
        Kind::Text | Kind::Jsonb => Box::new(StringBuilder::with_capacity(rows, rows * 16)),
        Kind::Numeric { precision, scale } => {
            Box::new(Decimal128Builder::with_capacity(rows).with_data_type(DataType::Decimal128(*precision, *scale as i8)))
        }
        Kind::Date => Box::new(Date32Builder::with_capacity(rows)),
        Kind::Time => Box::new(Time64MicrosecondBuilder::with_capacity(rows)),
        Kind::Timestamp => Box::new(TimestampMicrosecondBuilder::with_capacity(rows)),
        Kind::TimestampTz => Box::new(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")),
        Kind::Bytea => Box::new(BinaryBuilder::with_capacity(rows, rows * 16)),
        Kind::Uuid => Box::new(FixedSizeBinaryBuilder::with_capacity(rows, 16)),
        Kind::Interval => Box::new(IntervalMonthDayNanoBuilder::with_capacity(rows)),
        // Room for a few elements a list.
        Kind::List(element) => Box::new(ListBuilder::with_capacity(builder(element, rows * 4), rows)),
    }
}

/// Decodes one value of `kind` (PostgreSQL's binary send format) into `b`, made by
/// [`builder`] for that kind.
fn put(b: &mut dyn ArrayBuilder, kind: &Kind, raw: Option<&[u8]>) -> Result<(), String> {
    let b = b.as_any_mut();
    macro_rules! put {
        ($builder:ty, $value:expr) => {{
            let builder = b.downcast_mut::<$builder>().ok_or("internal: a builder of another type")?;
            match raw {
                None => builder.append_null(),
                Some(raw) => builder.append_value($value(raw)?),
            }
        }};
    }
    match kind {
        Kind::Bool => put!(BooleanBuilder, |r: &[u8]| Ok::<_, String>(fixed::<1>(r)?[0] != 0)),
        Kind::Int2 => put!(Int32Builder, |r: &[u8]| Ok::<_, String>(i16::from_be_bytes(fixed(r)?) as i32)),
        Kind::Int4 => put!(Int32Builder, |r: &[u8]| fixed(r).map(i32::from_be_bytes)),
        Kind::Int8 => put!(Int64Builder, |r: &[u8]| fixed(r).map(i64::from_be_bytes)),
        Kind::Float4 => put!(Float64Builder, |r: &[u8]| Ok::<_, String>(f32::from_be_bytes(fixed(r)?) as f64)),
        Kind::Float8 => put!(Float64Builder, |r: &[u8]| fixed(r).map(f64::from_be_bytes)),
        Kind::Text => put!(StringBuilder, utf8),
        Kind::Numeric { precision, scale } => put!(Decimal128Builder, |r: &[u8]| numeric(r, *precision, *scale)),
        Kind::Date => put!(Date32Builder, |r: &[u8]| fixed(r).map(|b| date(i32::from_be_bytes(b)))),
        Kind::Time => put!(Time64MicrosecondBuilder, |r: &[u8]| fixed(r).map(i64::from_be_bytes)),
        Kind::Timestamp | Kind::TimestampTz => {
            put!(TimestampMicrosecondBuilder, |r: &[u8]| fixed(r).map(|b| timestamp(i64::from_be_bytes(b))))
        }
        Kind::Bytea => put!(BinaryBuilder, Ok::<&[u8], String>),
        Kind::Jsonb => put!(StringBuilder, jsonb),
        Kind::Interval => put!(IntervalMonthDayNanoBuilder, interval),
        Kind::Uuid => {
            let builder = b.downcast_mut::<FixedSizeBinaryBuilder>().ok_or("internal: a builder of another type")?;
            match raw {
                None => builder.append_null(),
                Some(raw) => builder.append_value(fixed::<16>(raw)?).map_err(|e| e.to_string())?,
            }
        }
        Kind::List(element) => {
            let builder = b.downcast_mut::<ListBuilder<Box<dyn ArrayBuilder>>>().ok_or("internal: a builder of another type")?;
            match raw {
                None => builder.append_null(),
                Some(raw) => {
                    for value in array_elements(raw)? {
                        put(builder.values().as_mut(), element, value)?;
                    }
                    builder.append(true);
                }
            }
        }
    }
    Ok(())
}

/// The elements of a one-dimensional array in PostgreSQL's binary form: the number of
/// dimensions, a has-nulls flag, the element type, each dimension's length and lower bound,
/// then each element's length (-1 for null) and bytes. An empty array has no dimensions.
/// The lower bound is dropped: a list starts at its first element.
fn array_elements(raw: &[u8]) -> Result<Vec<Option<&[u8]>>, String> {
    let truncated = || "a truncated array".to_string();
    let word = |at: usize| raw.get(at..at + 4).and_then(|w| w.try_into().ok()).map(i32::from_be_bytes).ok_or_else(truncated);
    match word(0)? {
        0 => return Ok(vec![]),
        1 => {}
        n => {
            return Err(format!(
                "a {n}-dimensional array, where a list holds one dimension (to keep it as text, cast the column to text in the load's `query`)"
            ));
        }
    }
    let len = usize::try_from(word(12)?).map_err(|_| truncated())?;
    let mut out = Vec::with_capacity(len);
    let mut at = 20;
    for _ in 0..len {
        let n = word(at)?;
        at += 4;
        match usize::try_from(n) {
            Err(_) => out.push(None),
            Ok(n) => {
                out.push(Some(raw.get(at..at + n).ok_or_else(truncated)?));
                at += n;
            }
        }
    }
    Ok(out)
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("text that is not UTF-8 ({e})"))
}

/// `jsonb`'s binary form is version 1 followed by the document's text; a later version would
/// be another layout, refused rather than guessed at.
fn jsonb(raw: &[u8]) -> Result<&str, String> {
    match raw.split_first() {
        Some((1, text)) => utf8(text),
        Some((v, _)) => Err(format!("a jsonb value of binary version {v} (this reader knows version 1)")),
        None => Err("an empty jsonb value".into()),
    }
}

/// An `interval` in PostgreSQL's binary form: microseconds, days, months.
fn interval(raw: &[u8]) -> Result<IntervalMonthDayNano, String> {
    let raw: [u8; 16] = fixed(raw)?;
    let micros = i64::from_be_bytes([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]]);
    let days = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
    let months = i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
    let nanos = micros
        .checked_mul(1000)
        .ok_or_else(|| format!("an interval's time part of {micros} microseconds is past Arrow's 292 years of nanoseconds"))?;
    Ok(IntervalMonthDayNano::new(months, days, nanos))
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("a value of {} bytes where {N} were expected", raw.len()))
}

/// PostgreSQL's infinite dates and times are the extreme values; DuckDB's are too, but its
/// negative infinity is one above the minimum.
fn date(days: i32) -> i32 {
    match days {
        i32::MAX => i32::MAX,
        i32::MIN => -i32::MAX,
        d => d + EPOCH_DAYS,
    }
}

fn timestamp(micros: i64) -> i64 {
    match micros {
        i64::MAX => i64::MAX,
        i64::MIN => -i64::MAX,
        m => m + EPOCH_MICROS,
    }
}

/// A `numeric` in PostgreSQL's binary form (digit count, weight, sign, display scale, then
/// base-10000 digits) as the unscaled integer of a `decimal(precision, scale)`, rounded half
/// away from zero as DuckDB rounds text cast to a decimal.
fn numeric(raw: &[u8], precision: u8, scale: u8) -> Result<i128, String> {
    let word = |i: usize| u16::from_be_bytes([raw[2 * i], raw[2 * i + 1]]);
    if raw.len() < 8 || raw.len() != 8 + 2 * word(0) as usize {
        return Err("a truncated numeric".into());
    }
    let (ndigits, weight, sign) = (word(0) as usize, word(1) as i16 as i64, word(2));
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(format!("NaN does not fit decimal({precision},{scale})")),
        _ => return Err(format!("an infinite numeric does not fit decimal({precision},{scale})")),
    }
    let too_big = || format!("a numeric too large for decimal({precision},{scale})");
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        acc = acc.checked_mul(10_000).and_then(|a| a.checked_add(i128::from(word(4 + i)))).ok_or_else(too_big)?;
    }
    // `acc` counts units of 10^-(4 * fraction groups); bring it to units of 10^-scale.
    let exponent = 4 * (ndigits as i64 - 1 - weight);
    let shift = scale as i64 - exponent;
    let value = if acc == 0 {
        0
    } else if shift >= 0 {
        u32::try_from(shift).ok().and_then(|s| 10i128.checked_pow(s)).and_then(|p| acc.checked_mul(p)).ok_or_else(too_big)?
    } else {
        match u32::try_from(-shift).ok().and_then(|s| 10i128.checked_pow(s)) {
            // Half away from zero (`acc` is the magnitude): the remainder is at least half.
            Some(p) if acc % p >= p - acc % p => acc / p + 1,
            Some(p) => acc / p,
            None => 0,
        }
    };
    if value >= 10i128.pow(precision as u32) {
        return Err(too_big());
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's binary numeric: digit count, weight, sign, display scale, digits.
    fn pg_numeric(weight: i16, negative: bool, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = vec![];
        for w in [digits.len() as u16, weight as u16, if negative { 0x4000 } else { 0 }, dscale] {
            out.extend(w.to_be_bytes());
        }
        digits.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out
    }

    #[test]
    fn numerics_become_decimals_at_the_columns_scale() {
        assert_eq!(numeric(&pg_numeric(0, false, 0, &[]), 12, 2), Ok(0));
        assert_eq!(numeric(&pg_numeric(0, false, 1, &[1, 5000]), 12, 2), Ok(150));
        assert_eq!(numeric(&pg_numeric(0, true, 2, &[123, 4500]), 12, 2), Ok(-12345));
        // 10000 and 123,456,789: trailing groups of zeros are left out.
        assert_eq!(numeric(&pg_numeric(1, false, 0, &[1]), 12, 2), Ok(1_000_000));
        assert_eq!(numeric(&pg_numeric(2, false, 0, &[1, 2345, 6789]), 12, 0), Ok(123_456_789));
        // 0.0001 at scale 2 rounds to 0; 0.005 to 0.01, and -0.005 to -0.01.
        assert_eq!(numeric(&pg_numeric(-1, false, 4, &[1]), 12, 2), Ok(0));
        assert_eq!(numeric(&pg_numeric(-1, false, 3, &[50]), 12, 2), Ok(1));
        assert_eq!(numeric(&pg_numeric(-1, true, 3, &[50]), 12, 2), Ok(-1));
        // 38 digits fit decimal(38,0); a 39th does not.
        let big: Vec<u16> = std::iter::once(99).chain(std::iter::repeat_n(9999, 9)).collect();
        assert_eq!(numeric(&pg_numeric(9, false, 0, &big), 38, 0), Ok(10i128.pow(38) - 1));
        assert!(numeric(&pg_numeric(9, false, 0, &[999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999]), 38, 0).is_err());
        assert!(numeric(&pg_numeric(1, false, 0, &[1]), 4, 0).unwrap_err().contains("too large for decimal(4,0)"));
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(numeric(&nan, 10, 2).unwrap_err().contains("NaN"));
        assert!(numeric(&[0, 1], 10, 2).is_err(), "truncated");
    }

    #[test]
    fn times_move_to_arrows_epoch_and_keep_their_infinities() {
        assert_eq!(timestamp(0), EPOCH_MICROS);
        assert_eq!(timestamp(i64::MAX), i64::MAX);
        assert_eq!(timestamp(i64::MIN), -i64::MAX);
        assert_eq!(date(-EPOCH_DAYS), 0);
        assert_eq!(date(i32::MIN), -i32::MAX);
    }

    /// The shared server's `test` database.
    const PG: &str = "postgresql://postgres@127.0.0.1:5432/test";

    #[test]
    fn batches_reach_the_destination_in_order_and_a_refusal_stops_the_reader() {
        let plan = plan(&[Type::INT8], &[("g".to_string(), ColumnType::BigInt)]);
        let copy = "copy (select g from generate_series(1::bigint, 200000) g) to stdout (format binary)";
        let (mut told, mut seen) = (vec![], vec![]);
        let rows = read(PG, "", copy, &plan, &mut |n, _| told.push(n), &mut |b| {
            let g = b.column(0).as_any().downcast_ref::<crate::arrow::array::Int64Array>().unwrap();
            seen.push((g.value(0), b.num_rows()));
            Ok(())
        });
        assert_eq!(rows.ok(), Some(200_000));
        assert_eq!(seen, vec![(1, 65_536), (65_537, 65_536), (131_073, 65_536), (196_609, 3_392)]);
        assert_eq!(told.last(), Some(&200_000));

        // The destination refuses the second batch: its error comes back, nothing hangs.
        let mut batches = 0;
        let refused = read(PG, "", copy, &plan, &mut |_, _| {}, &mut |_| {
            batches += 1;
            if batches == 2 { Err(crate::WarehouseError::query("refused".to_string(), "append")) } else { Ok(()) }
        });
        assert!(matches!(refused, Err(ReadError::Sink(_))));
        assert_eq!(batches, 2);

        let bad = read(PG, "", "copy (select * from no_such_table) to stdout (format binary)", &plan, &mut |_, _| {}, &mut |_| Ok(()));
        assert!(matches!(bad, Err(ReadError::Start(m)) if m.contains("no_such_table")));
    }

    #[test]
    fn types_without_a_binary_reader_cross_as_their_text() {
        let typed = |t: ColumnType| vec![("c".to_string(), t)];
        let text = |p: &Plan| p.as_text[0];
        assert!(!text(&plan(&[Type::INT4], &typed(ColumnType::Integer))));
        assert!(!text(&plan(&[Type::NUMERIC], &typed(ColumnType::Decimal { precision: 12, scale: 2 }))));
        assert!(!text(&plan(&[Type::UUID], &typed(ColumnType::Uuid))));
        assert!(!text(&plan(&[Type::JSONB], &typed(ColumnType::Json))));
        let mood = Type::new("mood".into(), 90_001, PgKind::Enum(vec!["ok".into()]), "public".into());
        assert!(!text(&plan(&[mood], &typed(ColumnType::Other("mood".into())))), "an enum goes as its label");

        let array = plan(
            &[Type::INT8, Type::INT4_ARRAY],
            &[("id".into(), ColumnType::BigInt), ("a \"b\"".into(), ColumnType::Other("integer[]".into()))],
        );
        assert_eq!(array.as_text, [false, true]);
        let list = |t: ColumnType| ColumnType::List(Box::new(t));
        assert!(!text(&plan(&[Type::INT4_ARRAY], &typed(list(ColumnType::Integer)))), "a list of integers");
        assert!(text(&plan(&[Type::UUID_ARRAY], &typed(list(ColumnType::Uuid)))), "a list of UUIDs goes as text");
        assert!(text(&plan(&[Type::INT4], &typed(list(ColumnType::Integer)))), "not an array at the source");
        assert_eq!(array.types[1], Type::TEXT);
        assert_eq!(array.select("q"), r#"select "id", cast("a ""b""" as text) as "a ""b""" from (q) as _weir_rows"#);
        assert_eq!(plan(&[Type::INT4], &typed(ColumnType::Integer)).select("q"), "q", "nothing cast, nothing wrapped");
        // A type the stage would hold as something else (a domain named `uuid`): text.
        let domain = Type::new("uuid".into(), 90_002, PgKind::Domain(Type::TEXT), "app".into());
        let p = plan(&[domain], &typed(ColumnType::Uuid));
        assert!(text(&p));
        assert_eq!(p.stage[0].1, ColumnType::Varchar);
        assert!(text(&plan(&[Type::INT4], &typed(ColumnType::BigInt))), "the stage's type decides");
    }

    #[test]
    fn uuids_and_json_cross_as_their_bytes_and_text() {
        let plan = plan(
            &[Type::UUID, Type::JSONB, Type::JSON, Type::INTERVAL],
            &[
                ("u".to_string(), ColumnType::Uuid),
                ("b".to_string(), ColumnType::Json),
                ("j".to_string(), ColumnType::Json),
                ("i".to_string(), ColumnType::Interval),
            ],
        );
        assert_eq!(plan.schema.field(0).extension_type_name(), Some(ARROW_UUID));
        let copy = "copy (select '0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70'::uuid, '{\"b\": 1,  \"a\": [true]}'::jsonb, '{\"b\": 1,  \"a\": [true]}'::json,
                      interval '1 year 2 mons 3 days 04:05:06.789' union all select null, null, null, null) to stdout (format binary)";
        let seen = batches(copy, &plan);
        use crate::arrow::array::{Array, AsArray};
        let b = &seen[0];
        assert_eq!(b.column(0).as_fixed_size_binary().value(0), hex("0b3ad1c46c4e4c1a9f5e2d3c4b5a6f70"));
        assert_eq!(b.column(1).as_string::<i32>().value(0), r#"{"a": [true], "b": 1}"#, "jsonb's text, as the server keeps it");
        assert_eq!(b.column(2).as_string::<i32>().value(0), r#"{"b": 1,  "a": [true]}"#, "json's text, as written");
        let i = b.column(3).as_primitive::<crate::arrow::datatypes::IntervalMonthDayNanoType>().value(0);
        assert_eq!((i.months, i.days, i.nanoseconds), (14, 3, 14_706_789_000_000));
        assert!((0..4).all(|i| b.column(i).is_null(1)));
        assert!(jsonb(&[2, b'1']).unwrap_err().contains("version 2"));
    }

    #[test]
    fn one_dimensional_arrays_become_lists() {
        let list = |t: ColumnType| ColumnType::List(Box::new(t));
        let plan = plan(
            &[Type::INT4_ARRAY, Type::TEXT_ARRAY, Type::NUMERIC_ARRAY],
            &[
                ("n".to_string(), list(ColumnType::Integer)),
                ("t".to_string(), list(ColumnType::Varchar)),
                ("d".to_string(), list(ColumnType::Decimal { precision: 10, scale: 2 })),
            ],
        );
        let copy = "copy (select '{1,NULL,3}'::int4[], '{a,\"b c\"}'::text[], '{1.005,-2}'::numeric[]
                      union all select '[0:1]={7,8}'::int4[], '{}'::text[], null) to stdout (format binary)";
        let seen = batches(copy, &plan);
        use crate::arrow::array::{Array, AsArray};
        use crate::arrow::datatypes::{Decimal128Type, Int32Type};
        let b = &seen[0];
        let n = b.column(0).as_list::<i32>();
        let ints = |i: usize| n.value(i).as_primitive::<Int32Type>().iter().collect::<Vec<_>>();
        assert_eq!((ints(0), ints(1)), (vec![Some(1), None, Some(3)], vec![Some(7), Some(8)]), "a lower bound is dropped");
        let t = b.column(1).as_list::<i32>();
        assert_eq!(t.value(0).as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a"), Some("b c")]);
        assert_eq!(t.value(1).len(), 0);
        let d = b.column(2).as_list::<i32>();
        assert_eq!(d.value(0).as_primitive::<Decimal128Type>().values(), &[101, -200], "rounded to the element's scale");
        assert!(d.is_null(1));

        let deep = read(
            PG,
            "",
            "copy (select '{{1,2},{3,4}}'::int4[], '{}'::text[], null::numeric[]) to stdout (format binary)",
            &plan,
            &mut |_, _| {},
            &mut |_| Ok(()),
        );
        assert!(matches!(deep, Err(ReadError::Value(m)) if m.starts_with("n: a 2-dimensional array")));
        assert!(array_elements(&[0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err().contains("truncated"));
    }

    /// Every batch `copy` yields under `plan`, on the shared server.
    fn batches(copy: &str, plan: &Plan) -> Vec<RecordBatch> {
        let mut seen = vec![];
        read(PG, "", copy, plan, &mut |_, _| {}, &mut |b| {
            seen.push(b.clone());
            Ok(())
        })
        .unwrap();
        seen
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
