//! Window state written down and read back: a job checkpoints its operators' state with the
//! input positions it has reached, and after a crash resumes from both, giving what one
//! uninterrupted run gives. Floats are kept as their bits, so a restored accumulator is the
//! same to the last bit.
//!
//! A checkpoint names the windows and aggregates it was made with; restoring it into an
//! operator with others is refused, since the state would mean something else (a job whose
//! SQL changed its windows or aggregates starts again from scratch, when told to).

use std::collections::{BTreeMap, HashSet};

use hashbrown::HashMap;
use std::hash::Hash;

use serde_json::{Value as J, json};

use crate::operator::{Acc, Agg, Slot, WindowOperator};
use crate::sketch::Sketch;
use crate::window::{Window, WindowSpec};

/// A group key that can be written into a checkpoint.
pub trait StateKey: Clone + Eq + Hash {
    fn to_json(&self) -> J;
    fn from_json(v: &J) -> Option<Self>;
}

impl StateKey for String {
    fn to_json(&self) -> J {
        J::String(self.clone())
    }

    fn from_json(v: &J) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl StateKey for u8 {
    fn to_json(&self) -> J {
        J::from(*self)
    }

    fn from_json(v: &J) -> Option<Self> {
        v.as_u64().and_then(|n| u8::try_from(n).ok())
    }
}

impl<K: StateKey> WindowOperator<K> {
    /// The operator's whole state.
    pub fn checkpoint(&self) -> J {
        let mut windows = vec![];
        for (key, slots) in &self.state {
            for (w, slot) in slots {
                windows.push(json!({
                    "key": key.to_json(), "start": w.start, "end": w.end,
                    "fired": slot.fired, "emitted": slot.emitted, "dirty": slot.dirty,
                    "replaced": slot.replaced.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
                    "accs": slot.accs.iter().map(acc_json).collect::<Vec<_>>(),
                }));
            }
        }
        json!({
            "shape": shape(&self.spec, &self.aggs, self.allowed_lateness),
            "windows": windows,
            "refire": self.refire.iter().map(|(k, w)| json!([k.to_json(), w.start, w.end])).collect::<Vec<_>>(),
        })
    }

    /// An operator for `spec`, `aggs` and `allowed_lateness` holding the state of `doc`.
    pub fn restore(spec: WindowSpec, aggs: Vec<Agg>, allowed_lateness: i64, doc: &J) -> Result<WindowOperator<K>, String> {
        let mut op = WindowOperator::new(spec, aggs, allowed_lateness);
        let want = shape(&op.spec, &op.aggs, op.allowed_lateness);
        if doc.get("shape") != Some(&want) {
            return Err(format!(
                "the checkpoint was made for other windows or aggregates ({}), not these ({want})",
                doc.get("shape").cloned().unwrap_or(J::Null)
            ));
        }
        let bad = |what: &str| format!("the checkpoint is damaged: {what}");
        let window = |v: &J, at: usize| -> Option<Window> { Some(Window { start: v.get(at)?.as_i64()?, end: v.get(at + 1)?.as_i64()? }) };
        let mut state: HashMap<K, BTreeMap<Window, Slot>> = HashMap::new();
        for w in doc.get("windows").and_then(J::as_array).ok_or_else(|| bad("no windows"))? {
            let key = w.get("key").and_then(K::from_json).ok_or_else(|| bad("a key"))?;
            let range = Window {
                start: w.get("start").and_then(J::as_i64).ok_or_else(|| bad("a window start"))?,
                end: w.get("end").and_then(J::as_i64).ok_or_else(|| bad("a window end"))?,
            };
            let accs: Vec<Acc> = w
                .get("accs")
                .and_then(J::as_array)
                .ok_or_else(|| bad("accumulators"))?
                .iter()
                .zip(&op.aggs)
                .map(|(a, agg)| acc_from_json(a, *agg))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("an accumulator"))?;
            if accs.len() != op.aggs.len() {
                return Err(bad("the number of accumulators"));
            }
            let flag = |k: &str| w.get(k).and_then(J::as_bool).ok_or_else(|| bad(k));
            let replaced = w
                .get("replaced")
                .and_then(J::as_array)
                .ok_or_else(|| bad("replaced windows"))?
                .iter()
                .map(|r| window(r, 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a replaced window"))?;
            // Its timer is set when the timers are rebuilt.
            let slot = Slot { accs, fired: flag("fired")?, emitted: flag("emitted")?, dirty: flag("dirty")?, replaced, timer: None };
            state.entry(key).or_default().insert(range, slot);
        }
        for r in doc.get("refire").and_then(J::as_array).ok_or_else(|| bad("no refire list"))? {
            let key = r.get(0).and_then(K::from_json).ok_or_else(|| bad("a key to emit again"))?;
            op.refire.push((key, window(r, 1).ok_or_else(|| bad("a window to emit again"))?));
        }
        op.state = state;
        op.rebuild_timers();
        Ok(op)
    }
}

/// What a checkpoint's state means: its windows, aggregates and lateness.
fn shape(spec: &WindowSpec, aggs: &[Agg], lateness: i64) -> J {
    let spec = match *spec {
        WindowSpec::Tumble { size, offset } => json!({"tumble": {"size": size, "offset": offset}}),
        WindowSpec::Hop { size, slide, offset } => json!({"hop": {"size": size, "slide": slide, "offset": offset}}),
        WindowSpec::Session { gap } => json!({"session": {"gap": gap}}),
        WindowSpec::Global => json!("global"),
    };
    let aggs: Vec<J> = aggs
        .iter()
        .map(|a| match a {
            Agg::Count => json!("count"),
            Agg::CountValues => json!("count_values"),
            Agg::Sum => json!("sum"),
            Agg::Min => json!("min"),
            Agg::Max => json!("max"),
            Agg::Avg => json!("avg"),
            Agg::CountDistinct => json!("count_distinct"),
            Agg::Percentile { basis_points } => json!({"percentile": basis_points}),
        })
        .collect();
    json!({"window": spec, "aggregates": aggs, "allowed_lateness": lateness})
}

fn bits(v: f64) -> J {
    J::from(v.to_bits())
}

fn from_bits(v: &J) -> Option<f64> {
    v.as_u64().map(f64::from_bits)
}

fn acc_json(a: &Acc) -> J {
    match a {
        Acc::Count(n) | Acc::CountValues(n) => json!(n),
        Acc::Sum(m) | Acc::Min(m) | Acc::Max(m) => m.map_or(J::Null, bits),
        Acc::Avg { sum, n } => json!([bits(*sum), n]),
        Acc::Distinct(set) => {
            let mut v: Vec<u64> = set.iter().copied().collect();
            v.sort_unstable();
            json!(v)
        }
        Acc::Quantile { sketch, .. } => sketch.to_json(),
    }
}

fn acc_from_json(v: &J, agg: Agg) -> Option<Acc> {
    Some(match (Acc::new(agg), v) {
        (Acc::Count(_), v) => Acc::Count(v.as_u64()?),
        (Acc::CountValues(_), v) => Acc::CountValues(v.as_u64()?),
        (Acc::Sum(_), J::Null) => Acc::Sum(None),
        (Acc::Sum(_), v) => Acc::Sum(Some(from_bits(v)?)),
        (Acc::Min(_), J::Null) => Acc::Min(None),
        (Acc::Min(_), v) => Acc::Min(Some(from_bits(v)?)),
        (Acc::Max(_), J::Null) => Acc::Max(None),
        (Acc::Max(_), v) => Acc::Max(Some(from_bits(v)?)),
        (Acc::Avg { .. }, v) => Acc::Avg { sum: from_bits(v.get(0)?)?, n: v.get(1)?.as_u64()? },
        (Acc::Distinct(_), v) => Acc::Distinct(v.as_array()?.iter().map(J::as_u64).collect::<Option<HashSet<u64>>>()?),
        (Acc::Quantile { q, .. }, v) => Acc::Quantile { q, sketch: Sketch::from_json(v)? },
    })
}
