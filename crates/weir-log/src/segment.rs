//! One segment of a partition: an append-only file of framed records and a sparse index.
//!
//! A frame is `len u32 | crc32 u32 | body`, little-endian, where the CRC covers the body and
//! the body is `offset u64 | timestamp i64 | txn u64 | key_len u32 | key | value_len u32 |
//! value`, then, for a record with headers, `count u32` and each header as `name_len u32 |
//! name | value_len u32 | value` (`key_len` is `u32::MAX` for no key; a body that ends after
//! its value, as every body did before headers, has none). A frame is only ever appended whole, then
//! synced; a frame cut short by a crash, or one whose CRC does not match, ends the segment,
//! and opening the segment truncates the file there. Everything before it was acknowledged
//! and is kept.
//!
//! The index (`<base>.index`) holds one entry every [`INDEX_EVERY`] bytes of log: the
//! offset, the file position of its frame, and the greatest timestamp up to it. It is a
//! hint: entries past the end of the valid log are dropped on open, and a missing index is
//! rebuilt by scanning.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::records::Span;
use crate::{LogError, Record, Records, StoredRecord};

/// Bytes of log between two index entries.
pub const INDEX_EVERY: u64 = 64 * 1024;

const HEADER: usize = 8;
const FIXED_BODY: usize = 8 + 8 + 8 + 4 + 4;
const INDEX_ENTRY: usize = 24;
/// Bytes read from the file at a time by [`Segment::read_into`].
const READ_CHUNK: usize = 256 * 1024;

/// One segment, open for reading and (the last one of a partition) appending.
#[derive(Debug)]
pub struct Segment {
    /// The offset of its first record; the file is named after it.
    pub base: u64,
    /// The offset the next record appended here gets.
    pub next: u64,
    /// Bytes of valid log.
    pub size: u64,
    /// The greatest record timestamp in it (`i64::MIN` when empty).
    pub max_timestamp: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    index: Vec<IndexEntry>,
    /// Bytes appended since the last index entry.
    since_index: u64,
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    offset: u64,
    position: u64,
    max_timestamp: i64,
}

impl Segment {
    /// The file names of the segment starting at `base` in `dir`.
    pub fn paths(dir: &Path, base: u64) -> (PathBuf, PathBuf) {
        (dir.join(format!("{base:020}.log")), dir.join(format!("{base:020}.index")))
    }

    /// Creates an empty segment.
    pub fn create(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let (log_path, index_path) = Segment::paths(dir, base);
        File::create(&log_path).map_err(|e| LogError::io(&log_path, e))?;
        File::create(&index_path).map_err(|e| LogError::io(&index_path, e))?;
        sync_dir(dir)?;
        Ok(Segment { base, next: base, size: 0, max_timestamp: i64::MIN, log_path, index_path, index: vec![], since_index: 0 })
    }

    /// Opens a segment, truncating a torn or corrupt tail: the index tells where the
    /// last known-good stretch starts, and the frames after it are checked one by one.
    pub fn open(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let (log_path, index_path) = Segment::paths(dir, base);
        let len = std::fs::metadata(&log_path).map_err(|e| LogError::io(&log_path, e))?.len();
        let mut index = read_index(&index_path)?;
        index.retain(|e| e.position < len);
        // The last entry must point at the frame of its offset; an index that does not is
        // ignored (scanning from the start), never trusted to cut the log.
        if let Some(e) = index.last() {
            let mut f = File::open(&log_path).map_err(|e| LogError::io(&log_path, e))?;
            f.seek(SeekFrom::Start(e.position)).map_err(|e| LogError::io(&log_path, e))?;
            if read_frame(&mut BufReader::new(f))?.is_none_or(|(_, r)| r.offset != e.offset) {
                index.clear();
            }
        }
        let mut seg = Segment { base, next: base, size: 0, max_timestamp: i64::MIN, log_path, index_path, index, since_index: 0 };
        let (start, mut next, mut max_ts) = match seg.index.last() {
            Some(e) => (e.position, e.offset, e.max_timestamp),
            None => (0, base, i64::MIN),
        };
        let mut file = File::open(&seg.log_path).map_err(|e| LogError::io(&seg.log_path, e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| LogError::io(&seg.log_path, e))?;
        let mut reader = BufReader::new(file);
        let mut pos = start;
        let mut last_indexed = start;
        while let Some((frame_len, rec)) = read_frame(&mut reader)? {
            if rec.offset != next {
                break;
            }
            if pos - last_indexed >= INDEX_EVERY {
                seg.index.push(IndexEntry { offset: rec.offset, position: pos, max_timestamp: max_ts });
                last_indexed = pos;
            }
            max_ts = max_ts.max(rec.timestamp);
            next += 1;
            pos += frame_len;
        }
        if pos < len {
            let f = OpenOptions::new().write(true).open(&seg.log_path).map_err(|e| LogError::io(&seg.log_path, e))?;
            f.set_len(pos).map_err(|e| LogError::io(&seg.log_path, e))?;
            f.sync_all().map_err(|e| LogError::io(&seg.log_path, e))?;
        }
        seg.next = next;
        seg.size = pos;
        seg.max_timestamp = max_ts;
        seg.since_index = pos - last_indexed;
        seg.write_index()?;
        Ok(seg)
    }

    /// Appends `records` as offsets `self.next..`, with `txn` in each frame, and syncs the
    /// file before returning: once this returns, the records survive a crash.
    pub fn append(&mut self, records: &[Record], txn: u64) -> Result<(), LogError> {
        let mut buf =
            Vec::with_capacity(records.iter().map(|r| HEADER + FIXED_BODY + r.value.len() + r.key.as_ref().map_or(0, Vec::len)).sum());
        let mut pos = self.size;
        let mut offset = self.next;
        let mut max_ts = self.max_timestamp;
        let mut new_entries = vec![];
        let mut since = self.since_index;
        for r in records {
            let start = buf.len();
            encode(&mut buf, offset, r, txn);
            let frame = (buf.len() - start) as u64;
            if since >= INDEX_EVERY {
                new_entries.push(IndexEntry { offset, position: pos, max_timestamp: max_ts });
                since = 0;
            }
            since += frame;
            max_ts = max_ts.max(r.timestamp);
            pos += frame;
            offset += 1;
        }
        let mut f = OpenOptions::new().append(true).open(&self.log_path).map_err(|e| LogError::io(&self.log_path, e))?;
        f.write_all(&buf).and_then(|_| f.sync_data()).map_err(|e| LogError::io(&self.log_path, e))?;
        self.size = pos;
        self.next = offset;
        self.max_timestamp = max_ts;
        self.since_index = since;
        if !new_entries.is_empty() {
            self.index.extend(new_entries);
            self.write_index()?;
        }
        Ok(())
    }

    /// Up to `max` records from `offset` on (which must be in this segment), appended to
    /// `out`: the file is read in large chunks straight into `out`'s buffer, and each frame
    /// is checked where it lies.
    pub fn read_into(&self, offset: u64, max: usize, out: &mut Records) -> Result<(), LogError> {
        if offset >= self.next || max == 0 {
            return Ok(());
        }
        let start = self.index.iter().rev().find(|e| e.offset <= offset).map_or(0, |e| e.position);
        let mut file = File::open(&self.log_path).map_err(|e| LogError::io(&self.log_path, e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| LogError::io(&self.log_path, e))?;
        // Bytes of valid log not yet read, and where the next frame starts in the buffer.
        let mut left = self.size - start;
        let mut at = out.bytes_len();
        let mut taken = 0;
        while taken < max {
            let pending = out.bytes_from(at);
            let need = match frame_len(pending) {
                Some(len) if pending.len() >= HEADER + len => {
                    let (header, rest) = pending.split_at(HEADER);
                    let body = &rest[..len];
                    if crc32fast::hash(body) != u32::from_le_bytes([header[4], header[5], header[6], header[7]]) {
                        break;
                    }
                    let Some(f) = fields(body) else { break };
                    if f.offset >= offset {
                        let base = at + HEADER;
                        out.push(Span {
                            key: f.key.map(|(k, n)| (base + k, n)),
                            value: (base + f.value.0, f.value.1),
                            headers: (base + f.headers.0, f.headers.1),
                            ..f
                        });
                        taken += 1;
                    }
                    at += HEADER + len;
                    continue;
                }
                Some(len) => HEADER + len - pending.len(),
                None if pending.len() < HEADER => HEADER - pending.len(),
                // Not a frame: the end of the valid log.
                None => break,
            };
            if left == 0 {
                break;
            }
            let want = (need.max(READ_CHUNK) as u64).min(left) as usize;
            let spare = out.spare(want);
            let got = read_up_to(&mut file, spare).map_err(|e| LogError::io(&self.log_path, e))?;
            out.filled(want, got);
            if got == 0 {
                break;
            }
            left -= got as u64;
        }
        out.truncate_bytes(at);
        Ok(())
    }

    /// The log file's length on disk: more than [`Segment::size`] when another process
    /// appended (or left a torn tail), less when another truncated a torn tail of its own.
    pub fn on_disk(&self) -> Result<Option<u64>, LogError> {
        match std::fs::metadata(&self.log_path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io(&self.log_path, e)),
        }
    }

    /// Deletes the segment's files.
    pub fn remove(self) -> Result<(), LogError> {
        std::fs::remove_file(&self.log_path).map_err(|e| LogError::io(&self.log_path, e))?;
        let _ = std::fs::remove_file(&self.index_path);
        Ok(())
    }

    fn write_index(&self) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(self.index.len() * INDEX_ENTRY);
        for e in &self.index {
            buf.extend(e.offset.to_le_bytes());
            buf.extend(e.position.to_le_bytes());
            buf.extend(e.max_timestamp.to_le_bytes());
        }
        std::fs::write(&self.index_path, buf).map_err(|e| LogError::io(&self.index_path, e))
    }
}

fn read_index(path: &Path) -> Result<Vec<IndexEntry>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let mut out: Vec<IndexEntry> = vec![];
    for c in bytes.chunks_exact(INDEX_ENTRY) {
        let word = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap_or_default());
        let e = IndexEntry { offset: word(0), position: word(8), max_timestamp: word(16) as i64 };
        // Entries only grow; anything else is a damaged index, rebuilt from the log.
        if out.last().is_some_and(|l| l.offset >= e.offset || l.position >= e.position) {
            return Ok(vec![]);
        }
        out.push(e);
    }
    Ok(out)
}

/// Appends one frame for `r` at `offset` to `buf`.
pub fn encode(buf: &mut Vec<u8>, offset: u64, r: &Record, txn: u64) {
    let start = buf.len();
    buf.extend([0u8; HEADER]);
    buf.extend(offset.to_le_bytes());
    buf.extend(r.timestamp.to_le_bytes());
    buf.extend(txn.to_le_bytes());
    match &r.key {
        Some(k) => {
            buf.extend((k.len() as u32).to_le_bytes());
            buf.extend(k);
        }
        None => buf.extend(u32::MAX.to_le_bytes()),
    }
    buf.extend((r.value.len() as u32).to_le_bytes());
    buf.extend(&r.value);
    if !r.headers.is_empty() {
        encode_headers(buf, &r.headers);
    }
    let body = &buf[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the next whole, intact frame; `None` at the end or at a torn or corrupt frame.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u64, StoredRecord)>, LogError> {
    let mut header = [0u8; HEADER];
    if !read_full(r, &mut header)? {
        return Ok(None);
    }
    let Some(len) = frame_len(&header) else { return Ok(None) };
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut body = vec![0u8; len];
    if !read_full(r, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(decode(&body).map(|rec| ((HEADER + len) as u64, rec)))
}

fn decode(body: &[u8]) -> Option<StoredRecord> {
    let f = fields(body)?;
    let key = f.key.map(|(at, n)| body[at..at + n].to_vec());
    let value = body[f.value.0..f.value.0 + f.value.1].to_vec();
    let headers = decode_headers(&body[f.headers.0..f.headers.0 + f.headers.1])?;
    Some(StoredRecord { offset: f.offset, timestamp: f.timestamp, txn: f.txn, key, value, headers })
}

/// Headers as a frame's body ends with them: `count u32`, then each name and value with
/// their lengths.
pub(crate) fn encode_headers(buf: &mut Vec<u8>, headers: &[(String, Vec<u8>)]) {
    buf.extend((headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        buf.extend((name.len() as u32).to_le_bytes());
        buf.extend(name.as_bytes());
        buf.extend((value.len() as u32).to_le_bytes());
        buf.extend(value);
    }
}

/// The headers [`encode_headers`] wrote (none in no bytes); `None` when the bytes are not
/// such headers, whole.
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Option<crate::Headers> {
    if bytes.is_empty() {
        return Some(vec![]);
    }
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        bytes = rest;
        Some(head)
    };
    let len = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes).map(|n| n as usize);
    let count = len(take(4)?)?;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = len(take(4)?)?;
        let name = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = len(take(4)?)?;
        out.push((name, take(n)?.to_vec()));
    }
    bytes.is_empty().then_some(out)
}

/// A frame's body read: its fixed fields, and where its key and value lie in it.
fn fields(body: &[u8]) -> Option<Span> {
    let u64_at = |i: usize| body.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let u32_at = |i: usize| body.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let offset = u64_at(0)?;
    let timestamp = u64_at(8)? as i64;
    let txn = u64_at(16)?;
    let key_len = u32_at(24)?;
    let mut at = 28;
    let key = if key_len == u32::MAX {
        None
    } else {
        let n = key_len as usize;
        body.get(at..at + n)?;
        at += n;
        Some((at - n, n))
    };
    let value_len = u32_at(at)? as usize;
    at += 4;
    body.get(at..at + value_len)?;
    let end = at + value_len;
    let headers = (end, body.len() - end);
    decode_headers(&body[end..])?;
    Some(Span { offset, timestamp, txn, key, value: (at, value_len), headers })
}

/// The body length a frame's header gives, when the header is whole and the length is one a
/// frame can have (a key and a value of at most `MAX_RECORD_BYTES` each).
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    (FIXED_BODY..=3 * crate::MAX_RECORD_BYTES + FIXED_BODY).contains(&len).then_some(len)
}

/// Reads as much of `buf` as the file gives before it ends.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Fills `buf`; `false` when the input ends first (a clean end or a torn frame).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, LogError> {
    let n = read_up_to(r, buf).map_err(|e| LogError::Io { path: String::new(), message: e.to_string() })?;
    Ok(n == buf.len())
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LogError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Record {
        Record {
            key: (!i.is_multiple_of(3)).then(|| format!("k{i}").into_bytes()),
            value: format!("value {i}").into_bytes(),
            timestamp: i as i64 * 10,
            headers: if i % 4 == 1 { vec![("trace".into(), format!("t{i}").into_bytes()), ("empty".into(), vec![])] } else { vec![] },
        }
    }

    fn read(seg: &Segment, offset: u64, max: usize) -> Vec<StoredRecord> {
        let mut out = Records::default();
        seg.read_into(offset, max, &mut out).unwrap();
        out.to_stored()
    }

    #[test]
    fn reads_take_frames_across_chunks_and_larger_than_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0).unwrap();
        let mut records: Vec<Record> = (0..3000).map(rec).collect();
        // A value longer than a chunk, in the middle.
        records[1500].value = vec![b'v'; READ_CHUNK * 2 + 17];
        seg.append(&records, 0).unwrap();
        let got = read(&seg, 0, usize::MAX);
        assert_eq!(got.len(), 3000);
        for (i, r) in got.iter().enumerate() {
            assert_eq!((r.offset, &r.key, &r.value), (i as u64, &records[i].key, &records[i].value), "record {i}");
        }
        // Appended to what a reader holds already, from another segment's records.
        let mut out =
            Records::from(vec![StoredRecord { offset: 0, timestamp: 0, key: None, value: b"before".to_vec(), txn: 0, headers: vec![] }]);
        seg.read_into(1499, 3, &mut out).unwrap();
        let values: Vec<usize> = out.iter().map(|r| r.value.len()).collect();
        assert_eq!(values, vec![6, records[1499].value.len(), READ_CHUNK * 2 + 17, records[1501].value.len()]);
    }

    #[test]
    fn frames_round_trip_and_reads_start_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 100).unwrap();
        let records: Vec<Record> = (0..5000).map(rec).collect();
        seg.append(&records[..2500], 0).unwrap();
        seg.append(&records[2500..], 7).unwrap();
        assert_eq!(seg.next, 5100);
        assert!(!seg.index.is_empty(), "a segment this size has index entries");
        let got = read(&seg, 4321, 3);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4321, 4322, 4323]);
        assert_eq!(got[0].value, rec(4221).value);
        assert_eq!(got[0].txn, 7);
        for r in read(&seg, 100, 5000) {
            assert_eq!(r.headers, rec(r.offset - 100).headers, "headers kept at {}", r.offset);
        }
        assert_eq!(got[0].headers, vec![("trace".to_string(), b"t4221".to_vec()), ("empty".to_string(), vec![])]);
        assert_eq!(read(&seg, 100, 1)[0].key, None);
        let reopened = Segment::open(dir.path(), 100).unwrap();
        assert_eq!((reopened.next, reopened.size, reopened.max_timestamp), (seg.next, seg.size, seg.max_timestamp));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_on_open_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0).unwrap();
        seg.append(&(0..10).map(rec).collect::<Vec<_>>(), 0).unwrap();
        let good = seg.size;
        // Half a frame, as a crash in the middle of a write leaves it.
        let mut tail = vec![];
        encode(&mut tail, 10, &rec(10), 0);
        let mut f = OpenOptions::new().append(true).open(&seg.log_path).unwrap();
        f.write_all(&tail[..tail.len() / 2]).unwrap();
        drop(f);
        let mut seg = Segment::open(dir.path(), 0).unwrap();
        assert_eq!((seg.next, seg.size), (10, good));
        assert_eq!(std::fs::metadata(&seg.log_path).unwrap().len(), good);
        // A flipped byte in the last frame: that frame goes, the others stay.
        seg.append(&[rec(10)], 0).unwrap();
        let mut bytes = std::fs::read(&seg.log_path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&seg.log_path, bytes).unwrap();
        let seg = Segment::open(dir.path(), 0).unwrap();
        assert_eq!(seg.next, 10);
        assert_eq!(read(&seg, 9, 5).len(), 1);
    }

    proptest::proptest! {
        /// Whatever prefix of the file a crash leaves (a cut anywhere, even inside a frame),
        /// opening it keeps exactly the whole frames before the cut, and appends continue
        /// from there.
        #[test]
        fn any_cut_keeps_exactly_the_whole_frames_before_it(
            sizes in proptest::collection::vec(0usize..3000, 1..60), cut in 0.0f64..=1.0
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut seg = Segment::create(dir.path(), 0).unwrap();
            let records: Vec<Record> =
                sizes.iter().enumerate().map(|(i, n)| Record { key: None, value: vec![i as u8; *n], timestamp: i as i64, headers: vec![] }).collect();
            let mut ends = vec![];
            for r in &records {
                seg.append(std::slice::from_ref(r), 0).unwrap();
                ends.push(seg.size);
            }
            let at = (cut * seg.size as f64) as u64;
            OpenOptions::new().write(true).open(&seg.log_path).unwrap().set_len(at).unwrap();
            let mut seg = Segment::open(dir.path(), 0).unwrap();
            let whole = ends.iter().filter(|e| **e <= at).count();
            proptest::prop_assert_eq!(seg.next, whole as u64);
            let got = read(&seg, 0, usize::MAX);
            proptest::prop_assert_eq!(got.len(), whole);
            proptest::prop_assert!(got.iter().zip(&records).all(|(g, r)| g.value == r.value));
            seg.append(&records[..1], 0).unwrap();
            proptest::prop_assert_eq!(read(&seg, whole as u64, 1)[0].offset, whole as u64);
        }
    }

    #[test]
    fn a_damaged_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0).unwrap();
        seg.append(&(0..20_000).map(rec).collect::<Vec<_>>(), 0).unwrap();
        std::fs::write(&seg.index_path, vec![0xffu8; 50]).unwrap();
        let seg = Segment::open(dir.path(), 0).unwrap();
        assert_eq!(seg.next, 20_000);
        assert_eq!(read(&seg, 12_345, 1)[0].value, rec(12_345).value);
        // An entry pointing into the middle of a frame: ignored, not followed.
        let mut entry = vec![];
        entry.extend(15_000u64.to_le_bytes());
        entry.extend(300_001u64.to_le_bytes());
        entry.extend(0i64.to_le_bytes());
        std::fs::write(&seg.index_path, entry).unwrap();
        let seg = Segment::open(dir.path(), 0).unwrap();
        assert_eq!(seg.next, 20_000);
    }
}
