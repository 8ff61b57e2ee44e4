//! A join of two streams as the runner runs it: each event of either stream, decoded,
//! meets the held events of the other with its key and within the time bound
//! ([`crate::join`]); each pair found is a row of both streams' columns, and the job's
//! `on`, `where` and `select` are evaluated over the micro-batch's pairs in one query.
//!
//! **Exactly once.** The held events are checkpointed with the positions. After a crash the
//! job reads again from its checkpoint and finds again the pairs it found since; a pair
//! whose two events were both read before the sink's last commit is in the table already
//! and is not written again.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Value as J, json};

use super::decode::{Cell, Decoder, Kind};
use super::eval::{key_text, text_ref};
use super::sink::Counts;
use super::{Decoded, Runner, aside, now_ms};
use crate::join::{IntervalJoin, Side};
use crate::plan::{Plan, StreamJoin};
use crate::{Refused, StreamError};

/// The state of a join of two streams.
pub(super) struct Joining {
    op: IntervalJoin<String, Held>,
    /// Per side: where its key columns are among its decoded columns, and their kinds.
    keys: [Vec<(usize, Kind)>; 2],
    /// Per input and partition: the offset up to which the sink's last commit had read.
    pub written: BTreeMap<(usize, u32), u64>,
    /// The micro-batch's pairs, as rows of the first stream's columns then the second's.
    found: Vec<Vec<Cell>>,
}

/// An event held by the join: where it is in its topic, its text (for checkpoints) and its
/// columns.
struct Held {
    partition: u32,
    offset: u64,
    event: Box<[u8]>,
    cells: Vec<Cell>,
}

impl Joining {
    pub fn new(plan: &Plan, j: &StreamJoin, lateness: i64) -> Joining {
        let place =
            |columns: &[(String, String)], name: &str| columns.iter().position(|(n, _)| n == name).map(|i| (i, Kind::of(&columns[i].1)));
        let left = j.keys.iter().filter_map(|(l, _)| place(&plan.columns, l)).collect();
        let right = j.keys.iter().filter_map(|(_, r)| place(&j.columns, r)).collect();
        // Event times are whole milliseconds here and the `on` checks each pair to the
        // microsecond: the bound is widened by one millisecond each way, never narrowed.
        Joining {
            op: IntervalJoin::new(j.lower.saturating_sub(1), j.upper.saturating_add(1), lateness),
            keys: [left, right],
            written: BTreeMap::new(),
            found: vec![],
        }
    }

    /// Events held on both sides.
    pub fn held(&self) -> usize {
        self.op.held()
    }

    pub fn advance(&mut self, wm: i64) {
        self.op.advance(wm);
    }

    /// The key an event of input `i` is held and looked up by; none when a part is null
    /// (null equals nothing).
    fn key(&self, i: usize, cells: &[Cell]) -> Option<String> {
        let parts: Vec<Option<Cow<str>>> = self.keys[i].iter().map(|(c, k)| cells.get(*c).and_then(|cell| text_ref(cell, *k))).collect();
        parts.iter().all(Option::is_some).then(|| key_text(&parts))
    }

    /// The held events, for a checkpoint: `[side, key, time, partition, offset, event]`.
    pub fn checkpoint(&self) -> J {
        self.op
            .entries()
            .map(|(side, key, ts, h)| json!([side as u8, key, ts, h.partition, h.offset, String::from_utf8_lossy(&h.event)]))
            .collect()
    }

    /// The held events of a checkpoint, decoded again by each input's decoder.
    pub fn restore(&mut self, doc: &J, decoders: &[&Decoder]) -> Result<(), String> {
        let entries = doc.as_array().ok_or("the checkpoint holds no join state")?;
        for e in entries {
            let damaged = || format!("a held event of the join is damaged: {e}");
            let side = match e.get(0).and_then(J::as_u64) {
                Some(0) => Side::Left,
                Some(1) => Side::Right,
                _ => return Err(damaged()),
            };
            let key = e.get(1).and_then(J::as_str).ok_or_else(damaged)?;
            let ts = e.get(2).and_then(J::as_i64).ok_or_else(damaged)?;
            let partition = e.get(3).and_then(J::as_u64).ok_or_else(damaged)? as u32;
            let offset = e.get(4).and_then(J::as_u64).ok_or_else(damaged)?;
            let event = e.get(5).and_then(J::as_str).ok_or_else(damaged)?;
            let decoder = decoders.get(side as usize).ok_or_else(damaged)?;
            let (cells, _) = decoder.decode(event.as_bytes()).map_err(|m| format!("{}: {m}", damaged()))?;
            self.op.hold(side, key.to_string(), ts, Held { partition, offset, event: event.as_bytes().into(), cells });
        }
        Ok(())
    }
}

impl Runner<'_> {
    /// Takes consecutive records of partition `p` of input `i` into the join: each meets the
    /// other stream's held events and is held in turn, or is late or refused.
    pub(super) fn take_pairs(
        &mut self,
        i: usize,
        p: u32,
        records: &weir_log::Records,
        range: std::ops::Range<usize>,
        decoded: &mut [Decoded],
    ) -> Result<(), StreamError> {
        let now = now_ms();
        let (side, other) = if i == 0 { (Side::Left, 1) } else { (Side::Right, 0) };
        let topic = self.inputs[i].topic.clone();
        let mut c = Counts { read: range.len() as u64, ..Counts::default() };
        let Some(join) = self.join.as_mut() else { return Ok(()) };
        for (r, d) in records.slice(range.clone()).zip(&mut decoded[range.clone()]) {
            let (cells, ts) = match std::mem::replace(d, Err(String::new())) {
                Ok((cells, ts, _)) => (cells, ts),
                Err(reason) => {
                    c.rejected += 1;
                    self.pending.rejected.push(aside(&topic, p, r, reason, None));
                    continue;
                }
            };
            if let Err(Refused::Future { by }) = self.inputs[i].watermarks.observe(p as usize, ts, now) {
                c.rejected += 1;
                self.pending.rejected.push(aside(&topic, p, r, format!("dated {by} ms past what max_future allows"), None));
                continue;
            }
            if join.op.is_late(ts, self.wm) {
                c.late += 1;
                let wm = self.wm.unwrap_or(i64::MIN);
                let reason = format!(
                    "later than the allowed lateness ({} ms): events of the other stream it would meet were let go at the watermark {}",
                    self.run.job.config.allowed_lateness_ms,
                    super::decode::format_micros(wm.saturating_mul(1000))
                );
                self.pending.late.push(aside(&topic, p, r, reason, Some((ts, wm))));
                continue;
            }
            c.counted += 1;
            // A null key meets nothing, now or later.
            let Some(key) = join.key(i, &cells) else { continue };
            let written = |input: usize, part: u32, offset: u64| join.written.get(&(input, part)).is_some_and(|w| offset < *w);
            let mine_written = written(i, p, r.offset);
            let mut found = vec![];
            for h in join.op.meet(side, &key, ts) {
                if mine_written && written(other, h.partition, h.offset) {
                    continue;
                }
                let (left, right) = if side == Side::Left { (&cells, &h.cells) } else { (&h.cells, &cells) };
                found.push(left.iter().chain(right.iter()).cloned().collect());
            }
            join.found.extend(found);
            join.op.hold(side, key, ts, Held { partition: p, offset: r.offset, event: r.value.into(), cells });
        }
        if let Some(last) = range.end.checked_sub(1).and_then(|l| records.get(l)) {
            self.inputs[i].positions.insert(p, last.offset + 1);
        }
        self.inputs[i].counts.entry(p).or_default().add(&c);
        self.advance(now);
        Ok(())
    }

    /// The micro-batch's pairs through the job's `on`, `where` and `select`, as rows of its
    /// sink, in the order they were found.
    pub(super) fn evaluate_pairs(&mut self) -> Result<(), StreamError> {
        let Some(join) = self.join.as_mut() else { return Ok(()) };
        if join.found.is_empty() {
            return Ok(());
        }
        let found = std::mem::take(&mut join.found);
        let refs: Vec<&[Cell]> = found.iter().map(Vec::as_slice).collect();
        let mut rows = self.evaluator.project(&refs, self.run.plan.outputs.len())?;
        rows.sort_by_key(|(i, _)| *i);
        self.pending.rows.extend(rows.into_iter().map(|(_, row)| (row, false)));
        Ok(())
    }
}
