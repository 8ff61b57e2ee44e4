//! Typed rows that Weir decodes itself (PostgreSQL's binary `COPY`, MySQL's result rows) on
//! their way to a destination's binary bulk path as Arrow record batches.
//!
//! Decoding runs on a thread of its own, a batch or two ahead of the destination's append
//! (on the caller's thread, which owns the destination's connection): each side is about half
//! the work, so a load takes the longer of the two rather than their sum.

use std::sync::mpsc::{SyncSender, sync_channel};

use chrono::{Datelike, NaiveDate};

use crate::RecordBatch;

/// Rows per record batch: a few megabytes, whatever the table's size.
pub const BATCH_ROWS: usize = 65_536;

/// A timestamp column with a time zone as the same instants without one (in UTC), which Arrow
/// formats without knowing the zone's rules; any other column as it is.
pub fn without_zone(a: &crate::arrow::array::ArrayRef) -> crate::arrow::array::ArrayRef {
    use crate::arrow::array::{
        AsArray, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
    };
    use crate::arrow::datatypes::{
        DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => std::sync::Arc::new(
            TimestampMicrosecondArray::clone(a.as_primitive::<TimestampMicrosecondType>()).with_timezone_opt(None::<String>),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, Some(_)) => std::sync::Arc::new(
            TimestampMillisecondArray::clone(a.as_primitive::<TimestampMillisecondType>()).with_timezone_opt(None::<String>),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) => std::sync::Arc::new(
            TimestampNanosecondArray::clone(a.as_primitive::<TimestampNanosecondType>()).with_timezone_opt(None::<String>),
        ),
        DataType::Timestamp(TimeUnit::Second, Some(_)) => {
            std::sync::Arc::new(TimestampSecondArray::clone(a.as_primitive::<TimestampSecondType>()).with_timezone_opt(None::<String>))
        }
        _ => a.clone(),
    }
}

/// A decoded batch with the rows and bytes read up to its end.
pub type Decoded = (RecordBatch, u64, u64);

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The read could not start (a bad query, a refused connection).
    Start(String),
    /// The source went away after `rows` rows.
    Lost { rows: u64, message: String },
    /// A value the destination's column cannot hold, named with its column.
    Value(String),
    /// The destination refused a batch.
    Sink(crate::WarehouseError),
}

/// Runs `decode` on a thread of its own, handing each batch it sends to `emit` in order and
/// telling `tell` the rows and bytes read so far. `decode` returns the rows and bytes it read
/// and what else it found; it stops early, without an error, when a send fails (the
/// destination refused a batch, whose error is the one returned).
pub fn ahead<T: Send>(
    decode: impl FnOnce(&SyncSender<Decoded>) -> Result<(u64, u64, T), ReadError> + Send,
    tell: &mut dyn FnMut(u64, u64),
    emit: &mut dyn FnMut(&RecordBatch) -> crate::Result<()>,
) -> Result<(u64, T), ReadError> {
    let (sender, batches) = sync_channel::<Decoded>(AHEAD);
    std::thread::scope(|scope| {
        let decoding = scope.spawn(move || decode(&sender));
        let mut sunk = None;
        for (batch, rows, bytes) in batches.iter() {
            if let Err(e) = emit(&batch) {
                sunk = Some(e);
                // Dropping the receiver stops the decoder at its next batch.
                break;
            }
            tell(rows, bytes);
        }
        drop(batches);
        let decoded = decoding.join().map_err(|_| ReadError::Value("internal: the decoding thread panicked".into()))?;
        match sunk {
            Some(e) => Err(ReadError::Sink(e)),
            None => decoded.map(|(rows, bytes, found)| {
                tell(rows, bytes);
                (rows, found)
            }),
        }
    })
}

/// Batches decoded ahead of the destination: enough to keep both threads busy, few enough
/// that memory stays a few batches whatever the table's size.
const AHEAD: usize = 2;

/// MySQL's `YYYY-MM-DD` as days from 1970-01-01, if it is a date of the calendar. Read by
/// hand: a general date parser costs more than the rest of a row.
pub fn days(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(&b[..4])? as i32, digits(&b[5..7])?, digits(&b[8..])?)?;
    // 719,163 days from 0001-01-01 (day 1) to 1970-01-01.
    Some(date.num_days_from_ce() - 719_163)
}

/// MySQL's `HH:MM:SS[.ffffff]` as microseconds since midnight, if it is a time of day.
pub fn time_of_day(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&b[..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let micros = match &b[8..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=6).contains(&fraction.len()) => digits(fraction)? * 10u32.pow(6 - fraction.len() as u32),
        _ => return None,
    };
    Some((i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)) * 1_000_000 + i64::from(micros))
}

/// ASCII digits as a number (at most 9 of them).
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// A decimal's text (`-123.45`) as the unscaled integer of a `decimal(precision, scale)`,
/// rounded half away from zero where it has more digits than the scale.
pub fn decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let bad = || format!("'{text}' is not a decimal");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty()) || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let too_big = || format!("'{text}' does not fit decimal({precision},{scale})");
    let scale = usize::from(scale);
    let mut value: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes().chain(std::iter::repeat(b'0')).take(scale)) {
        value = value.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))).ok_or_else(too_big)?;
    }
    if fraction.as_bytes().get(scale).is_some_and(|b| *b >= b'5') {
        value += 1;
    }
    if value >= 10i128.pow(u32::from(precision)) {
        return Err(too_big());
    }
    Ok(if negative { -value } else { value })
}
