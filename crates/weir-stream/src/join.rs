//! The interval join of two streams: each event of one side meets the events of the other
//! with the same key whose event time is within a bound of its own
//! (`p.paid_at between o.ordered_at and o.ordered_at + interval '1 hour'`), as Flink's
//! interval join pairs them. A pair is found once, when the second of its two events
//! arrives; each side's events are held until the watermark says no event of the other side
//! that could still meet them can come, and then forgotten.
//!
//! **Late events.** An event is late when its time is at or below the watermark less the
//! allowed lateness: some of the events it would meet may be forgotten already, so what it
//! would find depends on when it came. It is returned as late, never joined in part; the job
//! keeps it with the reason. With that rule the pairs found are exactly those of the same
//! join run as a batch query over every event that was not late, whatever the order.

use std::collections::BTreeMap;

use hashbrown::HashMap;

use crate::window::Millis;

/// Which stream of the join an event is from: the one the job reads `from`, or the one
/// joined to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// Both sides' held events, by key.
#[derive(Debug, Clone)]
pub struct IntervalJoin<K, V> {
    /// The bound on the right event's time less the left's, inclusive at both ends.
    lower: Millis,
    upper: Millis,
    lateness: Millis,
    left: Held<K, V>,
    right: Held<K, V>,
}

/// One side's events by key, and when each key's oldest events may be forgotten.
#[derive(Debug, Clone)]
struct Held<K, V> {
    by_key: HashMap<K, Vec<(Millis, V)>>,
    /// Keys by the time at which (some of) their events expire.
    expiry: BTreeMap<Millis, Vec<K>>,
    count: usize,
}

impl<K, V> Default for Held<K, V> {
    fn default() -> Self {
        Held { by_key: HashMap::new(), expiry: BTreeMap::new(), count: 0 }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> IntervalJoin<K, V> {
    /// A join pairing a left event at `t` with the right events of its key dated from
    /// `t + lower` to `t + upper`.
    pub fn new(lower: Millis, upper: Millis, lateness: Millis) -> IntervalJoin<K, V> {
        IntervalJoin { lower, upper, lateness, left: Held::default(), right: Held::default() }
    }

    /// Whether an event dated `ts` is too late, under watermark `wm`, to be joined whole.
    pub fn is_late(&self, ts: Millis, wm: Option<Millis>) -> bool {
        wm.is_some_and(|w| ts <= w.saturating_sub(self.lateness))
    }

    /// The held events of the other side that an event of `side` with `key`, dated `ts`,
    /// meets, oldest first.
    pub fn meet<'s>(&'s self, side: Side, key: &K, ts: Millis) -> impl Iterator<Item = &'s V> {
        let (range, theirs) = match side {
            Side::Left => (ts.saturating_add(self.lower)..=ts.saturating_add(self.upper), &self.right),
            Side::Right => (ts.saturating_sub(self.upper)..=ts.saturating_sub(self.lower), &self.left),
        };
        theirs.by_key.get(key).into_iter().flatten().filter(move |(t, _)| range.contains(t)).map(|(_, v)| v)
    }

    /// Holds an event of `side` (one that is not late) until the watermark says no event of
    /// the other side that could meet it can still come on time.
    pub fn hold(&mut self, side: Side, key: K, ts: Millis, value: V) {
        let (mine, expires) = match side {
            Side::Left => (&mut self.left, ts.saturating_add(self.upper)),
            Side::Right => (&mut self.right, ts.saturating_sub(self.lower)),
        };
        mine.expiry.entry(expires).or_default().push(key.clone());
        mine.by_key.entry(key).or_default().push((ts, value));
        mine.count += 1;
    }

    /// Forgets what the watermark `wm` says can meet nothing more on time.
    pub fn advance(&mut self, wm: Millis) {
        let bound = wm.saturating_sub(self.lateness);
        // A left event at `t` meets right events up to `t + upper`; those at or below the
        // bound are late. A right event meets left events from `t - upper` to `t - lower`.
        let (lower, upper) = (self.lower, self.upper);
        self.left.forget(bound, |t| t.saturating_add(upper));
        self.right.forget(bound, |t| t.saturating_sub(lower));
    }

    /// Events held on both sides.
    pub fn held(&self) -> usize {
        self.left.count + self.right.count
    }

    /// Every held event, with its side, key and time: what a checkpoint keeps.
    pub fn entries(&self) -> impl Iterator<Item = (Side, &K, Millis, &V)> {
        fn each<K, V>(s: Side, h: &Held<K, V>) -> impl Iterator<Item = (Side, &K, Millis, &V)> {
            h.by_key.iter().flat_map(move |(k, events)| events.iter().map(move |(t, v)| (s, k, *t, v)))
        }
        each(Side::Left, &self.left).chain(each(Side::Right, &self.right))
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Held<K, V> {
    /// Forgets the events whose expiry is at or below `bound`.
    fn forget(&mut self, bound: Millis, expiry_of: impl Fn(Millis) -> Millis) {
        let keep = self.expiry.split_off(&bound.saturating_add(1));
        let due = std::mem::replace(&mut self.expiry, keep);
        for key in due.into_values().flatten() {
            if let Some(events) = self.by_key.get_mut(&key) {
                let before = events.len();
                events.retain(|(t, _)| expiry_of(*t) > bound);
                self.count -= before - events.len();
                if events.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the join makes of an event: the values it meets, or `None` when it is late.
    fn insert(
        j: &mut IntervalJoin<&'static str, u32>,
        side: Side,
        key: &'static str,
        ts: Millis,
        v: u32,
        wm: Option<Millis>,
    ) -> Option<Vec<u32>> {
        if j.is_late(ts, wm) {
            return None;
        }
        let met = j.meet(side, &key, ts).copied().collect();
        j.hold(side, key, ts, v);
        Some(met)
    }

    #[test]
    fn pairs_within_the_bound_both_ways() {
        // A payment from 0 to 10 s after its order.
        let mut j: IntervalJoin<&str, u32> = IntervalJoin::new(0, 10_000, 0);
        assert_eq!(insert(&mut j, Side::Left, "a", 1_000, 1, None), Some(vec![]));
        assert_eq!(insert(&mut j, Side::Right, "a", 11_000, 2, None), Some(vec![1]), "the upper bound is inclusive");
        assert_eq!(insert(&mut j, Side::Right, "a", 11_001, 3, None), Some(vec![]));
        assert_eq!(insert(&mut j, Side::Right, "b", 1_000, 4, None), Some(vec![]), "another key");
        assert_eq!(insert(&mut j, Side::Right, "a", 999, 5, None), Some(vec![]), "before the order");
        assert_eq!(insert(&mut j, Side::Left, "a", 1_000, 6, None), Some(vec![2]), "a right event held meets a later left one");
        assert_eq!(j.held(), 6);
    }

    #[test]
    fn the_watermark_forgets_what_can_meet_nothing_more() {
        let mut j: IntervalJoin<&str, u32> = IntervalJoin::new(-2_000, 5_000, 0);
        insert(&mut j, Side::Left, "a", 10_000, 1, None);
        insert(&mut j, Side::Right, "a", 9_000, 2, None);
        // The right event meets left events up to 11 s; the left one right events up to 15 s.
        j.advance(10_999);
        assert_eq!(j.held(), 2);
        j.advance(11_000);
        assert_eq!(j.held(), 1);
        j.advance(14_999);
        assert_eq!(j.held(), 1);
        j.advance(15_000);
        assert_eq!(j.held(), 0);
        assert_eq!(insert(&mut j, Side::Right, "a", 15_000, 3, Some(15_000)), None, "at the watermark: late");
        assert_eq!(insert(&mut j, Side::Right, "a", 15_001, 4, Some(15_000)), Some(vec![]));
    }

    #[test]
    fn lateness_holds_events_longer() {
        let mut j: IntervalJoin<&str, u32> = IntervalJoin::new(0, 1_000, 3_000);
        insert(&mut j, Side::Left, "a", 10_000, 1, None);
        j.advance(13_999);
        assert_eq!(insert(&mut j, Side::Right, "a", 11_000, 2, Some(13_999)), Some(vec![1]), "within the lateness");
        j.advance(14_000);
        assert_eq!(j.held(), 0);
        assert_eq!(insert(&mut j, Side::Right, "a", 11_000, 3, Some(14_000)), None);
    }
}
