//! The embedded backend: topics as folders of partitions under `.weir/log/topics/`, consumer
//! groups as small files under `.weir/log/groups/`.
//!
//! Several processes may share one log (`weir serve` taking events over HTTP while
//! `weir log produce` appends from a file): every append and every recovery of a partition
//! holds that partition's lock file, and a process notices what another appended before it
//! reads or writes.
//!
//! An atomic commit is a redo journal: the outputs and the new positions are written to
//! `groups/<group>.commit` and made durable by a rename, then appended, each record marked
//! with the commit's transaction number, then the positions are written and the journal
//! removed. A crash before the rename leaves nothing; after it, the journal is applied again
//! when the group is next used, skipping the records of that transaction already appended.
//! A record is appended only once its commit is decided, so nothing a reader saw is ever
//! taken back.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value as J, json};

use crate::partition::Partition;
use crate::segment::{self, sync_dir};
use crate::{
    Commit, Log, LogError, PartitionInfo, Positions, Record, Records, Retention, StoredRecord, TopicInfo, TopicSpec, partition_for,
};

/// Segments are rolled at this size, so retention frees space a segment at a time.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Topics and groups in one folder (a project's `.weir/log/`).
pub struct EmbeddedLog {
    root: PathBuf,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    segment_bytes: u64,
}

struct Topic {
    spec: Mutex<TopicSpec>,
    partitions: Vec<Mutex<Handle>>,
    round_robin: AtomicU32,
}

/// A partition as this process last saw it, and its lock file.
struct Handle {
    dir: PathBuf,
    lock: File,
    part: Partition,
}

impl Handle {
    /// Takes the partition's lock (shared with other processes) and catches up with what
    /// another process appended since this one last looked.
    fn locked(&mut self) -> Result<PartitionLock<'_>, LogError> {
        self.lock.lock().map_err(|e| LogError::io(&self.dir, e))?;
        let lock = PartitionLock { handle: self };
        if lock.handle.part.stale()? {
            lock.handle.part = Partition::open(&lock.handle.dir)?;
        }
        Ok(lock)
    }
}

/// A partition held under its lock file; released when dropped.
struct PartitionLock<'a> {
    handle: &'a mut Handle,
}

impl Drop for PartitionLock<'_> {
    fn drop(&mut self) {
        let _ = self.handle.lock.unlock();
    }
}

impl EmbeddedLog {
    /// Opens (creating it if needed) the log in `root`, usually `<project>/.weir/log`.
    /// A project's log, under `<project>/.weir/log/`: where `weir log`, `weir serve` and the
    /// stream jobs all find it.
    pub fn for_project(project: &Path) -> Result<EmbeddedLog, LogError> {
        EmbeddedLog::open(&project.join(".weir").join("log"))
    }

    pub fn open(root: &Path) -> Result<EmbeddedLog, LogError> {
        for dir in [root.join("topics"), root.join("groups")] {
            std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        }
        Ok(EmbeddedLog {
            root: root.to_path_buf(),
            topics: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            segment_bytes: SEGMENT_BYTES,
        })
    }

    /// Rolls segments at `bytes` instead of 64 MiB (tests of retention).
    pub fn with_segment_bytes(mut self, bytes: u64) -> EmbeddedLog {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// The topics made, by name, from the folder alone.
    fn topic_names(&self) -> Result<Vec<String>, LogError> {
        let dir = self.root.join("topics");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io(&dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("topic.json").exists())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.root.join("topics").join(name)
    }

    /// The topic, opened on first use.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        check_name("topic", name)?;
        let mut topics = self.topics.lock().map_err(|_| poisoned())?;
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let dir = self.topic_dir(name);
        let spec = read_spec(&dir, name)?.ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let mut partitions = Vec::with_capacity(spec.partitions as usize);
        for p in 0..spec.partitions {
            let pdir = dir.join(p.to_string());
            std::fs::create_dir_all(&pdir).map_err(|e| LogError::io(&pdir, e))?;
            let lock_path = pdir.join(".lock");
            let lock =
                File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| LogError::io(&lock_path, e))?;
            lock.lock().map_err(|e| LogError::io(&lock_path, e))?;
            let part = Partition::open(&pdir);
            let _ = lock.unlock();
            partitions.push(Mutex::new(Handle { dir: pdir, lock, part: part? }));
        }
        let t = Arc::new(Topic { spec: Mutex::new(spec), partitions, round_robin: AtomicU32::new(0) });
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn handle<'t>(&self, topic: &'t Topic, name: &str, partition: u32) -> Result<MutexGuard<'t, Handle>, LogError> {
        let h = topic.partitions.get(partition as usize).ok_or_else(|| LogError::UnknownPartition {
            topic: name.to_string(),
            partition,
            partitions: topic.partitions.len() as u32,
        })?;
        h.lock().map_err(|_| poisoned())
    }

    /// Groups records by the partition each goes to, keeping their order.
    fn route(&self, topic: &Topic, partition: Option<u32>, records: &[Record]) -> BTreeMap<u32, Vec<(usize, Record)>> {
        let n = topic.partitions.len() as u32;
        let mut by_partition: BTreeMap<u32, Vec<(usize, Record)>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let p = match (partition, &r.key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for(k, n),
                (None, None) => topic.round_robin.fetch_add(1, Ordering::Relaxed) % n.max(1),
            };
            by_partition.entry(p).or_default().push((i, r.clone()));
        }
        by_partition
    }

    fn group_lock(&self, group: &str) -> Result<Arc<Mutex<()>>, LogError> {
        check_name("consumer group", group)?;
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        Ok(groups.entry(group.to_string()).or_default().clone())
    }

    /// Applies a journal left by a commit that did not finish, if there is one.
    fn recover(&self, group: &str) -> Result<(), LogError> {
        let path = self.root.join("groups").join(format!("{group}.commit"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let journal = Journal::decode(&bytes)
                    .ok_or_else(|| LogError::Corrupt { path: path.display().to_string(), message: "unreadable commit journal".into() })?;
                self.apply(group, &journal)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(&path, e)),
        }
    }

    /// Appends what of the journal's outputs is not there yet, then records the positions
    /// and removes the journal.
    fn apply(&self, group: &str, j: &Journal) -> Result<(), LogError> {
        for out in &j.outputs {
            let topic = self.topic(&out.topic)?;
            let mut handle = self.handle(&topic, &out.topic, out.partition)?;
            let lock = handle.locked()?;
            let already = lock.handle.part.count_txn(j.txn, out.from)?;
            if already < out.records.len() {
                lock.handle.part.append(&out.records[already..], j.txn, self.segment_bytes)?;
            }
        }
        let doc = json!({
            "txn": j.txn,
            "positions": j.positions.iter().map(|((t, p), o)| json!([t, p, o])).collect::<Vec<_>>(),
        });
        let dir = self.root.join("groups");
        write_atomically(&dir.join(format!("{group}.json")), doc.to_string().as_bytes())?;
        let journal = dir.join(format!("{group}.commit"));
        std::fs::remove_file(&journal).map_err(|e| LogError::io(&journal, e))?;
        sync_dir(&dir)
    }

    fn read_group(&self, group: &str) -> Result<Positions, LogError> {
        let path = self.root.join("groups").join(format!("{group}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Positions::new()),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        let corrupt = |m: &str| LogError::Corrupt { path: path.display().to_string(), message: m.to_string() };
        let doc: J = serde_json::from_str(&text).map_err(|e| corrupt(&e.to_string()))?;
        let mut positions = Positions::new();
        for p in doc.get("positions").and_then(J::as_array).into_iter().flatten() {
            match (p.get(0).and_then(J::as_str), p.get(1).and_then(J::as_u64), p.get(2).and_then(J::as_u64)) {
                (Some(t), Some(part), Some(o)) => {
                    positions.insert((t.to_string(), part as u32), o);
                }
                _ => return Err(corrupt("a position is not [topic, partition, offset]")),
            }
        }
        Ok(positions)
    }
}

impl Log for EmbeddedLog {
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicInfo, LogError> {
        check_name("topic", &spec.name)?;
        if spec.partitions == 0 || spec.partitions > 10_000 {
            return Err(LogError::Invalid(format!("topic '{}': partitions must be 1 to 10000, not {}", spec.name, spec.partitions)));
        }
        let dir = self.topic_dir(&spec.name);
        match read_spec(&dir, &spec.name)? {
            Some(existing) if existing.partitions != spec.partitions => {
                return Err(LogError::Invalid(format!(
                    "topic '{}' exists with {} partition(s), not {}; the partitions of a topic cannot change",
                    spec.name, existing.partitions, spec.partitions
                )));
            }
            Some(existing) if existing == *spec => {}
            _ => {
                std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
                write_atomically(&dir.join("topic.json"), spec_json(spec).to_string().as_bytes())?;
                if let Some(t) = self.topics.lock().map_err(|_| poisoned())?.get(&spec.name)
                    && let Ok(mut s) = t.spec.lock()
                {
                    *s = spec.clone();
                }
            }
        }
        self.describe(&spec.name)
    }

    fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.topic_names()?.iter().map(|n| self.describe(n)).collect()
    }

    fn describe(&self, name: &str) -> Result<TopicInfo, LogError> {
        let topic = self.topic(name)?;
        let spec = topic.spec.lock().map_err(|_| poisoned())?.clone();
        let mut partitions = vec![];
        for p in 0..topic.partitions.len() as u32 {
            let mut h = self.handle(&topic, name, p)?;
            let lock = h.locked()?;
            let part = &lock.handle.part;
            partitions.push(PartitionInfo { partition: p, start: part.start(), end: part.end(), bytes: part.size() });
        }
        Ok(TopicInfo { spec, partitions })
    }

    fn append(&self, name: &str, partition: Option<u32>, records: &[Record]) -> Result<Vec<(u32, u64)>, LogError> {
        check_records(records)?;
        let topic = self.topic(name)?;
        let mut placed = vec![(0u32, 0u64); records.len()];
        for (p, batch) in self.route(&topic, partition, records) {
            let mut h = self.handle(&topic, name, p)?;
            let lock = h.locked()?;
            let recs: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
            let first = lock.handle.part.append(&recs, 0, self.segment_bytes)?;
            for (k, (i, _)) in batch.iter().enumerate() {
                placed[*i] = (p, first + k as u64);
            }
        }
        Ok(placed)
    }

    fn read(&self, name: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredRecord>, LogError> {
        Ok(self.read_records(name, partition, offset, max)?.to_stored())
    }

    fn read_records(&self, name: &str, partition: u32, offset: u64, max: usize) -> Result<Records, LogError> {
        let topic = self.topic(name)?;
        let mut h = self.handle(&topic, name, partition)?;
        if h.part.stale()? {
            let lock = h.locked()?;
            return lock.handle.part.read(offset, max);
        }
        h.part.read(offset, max)
    }

    fn groups(&self) -> Result<Vec<String>, LogError> {
        let dir = self.root.join("groups");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io(&dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                name.strip_suffix(".json").or_else(|| name.strip_suffix(".commit")).map(str::to_string)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn positions(&self, group: &str) -> Result<Positions, LogError> {
        let g = self.group_lock(group)?;
        let _held = g.lock().map_err(|_| poisoned())?;
        self.recover(group)?;
        self.read_group(group)
    }

    fn commit(&self, group: &str, commit: &Commit) -> Result<(), LogError> {
        let g = self.group_lock(group)?;
        let _held = g.lock().map_err(|_| poisoned())?;
        self.recover(group)?;
        let mut positions = self.read_group(group)?;
        positions.extend(commit.positions.iter().map(|(k, v)| (k.clone(), *v)));
        // One journal entry per partition, so that counting what is already there after a
        // crash counts this partition's records of this commit and nothing else.
        let mut outputs: BTreeMap<(String, u32), JournalOutput> = BTreeMap::new();
        for out in &commit.outputs {
            check_records(&out.records)?;
            let topic = self.topic(&out.topic)?;
            for (p, batch) in self.route(&topic, out.partition, &out.records) {
                let entry = match outputs.entry((out.topic.clone(), p)) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let mut h = self.handle(&topic, &out.topic, p)?;
                        let from = h.locked()?.handle.part.end();
                        e.insert(JournalOutput { topic: out.topic.clone(), partition: p, from, records: vec![] })
                    }
                };
                entry.records.extend(batch.into_iter().map(|(_, r)| r));
            }
        }
        let journal = Journal { txn: new_txn(), positions, outputs: outputs.into_values().collect() };
        let dir = self.root.join("groups");
        write_atomically(&dir.join(format!("{group}.commit")), &journal.encode())?;
        self.apply(group, &journal)
    }

    fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut removed = 0;
        for name in self.topic_names()? {
            let topic = self.topic(&name)?;
            let retention: Retention = topic.spec.lock().map_err(|_| poisoned())?.retention;
            for p in 0..topic.partitions.len() as u32 {
                let mut h = self.handle(&topic, &name, p)?;
                let lock = h.locked()?;
                removed += lock.handle.part.apply_retention(&retention, now_ms)?;
            }
        }
        Ok(removed)
    }
}

/// A commit's redo journal.
struct Journal {
    txn: u64,
    positions: Positions,
    outputs: Vec<JournalOutput>,
}

struct JournalOutput {
    topic: String,
    partition: u32,
    /// The partition's end when the journal was written: the commit's records are after it.
    from: u64,
    records: Vec<Record>,
}

const JOURNAL_MAGIC: &[u8; 4] = b"WLJ1";

impl Journal {
    fn encode(&self) -> Vec<u8> {
        let header = json!({
            "txn": self.txn,
            "positions": self.positions.iter().map(|((t, p), o)| json!([t, p, o])).collect::<Vec<_>>(),
            "outputs": self.outputs.iter().map(|o| json!({"topic": o.topic, "partition": o.partition, "from": o.from, "count": o.records.len()})).collect::<Vec<_>>(),
        })
        .to_string();
        let mut buf = Vec::with_capacity(header.len() + 64);
        buf.extend(JOURNAL_MAGIC);
        buf.extend((header.len() as u32).to_le_bytes());
        buf.extend(header.as_bytes());
        for o in &self.outputs {
            for r in &o.records {
                segment::encode(&mut buf, 0, r, self.txn);
            }
        }
        buf
    }

    fn decode(bytes: &[u8]) -> Option<Journal> {
        let rest = bytes.strip_prefix(JOURNAL_MAGIC)?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let header: J = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
        let mut frames = rest.get(4 + len..)?;
        let mut positions = Positions::new();
        for p in header.get("positions")?.as_array()? {
            positions.insert((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_u64()? as u32), p.get(2)?.as_u64()?);
        }
        let mut outputs = vec![];
        for o in header.get("outputs")?.as_array()? {
            let count = o.get("count")?.as_u64()? as usize;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let (_, r) = segment::read_frame(&mut frames).ok()??;
                records.push(Record { key: r.key, value: r.value, timestamp: r.timestamp, headers: r.headers });
            }
            outputs.push(JournalOutput {
                topic: o.get("topic")?.as_str()?.to_string(),
                partition: o.get("partition")?.as_u64()? as u32,
                from: o.get("from")?.as_u64()?,
                records,
            });
        }
        Some(Journal { txn: header.get("txn")?.as_u64()?, positions, outputs })
    }
}

fn spec_json(spec: &TopicSpec) -> J {
    json!({"partitions": spec.partitions, "retention_ms": spec.retention.ms, "retention_bytes": spec.retention.bytes})
}

fn read_spec(dir: &Path, name: &str) -> Result<Option<TopicSpec>, LogError> {
    let path = dir.join("topic.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let doc: J = serde_json::from_str(&text).map_err(|e| LogError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
    let partitions = doc
        .get("partitions")
        .and_then(J::as_u64)
        .filter(|p| *p > 0)
        .ok_or_else(|| LogError::Corrupt { path: path.display().to_string(), message: "no partition count".into() })?;
    Ok(Some(TopicSpec {
        name: name.to_string(),
        partitions: partitions as u32,
        retention: Retention { ms: doc.get("retention_ms").and_then(J::as_i64), bytes: doc.get("retention_bytes").and_then(J::as_u64) },
    }))
}

/// A name that may not become a file name is refused, saying the rule.
fn check_name(what: &str, name: &str) -> Result<(), LogError> {
    if crate::valid_name(name) {
        Ok(())
    } else {
        Err(LogError::Invalid(format!("{what} name '{name}' may hold only letters, digits, '.', '_' and '-' (at most 249)")))
    }
}

fn check_records(records: &[Record]) -> Result<(), LogError> {
    match records
        .iter()
        .position(|r| r.value.len() > crate::MAX_RECORD_BYTES || r.key.as_ref().is_some_and(|k| k.len() > crate::MAX_RECORD_BYTES))
    {
        Some(i) => Err(LogError::Invalid(format!("record {i} is larger than the 16 MiB a record may be"))),
        None => Ok(()),
    }
}

/// Writes a file so that it is either all there or not at all: a temporary file, synced,
/// renamed over the old one. Stream jobs write their checkpoints with it too.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    // A temporary of this process and call alone: two processes making the same topic at
    // once must not rename each other's file away.
    let tmp = path.with_extension(format!("{}.{:x}.tmp", std::process::id(), new_txn()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| LogError::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A transaction number no other commit uses: random, never 0 (a plain append). Counting a
/// commit's records after a crash looks only after where the commit began, so a clash would
/// need two commits with the same random 64 bits writing the same partition at once.
fn new_txn() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn poisoned() -> LogError {
    LogError::Invalid("a lock of the log was poisoned by a panic".into())
}
