//! Keyed window state: each event's value folded into the accumulators of its key's windows,
//! results emitted when the watermark closes a window, and updated while a late event within
//! the allowed lateness still changes it.
//!
//! Lateness follows Flink: an event is late for a window when `window_end - 1 +
//! allowed_lateness <= watermark`. A hopping event counts in the windows it is not late for
//! and is late only when it is late for all of them; a session event is judged after it has
//! merged with the sessions it touches. A late event is returned as such, never dropped here:
//! the job keeps it with the reason.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};

// hashbrown with foldhash: keys come from events, so a seeded hash, but a fast one (the
// state is looked up once per event).
use hashbrown::HashMap;
use std::hash::Hash;

use crate::sketch::Sketch;
use crate::window::{Millis, Window, WindowSpec};

/// An aggregate a windowed `group by` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// `count(*)`: every event, nulls too.
    Count,
    /// `count(x)`: the events whose value is not null.
    CountValues,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    /// `approx_percentile(x, 0.99)`: the quantile within 1% of its value ([`Sketch`]); the
    /// fraction in basis points (9900 for 0.99).
    Percentile {
        basis_points: u16,
    },
}

/// One aggregate's running state.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    Count(u64),
    CountValues(u64),
    /// `None` until a value comes: SQL's sum of no values is null.
    Sum(Option<f64>),
    Min(Option<f64>),
    Max(Option<f64>),
    Avg {
        sum: f64,
        n: u64,
    },
    /// Distinct values by their bits (`-0.0` and `0.0` apart, as SQL's `count(distinct)` of
    /// doubles keeps them).
    Distinct(HashSet<u64>),
    Quantile {
        q: f64,
        sketch: Sketch,
    },
}

impl Acc {
    pub fn new(agg: Agg) -> Acc {
        match agg {
            Agg::Count => Acc::Count(0),
            Agg::CountValues => Acc::CountValues(0),
            Agg::Sum => Acc::Sum(None),
            Agg::Min => Acc::Min(None),
            Agg::Max => Acc::Max(None),
            Agg::Avg => Acc::Avg { sum: 0.0, n: 0 },
            Agg::CountDistinct => Acc::Distinct(HashSet::new()),
            Agg::Percentile { basis_points } => {
                Acc::Quantile { q: f64::from(basis_points.min(10_000)) / 10_000.0, sketch: Sketch::default() }
            }
        }
    }

    /// Adds a value (`None`: SQL's null, which only `count(*)` counts).
    pub fn add(&mut self, v: Option<f64>) {
        match (self, v) {
            (Acc::Count(n), _) | (Acc::CountValues(n), Some(_)) => *n += 1,
            (Acc::Sum(s), Some(v)) => *s = Some(s.unwrap_or(0.0) + v),
            (Acc::Min(m), Some(v)) => *m = Some(m.map_or(v, |m| m.min(v))),
            (Acc::Max(m), Some(v)) => *m = Some(m.map_or(v, |m| m.max(v))),
            (Acc::Avg { sum, n }, Some(v)) => {
                *sum += v;
                *n += 1;
            }
            (Acc::Distinct(set), Some(v)) => {
                set.insert(v.to_bits());
            }
            (Acc::Quantile { sketch, .. }, Some(v)) => sketch.add(v),
            (_, None) => {}
        }
    }

    /// Folds another accumulator of the same aggregate in (sessions that merge).
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) | (Acc::CountValues(a), Acc::CountValues(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => *a = [*a, b].into_iter().flatten().reduce(|x, y| x + y),
            (Acc::Min(a), Acc::Min(b)) => *a = [*a, b].into_iter().flatten().reduce(f64::min),
            (Acc::Max(a), Acc::Max(b)) => *a = [*a, b].into_iter().flatten().reduce(f64::max),
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b),
            (Acc::Quantile { sketch: a, .. }, Acc::Quantile { sketch: b, .. }) => a.merge(b),
            _ => {}
        }
    }

    /// The aggregate's value; `None` for SQL's null (the min of no values).
    pub fn value(&self) -> Option<f64> {
        match self {
            Acc::Count(n) | Acc::CountValues(n) => Some(*n as f64),
            Acc::Sum(s) => *s,
            Acc::Min(m) | Acc::Max(m) => *m,
            Acc::Avg { sum, n } => (*n > 0).then(|| sum / *n as f64),
            Acc::Distinct(set) => Some(set.len() as f64),
            Acc::Quantile { q, sketch } => sketch.quantile(*q),
        }
    }
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Counted in at least one window.
    Counted,
    /// Later than the allowed lateness for every window it falls in.
    Late,
    /// In no window (a hop whose slide leaves gaps).
    Unwindowed,
}

/// A window's result for a key: emitted when the window closes, and again whenever a late
/// event within the lateness changes it (the sink upserts on key and window). A session that
/// grew by merging with sessions already emitted names them in `replaces`: the sink deletes
/// their rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit<K> {
    pub key: K,
    pub window: Window,
    pub values: Vec<Option<f64>>,
    pub replaces: Vec<Window>,
    /// Emitted before (early, or at its close and now changed by a late event): the sink
    /// replaces its row.
    pub update: bool,
}

/// The state of one windowed aggregation.
pub struct WindowOperator<K> {
    pub(crate) spec: WindowSpec,
    pub(crate) aggs: Vec<Agg>,
    pub(crate) allowed_lateness: Millis,
    /// Windows not yet purged, by key; each with its accumulators and whether it has fired.
    pub(crate) state: HashMap<K, BTreeMap<Window, Slot>>,
    /// Windows changed since they fired, to emit again.
    pub(crate) refire: Vec<(K, Window)>,
    /// When each window next needs looking at (its close, then the end of its lateness),
    /// with the keys holding it: a watermark's advance visits only the windows it reaches,
    /// not every key's state. Each window has one timer, named by its [`Slot::timer`].
    pub(crate) timers: BTreeMap<(Millis, Window), Vec<K>>,
}

pub(crate) struct Slot {
    pub(crate) accs: Vec<Acc>,
    /// Closed and emitted.
    pub(crate) fired: bool,
    /// Emitted at all, early or at its close: a session absorbing it must retract it.
    pub(crate) emitted: bool,
    /// Changed since it was last emitted.
    pub(crate) dirty: bool,
    /// Emitted sessions this one absorbed, to retract when it is next emitted.
    pub(crate) replaced: Vec<Window>,
    /// The timer that stands for this window: its own; or, for a session that grew, the one
    /// of the session it grew from, which comes due first and is then moved to the grown
    /// session's end. (A session grows with nearly every event of its key; moving its timer
    /// each time was most of what a session event cost.)
    pub(crate) timer: Option<(Millis, Window)>,
}

impl Slot {
    pub(crate) fn new(aggs: &[Agg]) -> Slot {
        Slot { accs: aggs.iter().map(|a| Acc::new(*a)).collect(), fired: false, emitted: false, dirty: true, replaced: vec![], timer: None }
    }

    fn emit<K>(&mut self, key: K, window: Window) -> Emit<K> {
        let update = self.emitted;
        self.emitted = true;
        self.dirty = false;
        Emit { key, window, values: self.accs.iter().map(Acc::value).collect(), replaces: std::mem::take(&mut self.replaced), update }
    }
}

impl<K: Clone + Eq + Hash> WindowOperator<K> {
    pub fn new(spec: WindowSpec, aggs: Vec<Agg>, allowed_lateness: Millis) -> WindowOperator<K> {
        WindowOperator {
            spec,
            aggs,
            allowed_lateness: allowed_lateness.max(0),
            state: HashMap::new(),
            refire: vec![],
            timers: BTreeMap::new(),
        }
    }

    fn late(&self, w: &Window, watermark: Option<Millis>) -> bool {
        late(w, self.allowed_lateness, watermark)
    }

    /// Folds an event (`values`, one per aggregate) of `key` at event time `ts` into its
    /// windows, judged against the watermark it arrived under. The key is borrowed: it is
    /// copied only when the state has no window of it yet.
    pub fn insert<Q>(&mut self, key: &Q, ts: Millis, values: &[Option<f64>], watermark: Option<Millis>) -> Admitted
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let windows = self.spec.assign(ts);
        if windows.is_empty() {
            return Admitted::Unwindowed;
        }
        if self.spec.is_session() {
            return self.insert_session(key, windows[0], values, watermark);
        }
        if windows.iter().all(|w| self.late(w, watermark)) {
            return Admitted::Late;
        }
        let lateness = self.allowed_lateness;
        let live = windows.into_iter().filter(|w| !late(w, lateness, watermark));
        let aggs = &self.aggs;
        // One lookup for a key held already (nearly every event's).
        let slots = match self.state.get_mut(key) {
            Some(slots) => slots,
            None => self.state.entry(key.to_owned()).or_default(),
        };
        for w in live {
            let slot = match slots.entry(w) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    self.timers.entry((w.max_timestamp(), w)).or_default().push(key.to_owned());
                    v.insert(Slot { timer: Some((w.max_timestamp(), w)), ..Slot::new(aggs) })
                }
            };
            for (acc, v) in slot.accs.iter_mut().zip(values) {
                acc.add(*v);
            }
            slot.dirty = true;
            if slot.fired {
                self.refire.push((key.to_owned(), w));
            }
        }
        Admitted::Counted
    }

    fn insert_session<Q>(&mut self, key: &Q, own: Window, values: &[Option<f64>], watermark: Option<Millis>) -> Admitted
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let slots = match self.state.get_mut(key) {
            Some(slots) => slots,
            None => self.state.entry(key.to_owned()).or_default(),
        };
        let touching: Vec<Window> = slots.keys().filter(|w| w.meets(&own)).copied().collect();
        let merged = touching.iter().fold(own, |acc, w| acc.cover(w));
        if watermark.is_some_and(|wm| merged.max_timestamp().saturating_add(self.allowed_lateness) <= wm) {
            return Admitted::Late;
        }
        // Nearly every event grows the one open session its key has: the session keeps its
        // state and its timer.
        if let [w] = touching[..]
            && slots.get(&w).is_some_and(|s| !s.fired)
            && let Some(mut slot) = slots.remove(&w)
        {
            if slot.emitted {
                slot.replaced.push(w);
            }
            slot.emitted = false;
            slot.dirty = true;
            for (acc, v) in slot.accs.iter_mut().zip(values) {
                acc.add(*v);
            }
            slots.insert(merged, slot);
            return Admitted::Counted;
        }
        let mut slot = Slot::new(&self.aggs);
        let mut gone = vec![];
        for w in &touching {
            if let Some(old) = slots.remove(w) {
                for (acc, o) in slot.accs.iter_mut().zip(old.accs) {
                    acc.merge(o);
                }
                if old.emitted {
                    slot.replaced.push(*w);
                }
                slot.replaced.extend(old.replaced);
                gone.extend(old.timer);
            }
        }
        for (acc, v) in slot.accs.iter_mut().zip(values) {
            acc.add(*v);
        }
        // The merged session fires as a new one: at the next advance when the watermark has
        // passed it already (a late event within the lateness), else when it closes; it then
        // retracts the emitted sessions it absorbed.
        let at = (merged.max_timestamp(), merged);
        slot.timer = Some(at);
        slots.insert(merged, slot);
        // The absorbed sessions' timers go with them.
        for t in gone {
            if let Some(keys) = self.timers.get_mut(&t) {
                keys.retain(|k| k.borrow() != key);
                if keys.is_empty() {
                    self.timers.remove(&t);
                }
            }
        }
        self.timers.entry(at).or_default().push(key.to_owned());
        Admitted::Counted
    }

    /// Whether late events within the lateness changed closed windows since the last advance:
    /// their updates go out at the next one, the watermark moved or not.
    pub fn has_updates(&self) -> bool {
        !self.refire.is_empty()
    }

    /// Emits the windows the watermark has closed (each once), the late updates of closed
    /// ones, and forgets windows past their lateness.
    pub fn advance(&mut self, watermark: Millis) -> Vec<Emit<K>> {
        let mut out = vec![];
        let mut seen = HashSet::new();
        for (key, w) in std::mem::take(&mut self.refire) {
            if !seen.insert((key.clone(), w)) {
                continue;
            }
            if let Some(slot) = self.state.get_mut(&key).and_then(|s| s.get_mut(&w)) {
                out.push(slot.emit(key, w));
            }
        }
        let lateness = self.allowed_lateness;
        let later = self.timers.split_off(&(watermark.saturating_add(1), Window { start: Millis::MIN, end: Millis::MIN }));
        let due = std::mem::replace(&mut self.timers, later);
        for ((at, w), keys) in due {
            for key in keys {
                let Some(slots) = self.state.get_mut(&key) else { continue };
                // The window the timer stands for: its own, or the session that grew from
                // it. A timer no window names any more (a session merged away) finds none.
                let timer = Some((at, w));
                let w = match slots.get(&w) {
                    Some(slot) if slot.timer == timer => w,
                    _ => match slots.iter().find(|(_, slot)| slot.timer == timer) {
                        Some((grown, _)) => *grown,
                        None => continue,
                    },
                };
                let Some(slot) = slots.get_mut(&w) else { continue };
                if w.max_timestamp() > watermark {
                    // A session that grew since: its timer moves to its end.
                    slot.timer = Some((w.max_timestamp(), w));
                    self.timers.entry((w.max_timestamp(), w)).or_default().push(key);
                    continue;
                }
                if !slot.fired {
                    slot.fired = true;
                    out.push(slot.emit(key.clone(), w));
                }
                let purge_at = w.max_timestamp().saturating_add(lateness);
                if purge_at <= watermark {
                    slots.remove(&w);
                    if slots.is_empty() {
                        self.state.remove(&key);
                    }
                } else {
                    slot.timer = Some((purge_at, w));
                    self.timers.entry((purge_at, w)).or_default().push(key);
                }
            }
        }
        out
    }

    /// The timers of restored state: a window that has not fired waits for its close, one
    /// that has for the end of its lateness.
    pub(crate) fn rebuild_timers(&mut self) {
        self.timers.clear();
        for (key, slots) in &mut self.state {
            for (w, slot) in slots.iter_mut() {
                let at = if slot.fired { w.max_timestamp().saturating_add(self.allowed_lateness) } else { w.max_timestamp() };
                slot.timer = Some((at, *w));
                self.timers.entry((at, *w)).or_default().push(key.clone());
            }
        }
    }

    /// `emit: every 10s`: the current results of the open windows changed since they were
    /// last emitted, before they close. The sink upserts them; the close emits the final one.
    pub fn emit_early(&mut self) -> Vec<Emit<K>> {
        let mut out = vec![];
        for (key, slots) in &mut self.state {
            for (w, slot) in slots.iter_mut().filter(|(_, s)| !s.fired && s.dirty) {
                out.push(slot.emit(key.clone(), *w));
            }
        }
        out
    }

    /// Windows held, over all keys.
    pub fn windows_held(&self) -> usize {
        self.state.values().map(BTreeMap::len).sum()
    }
}

/// Flink's rule: a window takes no more events once the watermark has passed its last
/// millisecond by the allowed lateness.
fn late(w: &Window, allowed_lateness: Millis, watermark: Option<Millis>) -> bool {
    watermark.is_some_and(|wm| w.max_timestamp().saturating_add(allowed_lateness) <= wm)
}

#[cfg(test)]
mod tests {
    //! Cases worked out by hand from Flink's rules: the event and watermark at each boundary.

    use super::*;

    #[test]
    fn a_sum_of_no_values_is_null_as_in_sql() {
        let mut sum = Acc::new(Agg::Sum);
        sum.add(None);
        assert_eq!(sum.value(), None);
        let mut other = Acc::new(Agg::Sum);
        other.add(Some(2.5));
        sum.merge(other);
        sum.add(None);
        assert_eq!(sum.value(), Some(2.5));
    }

    fn counts(emits: &[Emit<String>]) -> Vec<(Millis, Millis, f64)> {
        emits.iter().map(|e| (e.window.start, e.window.end, e.values[0].unwrap_or(-1.0))).collect()
    }

    #[test]
    fn a_window_fires_when_the_watermark_reaches_its_last_millisecond() {
        let mut op = WindowOperator::new(WindowSpec::Tumble { size: 1000, offset: 0 }, vec![Agg::Count], 0);
        op.insert("k", 999, &[None], None);
        op.insert("k", 1000, &[None], None);
        assert!(op.advance(998).is_empty(), "[0, 1000) is open until the watermark is 999");
        assert_eq!(counts(&op.advance(999)), vec![(0, 1000, 1.0)]);
        assert!(op.advance(999).is_empty(), "each window fires once");
    }

    #[test]
    fn lateness_is_end_minus_one_plus_allowed_against_the_watermark() {
        let mut op = WindowOperator::new(WindowSpec::Tumble { size: 1000, offset: 0 }, vec![Agg::Count], 500);
        op.insert("k", 10, &[None], None);
        assert_eq!(counts(&op.advance(999)), vec![(0, 1000, 1.0)]);
        // 999 + 500 = 1499 > 1498: still within the lateness, so it updates the result.
        assert_eq!(op.insert("k", 20, &[None], Some(1498)), Admitted::Counted);
        assert_eq!(counts(&op.advance(1498)), vec![(0, 1000, 2.0)]);
        // 1499 <= 1499: late, and the window is forgotten.
        assert_eq!(op.insert("k", 30, &[None], Some(1499)), Admitted::Late);
        assert!(op.advance(1499).is_empty());
        assert_eq!(op.windows_held(), 0);
    }

    #[test]
    fn a_hop_event_late_for_one_window_counts_in_the_other() {
        let mut op = WindowOperator::new(WindowSpec::Hop { size: 2000, slide: 1000, offset: 0 }, vec![Agg::Count], 0);
        // 1500 falls in [0, 2000) and [1000, 3000); at watermark 1999 the first is closed.
        assert_eq!(op.insert("k", 1500, &[None], Some(1999)), Admitted::Counted);
        assert_eq!(counts(&op.advance(2999)), vec![(1000, 3000, 1.0)]);
        assert_eq!(op.insert("k", 1500, &[None], Some(2999)), Admitted::Late, "late for both windows");
    }

    #[test]
    fn events_exactly_a_gap_apart_share_a_session() {
        let mut op = WindowOperator::new(WindowSpec::Session { gap: 1000 }, vec![Agg::Count], 0);
        op.insert("k", 0, &[None], None);
        op.insert("k", 1000, &[None], None);
        op.insert("k", 2001, &[None], None);
        let mut got = counts(&op.advance(10_000));
        got.sort_by_key(|c| c.0);
        assert_eq!(got, vec![(0, 2000, 2.0), (2001, 3001, 1.0)]);
    }

    #[test]
    fn a_late_event_that_bridges_two_emitted_sessions_replaces_them() {
        let mut op = WindowOperator::new(WindowSpec::Session { gap: 1000 }, vec![Agg::Count], 10_000);
        op.insert("k", 0, &[None], None);
        op.insert("k", 1500, &[None], None);
        let fired = op.advance(5000);
        assert_eq!(fired.len(), 2);
        // 900 touches [0, 1000) and reaches [1500, 2500): one session of three.
        assert_eq!(op.insert("k", 900, &[None], Some(5000)), Admitted::Counted);
        let update = op.advance(5000);
        assert_eq!(counts(&update), vec![(0, 2500, 3.0)]);
        let mut replaced = update[0].replaces.clone();
        replaced.sort();
        assert_eq!(replaced, vec![Window { start: 0, end: 1000 }, Window { start: 1500, end: 2500 }]);
    }

    #[test]
    fn percentiles_and_distinct_counts_skip_nulls() {
        let aggs = vec![Agg::Count, Agg::CountDistinct, Agg::Percentile { basis_points: 5000 }, Agg::Min, Agg::Avg];
        let mut op = WindowOperator::new(WindowSpec::Tumble { size: 1000, offset: 0 }, aggs, 0);
        for v in [Some(10.0), Some(20.0), None, Some(10.0), Some(30.0)] {
            op.insert("k", 1, &[v; 5], None);
        }
        let e = op.advance(999).remove(0);
        assert_eq!(e.values[0], Some(5.0), "count(*) counts the null row");
        assert_eq!(e.values[1], Some(3.0));
        assert!((e.values[2].unwrap_or(0.0) - 10.0).abs() <= 0.1, "median of 10, 10, 20, 30 at rank 1");
        assert_eq!((e.values[3], e.values[4]), (Some(10.0), Some(17.5)));
    }
}
