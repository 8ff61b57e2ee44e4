//! Events of a job whose group keys and aggregate arguments are the event's own columns (no
//! SQL in between), decoded straight into what the window state takes: per event its key's
//! text, its event time and its arguments, each kept in one buffer for the whole batch. No
//! value is allocated per event, none crosses from the decoding threads to the one that
//! folds the events in, and the decoded row is forgotten as soon as its key is read.

use std::ops::Range;

use weir_log::Records;

use super::decode::{Decoder, Scratch};
use super::eval::Direct;

/// A micro-batch's events of one partition, in offset order.
#[derive(Debug, Default)]
pub struct KeyedEvents {
    /// Every event's key text one after another; event `i`'s ends at `ends[i]`.
    text: Vec<u8>,
    ends: Vec<usize>,
    ts: Vec<i64>,
    /// `width` arguments per event.
    args: Vec<Option<f64>>,
    width: usize,
    /// The refused events: their place in the batch and why, in order.
    refused: Vec<(usize, String)>,
}

/// One event: its key, event time and arguments, or why it is refused.
pub type KeyedEvent<'a> = Result<(&'a str, i64, &'a [Option<f64>]), &'a str>;

impl KeyedEvents {
    /// The values of `records[range]`, each decoded by `decoder` and read by `direct`.
    pub fn decode(decoder: &Decoder, direct: &Direct, records: &Records, range: Range<usize>) -> KeyedEvents {
        let width = direct.width();
        let n = range.len();
        let mut out = KeyedEvents {
            text: Vec::with_capacity(n * 8),
            ends: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            args: Vec::with_capacity(n * width),
            width,
            refused: vec![],
        };
        let mut scratch = Scratch::default();
        for (i, r) in records.iter().skip(range.start).take(n).enumerate() {
            match decoder.decode_record_into(&r, &mut scratch) {
                Ok(ts) => {
                    direct.key_into(&scratch.cells, &mut out.text, &mut out.args);
                    out.ts.push(ts);
                }
                Err(reason) => {
                    out.refused.push((i, reason));
                    out.ts.push(0);
                    out.args.resize(out.args.len() + width, None);
                }
            }
            out.ends.push(out.text.len());
        }
        out
    }

    /// Events of the batch a decoding thread that failed leaves: each refused with `reason`.
    pub fn refused(n: usize, width: usize, reason: &str) -> KeyedEvents {
        KeyedEvents {
            text: vec![],
            ends: vec![0; n],
            ts: vec![0; n],
            args: vec![None; n * width],
            width,
            refused: (0..n).map(|i| (i, reason.to_string())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// The events of `range`, in order.
    pub fn events(&self, range: Range<usize>) -> impl Iterator<Item = KeyedEvent<'_>> + '_ {
        let mut refused = self.refused[self.refused.partition_point(|(i, _)| *i < range.start)..].iter().peekable();
        range.map(move |i| {
            if let Some((_, reason)) = refused.next_if(|(at, _)| *at == i) {
                return Err(reason.as_str());
            }
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            // Keys are written from text and JSON escapes: always UTF-8.
            let key = std::str::from_utf8(&self.text[start..self.ends[i]]).unwrap_or_default();
            Ok((key, self.ts[i], &self.args[i * self.width..(i + 1) * self.width]))
        })
    }

    /// `other`'s events after these (the next chunk of the same batch).
    pub fn append(&mut self, other: KeyedEvents) {
        let (at, base) = (self.len(), self.text.len());
        self.text.extend_from_slice(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        self.ts.extend_from_slice(&other.ts);
        self.args.extend_from_slice(&other.args);
        self.refused.extend(other.refused.into_iter().map(|(i, r)| (i + at, r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::eval::key_text;
    use weir_log::StoredRecord;

    #[test]
    fn events_come_back_in_order_with_the_refused_in_place_across_chunks() {
        let columns: Vec<(String, String)> =
            [("k", "varchar"), ("ts", "timestamp"), ("v", "bigint")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let decoder = Decoder::new(&columns, Some("ts"));
        // Keyed by k, summing v.
        let direct = Direct::of(vec![0], vec![Some(2)], decoder.kinds().to_vec());
        let values = [
            r#"{"k": "a", "ts": "2026-12-02 10:00:00", "v": 1}"#,
            r#"{"k": "a", "ts": "oops", "v": 2}"#,
            r#"{"k": "b\"c", "ts": "2026-12-02 10:00:01", "v": null}"#,
            "not json",
            r#"{"ts": "2026-12-02 10:00:02", "v": 5}"#,
        ];
        let records = Records::from(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| StoredRecord {
                    offset: i as u64,
                    timestamp: 0,
                    key: None,
                    value: v.as_bytes().to_vec(),
                    txn: 0,
                    headers: vec![],
                })
                .collect::<Vec<_>>(),
        );
        let mut events = KeyedEvents::decode(&decoder, &direct, &records, 0..2);
        events.append(KeyedEvents::decode(&decoder, &direct, &records, 2..5));
        let got: Vec<_> =
            events.events(0..5).map(|e| e.map(|(k, ts, a)| (k.to_string(), ts, a.to_vec())).map_err(|r| r.to_string())).collect();
        assert_eq!(got[0], Ok((key_text(&[Some("a")]), 1_796_205_600_000, vec![Some(1.0)])));
        assert!(got[1].as_ref().is_err_and(|r| r.contains("expected timestamp")));
        assert_eq!(got[2], Ok((key_text(&[Some("b\"c")]), 1_796_205_601_000, vec![None])));
        assert!(got[3].as_ref().is_err_and(|r| r.starts_with("not a JSON object")));
        assert_eq!(got[4], Ok((key_text::<&str>(&[None]), 1_796_205_602_000, vec![Some(5.0)])));
        let tail: Vec<bool> = events.events(3..5).map(|e| e.is_ok()).collect();
        assert_eq!(tail, vec![false, true], "a range starting anywhere finds its refused events");
    }
}
