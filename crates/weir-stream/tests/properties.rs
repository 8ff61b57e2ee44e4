//! Streaming against batch: events in random order through the watermark and the window
//! state, their emitted results applied as a sink applies them (upsert on key and window,
//! delete what a session replaces), must equal the same aggregation computed over all the
//! events that were not late; and every event is counted, late or outside every window. An
//! interval join of two streams finds, once each, the pairs a batch join finds among the events
//! that were not late, and holds nothing once the watermark has passed.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use weir_stream::{Acc, Admitted, Agg, Emit, IntervalJoin, Millis, Side, Window, WindowOperator, WindowSpec};

const AGGS: [Agg; 7] = [Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Avg, Agg::CountDistinct, Agg::Percentile { basis_points: 9000 }];

type Sink = BTreeMap<(u8, Window), Vec<Option<f64>>>;

fn apply(sink: &mut Sink, emits: Vec<Emit<u8>>) {
    for e in emits {
        for w in &e.replaces {
            sink.remove(&(e.key, *w));
        }
        sink.insert((e.key, e.window), e.values);
    }
}

/// The aggregates of `values` as a batch query computes them.
fn batch(values: &[Option<f64>]) -> Vec<Option<f64>> {
    AGGS.iter()
        .map(|a| {
            let mut acc = Acc::new(*a);
            for v in values {
                acc.add(*v);
            }
            acc.value()
        })
        .collect()
}

/// Events: (key, event time, value or null), in arrival order.
fn events() -> impl Strategy<Value = Vec<(u8, Millis, Option<f64>)>> {
    prop::collection::vec((0u8..4, 0i64..60_000, prop::option::weighted(0.9, (0i64..100).prop_map(|v| v as f64))), 0..200)
}

/// Runs the events through a watermark trailing the greatest time seen by `delay`, advancing
/// after each (and emitting open windows early after every `early`-th event, when given);
/// returns the sink, each event's admission, and the watermark each arrived under. An
/// advance emits only windows the watermark has passed.
fn stream(
    spec: WindowSpec,
    lateness: Millis,
    delay: Millis,
    evs: &[(u8, Millis, Option<f64>)],
    early: Option<usize>,
) -> (Sink, Vec<Admitted>, Vec<Option<Millis>>) {
    let mut op = WindowOperator::new(spec, AGGS.to_vec(), lateness);
    let mut sink = Sink::new();
    let mut max_seen: Option<Millis> = None;
    let (mut admitted, mut marks) = (vec![], vec![]);
    for (key, ts, v) in evs {
        let wm = max_seen.map(|m| m - delay);
        marks.push(wm);
        admitted.push(op.insert(key, *ts, &[*v; 7], wm));
        if early.is_some_and(|n| admitted.len() % n == 0) {
            apply(&mut sink, op.emit_early());
        }
        max_seen = Some(max_seen.map_or(*ts, |m| m.max(*ts)));
        let now = max_seen.unwrap_or(0) - delay;
        let closed = op.advance(now);
        let early: Vec<&Emit<u8>> = closed.iter().filter(|e| e.window.max_timestamp() > now).collect();
        assert!(early.is_empty(), "emitted before the watermark passed its end ({now}): {early:?}");
        apply(&mut sink, closed);
    }
    apply(&mut sink, op.advance(Millis::MAX / 4));
    assert_eq!(op.windows_held(), 0, "every window is forgotten once past its lateness");
    (sink, admitted, marks)
}

fn spec() -> impl Strategy<Value = WindowSpec> {
    prop_oneof![
        (1i64..20).prop_map(|s| WindowSpec::Tumble { size: s * 1000, offset: 0 }),
        (1i64..5, 1i64..4).prop_map(|(slide, n)| WindowSpec::Hop { size: slide * n * 1000, slide: slide * 1000, offset: 0 }),
        (1i64..6, 1i64..6).prop_map(|(size, slide)| WindowSpec::Hop { size: size * 1000, slide: slide * 1000, offset: 0 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn tumbling_and_hopping_windows_equal_the_batch_over_events_in_lateness(
        spec in spec(), lateness in prop_oneof![Just(0i64), 0i64..10_000], delay in 0i64..5000, evs in events(),
        early in prop::option::of(1usize..5),
    ) {
        let (sink, admitted, marks) = stream(spec, lateness, delay, &evs, early);
        // The batch: each event in the windows it was not late for when it arrived.
        let mut groups: BTreeMap<(u8, Window), Vec<Option<f64>>> = BTreeMap::new();
        let (mut counted, mut late, mut outside) = (0, 0, 0);
        for (((key, ts, v), got), wm) in evs.iter().zip(&admitted).zip(&marks) {
            let windows = spec.assign(*ts);
            let live: Vec<Window> = windows.iter().copied().filter(|w| wm.is_none_or(|wm| w.max_timestamp() + lateness > wm)).collect();
            let want = if windows.is_empty() { Admitted::Unwindowed } else if live.is_empty() { Admitted::Late } else { Admitted::Counted };
            prop_assert_eq!(*got, want);
            match got { Admitted::Counted => counted += 1, Admitted::Late => late += 1, Admitted::Unwindowed => outside += 1 }
            for w in live {
                groups.entry((*key, w)).or_default().push(*v);
            }
        }
        prop_assert_eq!(counted + late + outside, evs.len(), "every event is accounted for");
        let expected: Sink = groups.into_iter().map(|(k, vs)| (k, batch(&vs))).collect();
        prop_assert_eq!(sink, expected);
    }

    /// A checkpoint taken anywhere, written out as text and read back into a new operator,
    /// continues as if nothing had happened.
    #[test]
    fn a_restored_checkpoint_continues_as_the_uninterrupted_run(
        spec in prop_oneof![spec(), (1i64..5000).prop_map(|gap| WindowSpec::Session { gap })],
        lateness in 0i64..5000, delay in 0i64..3000, evs in events(), cut in 0.0f64..1.0, early in prop::option::of(1usize..5),
    ) {
        let (whole, _, _) = stream(spec, lateness, delay, &evs, early);
        let at = (cut * evs.len() as f64) as usize;
        let mut op = WindowOperator::new(spec, AGGS.to_vec(), lateness);
        let mut sink = Sink::new();
        let mut max_seen: Option<Millis> = None;
        for (i, (key, ts, v)) in evs.iter().enumerate() {
            if i == at {
                let text = op.checkpoint().to_string();
                op = WindowOperator::restore(spec, AGGS.to_vec(), lateness, &serde_json::from_str(&text).unwrap()).unwrap();
            }
            op.insert(key, *ts, &[*v; 7], max_seen.map(|m| m - delay));
            if early.is_some_and(|n| (i + 1) % n == 0) {
                apply(&mut sink, op.emit_early());
            }
            max_seen = Some(max_seen.map_or(*ts, |m| m.max(*ts)));
            apply(&mut sink, op.advance(max_seen.unwrap_or(0) - delay));
        }
        apply(&mut sink, op.advance(Millis::MAX / 4));
        prop_assert_eq!(sink, whole);
        let other = WindowOperator::<u8>::restore(spec, vec![Agg::Count], lateness, &op.checkpoint());
        prop_assert!(other.is_err(), "state made for other aggregates is refused");
    }

    #[test]
    fn sessions_equal_the_batch_whatever_the_order(gap in 1i64..5000, evs in events(), early in prop::option::of(1usize..5)) {
        // Lateness longer than any disorder: nothing is late, so the sessions are the batch's;
        // sessions emitted early and then merged are retracted.
        let (sink, admitted, _) = stream(WindowSpec::Session { gap }, 1_000_000, 0, &evs, early);
        prop_assert!(admitted.iter().all(|a| *a == Admitted::Counted));
        let mut expected = Sink::new();
        let keys: BTreeSet<u8> = evs.iter().map(|e| e.0).collect();
        for key in keys {
            let mut mine: Vec<(Millis, Option<f64>)> = evs.iter().filter(|e| e.0 == key).map(|e| (e.1, e.2)).collect();
            mine.sort_by_key(|e| e.0);
            // Sessions as closed intervals: an event within `gap` of the session's last joins it.
            let mut current: Option<(Window, Vec<Option<f64>>)> = None;
            for (ts, v) in mine {
                match &mut current {
                    Some((w, vs)) if ts <= w.end => {
                        w.end = w.end.max(ts + gap);
                        vs.push(v);
                    }
                    _ => {
                        if let Some((w, vs)) = current.take() {
                            expected.insert((key, w), batch(&vs));
                        }
                        current = Some((Window { start: ts, end: ts + gap }, vec![v]));
                    }
                }
            }
            if let Some((w, vs)) = current {
                expected.insert((key, w), batch(&vs));
            }
        }
        prop_assert_eq!(sink, expected);
    }

    /// With disorder beyond the lateness, some events are late, and a session emitted and
    /// forgotten may be followed by an overlapping one (Flink does the same: the new event's
    /// own window is not late, and the old session's state is gone). Every event is still
    /// either counted in exactly one emitted session or reported late.
    #[test]
    fn late_sessions_are_reported_and_the_rest_counted_once(
        gap in 1i64..5000, lateness in 0i64..5000, delay in 0i64..3000, evs in events(), early in prop::option::of(1usize..5),
    ) {
        let (sink, admitted, _) = stream(WindowSpec::Session { gap }, lateness, delay, &evs, early);
        let counted = admitted.iter().filter(|a| **a == Admitted::Counted).count();
        let late = admitted.iter().filter(|a| **a == Admitted::Late).count();
        prop_assert_eq!(counted + late, evs.len());
        let in_sink: f64 = sink.values().map(|v| v[0].unwrap_or(0.0)).sum();
        prop_assert_eq!(in_sink as usize, counted, "each counted event is in exactly one emitted session");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn an_interval_join_finds_what_a_batch_join_finds_among_the_events_on_time(
        // Times and bounds in tenths of a second, so that events fall on the bounds often.
        evs in prop::collection::vec((any::<bool>(), 0u8..3, (0i64..300).prop_map(|t| t * 100)), 0..160),
        lower in (-50i64..50).prop_map(|t| t * 100),
        width in (0i64..80).prop_map(|t| t * 100),
        delay in (0i64..30).prop_map(|t| t * 100),
        lateness in (0i64..20).prop_map(|t| t * 100),
    ) {
        let upper = lower + width;
        let mut join: IntervalJoin<u8, usize> = IntervalJoin::new(lower, upper, lateness);
        let (mut found, mut on_time) = (BTreeSet::new(), vec![]);
        let mut max_seen: Option<Millis> = None;
        for (i, (right, key, ts)) in evs.iter().enumerate() {
            let wm = max_seen.map(|m| m - delay);
            let side = if *right { Side::Right } else { Side::Left };
            if !join.is_late(*ts, wm) {
                on_time.push(i);
                for other in join.meet(side, key, *ts) {
                    let pair = if *right { (*other, i) } else { (i, *other) };
                    prop_assert!(found.insert(pair), "{pair:?} found twice");
                }
                join.hold(side, *key, *ts, i);
            }
            max_seen = Some(max_seen.map_or(*ts, |m| m.max(*ts)));
            join.advance(max_seen.unwrap_or(0) - delay);
        }
        // The batch join of the events on time.
        let mut expected = BTreeSet::new();
        for &l in &on_time {
            for &r in &on_time {
                let ((lr, lk, lt), (rr, rk, rt)) = (evs[l], evs[r]);
                if !lr && rr && lk == rk && (lower..=upper).contains(&(rt - lt)) {
                    expected.insert((l, r));
                }
            }
        }
        prop_assert_eq!(found, expected);
        join.advance(Millis::MAX / 4);
        prop_assert_eq!(join.held(), 0, "nothing is held once the watermark has passed");
    }
}
