//! Approximate quantiles with a relative error bound (DDSketch): values are counted in
//! buckets whose bounds grow by a factor `gamma = (1 + a) / (1 - a)`, so any quantile is
//! answered within `a` (1%) of the true value, in memory logarithmic in the values' range,
//! and two sketches merge by adding their buckets (sessions that merge, partial results).

use std::collections::BTreeMap;

/// The relative accuracy of every answer.
pub const RELATIVE_ERROR: f64 = 0.01;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bucket of a positive value: `gamma^(i-1) < x <= gamma^i`.
fn bucket(x: f64) -> i32 {
    (x.ln() / gamma().ln()).ceil() as i32
}

/// The value a bucket answers with: within the relative error of everything in it.
fn representative(i: i32) -> f64 {
    2.0 * gamma().powi(i) / (gamma() + 1.0)
}

impl Sketch {
    /// Counts a value; NaN and infinities are not values a quantile can be.
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if v > f64::MIN_POSITIVE {
            *self.positive.entry(bucket(v)).or_default() += 1;
        } else if v < -f64::MIN_POSITIVE {
            *self.negative.entry(bucket(-v)).or_default() += 1;
        } else {
            self.zeros += 1;
        }
        self.count += 1;
    }

    pub fn merge(&mut self, other: Sketch) {
        for (i, n) in other.positive {
            *self.positive.entry(i).or_default() += n;
        }
        for (i, n) in other.negative {
            *self.negative.entry(i).or_default() += n;
        }
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// The sketch as a checkpoint keeps it.
    pub fn to_json(&self) -> serde_json::Value {
        let buckets = |m: &BTreeMap<i32, u64>| m.iter().map(|(i, n)| serde_json::json!([i, n])).collect::<Vec<_>>();
        serde_json::json!({"positive": buckets(&self.positive), "negative": buckets(&self.negative), "zeros": self.zeros, "count": self.count})
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Sketch> {
        let buckets = |k: &str| -> Option<BTreeMap<i32, u64>> {
            v.get(k)?.as_array()?.iter().map(|b| Some((i32::try_from(b.get(0)?.as_i64()?).ok()?, b.get(1)?.as_u64()?))).collect()
        };
        Some(Sketch {
            positive: buckets("positive")?,
            negative: buckets("negative")?,
            zeros: v.get("zeros")?.as_u64()?,
            count: v.get("count")?.as_u64()?,
        })
    }

    /// The `q` quantile (0 to 1) of the values counted: the value at rank `q * (count - 1)`,
    /// within the relative error; `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (i, n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                return Some(-representative(*i));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (i, n) in &self.positive {
            seen += n;
            if seen > rank {
                return Some(representative(*i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_quantile_is_within_the_relative_error(
            values in prop::collection::vec(prop_oneof![-1e6f64..1e6, Just(0.0), 1e-3f64..10.0], 1..400),
            q in 0.0f64..=1.0,
            split in 0usize..400,
        ) {
            // Counted in two sketches and merged, as two sessions are.
            let (a, b) = values.split_at(split.min(values.len()));
            let mut s = Sketch::default();
            let mut t = Sketch::default();
            a.iter().for_each(|v| s.add(*v));
            b.iter().for_each(|v| t.add(*v));
            s.merge(t);
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
            let got = s.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= RELATIVE_ERROR * exact.abs() + 1e-12, "q {} got {} exact {}", q, got, exact);
        }
    }

    #[test]
    fn nothing_counted_has_no_quantile() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.add(f64::NAN);
        assert_eq!(s.quantile(0.5), None);
        s.add(42.0);
        assert!((s.quantile(0.99).unwrap() - 42.0).abs() <= 0.42);
    }
}
