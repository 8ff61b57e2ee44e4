//! The event log: topics split into partitions of records at increasing offsets, the
//! positions each consumer group has reached, and one atomic step that appends a job's
//! outputs together with the input positions they came from.
//!
//! [`Log`] is the seam every reader and writer of events uses; a stream job never knows which
//! backend is behind it. [`EmbeddedLog`] keeps topics as append-only segment files under
//! `.weir/log/`, read in-process, with no server: one laptop runs a real-time pipeline with
//! no services at all. [`KafkaLog`] puts the same topics on a Kafka cluster, a commit being
//! one Kafka transaction; [`Logs`] says which topic is where.

mod embedded;
mod kafka;
mod logs;
mod partition;
mod records;
mod segment;

use std::collections::BTreeMap;

pub use embedded::{EmbeddedLog, write_atomically};
pub use kafka::{KafkaConfig, KafkaLog};
pub use logs::{Backend, Logs};
pub use records::{RecordRef, Records};

/// The largest record value (and key) accepted: 16 MiB.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// A record's headers: names and values in order, as Kafka keeps them (a name may come
/// twice; a header Kafka holds with no value has an empty one).
pub type Headers = Vec<(String, Vec<u8>)>;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Records with the same key go to the same partition, in order.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Milliseconds since the Unix epoch: when it was produced.
    pub timestamp: i64,
    /// Kept as they came, on either log.
    pub headers: Headers,
}

/// A record as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The atomic commit that wrote it (0 for a plain append).
    pub txn: u64,
    pub headers: Headers,
}

/// How long a topic keeps records: whole old segments are deleted once every record in
/// them is older than `ms`, or while the partition holds more than `bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub ms: Option<i64>,
    pub bytes: Option<u64>,
}

/// What a topic is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub retention: Retention,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: u32) -> TopicSpec {
        TopicSpec { name: name.into(), partitions, retention: Retention::default() }
    }
}

/// A topic as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub spec: TopicSpec,
    pub partitions: Vec<PartitionInfo>,
}

/// One partition as it stands: the offsets it holds are `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start: u64,
    pub end: u64,
    pub bytes: u64,
}

/// Where a consumer group is: per topic and partition, the next offset to read.
pub type Positions = BTreeMap<(String, u32), u64>;

/// What one atomic commit writes: records for topics (each partitioned by key, or placed in
/// the partition given) and the group's new positions.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub outputs: Vec<Output>,
    pub positions: Positions,
}

/// Records for one topic in a commit.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    /// `None`: each record's partition follows from its key.
    pub partition: Option<u32>,
    pub records: Vec<Record>,
}

/// The event log's seam.
pub trait Log: Send + Sync {
    /// Makes the topic if it does not exist; an existing topic keeps its partitions (a
    /// different count is an error) and takes the new retention.
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicInfo, LogError>;

    /// Every topic, by name.
    fn topics(&self) -> Result<Vec<TopicInfo>, LogError>;

    fn describe(&self, topic: &str) -> Result<TopicInfo, LogError>;

    /// Appends records, each to the partition its key hashes to (round-robin without a key),
    /// or all to `partition`; returns each record's (partition, offset). Durable on return.
    fn append(&self, topic: &str, partition: Option<u32>, records: &[Record]) -> Result<Vec<(u32, u64)>, LogError>;

    /// Up to `max` records of a partition from `offset` on.
    fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredRecord>, LogError>;

    /// The same records as [`Log::read`], in one buffer: what stream jobs read, micro-batch
    /// after micro-batch. A backend that can fill one buffer straight from its storage does.
    fn read_records(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Records, LogError> {
        Ok(Records::from(self.read(topic, partition, offset, max)?))
    }

    /// The first offset of a partition whose record was appended at or after `time_ms` (the
    /// partition's end when none was): where a reader that starts from a time begins.
    fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64, LogError> {
        let info = self.describe(topic)?;
        let p = info.partitions.get(partition as usize).ok_or_else(|| LogError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            partitions: info.partitions.len() as u32,
        })?;
        let mut at = p.start;
        while at < p.end {
            let records = self.read_records(topic, partition, at, 10_000)?;
            let Some(last) = records.last() else { break };
            if let Some(r) = records.iter().find(|r| r.timestamp >= time_ms) {
                return Ok(r.offset);
            }
            at = last.offset + 1;
        }
        Ok(p.end)
    }

    /// The consumer groups that committed positions, by name.
    fn groups(&self) -> Result<Vec<String>, LogError>;

    /// The positions a consumer group committed last.
    fn positions(&self, group: &str) -> Result<Positions, LogError>;

    /// Takes over `group`'s commits: whatever a process that held it before left half done
    /// is settled (an open transaction aborted), and that process can no longer commit for
    /// it. A job claims its group before it reads its positions.
    fn claim(&self, _group: &str) -> Result<(), LogError> {
        Ok(())
    }

    /// Joins `group` as one of the workers that share the partitions of `topics`, under the
    /// name `member` (stable across restarts of the same worker, so that one restarted
    /// settles what it left half done): the partitions are dealt out among the members and
    /// dealt again when one joins, leaves or dies. Commits for the group are then this
    /// member's, and refused ([`LogError::Rebalanced`]) once the group has dealt its
    /// partitions again. Only a log that many processes reach can share a job.
    fn join_group(&self, group: &str, _topics: &[String], _member: &str) -> Result<(), LogError> {
        Err(LogError::Invalid(format!(
            "group '{group}': workers share a job's partitions through Kafka's consumer groups; \
             this event log is one process's: declare the job's topics with `log: kafka`"
        )))
    }

    /// The partitions this member of `group` owns now, or `None` while the group is dealing
    /// them out. Asked often: it also tells the group this member is alive.
    fn owned(&self, group: &str) -> Result<Option<Vec<(String, u32)>>, LogError> {
        Err(LogError::Invalid(format!("group '{group}' was not joined")))
    }

    /// Appends `commit.outputs` and moves `group` to `commit.positions`, all or nothing: after
    /// a crash at any moment, either both are there or neither is, and never twice.
    /// Positions may name things that are not topics (a committer's own marks): they are
    /// kept and given back by [`Log::positions`] all the same.
    fn commit(&self, group: &str, commit: &Commit) -> Result<(), LogError>;

    /// Deletes what each topic's retention no longer keeps; returns segments deleted.
    fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError>;
}

/// Whether a topic or consumer group may be called `name`: Kafka's rule (letters, digits,
/// `.`, `_`, `-`; at most 249; not `.` or `..`). Names become file names here.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The partition a key goes to, as Kafka's default partitioner picks it (murmur2 of the key,
/// positive, modulo the partitions), so a topic moved to Kafka keeps each key's partition.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Why the log could not do something; each names the topic, partition or file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: damaged: {message}")]
    Corrupt { path: String, message: String },
    #[error("no topic named '{0}'")]
    UnknownTopic(String),
    #[error("topic '{topic}' has {partitions} partition(s); there is no partition {partition}")]
    UnknownPartition { topic: String, partition: u32, partitions: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error("kafka ({servers}): {what}: {message}")]
    Kafka { servers: String, what: String, message: String },
    /// Another process claimed the group ([`Log::claim`]): this one may not commit for it
    /// again, however often it tries.
    #[error("kafka ({servers}): another process took over group '{group}': this one may no longer commit for it")]
    Fenced { servers: String, group: String },
    /// The group dealt its partitions again since this member's commit began: the commit was
    /// refused, and the partitions may be another member's now.
    #[error("kafka ({servers}): group '{group}' dealt its partitions again: {message}")]
    Rebalanced { servers: String, group: String, message: String },
}

impl LogError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> LogError {
        LogError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_where_kafka_puts_them() {
        // murmur2 values from Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(partition_for(b"foobar", 1), 0);
        assert!((0..1000).all(|i| partition_for(format!("k{i}").as_bytes(), 6) < 6));
    }
}
