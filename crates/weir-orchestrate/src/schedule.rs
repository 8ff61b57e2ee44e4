//! Schedules and data intervals.
//!
//! A schedule is a cron expression (or a preset such as `@daily`) read in a named time zone,
//! so `0 2 * * *` in `Europe/Amsterdam` fires at 02:00 Amsterdam time in winter and summer
//! alike. As in Airflow, consecutive ticks bound the *data intervals*: the run for
//! `[Monday 02:00, Tuesday 02:00)` is due when the interval closes, on Tuesday at 02:00, and
//! processes exactly that interval's data. Ticks are computed by `croner` on zoned times; on
//! the day the clock springs forward a tick inside the missing hour fires right after it, and
//! on the day it falls back a fixed-time tick fires once.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written (`0 2 * * *`, `@daily`).
    pub expr: String,
    pub tz: Tz,
    cron: Cron,
}

/// The span of time a run processes: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Schedule {
    /// Reads a cron expression of five fields, or one of `@yearly`, `@annually`,
    /// `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        let normalized = if trimmed.eq_ignore_ascii_case("@midnight") { "@daily" } else { trimmed };
        if normalized.starts_with('@') && !PRESETS.iter().any(|p| p.eq_ignore_ascii_case(normalized)) {
            return Err(format!("'{trimmed}' is not a schedule preset (presets: {})", PRESETS.join(", ")));
        }
        let fields = normalized.split_whitespace().count();
        if !normalized.starts_with('@') && fields != 5 {
            return Err(format!(
                "'{trimmed}' is not a cron expression: it has {fields} fields, cron has 5 (minute hour day-of-month month day-of-week)"
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(normalized).map_err(|e| format!("'{trimmed}' is not a cron expression: {e}"))?;
        // A pattern that can never fire (`0 0 30 2 *`) is refused now, not on its first use.
        let probe = tz.from_utc_datetime(&Utc::now().naive_utc());
        cron.find_next_occurrence(&probe, false).map_err(|_| format!("'{trimmed}' never fires (no date matches it)"))?;
        Ok(Schedule { expr: trimmed.to_string(), tz, cron })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_previous_occurrence(&local, true).ok().map(|n| n.with_timezone(&Utc))
    }

    /// The interval that contains `t`: from the last tick at or before it to the next.
    pub fn interval_containing(&self, t: DateTime<Utc>) -> Option<DataInterval> {
        let start = self.at_or_before(t)?;
        Some(DataInterval { start, end: self.next_after(start)? })
    }

    /// The newest interval that has closed by `now`: what a manual run processes, as
    /// Airflow infers a manual run's interval.
    pub fn last_complete(&self, now: DateTime<Utc>) -> Option<DataInterval> {
        let end = self.at_or_before(now)?;
        let local = end.with_timezone(&self.tz);
        let start = self.cron.find_previous_occurrence(&local, false).ok()?.with_timezone(&Utc);
        Some(DataInterval { start, end })
    }

    /// Every interval whose start lies in `[from, to)`, in order; at most `limit`.
    pub fn intervals(&self, from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Vec<DataInterval> {
        let mut out = Vec::new();
        let mut start = match self.at_or_before(from) {
            Some(s) if s == from => Some(s),
            _ => self.next_after(from),
        };
        while let Some(s) = start.filter(|s| *s < to && out.len() < limit) {
            let Some(end) = self.next_after(s) else { break };
            out.push(DataInterval { start: s, end });
            start = Some(end);
        }
        out
    }
}

const PRESETS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

/// Reads an IANA time zone name (`Europe/Amsterdam`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| format!("'{name}' is not a time zone (use an IANA name such as Europe/Amsterdam, America/New_York or UTC)"))
}

/// Reads a date (`2024-03-01`, midnight) or a date and time (`2024-03-01 02:00`,
/// `2024-03-01T02:00:00`) in `tz`, or an RFC 3339 time with its own offset.
pub fn parse_time(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        .ok_or_else(|| format!("'{t}' is not a date or time (write 2024-03-01 or 2024-03-01 02:00)"))?;
    // A wall time skipped by a DST change means the first instant after the gap.
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("'{t}' does not exist in {tz}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_in_a_time_zone_keeps_local_time_across_dst() {
        let ams = parse_tz("Europe/Amsterdam").unwrap();
        let s = Schedule::parse("0 2 * * *", ams).unwrap();
        // Winter: 02:00 CET is 01:00 UTC.
        assert_eq!(s.next_after(utc("2024-03-29T12:00:00Z")), Some(utc("2024-03-30T01:00:00Z")));
        // 31 March 2024: clocks jump from 02:00 to 03:00; the tick fires right after the gap.
        assert_eq!(s.next_after(utc("2024-03-30T01:00:00Z")), Some(utc("2024-03-31T01:00:00Z")));
        // Summer: 02:00 CEST is 00:00 UTC.
        assert_eq!(s.next_after(utc("2024-03-31T01:00:00Z")), Some(utc("2024-04-01T00:00:00Z")));
        // 27 October 2024: 02:00-03:00 happens twice; a fixed-time job fires once.
        let oct = s.intervals(utc("2024-10-26T00:00:00Z"), utc("2024-10-29T00:00:00Z"), 10);
        let starts: Vec<_> = oct.iter().map(|i| i.start).collect();
        assert_eq!(starts, vec![utc("2024-10-26T00:00:00Z"), utc("2024-10-27T00:00:00Z"), utc("2024-10-28T01:00:00Z")]);
        assert_eq!(oct[1].end - oct[1].start, chrono::Duration::hours(25));
    }

    #[test]
    fn midnight_intervals_are_23_and_25_hours_on_dst_days() {
        let ny = parse_tz("America/New_York").unwrap();
        let s = Schedule::parse("@daily", ny).unwrap();
        let spring = s.interval_containing(utc("2024-03-10T12:00:00Z")).unwrap();
        assert_eq!((spring.start, spring.end - spring.start), (utc("2024-03-10T05:00:00Z"), chrono::Duration::hours(23)));
        let fall = s.interval_containing(utc("2024-11-03T12:00:00Z")).unwrap();
        assert_eq!(fall.end - fall.start, chrono::Duration::hours(25));
    }

    #[test]
    fn a_manual_run_gets_the_last_closed_interval() {
        let s = Schedule::parse("0 2 * * *", Tz::UTC).unwrap();
        let i = s.last_complete(utc("2024-05-10T10:00:00Z")).unwrap();
        assert_eq!((i.start, i.end), (utc("2024-05-09T02:00:00Z"), utc("2024-05-10T02:00:00Z")));
        // Exactly at a tick, the interval that just closed.
        let j = s.last_complete(utc("2024-05-10T02:00:00Z")).unwrap();
        assert_eq!(j.end, utc("2024-05-10T02:00:00Z"));
    }

    #[test]
    fn bad_schedules_and_zones_say_why() {
        let e = |x: &str| Schedule::parse(x, Tz::UTC).err().unwrap_or_default();
        assert!(e("0 2 * *").contains("4 fields"), "{}", e("0 2 * *"));
        assert!(e("61 2 * * *").contains("not a cron expression"), "{}", e("61 2 * * *"));
        assert!(e("@fortnightly").contains("presets"), "{}", e("@fortnightly"));
        assert!(e("0 0 30 2 *").contains("never fires"), "{}", e("0 0 30 2 *"));
        assert!(parse_tz("Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(parse_time("yesterday", Tz::UTC).is_err());
        assert_eq!(parse_time("2024-03-01", parse_tz("Europe/Amsterdam").unwrap()).unwrap(), utc("2024-02-29T23:00:00Z"));
    }

    proptest! {
        /// Intervals over any range are contiguous, ordered, non-empty, start in the range,
        /// and each is the interval containing its own start.
        #[test]
        fn intervals_tile_the_range(days in 0i64..800, span in 1i64..90, hour in 0u32..24, zone in 0usize..4) {
            let tz = [Tz::UTC, Tz::Europe__Amsterdam, Tz::America__New_York, Tz::Australia__Sydney][zone];
            let s = Schedule::parse(&format!("30 {hour} * * *"), tz).unwrap();
            let from = utc("2023-01-01T00:00:00Z") + chrono::Duration::days(days);
            let to = from + chrono::Duration::days(span);
            let all = s.intervals(from, to, 1000);
            prop_assert!(all.len() as i64 >= span - 1 && all.len() as i64 <= span + 1);
            for w in all.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            for i in &all {
                prop_assert!(i.start >= from && i.start < to && i.end > i.start);
                prop_assert_eq!(s.interval_containing(i.start), Some(*i));
            }
        }
    }
}
