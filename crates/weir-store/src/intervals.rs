//! Interval arithmetic for processed event time: which batches of a range are not yet
//! covered, and the covered time as few ranges as possible (for `weir ls --intervals`).

use chrono::NaiveDateTime;

/// Event time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

/// Joins overlapping and touching intervals: the result is sorted and disjoint.
pub fn merge(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted: Vec<Interval> = intervals.iter().copied().filter(|i| i.start < i.end).collect();
    sorted.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(sorted.len());
    for i in sorted {
        match out.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => out.push(i),
        }
    }
    out
}

/// The `batches` not wholly covered by `processed`. A batch that is only partly covered
/// (the batch size changed since) counts as missing: it is reprocessed whole.
pub fn missing(batches: &[Interval], processed: &[Interval]) -> Vec<Interval> {
    let covered = merge(processed);
    batches
        .iter()
        .copied()
        .filter(|b| {
            // The merged range starting at or before the batch is the only one that can hold it.
            let i = covered.partition_point(|c| c.start <= b.start);
            !(i > 0 && covered[i - 1].end >= b.end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn day(n: i64) -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2024-01-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap() + Duration::days(n)
    }

    fn days(a: i64, b: i64) -> Interval {
        Interval { start: day(a), end: day(b) }
    }

    #[test]
    fn missing_batches_skip_what_is_covered() {
        let batches: Vec<Interval> = (0..6).map(|d| days(d, d + 1)).collect();
        let processed = [days(0, 1), days(1, 2), days(3, 5)];
        assert_eq!(missing(&batches, &processed), vec![days(2, 3), days(5, 6)]);
        assert_eq!(merge(&processed), vec![days(0, 2), days(3, 5)]);
        // A month processed as one batch covers its days; half a day does not cover the day.
        assert!(missing(&[days(4, 5)], &[days(0, 31)]).is_empty());
        let half = Interval { start: day(2), end: day(2) + Duration::hours(12) };
        assert_eq!(missing(&[days(2, 3)], &[half]), vec![days(2, 3)]);
    }

    proptest! {
        /// A batch is reported missing exactly when some instant of it is outside every
        /// processed interval (checked hour by hour on an hour grid).
        #[test]
        fn missing_agrees_with_pointwise_coverage(
            processed in prop::collection::vec((0i64..200, 1i64..48), 0..12),
            batch_len in 1i64..30,
        ) {
            let hour = |h: i64| day(0) + Duration::hours(h);
            let processed: Vec<Interval> = processed.iter().map(|(s, l)| Interval { start: hour(*s), end: hour(s + l) }).collect();
            let batches: Vec<Interval> = (0..10).map(|i| Interval { start: hour(i * batch_len), end: hour((i + 1) * batch_len) }).collect();
            let gaps = missing(&batches, &processed);
            for b in &batches {
                let uncovered = (0..batch_len).any(|k| {
                    let h = b.start + Duration::hours(k);
                    !processed.iter().any(|p| p.start <= h && h < p.end)
                });
                prop_assert_eq!(gaps.contains(b), uncovered);
            }
            let merged = merge(&processed);
            for w in merged.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
        }
    }
}
