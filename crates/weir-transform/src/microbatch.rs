//! Microbatch models: their config (`event_time`, `batch_size`, `begin`, `lookback`,
//! `concurrent_batches`), and the time arithmetic of batches.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use serde_json::Value as J;
use weir_core::{Column, Location};
use weir_graph::Node;

use crate::error::TransformError;
use crate::session::BatchWindow;

/// A microbatch model's settings, checked once before any batch runs.
#[derive(Debug, Clone)]
pub struct MicrobatchConfig {
    pub event_time: String,
    pub size: BatchSize,
    pub lookback: u32,
    pub begin: Option<NaiveDateTime>,
    /// Whether batches may run at once: `concurrent_batches`, else yes unless the model
    /// reads its own table (`{{ this }}`), which a parallel batch could be changing.
    pub concurrent: bool,
}

impl MicrobatchConfig {
    /// The settings of `n` if it is a microbatch model (`None` if it is not one).
    pub fn of(n: &Node) -> Result<Option<MicrobatchConfig>, TransformError> {
        if !n.is_microbatch() {
            return Ok(None);
        }
        let fail = |m: String| TransformError::at(Location::file(&n.file), format!("model '{}': {m}", n.name), None);
        let event_time =
            n.config_str("event_time").ok_or_else(|| fail("microbatch needs 'event_time' (the model's event-time column)".into()))?;
        let size = n.config_str("batch_size").unwrap_or_default();
        let size = BatchSize::parse(&size).ok_or_else(|| fail(format!("batch_size '{size}' is not hour, day, month or year")))?;
        let lookback = match n.config.get("lookback") {
            None | Some(J::Null) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|l| u32::try_from(l).ok())
                .ok_or_else(|| fail(format!("lookback {v} is not a whole number of batches")))?,
        };
        let begin = match n.config_str("begin") {
            Some(b) => Some(parse_time(&b).ok_or_else(|| fail(format!("begin '{b}' is not a date (2024-01-31) or timestamp")))?),
            None => None,
        };
        let concurrent = match n.config.get("concurrent_batches") {
            Some(J::Bool(b)) => *b,
            _ => !reads_this(&n.raw_code),
        };
        Ok(Some(MicrobatchConfig { event_time, size, lookback, begin, concurrent }))
    }

    /// Checks the model's output has the `event_time` column and that it holds time: a
    /// batch deletes and filters on it, so a string or a number would silently match the
    /// wrong rows.
    pub fn check_columns(&self, n: &Node, columns: &[Column]) -> Result<(), TransformError> {
        let fail = |m: String| TransformError::at(Location::file(&n.file), format!("model '{}': {m}", n.name), None);
        let Some(c) = columns.iter().find(|c| c.name.eq_ignore_ascii_case(&self.event_time)) else {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            return Err(fail(format!("event_time column '{}' is not among the model's columns ({})", self.event_time, names.join(", "))));
        };
        let ty = c.data_type.to_ascii_lowercase();
        if !(ty.starts_with("timestamp") || ty == "date" || ty.starts_with("datetime")) {
            return Err(fail(format!(
                "event_time column '{}' is {}, not a date or timestamp; cast it in the model, e.g. cast({} as timestamp)",
                c.name, c.data_type, c.name
            )));
        }
        Ok(())
    }
}

/// Whether Jinja in `sql` mentions `this` (dbt's test for "the model reads its own table").
fn reads_this(sql: &str) -> bool {
    let mut rest = sql;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body_end = after[1..].find(close).map_or(after.len(), |i| i + 1);
        let body = &after[1..body_end];
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        if body
            .match_indices("this")
            .any(|(i, _)| !body[..i].ends_with(is_word) && !body[i + 4..].starts_with(is_word) && !body[..i].ends_with('.'))
        {
            return true;
        }
        rest = &after[body_end.min(after.len())..];
    }
    false
}

/// dbt's `batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Hour,
    Day,
    Month,
    Year,
}

impl BatchSize {
    pub fn parse(s: &str) -> Option<BatchSize> {
        match s {
            "hour" => Some(BatchSize::Hour),
            "day" => Some(BatchSize::Day),
            "month" => Some(BatchSize::Month),
            "year" => Some(BatchSize::Year),
            _ => None,
        }
    }

    /// The start of the batch holding `t`.
    pub fn truncate(self, t: NaiveDateTime) -> NaiveDateTime {
        let day = t.date();
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or(t);
        match self {
            BatchSize::Hour => day.and_hms_opt(t.hour(), 0, 0).unwrap_or(t),
            BatchSize::Day => midnight(day),
            BatchSize::Month => NaiveDate::from_ymd_opt(day.year(), day.month(), 1).map(midnight).unwrap_or(t),
            BatchSize::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1).map(midnight).unwrap_or(t),
        }
    }

    /// The start of the batch after the one starting at `t`.
    pub fn next(self, t: NaiveDateTime) -> NaiveDateTime {
        match self {
            BatchSize::Hour => t + Duration::hours(1),
            BatchSize::Day => t + Duration::days(1),
            BatchSize::Month => t.checked_add_months(chrono::Months::new(1)).unwrap_or(t + Duration::days(31)),
            BatchSize::Year => t.checked_add_months(chrono::Months::new(12)).unwrap_or(t + Duration::days(366)),
        }
    }

    /// `n` batches before the batch starting at `t`.
    pub fn back(self, t: NaiveDateTime, n: u32) -> NaiveDateTime {
        match self {
            BatchSize::Hour => t - Duration::hours(n.into()),
            BatchSize::Day => t - Duration::days(n.into()),
            BatchSize::Month => t.checked_sub_months(chrono::Months::new(n)).unwrap_or(t),
            BatchSize::Year => t.checked_sub_months(chrono::Months::new(12 * n)).unwrap_or(t),
        }
    }
}

/// The batches covering `[start, end)`: from the batch holding `start` up to the one holding
/// the instant before `end`.
pub fn batches(size: BatchSize, start: NaiveDateTime, end: NaiveDateTime) -> Vec<BatchWindow> {
    let mut out = vec![];
    let mut b = size.truncate(start);
    while b < end {
        let next = size.next(b);
        out.push(BatchWindow { start: b, end: next });
        b = next;
    }
    out
}

/// A date (`2024-01-31`) or timestamp (`2024-01-31 10:00:00`, `2024-01-31T10:00:00`).
pub fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> NaiveDateTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn this_in_jinja_marks_a_self_reading_model() {
        assert!(reads_this("select * from x {% if is_incremental() %} where t > (select max(t) from {{ this }}) {% endif %}"));
        assert!(reads_this("{{ this.schema }}"));
        assert!(!reads_this("select this_col from {{ ref('a') }} -- this"));
        assert!(!reads_this("{{ ref('this_model') }} {{ x.this }}"));
    }

    #[test]
    fn a_range_is_cut_into_whole_batches() {
        let b = batches(BatchSize::Day, t("2024-01-30 10:00:00"), t("2024-02-02"));
        let starts: Vec<String> = b.iter().map(|w| w.start.to_string()).collect();
        assert_eq!(starts, ["2024-01-30 00:00:00", "2024-01-31 00:00:00", "2024-02-01 00:00:00"]);
        assert_eq!(batches(BatchSize::Month, t("2024-01-15"), t("2024-03-01")).len(), 2);
        assert_eq!(BatchSize::Month.back(t("2024-03-01"), 2), t("2024-01-01"));
    }

    proptest! {
        /// Batches tile the range: contiguous, each one batch long, covering start to end.
        #[test]
        fn batches_tile_the_range(start in 0i64..100_000_000, len in 0i64..10_000_000, size in 0usize..4) {
            let size = [BatchSize::Hour, BatchSize::Day, BatchSize::Month, BatchSize::Year][size];
            let base = t("2020-01-01");
            let (s, e) = (base + Duration::seconds(start), base + Duration::seconds(start + len));
            let b = batches(size, s, e);
            if len > 0 {
                prop_assert!(b.first().is_some_and(|w| w.start <= s && s < w.end));
                prop_assert!(b.last().is_some_and(|w| w.start < e && e <= w.end));
            }
            for pair in b.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            for w in &b {
                prop_assert_eq!(size.next(w.start), w.end);
                prop_assert_eq!(size.truncate(w.start), w.start);
            }
        }
    }
}
