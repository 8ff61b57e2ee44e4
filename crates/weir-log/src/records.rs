//! Records read in one go: their bytes in one buffer, each record a view into it. A stream
//! job reads tens of thousands of records per micro-batch; one allocation for all of them,
//! rather than one or two per record, is most of what reading them costs.

use crate::StoredRecord;

/// Consecutive records of one partition, in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    data: Vec<u8>,
    spans: Vec<Span>,
}

/// A record of [`Records`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// The atomic commit that wrote it (0 for a plain append).
    pub txn: u64,
    /// Its headers as the log's frames hold them (see [`RecordRef::headers`]).
    pub raw_headers: &'a [u8],
}

/// A record's fixed fields, and where its key and value lie in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) txn: u64,
    /// Start and length of the key.
    pub(crate) key: Option<(usize, usize)>,
    pub(crate) value: (usize, usize),
    /// Start and length of the headers' bytes (none: no length).
    pub(crate) headers: (usize, usize),
}

impl Records {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.spans.get(i).map(|s| self.view(s))
    }

    pub fn last(&self) -> Option<RecordRef<'_>> {
        self.spans.last().map(|s| self.view(s))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.slice(0..self.len())
    }

    /// The records of `range` (which must lie within).
    pub fn slice(&self, range: std::ops::Range<usize>) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.spans[range].iter().map(|s| self.view(s))
    }

    /// The records as owned values.
    pub fn to_stored(&self) -> Vec<StoredRecord> {
        self.iter().map(|r| r.to_stored()).collect()
    }

    /// Room for `bytes` more of raw frames: a backend reads into the returned slice, then
    /// says with [`Records::filled`] how much of it it filled.
    pub(crate) fn spare(&mut self, bytes: usize) -> &mut [u8] {
        let at = self.data.len();
        self.data.resize(at + bytes, 0);
        &mut self.data[at..]
    }

    /// Keeps `filled` bytes of the last [`Records::spare`] and drops the rest.
    pub(crate) fn filled(&mut self, spare: usize, filled: usize) {
        self.data.truncate(self.data.len() - spare + filled);
    }

    /// The buffer's bytes from `at` on (frames not yet taken).
    pub(crate) fn bytes_from(&self, at: usize) -> &[u8] {
        self.data.get(at..).unwrap_or_default()
    }

    /// Drops the buffer's bytes from `at` on (a frame read past what was asked for).
    pub(crate) fn truncate_bytes(&mut self, at: usize) {
        self.data.truncate(at);
    }

    pub(crate) fn bytes_len(&self) -> usize {
        self.data.len()
    }

    /// Takes a record whose key and value lie at the span's places of the buffer.
    pub(crate) fn push(&mut self, span: Span) {
        self.spans.push(span);
    }

    fn view(&self, s: &Span) -> RecordRef<'_> {
        RecordRef {
            offset: s.offset,
            timestamp: s.timestamp,
            txn: s.txn,
            key: s.key.map(|(at, n)| &self.data[at..at + n]),
            value: &self.data[s.value.0..s.value.0 + s.value.1],
            raw_headers: &self.data[s.headers.0..s.headers.0 + s.headers.1],
        }
    }
}

impl From<Vec<StoredRecord>> for Records {
    /// Owned records packed into one buffer (a backend that reads records one by one).
    fn from(records: Vec<StoredRecord>) -> Records {
        let mut out = Records { data: Vec::with_capacity(records.iter().map(|r| r.value.len()).sum()), spans: vec![] };
        let mut headers = vec![];
        for r in records {
            headers.clear();
            if !r.headers.is_empty() {
                crate::segment::encode_headers(&mut headers, &r.headers);
            }
            out.push_copy(RecordRef {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: &r.value,
                txn: r.txn,
                raw_headers: &headers,
            });
        }
        out
    }
}

impl Records {
    /// Appends a record, its key, value and headers copied into the buffer: what a backend
    /// handed records one at a time (by a client library) does.
    pub(crate) fn push_copy(&mut self, r: RecordRef<'_>) {
        let key = r.key.map(|k| {
            self.data.extend_from_slice(k);
            (self.data.len() - k.len(), k.len())
        });
        self.data.extend_from_slice(r.value);
        let value = (self.data.len() - r.value.len(), r.value.len());
        self.data.extend_from_slice(r.raw_headers);
        let headers = (self.data.len() - r.raw_headers.len(), r.raw_headers.len());
        self.spans.push(Span { offset: r.offset, timestamp: r.timestamp, txn: r.txn, key, value, headers });
    }

    /// The first `n` records taken out; the rest stay. What they leave behind in the buffer
    /// is reclaimed once it is most of it, so taking a little at a time from a large batch
    /// costs the records taken, not the ones left.
    pub(crate) fn take_front(&mut self, n: usize) -> Records {
        if n >= self.len() {
            return std::mem::take(self);
        }
        let mut front = Records::default();
        for r in self.slice(0..n) {
            front.push_copy(r);
        }
        self.spans.drain(..n);
        let dead = self.spans.first().map_or(self.data.len(), |s| s.key.map_or(s.value.0, |k| k.0.min(s.value.0)));
        if dead > self.data.len() / 2 {
            self.data.drain(..dead);
            for s in &mut self.spans {
                s.value.0 -= dead;
                s.headers.0 = s.headers.0.saturating_sub(dead);
                if let Some(k) = &mut s.key {
                    k.0 -= dead;
                }
            }
        }
        front
    }
}

impl RecordRef<'_> {
    pub fn to_stored(&self) -> StoredRecord {
        StoredRecord {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            txn: self.txn,
            headers: self.headers(),
        }
    }

    /// Its headers (none when the log's bytes of them are damaged, which reading checked).
    pub fn headers(&self) -> crate::Headers {
        crate::segment::decode_headers(self.raw_headers).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_records_pack_and_come_back() {
        let owned = vec![
            StoredRecord { offset: 4, timestamp: 10, key: Some(b"k".to_vec()), value: b"one".to_vec(), txn: 0, headers: vec![] },
            StoredRecord { offset: 5, timestamp: 11, key: None, value: vec![], txn: 3, headers: vec![("trace".into(), b"t1".to_vec())] },
            StoredRecord { offset: 6, timestamp: 12, key: Some(vec![]), value: b"three".to_vec(), txn: 0, headers: vec![] },
        ];
        let packed = Records::from(owned.clone());
        assert_eq!(packed.len(), 3);
        assert_eq!(packed.get(1).map(|r| (r.key, r.value, r.txn)), Some((None, &b""[..], 3)));
        assert_eq!(packed.last().map(|r| r.offset), Some(6));
        assert_eq!(packed.to_stored(), owned);
        assert!(packed.get(3).is_none());
        for first in 0..=3 {
            let mut rest = packed.clone();
            let front = rest.take_front(first);
            assert_eq!((front.to_stored(), rest.to_stored()), (owned[..first].to_vec(), owned[first..].to_vec()), "{first}");
            let second = rest.take_front(1);
            assert_eq!(second.to_stored(), owned[first..(first + 1).min(3)].to_vec());
            assert_eq!(rest.take_front(5).to_stored(), owned[(first + 1).min(3)..].to_vec());
            assert!(rest.is_empty());
        }
    }
}
