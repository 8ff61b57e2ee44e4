//! One partition of a topic: its segments in offset order, the last one taking appends, a
//! new one started when it reaches the topic's segment size, and whole old segments deleted
//! by retention.

use std::path::{Path, PathBuf};

use crate::segment::Segment;
use crate::{LogError, Record, Records, Retention};

#[derive(Debug)]
pub struct Partition {
    dir: PathBuf,
    /// Never empty: a partition always has the segment it appends to.
    segments: Vec<Segment>,
}

impl Partition {
    /// Opens the partition in `dir`, creating it (with one empty segment) if needed.
    pub fn open(dir: &Path) -> Result<Partition, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| LogError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, base) in bases.iter().enumerate() {
            let seg = Segment::open(dir, *base)?;
            // Only the last segment takes appends, so only it can lose a torn tail; an older
            // one ending short of the next one's base is damaged, and reading on would skip
            // records without a word.
            if i + 1 < bases.len() && seg.next != bases[i + 1] {
                return Err(LogError::Corrupt {
                    path: dir.display().to_string(),
                    message: format!("segment {base} ends at offset {} but the next starts at {}", seg.next, bases[i + 1]),
                });
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
        }
        Ok(Partition { dir: dir.to_path_buf(), segments })
    }

    /// Whether another process changed the partition since it was opened here: appended to
    /// it, started a segment, or deleted old ones.
    pub fn stale(&self) -> Result<bool, LogError> {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else { return Ok(true) };
        if last.on_disk()? != Some(last.size) || first.on_disk()?.is_none() {
            return Ok(true);
        }
        Ok(Segment::paths(&self.dir, last.next).0.exists() && last.next > last.base)
    }

    /// The first offset still kept.
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    /// The offset the next record appended gets.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next)
    }

    /// Bytes of log kept.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Appends `records`, starting a new segment first when the last one is full; returns
    /// the first record's offset. Synced to disk when it returns.
    pub fn append(&mut self, records: &[Record], txn: u64, segment_bytes: u64) -> Result<u64, LogError> {
        if self.segments.last().is_some_and(|s| s.size >= segment_bytes && s.next > s.base) {
            let next = self.end();
            self.segments.push(Segment::create(&self.dir, next)?);
        }
        let first = self.end();
        match self.segments.last_mut() {
            Some(seg) => seg.append(records, txn)?,
            None => return Err(LogError::Corrupt { path: self.dir.display().to_string(), message: "no segment".into() }),
        }
        Ok(first)
    }

    /// Up to `max` records from `offset` on. An offset below [`Partition::start`] (deleted
    /// by retention) reads from the start.
    pub fn read(&self, offset: u64, max: usize) -> Result<Records, LogError> {
        let mut out = Records::default();
        let mut at = offset.max(self.start());
        for seg in &self.segments {
            if out.len() >= max {
                break;
            }
            if seg.next <= at {
                continue;
            }
            seg.read_into(at, max - out.len(), &mut out)?;
            match out.last() {
                Some(last) => at = last.offset + 1,
                None => continue,
            }
        }
        Ok(out)
    }

    /// Deletes whole segments that retention no longer keeps: older than `max_age_ms`
    /// (their newest record) or beyond `max_bytes` counting from the newest. The segment
    /// taking appends is always kept.
    pub fn apply_retention(&mut self, retention: &Retention, now_ms: i64) -> Result<usize, LogError> {
        let mut keep_bytes: u64 = self.segments.iter().map(|s| s.size).sum();
        let mut removed = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_old = retention.ms.is_some_and(|ms| oldest.max_timestamp != i64::MIN && oldest.max_timestamp < now_ms - ms);
            let too_big = retention.bytes.is_some_and(|b| keep_bytes > b);
            if !(too_old || too_big) {
                break;
            }
            keep_bytes -= oldest.size;
            self.segments.remove(0).remove()?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Records of transaction `txn` from `from` to the end: how much of a commit is
    /// already here when it is applied again after a crash.
    pub fn count_txn(&self, txn: u64, from: u64) -> Result<usize, LogError> {
        let mut count = 0;
        let mut at = from;
        loop {
            let batch = self.read(at, 4096)?;
            let Some(last) = batch.last() else { return Ok(count) };
            at = last.offset + 1;
            count += batch.iter().filter(|r| r.txn == txn).count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize, ts: i64) -> Vec<Record> {
        (0..n).map(|i| Record { key: None, value: vec![b'x'; 100 + i % 7], timestamp: ts, headers: vec![] }).collect()
    }

    #[test]
    fn rolls_segments_reads_across_them_and_retention_drops_whole_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Partition::open(dir.path()).unwrap();
        for i in 0..10 {
            p.append(&recs(100, i * 1000), 0, 8 * 1024).unwrap();
        }
        assert_eq!(p.end(), 1000);
        assert!(p.segments.len() > 5, "{} segments", p.segments.len());
        let all = p.read(0, usize::MAX).unwrap();
        assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>());
        assert_eq!(p.read(950, 10).unwrap().to_stored()[0].offset, 950);

        let p2 = Partition::open(dir.path()).unwrap();
        assert_eq!((p2.start(), p2.end(), p2.size()), (0, 1000, p.size()));

        // Records up to ts 4000 are older than 5 s at now = 9500.
        let removed = p.apply_retention(&Retention { ms: Some(5000), bytes: None }, 9500).unwrap();
        assert!(removed > 0);
        assert!(p.start() > 0 && p.start() <= 500, "start {}", p.start());
        assert_eq!(p.read(0, 1).unwrap().to_stored()[0].offset, p.start(), "a read below the start begins at the start");
        p.apply_retention(&Retention { ms: None, bytes: Some(1) }, 9500).unwrap();
        assert_eq!(p.segments.len(), 1, "the segment taking appends stays");
        assert_eq!(p.end(), 1000);
    }
}
