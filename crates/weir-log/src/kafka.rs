//! The Kafka backend: the topics, partitions and consumer groups of a Kafka-protocol cluster,
//! through librdkafka (`rdkafka`, built from source with the project).
//!
//! **Reading** takes partitions by assignment, as Flink's Kafka source does: the caller says
//! which partition and offset it reads next, and keeps its positions with its own state;
//! nothing is auto-committed. One consumer (`isolation.level=read_committed`: records of
//! aborted or open transactions are never seen) serves every partition asked for, and keeps
//! what it fetched ahead per partition until it is asked for.
//!
//! **An atomic commit is one Kafka transaction**: the outputs produced and the group's new
//! offsets sent with `send_offsets_to_transaction`, then committed, so read-process-write is
//! exactly once for `read_committed` consumers. Each group commits through a transactional
//! producer of its own (`transactional.id` = `weir.<group>`); [`Log::claim`] starts it, which
//! aborts whatever transaction an earlier holder left open and fences that holder: its next
//! commit fails, and it is never started again behind the new one's back.
//!
//! **Workers** ([`Log::join_group`]) subscribe to a group's topics and are dealt its partitions by
//! the brokers; each commits under `transactional.id` = `weir.<group>.<member>` with the
//! group's generation, so a member that missed a rebalance has its offsets refused.
//!
//! Positions under names that are not topics of the cluster (a job's checkpoint number)
//! cannot be Kafka offsets: they ride in the metadata of the group's committed offsets, in
//! the same transaction, and come back with [`Log::positions`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Commit, Log, LogError, PartitionInfo, Positions, Record, Records, Retention, StoredRecord, TopicInfo, TopicSpec};

/// How to reach a cluster. Made from `weir.yml`'s `kafka:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// librdkafka properties set on every client (`security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`, ...).
    pub properties: BTreeMap<String, String>,
    /// Replicas of each topic made (-1: the broker's `default.replication.factor`).
    pub replication_factor: i32,
    /// How long a request may take before it fails.
    pub timeout: Duration,
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
            replication_factor: -1,
            timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    /// Secrets (`sasl.password`, `ssl.key.password`, ...) are never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&str, &str> =
            self.properties.iter().map(|(k, v)| (k.as_str(), if secret(k) { "<hidden>" } else { v.as_str() })).collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &shown)
            .field("replication_factor", &self.replication_factor)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret.
fn secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".pem") || key == "ssl.key.pem"
}

/// A cluster's topics and groups behind the [`Log`] seam.
pub struct KafkaLog {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    /// Metadata and watermarks.
    meta: BaseConsumer,
    reader: Mutex<Reader>,
    /// Plain appends, one call at a time (each gathers its records' offsets).
    appender: Mutex<BaseProducer<Deliveries>>,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    /// Topics the cluster was last seen to have.
    known: Mutex<HashSet<String>>,
    /// The cluster did not answer a DescribeConfigs request: retention is not shown.
    no_configs: AtomicBool,
    /// Each topic's retention, once read.
    retentions: Mutex<HashMap<String, Retention>>,
}

/// Prefix of the metadata that carries a commit's marks (positions of no topic).
const MARKS: &str = "weir:";
/// How long a read waits for the first record of a partition with none fetched yet.
const READ_WAIT: Duration = Duration::from_millis(5);
/// How long a topic's settings are waited for.
const CONFIGS_TIMEOUT: Duration = Duration::from_secs(5);
/// Records taken from the consumer's queue per call, at most.
const DRAIN_MAX: usize = 100_000;
/// Records held for a partition before its fetching is paused until they are read.
const HELD_MAX: usize = 200_000;

impl KafkaLog {
    /// Clients for the cluster; fails when the configuration is refused, not when the
    /// cluster is down (each call then fails, naming the servers, after `timeout`).
    pub fn connect(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        let admin = client_config(&config, &[]).create().map_err(|e| kafka_error(&config, "connecting", e))?;
        // Neither consumer joins its group (`group.id` is required to make one) or commits.
        let meta = client_config(&config, &[("group.id", "weir.meta"), ("enable.auto.commit", "false")])
            .create()
            .map_err(|e| kafka_error(&config, "connecting", e))?;
        let consumer = client_config(
            &config,
            &[
                ("group.id", "weir.reader"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "false"),
                // An offset retention has deleted reads on from the first one kept.
                ("auto.offset.reset", "earliest"),
                // Some brokers answer a fetch with more than it asked for (a whole backlog):
                // taken rather than refused over and over.
                ("receive.message.max.bytes", "1000000000"),
            ],
        )
        .create()
        .map_err(|e| kafka_error(&config, "connecting", e))?;
        let appender = client_config(
            &config,
            &[("enable.idempotence", "true"), ("acks", "all"), ("partitioner", "murmur2_random"), ("linger.ms", "5")],
        )
        .create_with_context(Deliveries::default())
        .map_err(|e| kafka_error(&config, "connecting", e))?;
        let patience = config.timeout;
        Ok(KafkaLog {
            config,
            admin,
            meta,
            reader: Mutex::new(Reader { consumer, parts: HashMap::new(), failing: None, patience }),
            appender: Mutex::new(appender),
            groups: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
            no_configs: AtomicBool::new(false),
            retentions: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn err(&self, what: impl std::fmt::Display, e: KafkaError) -> LogError {
        kafka_error(&self.config, what, e)
    }

    /// The partitions of `topic` (or of every topic), with the cluster's answer for each.
    fn metadata(&self, topic: Option<&str>) -> Result<Vec<(String, u32)>, LogError> {
        let what = match topic {
            Some(t) => format!("describing topic '{t}'"),
            None => "listing topics".to_string(),
        };
        let md = self.meta.fetch_metadata(topic, self.config.timeout).map_err(|e| self.err(&what, e))?;
        let mut out = vec![];
        for t in md.topics() {
            match t.error().map(RDKafkaErrorCode::from) {
                None => {}
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => continue,
                Some(code) => return Err(self.err(&what, KafkaError::MetadataFetch(code))),
            }
            if t.name().starts_with("__") {
                continue;
            }
            out.push((t.name().to_string(), t.partitions().len() as u32));
        }
        if let Ok(mut known) = self.known.lock() {
            known.extend(out.iter().map(|(t, _)| t.clone()));
        }
        Ok(out)
    }

    /// Each topic's retention settings, as the cluster held them when first asked: a running
    /// job describes its topics every second for its lag, and asks for their settings once.
    /// Best effort: a broker that does not answer DescribeConfigs (some Kafka-protocol
    /// brokers) is asked once.
    fn retention(&self, topics: &[&str]) -> HashMap<String, Retention> {
        let mut known = lock(&self.retentions);
        let missing: Vec<&str> = topics.iter().copied().filter(|t| !known.contains_key(*t)).collect();
        if !missing.is_empty() && !self.no_configs.load(Ordering::Relaxed) {
            let specs: Vec<ResourceSpecifier> = missing.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
            let opts = AdminOptions::new().request_timeout(Some(self.config.timeout.min(CONFIGS_TIMEOUT)));
            match futures_executor::block_on(self.admin.describe_configs(&specs, &opts)) {
                Ok(results) => {
                    for (topic, r) in missing.iter().zip(results) {
                        let Ok(resource) = r else { continue };
                        let number = |key: &str| {
                            resource.get(key).and_then(|e| e.value.as_deref()).and_then(|v| v.parse::<i64>().ok()).filter(|v| *v >= 0)
                        };
                        let retention = Retention { ms: number("retention.ms"), bytes: number("retention.bytes").map(|b| b as u64) };
                        known.insert(topic.to_string(), retention);
                    }
                }
                Err(_) => self.no_configs.store(true, Ordering::Relaxed),
            }
        }
        topics.iter().filter_map(|t| known.get(*t).map(|r| (t.to_string(), *r))).collect()
    }

    fn info(&self, topic: &str, partitions: u32, retention: Retention) -> Result<TopicInfo, LogError> {
        let mut parts = vec![];
        for p in 0..partitions {
            let (low, high) = self
                .meta
                .fetch_watermarks(topic, p as i32, self.config.timeout)
                .map_err(|e| self.err(format!("reading the offsets of {topic}[{p}]"), e))?;
            parts.push(PartitionInfo { partition: p, start: low.max(0) as u64, end: high.max(0) as u64, bytes: 0 });
        }
        Ok(TopicInfo { spec: TopicSpec { name: topic.to_string(), partitions, retention }, partitions: parts })
    }

    /// The group's clients, made on first use.
    fn group(&self, group: &str) -> Result<Arc<Mutex<Group>>, LogError> {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(group) {
            return Ok(g.clone());
        }
        let consumer =
            client_config(&self.config, &[("group.id", group), ("enable.auto.commit", "false"), ("isolation.level", "read_committed")])
                .create_with_context(Membership::default())
                .map_err(|e| self.err(format!("joining group '{group}'"), e))?;
        let g = Arc::new(Mutex::new(Group { name: group.to_string(), consumer, producer: None, fenced: false, member: None }));
        groups.insert(group.to_string(), g.clone());
        Ok(g)
    }

    /// Whether the cluster has `topic`, asking it again when it was not seen before.
    fn has_topic(&self, topic: &str) -> Result<bool, LogError> {
        if lock(&self.known).contains(topic) {
            return Ok(true);
        }
        Ok(self.metadata(Some(topic))?.iter().any(|(t, _)| t == topic))
    }
}

impl Log for KafkaLog {
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicInfo, LogError> {
        if !crate::valid_name(&spec.name) {
            return Err(LogError::Invalid(format!("'{}' is not a valid topic name (letters, digits, '.', '_', '-')", spec.name)));
        }
        if let Some((_, partitions)) = self.metadata(Some(&spec.name))?.into_iter().find(|(t, _)| *t == spec.name) {
            if partitions != spec.partitions {
                return Err(LogError::Invalid(format!(
                    "topic '{}' has {partitions} partition(s) on {}, not {}: Kafka topics cannot lose partitions, and adding \
                     some would move keys to other partitions",
                    spec.name, self.config.bootstrap_servers, spec.partitions
                )));
            }
            return self.describe(&spec.name);
        }
        let (ms, bytes) = (spec.retention.ms.map(|v| v.to_string()), spec.retention.bytes.map(|v| v.to_string()));
        let mut topic = NewTopic::new(&spec.name, spec.partitions as i32, TopicReplication::Fixed(self.config.replication_factor));
        if let Some(ms) = &ms {
            topic = topic.set("retention.ms", ms);
        }
        if let Some(bytes) = &bytes {
            topic = topic.set("retention.bytes", bytes);
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let what = format!("creating topic '{}'", spec.name);
        for r in futures_executor::block_on(self.admin.create_topics([&topic], &opts)).map_err(|e| self.err(&what, e))? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(self.err(&what, KafkaError::AdminOp(code))),
            }
        }
        // The brokers learn of a new topic one after another: wait until it can be used.
        let until = Instant::now() + self.config.timeout;
        loop {
            match self.describe(&spec.name) {
                Ok(info) if info.partitions.len() == spec.partitions as usize => return Ok(info),
                Ok(_) | Err(LogError::UnknownTopic(_)) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
    }

    fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let mut topics = self.metadata(None)?;
        topics.sort();
        let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
        let retention = if names.is_empty() { HashMap::new() } else { self.retention(&names) };
        topics.iter().map(|(t, n)| self.info(t, *n, retention.get(t).copied().unwrap_or_default())).collect()
    }

    fn describe(&self, topic: &str) -> Result<TopicInfo, LogError> {
        let Some((_, partitions)) = self.metadata(Some(topic))?.into_iter().find(|(t, _)| t == topic) else {
            return Err(LogError::UnknownTopic(topic.to_string()));
        };
        let retention = self.retention(&[topic]).remove(topic).unwrap_or_default();
        self.info(topic, partitions, retention)
    }

    fn append(&self, topic: &str, partition: Option<u32>, records: &[Record]) -> Result<Vec<(u32, u64)>, LogError> {
        let producer = lock(&self.appender);
        *lock(&producer.context().results) = vec![None; records.len()];
        for (i, r) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, i).payload(&r.value[..]).timestamp(r.timestamp);
            if let Some(key) = &r.key {
                record = record.key(&key[..]);
            }
            if !r.headers.is_empty() {
                record = record.headers(kafka_headers(&r.headers));
            }
            if let Some(p) = partition {
                record = record.partition(p as i32);
            }
            send(&producer, record, self.config.timeout).map_err(|e| self.err(format!("appending to '{topic}'"), e))?;
        }
        producer.flush(self.config.timeout).map_err(|e| self.err(format!("appending to '{topic}'"), e))?;
        let results = std::mem::take(&mut *lock(&producer.context().results));
        results
            .into_iter()
            .map(|r| match r {
                Some(Ok(at)) => Ok(at),
                Some(Err(code)) => Err(self.err(format!("appending to '{topic}'"), KafkaError::MessageProduction(code))),
                None => Err(self.err(format!("appending to '{topic}'"), KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut))),
            })
            .collect()
    }

    fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredRecord>, LogError> {
        Ok(self.read_records(topic, partition, offset, max)?.to_stored())
    }

    fn read_records(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Records, LogError> {
        let mut reader = lock(&self.reader);
        reader.read(topic, partition, offset, max).map_err(|e| self.err(format!("reading {topic}[{partition}] from offset {offset}"), e))
    }

    fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64, LogError> {
        let what = format!("finding the offset of {topic}[{partition}] at {time_ms} ms");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(time_ms)).map_err(|e| self.err(&what, e))?;
        let found = self.meta.offsets_for_times(tpl, self.config.timeout).map_err(|e| self.err(&what, e))?;
        match found.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Ok(o.max(0) as u64),
            // No record that late: the end.
            _ => Ok(self.describe(topic)?.partitions.get(partition as usize).map_or(0, |p| p.end)),
        }
    }

    fn groups(&self) -> Result<Vec<String>, LogError> {
        let list = self.meta.fetch_group_list(None, self.config.timeout).map_err(|e| self.err("listing consumer groups", e))?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        Ok(names)
    }

    fn positions(&self, group: &str) -> Result<Positions, LogError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in self.metadata(None)? {
            tpl.add_partition_range(&topic, 0, partitions as i32 - 1);
        }
        let g = self.group(group)?;
        let g = lock(&g);
        let what = format!("reading the positions of group '{group}'");
        let committed = g.consumer.committed_offsets(tpl, self.config.timeout).map_err(|e| self.err(&what, e))?;
        let mut out = Positions::new();
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((e.topic().to_string(), e.partition() as u32), o.max(0) as u64);
            }
            if let Some(marks) = e.metadata().strip_prefix(MARKS) {
                let marks: Vec<(String, u32, u64)> = serde_json::from_str(marks)
                    .map_err(|m| LogError::Invalid(format!("{what}: the metadata of {}[{}] is damaged: {m}", e.topic(), e.partition())))?;
                out.extend(marks.into_iter().map(|(t, p, o)| ((t, p), o)));
            }
        }
        Ok(out)
    }

    fn claim(&self, group: &str) -> Result<(), LogError> {
        let g = self.group(group)?;
        let mut g = lock(&g);
        g.producer = None;
        g.fenced = false;
        g.producer(&self.config).map(|_| ())
    }

    fn join_group(&self, group: &str, topics: &[String], member: &str) -> Result<(), LogError> {
        let what = format!("joining group '{group}' as '{member}'");
        // Partitions move off a dead worker after the session timeout. A rebalance waits up
        // to `max.poll.interval.ms` for every member to join again (a member that died
        // meanwhile holds it that long on some brokers); a worker asks at least once a
        // second, so a short one costs nothing. All can be set in `properties`.
        let defaults = [("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "1000"), ("max.poll.interval.ms", "20000")];
        let consumer: BaseConsumer<Membership> = client_config_over(
            &self.config,
            &defaults,
            &[("group.id", group), ("enable.auto.commit", "false"), ("isolation.level", "read_committed")],
        )
        .create_with_context(Membership::default())
        .map_err(|e| self.err(&what, e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| self.err(&what, e))?;
        let g = self.group(group)?;
        let mut g = lock(&g);
        g.consumer = consumer;
        g.member = Some(member.to_string());
        g.producer = None;
        g.fenced = false;
        g.producer(&self.config).map(|_| ())
    }

    fn owned(&self, group: &str) -> Result<Option<Vec<(String, u32)>>, LogError> {
        let g = self.group(group)?;
        let g = lock(&g);
        if g.member.is_none() {
            return Err(LogError::Invalid(format!("group '{group}' was not joined")));
        }
        Ok(g.serve().map(|set| set.into_iter().collect()))
    }

    fn commit(&self, group: &str, commit: &Commit) -> Result<(), LogError> {
        let g = self.group(group)?;
        let mut g = lock(&g);
        // Which positions are offsets of the cluster's topics, and which ride as marks.
        let (mut offsets, mut marks) = (vec![], vec![]);
        for ((topic, p), o) in &commit.positions {
            if self.has_topic(topic)? {
                offsets.push((topic.as_str(), *p, *o));
            } else {
                marks.push((topic.clone(), *p, *o));
            }
        }
        if offsets.is_empty() && !marks.is_empty() {
            return Err(LogError::Invalid(format!(
                "group '{group}' commits positions of {} to Kafka without reading any topic there: they can only ride with offsets of its topics",
                marks.iter().map(|(t, ..)| t.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        // A worker commits for the partitions it owns, as the group says at this moment (a
        // worker that stopped asking for too long was dropped from it, and learns so here).
        if g.member.is_some() {
            let owned = g.serve().unwrap_or_default();
            if let Some((topic, p, _)) = offsets.iter().find(|(t, p, _)| !owned.contains(&(t.to_string(), *p))) {
                return Err(LogError::Rebalanced {
                    servers: self.config.bootstrap_servers.clone(),
                    group: group.to_string(),
                    message: format!("{topic}[{p}] is not this worker's now"),
                });
            }
        }
        let what = format!("committing group '{group}'");
        let timeout = self.config.timeout;
        let metadata = group_metadata(&g, &self.config)?;
        let producer = g.producer(&self.config)?;
        let result = (|| -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            for out in &commit.outputs {
                for r in &out.records {
                    let mut record = BaseRecord::with_opaque_to(&out.topic, 0).payload(&r.value[..]).timestamp(r.timestamp);
                    if let Some(key) = &r.key {
                        record = record.key(&key[..]);
                    }
                    if !r.headers.is_empty() {
                        record = record.headers(kafka_headers(&r.headers));
                    }
                    if let Some(p) = out.partition {
                        record = record.partition(p as i32);
                    }
                    send(producer, record, timeout)?;
                }
            }
            if !offsets.is_empty() {
                let marks = (!marks.is_empty()).then(|| format!("{MARKS}{}", serde_json::to_string(&marks).unwrap_or_default()));
                let mut tpl = TopicPartitionList::new();
                for (topic, p, o) in &offsets {
                    tpl.add_partition_offset(topic, *p as i32, Offset::Offset(*o as i64))?;
                }
                if let Some(m) = &marks {
                    for mut e in tpl.elements() {
                        e.set_metadata(m.clone());
                    }
                }
                producer.send_offsets_to_transaction(&tpl, &metadata, timeout)?;
            }
            producer.flush(timeout)?;
            // A commit whose answer was lost may have gone through: asked for again, never
            // aborted, until the broker says.
            let until = Instant::now() + timeout * 4;
            loop {
                match producer.commit_transaction(timeout) {
                    Err(KafkaError::Transaction(t)) if t.is_retriable() && !t.txn_requires_abort() && Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => return other,
                }
            }
        })();
        let Err(e) = result else { return Ok(()) };
        // Fenced by a newer holder of the group: never started again here. Broken otherwise
        // (fatal): started anew at the next commit.
        let fenced = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        );
        let fatal = fenced || matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
        let aborted = !fatal && producer.abort_transaction(timeout).is_ok();
        if !aborted {
            g.producer = None;
        }
        if fenced {
            g.fenced = true;
            return Err(LogError::Fenced { servers: self.config.bootstrap_servers.clone(), group: group.to_string() });
        }
        let dealt_again = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::FencedInstanceId
            )
        );
        if dealt_again && g.member.is_some() {
            return Err(LogError::Rebalanced {
                servers: self.config.bootstrap_servers.clone(),
                group: group.to_string(),
                message: e.to_string(),
            });
        }
        Err(self.err(&what, e))
    }

    fn apply_retention(&self, _now_ms: i64) -> Result<usize, LogError> {
        // The brokers apply each topic's retention themselves.
        Ok(0)
    }
}

/// A consumer group's clients: a consumer (its metadata identifies the group in
/// transactions; its committed offsets are the group's positions) and the transactional
/// producer its commits go through.
struct Group {
    name: String,
    /// Subscribed to the group's topics once joined as a worker: its metadata then carries
    /// the group's generation, and the brokers refuse the offsets of a member that missed a
    /// rebalance (KIP-447), so a worker that lost a partition cannot commit for it.
    consumer: BaseConsumer<Membership>,
    producer: Option<BaseProducer<Deliveries>>,
    /// Another process claimed the group: this one may not commit for it again.
    fenced: bool,
    /// The name this process works under, once it joined the group as one of its workers.
    member: Option<String>,
}

/// What a member of a group owns, as the group's rebalances say.
#[derive(Default)]
struct Membership {
    /// `None` between a revocation and the next assignment.
    owned: Mutex<Option<BTreeSet<(String, u32)>>>,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            *lock(&self.owned) = None;
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // The member's tasks read with positions of their own: this consumer only keeps
            // the membership, and fetches nothing.
            let _ = consumer.pause(tpl);
            *lock(&self.owned) = Some(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition() as u32)).collect());
        }
    }
}

impl Group {
    /// Serves the group's rebalances and says what this member owns (`None` while they are
    /// dealt). Its partitions are paused, so what little was fetched before the pause is
    /// dropped (tasks read with positions of their own); errors (a broker away) are the
    /// reader's to wait out.
    fn serve(&self) -> Option<BTreeSet<(String, u32)>> {
        for _ in 0..DRAIN_MAX {
            if self.consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        lock(&self.consumer.context().owned).clone()
    }

    /// The transactional producer, started (and earlier holders fenced) on first use.
    fn producer(&mut self, config: &KafkaConfig) -> Result<&BaseProducer<Deliveries>, LogError> {
        if self.fenced {
            return Err(LogError::Fenced { servers: config.bootstrap_servers.clone(), group: self.name.clone() });
        }
        if self.producer.is_none() {
            // A worker commits for its partitions only, under a name of its own.
            let id = match &self.member {
                Some(member) => format!("weir.{}.{member}", self.name),
                None => format!("weir.{}", self.name),
            };
            // What a holder killed inside a commit left open blocks `read_committed` readers
            // until the brokers abort it: soon (librdkafka wants it past the socket timeout).
            let txn_timeout = (config.timeout.as_millis() + 100).max(10_000).to_string();
            let producer: BaseProducer<Deliveries> = client_config_over(
                config,
                &[("transaction.timeout.ms", &txn_timeout)],
                &[("transactional.id", &id), ("partitioner", "murmur2_random")],
            )
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka_error(config, format!("starting the producer of group '{}'", self.name), e))?;
            producer
                .init_transactions(config.timeout)
                .map_err(|e| kafka_error(config, format!("starting the transactions of group '{}'", self.name), e))?;
            self.producer = Some(producer);
        }
        self.producer.as_ref().ok_or_else(|| LogError::Invalid("no producer".into()))
    }
}

fn group_metadata(g: &MutexGuard<'_, Group>, config: &KafkaConfig) -> Result<rdkafka::consumer::ConsumerGroupMetadata, LogError> {
    g.consumer
        .group_metadata()
        .ok_or_else(|| LogError::Invalid(format!("{}: group '{}' has no metadata to commit with", config.bootstrap_servers, g.name)))
}

/// The one consumer that reads every partition asked for, and what it fetched ahead.
struct Reader {
    consumer: BaseConsumer,
    parts: HashMap<(String, u32), Fetched>,
    /// Since when the consumer has reported only errors: librdkafka reconnects by itself, so
    /// errors (a broker restarting) are waited out for `patience` before a read fails.
    failing: Option<Instant>,
    patience: Duration,
}

/// A partition being read: the offset the next read is expected to ask for, and the
/// records fetched from there on.
#[derive(Default)]
struct Fetched {
    next: u64,
    records: Records,
    /// Fetching is paused: it holds [`HELD_MAX`] records nobody has asked for yet.
    paused: bool,
}

impl Reader {
    fn read(&mut self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Records, KafkaError> {
        let key = (topic.to_string(), partition);
        let continues = self.parts.get(&key).is_some_and(|f| f.next == offset);
        if !continues {
            let mut tpl = one(topic, partition);
            if let Some(was) = self.parts.remove(&key) {
                if was.paused {
                    self.consumer.resume(&tpl)?;
                }
                self.consumer.incremental_unassign(&tpl)?;
            }
            tpl.set_all_offsets(Offset::Offset(offset as i64))?;
            self.consumer.incremental_assign(&tpl)?;
            self.parts.insert(key.clone(), Fetched { next: offset, ..Fetched::default() });
        }
        self.drain(Duration::ZERO)?;
        self.wait_for(&key, READ_WAIT)?;
        // Nothing fetched yet: nothing is there, or it has not come yet. The partition's
        // last stable offset says which, so that a reader told "nothing" has reached the
        // end (a drained job stops there) rather than outrun the fetcher.
        if self.parts.get(&key).is_some_and(|f| f.records.is_empty())
            && self.position(topic, partition, offset)? < self.stable_end(topic, partition)?
        {
            self.wait_for(&key, self.patience)?;
        }
        let Some(fetched) = self.parts.get_mut(&key) else { return Ok(Records::default()) };
        let taken = fetched.records.take_front(max);
        if let Some(last) = taken.last() {
            fetched.next = last.offset + 1;
        }
        if fetched.paused && fetched.records.len() < HELD_MAX / 2 {
            fetched.paused = false;
            self.consumer.resume(&one(topic, partition))?;
        }
        Ok(taken)
    }

    /// Drains the consumer until the partition has records or `wait` has passed.
    fn wait_for(&mut self, key: &(String, u32), wait: Duration) -> Result<(), KafkaError> {
        let until = Instant::now() + wait;
        while self.parts.get(key).is_some_and(|f| f.records.is_empty()) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.drain(left.min(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    /// The next offset the consumer will give of a partition whose records were all taken:
    /// past the transaction markers it stepped over; `asked` before it has fetched any.
    fn position(&self, topic: &str, partition: u32, asked: u64) -> Result<u64, KafkaError> {
        let at = self.consumer.position()?.find_partition(topic, partition as i32).map(|e| e.offset());
        Ok(match at {
            Some(Offset::Offset(o)) => (o.max(0) as u64).max(asked),
            _ => asked,
        })
    }

    /// The partition's last stable offset: its end as `read_committed` readers see it (the
    /// first offset of a transaction still open, else the end).
    fn stable_end(&self, topic: &str, partition: u32) -> Result<u64, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        // The time -1 asks for the latest offset, which under read_committed is the LSO.
        tpl.add_partition_offset(topic, partition as i32, Offset::End)?;
        let found = self.consumer.offsets_for_times(tpl, self.patience)?;
        Ok(match found.find_partition(topic, partition as i32).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(0) as u64,
            _ => 0,
        })
    }

    /// Moves what the consumer fetched into each partition's records; waits up to `wait`
    /// for the first.
    fn drain(&mut self, wait: Duration) -> Result<(), KafkaError> {
        let mut timeout = wait;
        for _ in 0..DRAIN_MAX {
            let Some(m) = self.consumer.poll(timeout) else { return Ok(()) };
            timeout = Duration::ZERO;
            let m = match m {
                Ok(m) => m,
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => return Err(e),
                Err(e) => {
                    let since = *self.failing.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.patience {
                        return Err(e);
                    }
                    return Ok(());
                }
            };
            self.failing = None;
            let Some(fetched) = self.parts.get_mut(&(m.topic().to_string(), m.partition() as u32)) else { continue };
            let offset = m.offset().max(0) as u64;
            // Left over from before the partition was asked for at another offset.
            let from = fetched.records.last().map_or(fetched.next, |r| r.offset + 1);
            if offset < from {
                continue;
            }
            let mut raw_headers = vec![];
            if let Some(h) = m.headers().filter(|h| h.count() > 0) {
                let headers: crate::Headers = h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect();
                crate::segment::encode_headers(&mut raw_headers, &headers);
            }
            fetched.records.push_copy(crate::RecordRef {
                offset,
                timestamp: m.timestamp().to_millis().unwrap_or(0),
                key: m.key(),
                value: m.payload().unwrap_or_default(),
                txn: 0,
                raw_headers: &raw_headers,
            });
            // A partition nobody reads (a job stopped while others go on) is not fetched
            // without end.
            if fetched.records.len() >= HELD_MAX && !fetched.paused {
                fetched.paused = true;
                self.consumer.pause(&one(m.topic(), m.partition() as u32))?;
            }
        }
        Ok(())
    }
}

/// Where a record landed, or the broker's refusal; `None` until its delivery is reported.
type Delivery = Option<Result<(u32, u64), RDKafkaErrorCode>>;

/// A list of one partition.
fn one(topic: &str, partition: u32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition as i32);
    tpl
}

/// Per record of the current append, its delivery.
#[derive(Default)]
struct Deliveries {
    results: Mutex<Vec<Delivery>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, i: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.partition() as u32, m.offset().max(0) as u64)),
            Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        if let Ok(mut results) = self.results.lock()
            && let Some(slot) = results.get_mut(i)
        {
            *slot = Some(outcome);
        }
    }
}

/// Queues a record, waiting for room while the producer's queue is full.
fn send(producer: &BaseProducer<Deliveries>, mut record: BaseRecord<'_, [u8], [u8], usize>, timeout: Duration) -> Result<(), KafkaError> {
    let until = Instant::now() + timeout;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < until => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A client configuration: the cluster's settings, then `extra`.
fn client_config(config: &KafkaConfig, extra: &[(&str, &str)]) -> ClientConfig {
    client_config_over(config, &[], extra)
}

/// A client configuration: `defaults`, then the cluster's settings, then `extra`.
fn client_config_over(config: &KafkaConfig, defaults: &[(&str, &str)], extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    c.set("bootstrap.servers", &config.bootstrap_servers);
    c.set("socket.timeout.ms", config.timeout.as_millis().max(10).to_string());
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

fn kafka_error(config: &KafkaConfig, what: impl std::fmt::Display, e: KafkaError) -> LogError {
    LogError::Kafka { servers: config.bootstrap_servers.clone(), what: what.to_string(), message: e.to_string() }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Headers as Kafka's client sends them.
fn kafka_headers(headers: &[(String, Vec<u8>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |h, (key, value)| h.insert(Header { key, value: Some(value) }))
}
