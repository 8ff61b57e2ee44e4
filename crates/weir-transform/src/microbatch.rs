//! Microbatch time arithmetic: batch sizes, truncation and the batches covering a range.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

use crate::session::BatchWindow;

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
