//! Event-time windows as Flink defines them: start-inclusive, end-exclusive, aligned to the
//! UTC epoch (plus an optional offset). A tumbling window holds each event once; a hopping
//! window of `size` every `slide` holds it in each window that covers it; a session window
//! starts as `[ts, ts + gap)` and merges with every session it overlaps or touches, so events
//! exactly `gap` apart share a session (Flink merges sessions as closed intervals).

/// Event time: milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// `[start, end)` of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: Millis,
    pub end: Millis,
}

impl Window {
    /// All of time: the window of [`WindowSpec::Global`].
    pub const ALL: Window = Window { start: Millis::MIN, end: Millis::MAX };

    /// The last instant inside the window: it closes when the watermark reaches this.
    pub fn max_timestamp(&self) -> Millis {
        self.end - 1
    }

    /// Whether two session windows merge: they overlap or touch.
    pub fn meets(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// The kinds of window a job groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    Tumble {
        size: Millis,
        offset: Millis,
    },
    Hop {
        size: Millis,
        slide: Millis,
        offset: Millis,
    },
    Session {
        gap: Millis,
    },
    /// No window: one running result per key for all time (a `group by` without a window),
    /// which never closes and is emitted whenever it changes.
    Global,
}

impl WindowSpec {
    /// A spec that can hold events: positive sizes, and an offset smaller than the step.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            WindowSpec::Tumble { size, offset } if size <= 0 || offset.abs() >= size => {
                Err(format!("a tumbling window needs a positive size and an offset smaller than it (size {size} ms, offset {offset} ms)"))
            }
            WindowSpec::Hop { size, slide, offset } if size <= 0 || slide <= 0 || offset.abs() >= slide => Err(format!(
                "a hopping window needs a positive size and slide, and an offset smaller than the slide (size {size} ms, slide {slide} ms, offset {offset} ms)"
            )),
            WindowSpec::Session { gap } if gap <= 0 => Err(format!("a session window needs a positive gap, not {gap} ms")),
            _ => Ok(()),
        }
    }

    /// The windows an event at `ts` falls in, earliest first. A session event's window is
    /// its own `[ts, ts + gap)`, before merging.
    pub fn assign(&self, ts: Millis) -> Vec<Window> {
        match *self {
            WindowSpec::Tumble { size, offset } => {
                let start = window_start(ts, offset, size);
                vec![Window { start, end: start + size }]
            }
            WindowSpec::Hop { size, slide, offset } => {
                let last = window_start(ts, offset, slide);
                let mut out = vec![];
                let mut start = last;
                while start > ts - size {
                    out.push(Window { start, end: start + size });
                    start -= slide;
                }
                out.reverse();
                out
            }
            WindowSpec::Session { gap } => vec![Window { start: ts, end: ts + gap }],
            WindowSpec::Global => vec![Window::ALL],
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }
}

/// Flink's `TimeWindow.getWindowStartWithOffset`: the start of the step-aligned window
/// holding `ts`, for negative times too.
pub fn window_start(ts: Millis, offset: Millis, step: Millis) -> Millis {
    ts - (ts - offset).rem_euclid(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Millis = 1000;

    #[test]
    fn boundaries_follow_flink() {
        let tumble = WindowSpec::Tumble { size: 5 * S, offset: 0 };
        assert_eq!(tumble.assign(0), vec![Window { start: 0, end: 5000 }]);
        assert_eq!(tumble.assign(4999), vec![Window { start: 0, end: 5000 }], "the end is exclusive");
        assert_eq!(tumble.assign(5000), vec![Window { start: 5000, end: 10_000 }], "the start is inclusive");
        assert_eq!(tumble.assign(-1), vec![Window { start: -5000, end: 0 }], "aligned to the epoch before it too");
        let offset = WindowSpec::Tumble { size: 3_600_000, offset: 15 * 60_000 };
        assert_eq!(offset.assign(16 * 60_000)[0].start, 15 * 60_000);

        let hop = WindowSpec::Hop { size: 10 * S, slide: 5 * S, offset: 0 };
        assert_eq!(hop.assign(7000), vec![Window { start: 0, end: 10_000 }, Window { start: 5000, end: 15_000 }]);
        assert_eq!(hop.assign(5000), vec![Window { start: 0, end: 10_000 }, Window { start: 5000, end: 15_000 }]);
        assert_eq!(hop.assign(4999), vec![Window { start: -5000, end: 5000 }, Window { start: 0, end: 10_000 }]);
        let gappy = WindowSpec::Hop { size: 2 * S, slide: 5 * S, offset: 0 };
        assert!(gappy.assign(3000).is_empty(), "a slide longer than the size leaves gaps no window covers");

        let a = Window { start: 0, end: 1000 };
        assert!(a.meets(&Window { start: 1000, end: 2000 }), "sessions exactly a gap apart merge");
        assert!(!a.meets(&Window { start: 1001, end: 2001 }));
        assert!(WindowSpec::Session { gap: 0 }.check().is_err());
        assert!(WindowSpec::Hop { size: 10, slide: 0, offset: 0 }.check().is_err());
    }
}
