//! The watermark of a source read from several partitions: for each partition, the greatest
//! event time seen less the topic's delay; for the source, the least of those over the
//! partitions that are not idle. A partition that has sent nothing holds the watermark back
//! until it has been idle for `idle_timeout`, as Flink's `withIdleness` does. An event dated
//! further than `max_future` past the wall clock does not move it: one bad clock must not pin
//! the watermark hours ahead and make every later event late. Such events are refused, to be
//! kept with the reason.
//!
//! Behind a repartition, a task reads events of every partition of the source mixed in one
//! partition of the internal topic: its tracker follows the source's partitions as the first
//! stage reports them ([`Watermarks::reported`]), not the events it reads, so the job's
//! watermark is the one it would have in one process.

use crate::window::Millis;

/// What the watermark needs of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// How far the watermark trails the greatest event time (`ts - interval '5 seconds'`).
    pub delay: Millis,
    /// After this long without events, a partition no longer holds the watermark back.
    pub idle_timeout: Millis,
    /// Events dated more than this past the wall clock are refused.
    pub max_future: Millis,
}

/// Why an event was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Dated `by` milliseconds past what the wall clock allows.
    Future { by: Millis },
}

#[derive(Debug, Clone)]
pub struct Watermarks {
    spec: WatermarkSpec,
    partitions: Vec<Partition>,
    /// Never goes back.
    current: Option<Millis>,
    /// Whether the partitions are reported (behind a repartition), idle as reported.
    reported: bool,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_event_time: Option<Millis>,
    /// Wall-clock time of its last event (or of the start, before any).
    last_seen: Millis,
    /// As last reported, for a reported partition.
    idle: bool,
}

impl Watermarks {
    /// A tracker over `partitions` partitions, started at wall-clock `now`.
    pub fn new(spec: WatermarkSpec, partitions: usize, now: Millis) -> Watermarks {
        Watermarks {
            spec,
            partitions: vec![Partition { max_event_time: None, last_seen: now, idle: false }; partitions.max(1)],
            current: None,
            reported: false,
        }
    }

    /// The same tracker, its partitions reported by [`Watermarks::report`] rather than
    /// observed: a partition not heard from yet holds the watermark back however long.
    pub fn reported(mut self) -> Watermarks {
        self.reported = true;
        self
    }

    /// What partition `partition` says of itself: the greatest event time it has seen, and
    /// whether it has been idle for the timeout, at wall-clock `now`.
    pub fn state(&self, partition: usize, now: Millis) -> (Option<Millis>, bool) {
        self.partitions.get(partition).map_or((None, false), |p| (p.max_event_time, self.idle(p, now)))
    }

    /// Takes a partition's report (see [`Watermarks::state`]); a greatest event time never
    /// goes back.
    pub fn report(&mut self, partition: usize, max_event_time: Option<Millis>, idle: bool, now: Millis) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.max_event_time = p.max_event_time.max(max_event_time);
            p.idle = idle;
            p.last_seen = now;
        }
    }

    /// Refuses an event dated too far past the wall clock, as [`Watermarks::observe`] does,
    /// and moves nothing.
    pub fn admits(&self, ts: Millis, now: Millis) -> Result<(), Refused> {
        if ts > now.saturating_add(self.spec.max_future) {
            return Err(Refused::Future { by: ts - now - self.spec.max_future });
        }
        Ok(())
    }

    fn idle(&self, p: &Partition, now: Millis) -> bool {
        if self.reported { p.idle } else { now - p.last_seen >= self.spec.idle_timeout }
    }

    /// Takes an event of `partition` dated `ts`, read at wall-clock `now`.
    pub fn observe(&mut self, partition: usize, ts: Millis, now: Millis) -> Result<(), Refused> {
        self.admits(ts, now)?;
        if let Some(p) = self.partitions.get_mut(partition) {
            p.max_event_time = Some(p.max_event_time.map_or(ts, |m| m.max(ts)));
            p.last_seen = now;
        }
        Ok(())
    }

    /// The watermark at wall-clock `now`: `None` while a partition that is not idle has sent
    /// nothing yet. It never moves back.
    pub fn current(&mut self, now: Millis) -> Option<Millis> {
        let mut least: Option<Millis> = None;
        for p in &self.partitions {
            let idle = self.idle(p, now);
            match p.max_event_time {
                Some(m) if !idle => least = Some(least.map_or(m, |l| l.min(m))),
                None if !idle => return self.current,
                _ => {}
            }
        }
        // Every partition idle: the greatest event time seen anywhere.
        let least = least.or_else(|| self.partitions.iter().filter_map(|p| p.max_event_time).max());
        if let Some(l) = least {
            let wm = l.saturating_sub(self.spec.delay);
            self.current = Some(self.current.map_or(wm, |c| c.max(wm)));
        }
        self.current
    }
}

impl Watermarks {
    /// The tracker's state, for a checkpoint: each partition's greatest event time and when
    /// it was last heard from, and the watermark reached.
    pub fn checkpoint(&self) -> serde_json::Value {
        serde_json::json!({
            "current": self.current,
            "partitions": self.partitions.iter().map(|p| serde_json::json!([p.max_event_time, p.last_seen, p.idle])).collect::<Vec<_>>(),
        })
    }

    /// A tracker for `spec` resuming from a checkpoint; a checkpoint of another partition
    /// count is refused (the topic's partitions cannot change).
    pub fn restore(spec: WatermarkSpec, doc: &serde_json::Value) -> Result<Watermarks, String> {
        let parts = doc.get("partitions").and_then(serde_json::Value::as_array).ok_or("the checkpoint has no partitions")?;
        let partitions = parts
            .iter()
            .map(|p| {
                let idle = p.get(2).and_then(serde_json::Value::as_bool).unwrap_or(false);
                Some(Partition { max_event_time: p.get(0)?.as_i64(), last_seen: p.get(1)?.as_i64()?, idle })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("the checkpoint's partitions are damaged")?;
        if partitions.is_empty() {
            return Err("the checkpoint has no partitions".into());
        }
        Ok(Watermarks { spec, partitions, current: doc.get("current").and_then(serde_json::Value::as_i64), reported: false })
    }

    /// Whether nothing has come from any partition and every one has been idle for the
    /// timeout: a source that has never spoken does not hold back a join's watermark.
    pub fn silent(&self, now: Millis) -> bool {
        self.partitions.iter().all(|p| p.max_event_time.is_none() && now - p.last_seen >= self.spec.idle_timeout)
    }

    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: WatermarkSpec = WatermarkSpec { delay: 1000, idle_timeout: 10_000, max_future: 60_000 };

    #[test]
    fn the_least_partition_holds_it_back_until_it_idles() {
        let mut w = Watermarks::new(SPEC, 2, 0);
        w.observe(0, 50_000, 0).unwrap();
        assert_eq!(w.current(0), None, "partition 1 has sent nothing yet");
        w.observe(1, 20_000, 1000).unwrap();
        assert_eq!(w.current(1000), Some(19_000));
        w.observe(0, 60_000, 5000).unwrap();
        assert_eq!(w.current(5000), Some(19_000), "the slow partition decides");
        // Partition 1 says nothing for the idle timeout: partition 0 alone decides.
        assert_eq!(w.current(11_000), Some(59_000));
        // It speaks again, far behind: the watermark does not go back.
        w.observe(1, 21_000, 12_000).unwrap();
        assert_eq!(w.current(12_000), Some(59_000));
    }

    #[test]
    fn a_checkpoint_resumes_the_same_watermark() {
        let mut w = Watermarks::new(SPEC, 2, 0);
        w.observe(0, 50_000, 0).unwrap();
        w.observe(1, 20_000, 1000).unwrap();
        assert_eq!(w.current(1000), Some(19_000));
        let text = w.checkpoint().to_string();
        let mut r = Watermarks::restore(SPEC, &serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!((r.partitions(), r.current(1000)), (2, Some(19_000)));
        r.observe(1, 30_000, 2000).unwrap();
        assert_eq!(r.current(2000), Some(29_000));
        assert!(Watermarks::restore(SPEC, &serde_json::json!({"partitions": []})).is_err());
    }

    #[test]
    fn reported_partitions_hold_it_back_until_reported_idle() {
        let mut w = Watermarks::new(SPEC, 2, 0).reported();
        w.report(0, Some(50_000), false, 0);
        assert_eq!(w.current(1_000_000), None, "partition 1 has not reported, however long");
        w.report(1, Some(20_000), false, 1000);
        assert_eq!(w.current(1_000_000), Some(19_000), "reports, not the wall clock, say who is idle");
        w.report(1, None, true, 2000);
        assert_eq!(w.current(2000), Some(49_000), "reported idle: partition 0 alone decides");
        w.report(0, Some(40_000), false, 3000);
        assert_eq!(w.state(0, 3000), (Some(50_000), false), "a greatest event time never goes back");
        let text = w.checkpoint().to_string();
        let r = Watermarks::restore(SPEC, &serde_json::from_str(&text).unwrap()).unwrap().reported();
        assert_eq!(r.state(1, 10_000_000), (Some(20_000), true));
    }

    #[test]
    fn a_future_dated_event_is_refused_and_moves_nothing() {
        let mut w = Watermarks::new(SPEC, 1, 0);
        w.observe(0, 10_000, 100_000).unwrap();
        assert_eq!(w.observe(0, 100_000 + 60_001 + 3_600_000, 100_000), Err(Refused::Future { by: 3_600_001 }));
        assert_eq!(w.current(100_000), Some(9000));
    }
}
