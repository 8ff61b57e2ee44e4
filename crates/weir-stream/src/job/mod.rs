//! Running a stream job: read its topic from the event log in micro-batches, decode and
//! check each event, evaluate the stateless part, fold the events into the window state,
//! move the watermark, and write what closed to the warehouse sink with the input positions.
//!
//! **Exactly once.** Every sink transaction carries the positions it reached. A stateless job
//! (a filter and projection) resumes from those positions, so each event's row is written
//! once. A stateful job also writes its window state with the positions to
//! `.weir/streams/<job>/checkpoint.json` every `checkpoint_interval`, after the sink holds
//! everything up to them; after a crash it restores that state and reads again from its
//! positions. What it emits again on the way is upserted over the same rows (a result
//! emitted while replaying replaces its row), the late and rejected events past the
//! checkpoint are forgotten before they are read again, and the counts come back with the
//! state: the sink ends as one uninterrupted run leaves it.
//!
//! **Nothing dropped silently.** For every partition, events read = counted + late +
//! rejected + filtered out by the job's `where`, committed with the positions.

mod changelog;
pub mod decode;
pub mod eval;
mod keyed;
mod pairs;
pub mod redis;
pub mod repartition;
pub mod sink;
pub mod store;
pub mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use weir_core::Relation;
use weir_graph::stream_jobs::{StartFrom, StreamJob};
use weir_graph::streams::{Format, Topic};
use weir_log::{Log, RecordRef, Records};
use weir_registry::codec::{Field, Reader, Target, Writer, csv_line};
use weir_warehouse::Warehouse;

use crate::plan::{Output, Plan, Shape};
use crate::{Admitted, Agg, Emit, StreamError, WatermarkSpec, Watermarks, WindowOperator, WindowSpec};
use decode::{Decoder, Kind, format_micros};
use eval::{Evaluator, key_parts};
use keyed::KeyedEvents;
use sink::{Aside, Batch, Counts, Layout, Sink};
use store::{CheckpointStore, LocalDir};

/// An event as a row, its event time and what the stateless part made of it (none: the
/// job's `where`, or its join, filtered it out); or why it is refused.
type Decoded = Result<(Vec<decode::Cell>, i64, Option<Evaluated>), String>;

/// What the stateless part makes of one event: its group key and aggregate arguments, or
/// (a projection) its output row.
#[derive(Clone)]
enum Evaluated {
    Keyed(String, Vec<Option<f64>>),
    Row(eval::Row),
}

/// A partition's micro-batch decoded: as rows, for SQL to evaluate or a join to pair; or, for
/// a job whose keys and arguments are the events' columns, straight into them.
enum Events {
    Rows(Vec<Decoded>),
    Keyed(KeyedEvents),
}

impl Events {
    /// `other`'s events after these (the next chunk of the same batch, decoded alike).
    fn append(&mut self, other: Events) {
        match (self, other) {
            (Events::Rows(a), Events::Rows(b)) => a.extend(b),
            (Events::Keyed(a), Events::Keyed(b)) => a.append(b),
            _ => {}
        }
    }
}

/// What one event is to the state: nothing (the job's `where` left it out), a projection's
/// row, or a group key and the aggregates' arguments.
enum Taken<'a> {
    Filtered,
    Row(eval::Row),
    Keyed(&'a str, &'a [Option<f64>]),
}

/// Events read from each partition per micro-batch.
const READ_MAX: usize = 20_000;
/// Events of one partition taken before the next partition's (and the watermark moved).
const SLICE: usize = 512;
/// How long results wait before they are written (the latency from a window's close).
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Result latencies kept for the status's percentiles.
const LATENCIES_KEPT: usize = 10_000;
/// How long to wait for new events once caught up.
const POLL: Duration = Duration::from_millis(20);

/// A job ready to run: its declaration, its plan, its topic, where its checkpoints live and
/// the table it writes.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job: StreamJob,
    pub plan: Plan,
    pub topic: Topic,
    /// The topic of the stream joined to it, in a join of two streams.
    pub joined: Option<Topic>,
    /// `.weir/streams/<job>/`: its lock and its status.
    pub dir: PathBuf,
    /// Where its checkpoints are kept: `dir` unless set otherwise.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// The table it writes (with `sink='table'`); its schema holds the bookkeeping tables
    /// whatever the sink.
    pub table: Relation,
    /// The topic it writes, with `sink='topic'`: as `streams/*.yml` declares it, else with
    /// the partitions of the topic it reads.
    pub out_topic: Option<weir_log::TopicSpec>,
    /// The relations of the tables its SQL names (`ref()`, `source()`), in `job.tables` order.
    pub tables: Vec<Relation>,
    /// Its sink topic's declaration in `streams/*.yml`, if it has one: its `format:` says how
    /// the records are written (JSON if none).
    pub out_declared: Option<Topic>,
    /// The project's schema registry, for topics of the registry's formats (`avro`,
    /// `json_schema`, `protobuf`).
    pub registry: Option<weir_registry::Registry>,
    /// Whether a sink topic's schema is registered by the job when its subject lacks it,
    /// unless the topic's declaration says (the target's setting: off on production targets).
    pub auto_register: bool,
    /// Set on the second stage of a job its workers repartition (see [`repartition`]).
    pub repartition: Option<repartition::Stage>,
}

impl JobRun {
    /// A job planned against the project's topics, its checkpoints under
    /// `<project>/.weir/streams/<job>/`; `tables` are where the tables it joins are (see
    /// `weir_graph::Manifest::stream_tables`).
    pub fn new(project: &Path, job: StreamJob, topics: &[Topic], table: Relation, tables: Vec<Relation>) -> Result<JobRun, StreamError> {
        // Read, a topic's header columns are columns of its stream.
        let read: Vec<Topic> = topics.iter().map(Topic::as_read).collect();
        let plan = crate::plan::plan(&job, &read)?;
        if matches!(job.config.sink, weir_graph::stream_jobs::Sink::Redis { .. }) && plan.shape == Shape::Stateless {
            return Err(weir_graph::GraphError::at(
                job.config.location.clone(),
                "a Redis sink keeps one hash per group key: the job needs a `group by` (a window or running aggregates)",
                Some(&job.text),
            )
            .into());
        }
        if plan.changelog.is_some() && job.config.start_from != StartFrom::Earliest {
            return Err(weir_graph::GraphError::at(
                job.config.location.clone(),
                "a job over cdc() reads its changelog from the first event: `start_from` is for stream() topics",
                Some(&job.text),
            )
            .into());
        }
        if plan.changelog.is_some() && job.config.sink != weir_graph::stream_jobs::Sink::Table {
            return Err(weir_graph::GraphError::at(
                job.config.location.clone(),
                "a job over cdc() writes a table: its rows are updated and deleted as the source's rows change",
                Some(&job.text),
            )
            .into());
        }
        let find = |name: &str| {
            read.iter()
                .find(|t| t.name == name)
                .cloned()
                .ok_or_else(|| StreamError::Job(format!("{}: no topic '{name}' in streams/*.yml", job.path.display())))
        };
        let topic = find(&plan.topic)?;
        let joined = plan.stream_join.as_ref().map(|j| find(&j.topic)).transpose()?;
        // A join holds events in its checkpoints by their values alone.
        if joined.is_some()
            && let Some(t) = std::iter::once(&topic).chain(&joined).find(|t| !t.headers.is_empty())
        {
            return Err(weir_graph::GraphError::at(
                job.config.location.clone(),
                format!("topic '{}' reads header columns, which a join of two streams cannot keep with the events it holds", t.name),
                Some(&job.text),
            )
            .into());
        }
        let out_topic = match &job.config.sink {
            weir_graph::stream_jobs::Sink::Topic { topic: name } => {
                Some(topics.iter().find(|t| &t.name == name).map_or_else(|| weir_log::TopicSpec::new(name, topic.partitions), Topic::spec))
            }
            _ => None,
        };
        let out_declared = match &job.config.sink {
            weir_graph::stream_jobs::Sink::Topic { topic: name } => topics.iter().find(|t| &t.name == name).cloned(),
            _ => None,
        };
        let dir = project.join(".weir").join("streams").join(&job.name);
        Ok(JobRun {
            checkpoints: Arc::new(LocalDir::new(&dir)),
            dir,
            job,
            plan,
            topic,
            joined,
            table,
            out_topic,
            tables,
            out_declared,
            registry: None,
            auto_register: true,
            repartition: None,
        })
    }

    /// The same job, reading and writing the registry's formats through `registry`, and
    /// registering its sink topic's schema when `auto_register` (and the topic's
    /// declaration does not say otherwise).
    pub fn with_registry(mut self, registry: weir_registry::Registry, auto_register: bool) -> JobRun {
        self.registry = Some(registry);
        self.auto_register = auto_register;
        self
    }

    /// A decoder of `columns` of `topic`'s events, in the topic's format.
    fn decoder(&self, t: &Topic, columns: &[(String, String)], time: Option<&str>) -> Result<Decoder, StreamError> {
        let mut decoder = Decoder::new(columns, time);
        if let Some(ty) = t.format.schema_type() {
            decoder = decoder.with_registry(Arc::new(Reader::new(self.registry_for(t)?.clone())), ty);
        }
        if t.format == Format::Csv {
            if t.columns.is_empty() {
                return Err(StreamError::Job(format!(
                    "{}: topic '{}' ({}) is `format: csv` and declares no `columns`: they name a line's fields, in order",
                    self.job.path.display(),
                    t.name,
                    t.location
                )));
            }
            decoder = decoder.with_csv(&t.columns);
        }
        Ok(decoder.with_headers(&t.headers))
    }

    /// The registry, which a job over or into a topic of a registry format needs.
    fn registry_for(&self, topic: &Topic) -> Result<&weir_registry::Registry, StreamError> {
        self.registry.as_ref().ok_or_else(|| {
            StreamError::Job(format!(
                "{}: topic '{}' is `format: {}`, which needs the project's schema registry: run the job with `weir stream run` or `weir serve`",
                self.job.path.display(),
                topic.name,
                topic.format.name()
            ))
        })
    }

    /// A job of the project `m` describes, its sink in the target's schema (or its own) and
    /// the tables it joins resolved: what `weir stream`, `weir build` and `weir serve` run.
    pub fn in_project(m: &weir_graph::Manifest, job: StreamJob, topics: &[Topic]) -> Result<JobRun, StreamError> {
        let table = job.relation(&m.target.database(), &m.target.schema());
        let tables = m.stream_tables(&job)?;
        let topics = with_changelogs(&m.project.root, &job, topics)?;
        JobRun::new(&m.project.root, job, &topics, table, tables)
    }

    /// Where its results go, in words: `main.revenue`, `redis redis://127.0.0.1:6379 revenue:*`.
    pub fn sink_text(&self) -> String {
        match &self.job.config.sink {
            weir_graph::stream_jobs::Sink::Table => format!("{}.{}", self.table.schema, self.table.identifier),
            weir_graph::stream_jobs::Sink::Redis { url, key_prefix, .. } => {
                let host = url.rsplit('@').next().unwrap_or(url).trim_start_matches("redis://");
                format!("redis {host} {key_prefix}*")
            }
            weir_graph::stream_jobs::Sink::Topic { topic } => format!("topic {topic}"),
        }
    }

    /// The topics it reads: its stream's, and the joined stream's.
    pub fn inputs(&self) -> Vec<&Topic> {
        std::iter::once(&self.topic).chain(&self.joined).collect()
    }

    /// Every topic it reads or writes: all on one event log, as its commits are.
    pub fn topic_names(&self) -> Vec<&str> {
        self.inputs().into_iter().map(|t| t.name.as_str()).chain(self.out_topic.as_ref().map(|t| t.name.as_str())).collect()
    }

    /// The topics it reads, in words: `orders`, `orders + payments`.
    pub fn topics_text(&self) -> String {
        self.inputs().iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(" + ")
    }

    /// The consumer group a topic sink commits its input positions in, with its outputs.
    fn group(&self) -> String {
        format!("weir-stream.{}", self.job.name)
    }
}

/// `topics` with the topics of the change events `job` reads with `cdc()`, as their cdc
/// source's follower last described them (`streams/*.yml` may declare one for its partitions
/// and retention).
fn with_changelogs(root: &Path, job: &StreamJob, topics: &[Topic]) -> Result<Vec<Topic>, StreamError> {
    let mut all: Vec<Topic> = topics.iter().filter(|t| !job.changelogs.iter().any(|(_, c)| *c == t.name)).cloned().collect();
    for (load, topic) in &job.changelogs {
        let declared = topics.iter().find(|t| t.name == *topic);
        match weir_graph::streams::read_changelog(root, topic, declared)? {
            Some(t) => all.push(t),
            None => {
                return Err(StreamError::Job(format!(
                    "{}: no change events of '{topic}' yet: run its cdc source first (`weir load {load}`, or `weir build`, which runs it before the job)",
                    job.path.display()
                )));
            }
        }
    }
    Ok(all)
}

/// What makes a run stop.
#[derive(Clone, Default)]
pub struct Control {
    /// Set from outside (Ctrl-C, `weir serve` stopping): finish the batch, write, checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop once every event the topic holds has been read (`--drain`).
    pub drain: bool,
}

/// A job's progress, as `weir stream status` shows it and `status.json` keeps it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub job: String,
    pub state: String,
    pub pid: u32,
    pub started_at: i64,
    pub updated_at: i64,
    pub watermark: Option<i64>,
    /// Per topic and partition: the next offset to read and how many events are behind it.
    pub positions: BTreeMap<(String, u32), u64>,
    pub lag: BTreeMap<(String, u32), u64>,
    pub counts: Counts,
    pub windows_held: usize,
    pub events_per_second: f64,
    pub checkpointed_at: Option<i64>,
    pub last_error: Option<String>,
    /// Median and 99th percentile of the last results' latency: from the append of the
    /// event that closed their window to their commit in the sink (ms).
    pub latency_ms: Option<(i64, i64)>,
    /// Events read since this run started (the rest were read by earlier runs).
    pub read_this_run: u64,
    /// The workers sharing the job (none when it runs in one process).
    pub workers: Vec<String>,
}

impl Status {
    pub fn to_json(&self) -> J {
        json!({
            "job": self.job, "state": self.state, "pid": self.pid,
            "started_at": self.started_at, "updated_at": self.updated_at,
            "watermark": self.watermark,
            "positions": self.positions.iter().map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o, "lag": self.lag.get(&(t.clone(), *p)).copied().unwrap_or(0)})).collect::<Vec<_>>(),
            "events": {"read": self.counts.read, "counted": self.counts.counted, "late": self.counts.late, "rejected": self.counts.rejected, "filtered": self.counts.filtered},
            "windows_held": self.windows_held, "events_per_second": self.events_per_second,
            "checkpointed_at": self.checkpointed_at, "last_error": self.last_error,
            "result_latency_ms": self.latency_ms.map(|(p50, p99)| json!({"p50": p50, "p99": p99})),
            "workers": self.workers,
        })
    }

    pub fn from_json(v: &J) -> Status {
        let n = |p: &[&str]| p.iter().try_fold(v, |v, k| v.get(k)).and_then(J::as_u64).unwrap_or(0);
        let mut s = Status {
            job: v.get("job").and_then(J::as_str).unwrap_or_default().to_string(),
            state: v.get("state").and_then(J::as_str).unwrap_or_default().to_string(),
            pid: n(&["pid"]) as u32,
            started_at: v.get("started_at").and_then(J::as_i64).unwrap_or(0),
            updated_at: v.get("updated_at").and_then(J::as_i64).unwrap_or(0),
            watermark: v.get("watermark").and_then(J::as_i64),
            counts: Counts {
                read: n(&["events", "read"]),
                counted: n(&["events", "counted"]),
                late: n(&["events", "late"]),
                rejected: n(&["events", "rejected"]),
                filtered: n(&["events", "filtered"]),
            },
            windows_held: n(&["windows_held"]) as usize,
            events_per_second: v.get("events_per_second").and_then(J::as_f64).unwrap_or(0.0),
            checkpointed_at: v.get("checkpointed_at").and_then(J::as_i64),
            last_error: v.get("last_error").and_then(J::as_str).map(str::to_string),
            latency_ms: v.get("result_latency_ms").and_then(|l| Some((l.get("p50")?.as_i64()?, l.get("p99")?.as_i64()?))),
            workers: v.get("workers").and_then(J::as_array).into_iter().flatten().filter_map(J::as_str).map(str::to_string).collect(),
            ..Status::default()
        };
        for p in v.get("positions").and_then(J::as_array).into_iter().flatten() {
            let at = (
                p.get("topic").and_then(J::as_str).unwrap_or_default().to_string(),
                p.get("partition").and_then(J::as_u64).unwrap_or(0) as u32,
            );
            s.positions.insert(at.clone(), p.get("offset").and_then(J::as_u64).unwrap_or(0));
            s.lag.insert(at, p.get("lag").and_then(J::as_u64).unwrap_or(0));
        }
        s
    }

    /// Whether it says it runs but has not written for a while (a running job writes every
    /// second): its process died.
    pub fn died(&self, now_ms: i64) -> bool {
        self.state == "running" && now_ms - self.updated_at >= 15_000
    }

    /// The status a job last wrote, if it ran here: as one process, or (when they wrote
    /// since) as the workers sharing it, together.
    pub fn read(dir: &Path) -> Option<Status> {
        let file =
            |path: &Path| -> Option<Status> { Some(Status::from_json(&serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?)) };
        let one = file(&dir.join("status.json"));
        let mut workers: Vec<Status> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("worker-") && e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| file(&e.path()))
            .collect();
        let newest = workers.iter().map(|w| w.updated_at).max();
        if newest.is_none_or(|n| one.as_ref().is_some_and(|o| o.updated_at >= n)) {
            return one;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let live = |w: &Status| w.state == "running" && !w.died(now);
        // The live workers' partitions; when none is live, where the last ones left them.
        if workers.iter().any(live) {
            workers.retain(live);
        }
        workers.sort_by_key(|w| w.updated_at);
        let mut all = workers.pop()?;
        for w in workers {
            all.positions.extend(w.positions);
            all.lag.extend(w.lag);
            all.counts.add(&w.counts);
            all.windows_held += w.windows_held;
            all.events_per_second += w.events_per_second;
            all.read_this_run += w.read_this_run;
            all.watermark = all.watermark.min(w.watermark).or(all.watermark).or(w.watermark);
            all.workers.extend(w.workers);
        }
        all.workers.sort();
        Some(all)
    }
}

/// Forgets a job's checkpoints and results: its state folder, its table, its positions and
/// its late and rejected events. It starts again from the topic's first event.
pub fn reset(run: &JobRun, wh: &dyn Warehouse) -> Result<(), StreamError> {
    let lock = JobLock::take(run)?;
    sink::Sink::reset(wh, &run.table, &run.job.config.sink, &run.job.name)?;
    run.checkpoints.clear()?;
    // Everything but the lock, held until the folder's state is gone.
    for entry in std::fs::read_dir(&run.dir).map_err(|e| StreamError::io(&run.dir, e))?.flatten() {
        let path = entry.path();
        if path != lock.path {
            let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.map_err(|e| StreamError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Runs a job until `control` stops it, calling `report` about once a second.
pub fn run(
    run: &JobRun,
    log: &dyn Log,
    wh: Arc<dyn Warehouse>,
    control: &Control,
    report: &mut dyn FnMut(&Status),
) -> Result<Status, StreamError> {
    let _lock = JobLock::take(run)?;
    if run.plan.changelog.is_some() {
        return changelog::run(run, log, wh, control, report);
    }
    Runner::start(run, log, wh, None)?.go(control, report)
}

/// A job's lock: one process runs a job at a time (its window state and positions are its
/// own), and `reset` waits for none. The operating system lets go of it when the process
/// ends, however it ends.
struct JobLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl JobLock {
    fn take(run: &JobRun) -> Result<JobLock, StreamError> {
        JobLock::take_file(run, "lock", false)
    }

    /// The lock file `name` of the job's folder: taken alone, with the holder's pid written
    /// in it, or (`shared`) beside the job's other workers.
    fn take_file(run: &JobRun, name: &str, shared: bool) -> Result<JobLock, StreamError> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(&run.dir).map_err(|e| StreamError::io(&run.dir, e))?;
        let path = run.dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StreamError::io(&path, e))?;
        match if shared { file.try_lock_shared() } else { file.try_lock() } {
            Ok(()) if shared => return Ok(JobLock { _file: file, path }),
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = if pid.trim().is_empty() { "unknown".to_string() } else { pid.trim().to_string() };
                return Err(StreamError::Busy { job: run.job.name.clone(), pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StreamError::io(&path, e)),
        }
        let io = |e| StreamError::io(&path, e);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(JobLock { _file: file, path })
    }
}

/// One topic a job reads, and where it is in it.
struct Input {
    topic: String,
    decoder: Decoder,
    watermarks: Watermarks,
    /// Per partition: the next offset to read, and the events read from it so far.
    positions: BTreeMap<u32, u64>,
    counts: BTreeMap<u32, Counts>,
}

struct Runner<'a> {
    run: &'a JobRun,
    log: &'a dyn Log,
    /// How its sink topic's records are written.
    out: Out,
    /// The output columns a sink topic takes as record headers (its `headers:`), not in values.
    out_headers: Vec<usize>,
    /// Its stream, and the stream joined to it in a join of two streams.
    inputs: Vec<Input>,
    evaluator: Evaluator,
    sink: Sink,
    op: WindowOperator<String>,
    /// The state of a join of two streams.
    join: Option<pairs::Joining>,
    /// The least of the inputs' watermarks.
    wm: Option<i64>,
    /// The next micro-batch, read and decoded while the last one was taken.
    ahead: Option<MicroBatch>,
    /// The watermark the sink's last write was made under: a window closed by then may
    /// already be in the table (the job is reading again what it read before a crash).
    replayed_watermark: Option<i64>,
    pending: Batch,
    status: Status,
    fingerprint: String,
    /// Per aggregate: whether its values are whole numbers (counts, sums of integers).
    agg_int: Vec<bool>,
    /// When the event that closed the pending results was appended to the log (ms).
    closed_at: Option<i64>,
    /// The last results' latencies: from the closing event's append to their commit (ms).
    latencies: std::collections::VecDeque<i64>,
    /// A topic sink's last checkpoint's number, committed to the log with its records.
    seq: u64,
    /// A topic sink's pending late and rejected events and counts are in the warehouse
    /// already (its log commit failed and is being retried).
    aside_written: bool,
    /// The columns of the joined table as the job started with them.
    table_columns: Vec<(String, String)>,
    /// The one partition it runs, as a worker's task; `None`: the whole job.
    part: Option<u32>,
    /// What its checkpoints and their number are called.
    names: Names,
    /// When it last wrote, checkpointed, emitted early, reread the joined table, reported.
    clock: Clock,
}

/// When a runner last did what it does every so often.
struct Clock {
    commit: Instant,
    checkpoint: Instant,
    early: Instant,
    table_read: Instant,
    reporting: Reporting,
}

/// What one turn of a runner did.
pub(crate) struct Turn {
    /// It read nothing: the partitions it reads are caught up.
    pub caught_up: bool,
    /// It has written what it holds and stopped (told to, or drained).
    pub finished: bool,
}

/// What a runner's checkpoint documents and checkpoint number are called: the job's, or (a
/// worker's task) its partition's, so that each partition's state is its own and moves to
/// whichever worker is dealt the partition.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub checkpoint: String,
    partition: Option<u32>,
    /// The position the checkpoint's number is committed under, beside the offsets.
    mark: (String, u32),
}

impl Names {
    fn whole() -> Names {
        Names { checkpoint: CHECKPOINT.to_string(), partition: None, mark: (CHECKPOINT_SEQ.to_string(), 0) }
    }

    pub(crate) fn partition(p: u32) -> Names {
        Names { checkpoint: format!("partition-{p}.json"), partition: Some(p), mark: (PARTITION_SEQ.to_string(), p) }
    }

    /// The next checkpoint while the commit numbered `seq` is under way. A task's is named
    /// by its number: a worker that lost the partition and has not noticed yet cannot write
    /// over the next owner's.
    pub(crate) fn next(&self, seq: u64) -> String {
        match self.partition {
            None => NEXT_CHECKPOINT.to_string(),
            Some(p) => format!("partition-{p}.next-{seq}.json"),
        }
    }
}

impl<'a> Runner<'a> {
    /// A runner of the whole job, or (`task`) of one partition of its input, as the task of
    /// the worker it names: that partition's positions, watermark, state and checkpoint only.
    fn start(run: &'a JobRun, log: &'a dyn Log, wh: Arc<dyn Warehouse>, task: Option<(u32, &str)>) -> Result<Runner<'a>, StreamError> {
        let plan = &run.plan;
        let part = task.map(|(p, _)| p);
        let naming = part.map_or_else(Names::whole, Names::partition);
        let lateness = run.job.config.allowed_lateness_ms;
        let fingerprint = format!("{} lateness={lateness}", plan.fingerprint());
        let names: Vec<String> = run.inputs().iter().map(|t| t.name.clone()).collect();
        for t in run.inputs() {
            log.create_topic(&t.spec())?;
        }
        let joined = match &plan.join {
            Some(j) => Some(read_table(run, j.table, wh.as_ref())?),
            None => None,
        };
        let (mut evaluator, value_types) = Evaluator::new(plan, joined.as_ref().map(|(columns, _)| columns.as_slice()))?;
        if let Some((_, rows)) = &joined {
            evaluator.load_table(rows)?;
        }
        let layout = layout(plan, &value_types);
        let agg_int = agg_int(plan, &layout);
        let mut sink = Sink::open(wh, run.table.clone(), layout, &run.job.config.sink, &run.job.name, &names)?;
        match task {
            // A topic sink's commits are fenced by the log; the others' by the warehouse: the
            // partition is claimed before its positions are read.
            Some((p, member)) if run.out_topic.is_none() => sink.claim(&run.topic.name, p, member, now_ms())?,
            _ => sink.partition = part,
        }
        let (committed, committed_watermark) = sink.committed()?;
        let spec = |t: &Topic| WatermarkSpec {
            delay: t.watermark.as_ref().map_or(0, |w| w.delay_ms),
            idle_timeout: run.job.config.idle_timeout_ms,
            max_future: run.job.config.max_future_ms,
        };
        let now = now_ms();
        let mut inputs = vec![];
        for (i, t) in run.inputs().into_iter().enumerate() {
            let partitions = log.describe(&t.name)?.partitions.len() as u32;
            let parts: Vec<u32> = match part {
                Some(p) => vec![p],
                None => (0..partitions).collect(),
            };
            let decoder = match (&plan.stream_join, i) {
                (Some(j), 1) => run.decoder(t, &j.columns, Some(&j.time_column))?,
                _ => run.decoder(t, &plan.columns, plan.time_column.as_deref())?,
            };
            // Behind a repartition, the watermark is the least over the source's partitions,
            // each as the repartition's markers say.
            let watermarks = match &run.repartition {
                Some(r) => Watermarks::new(spec(t), r.partitions as usize, now).reported(),
                None => Watermarks::new(spec(t), parts.len(), now),
            };
            inputs.push(Input {
                topic: t.name.clone(),
                decoder,
                watermarks,
                positions: parts.iter().map(|p| (*p, 0)).collect(),
                counts: parts.iter().map(|p| (*p, Counts::default())).collect(),
            });
        }
        let input_of = |topic: &str| names.iter().position(|n| n == topic);
        let mut join = plan.stream_join.as_ref().map(|j| pairs::Joining::new(plan, j, lateness));
        if let Some(out) = &run.out_topic {
            log.create_topic(out)?;
            // What an earlier run of the job left half committed is settled, and that run,
            // should it still be alive somewhere, can no longer commit. (A worker claimed its
            // own name when it joined the group; a task settles its partition's checkpoint.)
            if part.is_none() {
                log.claim(&run.group())?;
            }
            settle_checkpoint(run, log, &naming)?;
        }
        // A sink topic of a registry format: its schema is the job's output columns (and its
        // keys'), registered under the topic's subjects (or, without registration, found
        // there); a change its readers could not follow stops the job here, with the rules
        // it breaks.
        let out_headers: Vec<usize> = match &run.out_declared {
            Some(decl) => {
                let layout = sink.layout();
                (0..layout.columns.len())
                    .filter(|i| decl.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(&layout.columns[*i].0)))
                    .collect()
            }
            None => vec![],
        };
        let out = match (&run.out_topic, &run.out_declared) {
            (Some(out), Some(decl)) => match decl.format.schema_type() {
                Some(format) => Out::Registry(Box::new(out_writers(run, out, decl, format, sink.layout(), &out_headers)?)),
                None if decl.format == Format::Csv => Out::Csv,
                None => Out::Json,
            },
            _ => Out::Json,
        };
        let checkpoint = read_checkpoint(run.checkpoints.as_ref(), &naming.checkpoint)?;
        let mut op = WindowOperator::new(plan.window, plan.aggs.iter().map(|a| a.agg).collect(), lateness);
        let resumed = match (&checkpoint, plan.shape) {
            (_, Shape::Stateless) if run.out_topic.is_none() && join.is_none() => !committed.is_empty(),
            (checkpoint, _) => checkpoint.is_some(),
        };
        if !resumed {
            start_positions(run, log, &mut inputs, part)?;
        }
        match (&checkpoint, plan.shape) {
            // A projection's rows and positions are in the sink together: resume from there.
            (_, Shape::Stateless) if run.out_topic.is_none() && join.is_none() => {
                for ((topic, p), (o, c)) in committed.iter().filter(|((_, p), _)| part.is_none_or(|mine| mine == *p)) {
                    if let Some(input) = input_of(topic).and_then(|i| inputs.get_mut(i)) {
                        input.positions.insert(*p, *o);
                        input.counts.insert(*p, *c);
                    }
                }
            }
            (Some(c), _) => {
                if c.get("fingerprint").and_then(J::as_str) != Some(fingerprint.as_str()) {
                    return Err(StreamError::Job(format!(
                        "{}: the job's SQL or settings changed what its state means since its last checkpoint \
                         (was: {}; now: {fingerprint}); run `weir stream run {} --reset` to start over from the first event",
                        run.job.path.display(),
                        c.get("fingerprint").and_then(J::as_str).unwrap_or("?"),
                        run.job.name
                    )));
                }
                let damaged = |m: String| StreamError::Job(format!("{}: {m}", run.checkpoints.location(&naming.checkpoint)));
                op = WindowOperator::restore(
                    plan.window,
                    plan.aggs.iter().map(|a| a.agg).collect(),
                    lateness,
                    c.get("operator").unwrap_or(&J::Null),
                )
                .map_err(damaged)?;
                for ((input, t), key) in inputs.iter_mut().zip(run.inputs()).zip(["watermarks", "watermarks_joined"]) {
                    let w = Watermarks::restore(spec(t), c.get(key).unwrap_or(&J::Null)).map_err(damaged)?;
                    input.watermarks = if run.repartition.is_some() { w.reported() } else { w };
                }
                for p in c.get("partitions").and_then(J::as_array).into_iter().flatten() {
                    let n = |k: &str| p.get(k).and_then(J::as_u64).unwrap_or(0);
                    // Checkpoints of one topic name none.
                    let i = p.get("topic").and_then(J::as_str).map_or(Some(0), input_of);
                    let Some(input) = i.and_then(|i| inputs.get_mut(i)) else { continue };
                    input.positions.insert(n("partition") as u32, n("offset"));
                    input.counts.insert(
                        n("partition") as u32,
                        Counts {
                            read: n("read"),
                            counted: n("counted"),
                            late: n("late"),
                            rejected: n("rejected"),
                            filtered: n("filtered"),
                        },
                    );
                }
                if let Some(j) = &mut join {
                    j.restore(c.get("join").unwrap_or(&J::Null), &inputs.iter().map(|i| &i.decoder).collect::<Vec<_>>())
                        .map_err(damaged)?;
                }
            }
            (None, _) => {}
        }
        // What a join found before the sink's last commit is in the table: found again on the
        // way back from the checkpoint, it is not written twice. A topic sink's commits are
        // its checkpoints: nothing is found twice.
        if let Some(j) = &mut join
            && run.out_topic.is_none()
        {
            j.written = committed.iter().filter_map(|((t, p), (o, _))| Some(((input_of(t)?, *p), *o))).collect();
        }
        let at: BTreeMap<(String, u32), u64> =
            inputs.iter().flat_map(|i| i.positions.iter().map(|(p, o)| ((i.topic.clone(), *p), *o))).collect();
        sink.forget_after(&at)?;
        let status = Status {
            job: run.job.name.clone(),
            state: "running".into(),
            pid: std::process::id(),
            started_at: now,
            updated_at: now,
            checkpointed_at: checkpoint.as_ref().and_then(|c| c.get("written_at")).and_then(J::as_i64),
            ..Status::default()
        };
        let reporting = Reporting::new(inputs.iter().flat_map(|i| i.counts.values()).map(|c| c.read).sum());
        let clock =
            Clock { commit: Instant::now(), checkpoint: Instant::now(), early: Instant::now(), table_read: Instant::now(), reporting };
        let mut runner = Runner {
            run,
            log,
            out,
            out_headers,
            inputs,
            evaluator,
            sink,
            op,
            join,
            wm: None,
            ahead: None,
            replayed_watermark: committed_watermark,
            pending: Batch::default(),
            status,
            fingerprint,
            agg_int,
            closed_at: None,
            latencies: std::collections::VecDeque::new(),
            seq: checkpoint.as_ref().and_then(|c| c.get("seq")).and_then(J::as_u64).unwrap_or(0),
            aside_written: false,
            table_columns: joined.map(|(columns, _)| columns).unwrap_or_default(),
            part,
            names: naming,
            clock,
        };
        runner.wm = runner.watermark(now);
        if !resumed && run.job.config.start_from != StartFrom::Earliest {
            // Where a job starts is written down at once: started again before its first
            // checkpoint, it goes on from there, not from a later end or another time.
            let positions = runner.positions();
            runner.commit_once(&positions)?;
            if run.out_topic.is_none() && (plan.shape != Shape::Stateless || runner.join.is_some()) {
                runner.checkpoint(None)?;
            }
        }
        Ok(runner)
    }

    fn go(mut self, control: &Control, report: &mut dyn FnMut(&Status)) -> Result<Status, StreamError> {
        loop {
            let turn = self.turn(control, report)?;
            if turn.finished {
                return Ok(self.status);
            }
            if turn.caught_up {
                std::thread::sleep(POLL);
            }
        }
    }

    /// One turn: a micro-batch read and taken, the watermark moved, and what is due
    /// written, checkpointed and reported.
    fn turn(&mut self, control: &Control, report: &mut dyn FnMut(&Status)) -> Result<Turn, StreamError> {
        let config = &self.run.job.config;
        // The joined table, read again: a table rebuilt meanwhile joins the next events.
        if let Some(j) = &self.run.plan.join
            && self.clock.table_read.elapsed() >= Duration::from_millis(config.table_refresh_ms as u64)
        {
            match read_table(self.run, j.table, self.sink.warehouse()) {
                Ok((columns, rows)) if columns == self.table_columns => {
                    self.evaluator.load_table(&rows)?;
                    self.status.last_error = None;
                }
                Ok((columns, _)) => {
                    let names = |c: &[(String, String)]| c.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
                    self.status.last_error = Some(format!(
                        "the joined table's columns changed from ({}) to ({}): its rows of before stay joined until the job is started again",
                        names(&self.table_columns),
                        names(&columns)
                    ));
                }
                // The rows read before stay joined until the table can be read again.
                Err(e) => self.status.last_error = Some(format!("the joined table could not be read again: {e}")),
            }
            self.clock.table_read = Instant::now();
        }
        let stopping = control.stop.load(Ordering::Relaxed);
        let read = if stopping { 0 } else { self.step()? };
        let now = now_ms();
        // Idle partitions stop holding the watermark back as time passes, events or not.
        self.advance(now);
        if let Some(every) = config.emit_every_ms
            && self.clock.early.elapsed() >= Duration::from_millis(every as u64)
        {
            let early = self.op.emit_early();
            self.stage(early);
            self.clock.early = Instant::now();
        }
        let caught_up = read == 0;
        let checkpoint_due = self.clock.checkpoint.elapsed() >= Duration::from_millis(config.checkpoint_interval_ms as u64);
        let finishing = stopping || (control.drain && caught_up);
        if self.run.out_topic.is_some() {
            // A topic sink writes at checkpoints only: its records, the input positions
            // and the state's number in one commit of the log.
            if checkpoint_due || finishing {
                self.commit(control)?;
                self.clock.checkpoint = Instant::now();
            }
        } else {
            if (!self.pending.is_empty() && (self.clock.commit.elapsed() >= COMMIT_EVERY || caught_up)) || checkpoint_due || finishing {
                self.commit(control)?;
                self.clock.commit = Instant::now();
            }
            // A projection's positions are in its sink; a join's held events are state.
            if (checkpoint_due || finishing) && (self.run.plan.shape != Shape::Stateless || self.join.is_some()) {
                self.checkpoint(None)?;
                self.clock.checkpoint = Instant::now();
            } else if checkpoint_due {
                self.clock.checkpoint = Instant::now();
            }
            // A worker's task keeps its positions in the warehouse; the consumer group is told
            // them too, at checkpoints, so Kafka's tools show the job's lag.
            if self.part.is_some() && (checkpoint_due || finishing) {
                let positions = self.positions().into_iter().map(|(at, (o, _))| (at, o)).collect();
                self.log.commit(&self.run.group(), &weir_log::Commit { outputs: vec![], positions })?;
            }
        }
        // Caught up with nothing to write: other processes may have the warehouse (a
        // DuckDB file has one writer at a time) until there is something to write again.
        // A job caught up inside another run (`weir build`) leaves it to that run.
        if caught_up && self.pending.is_empty() && !control.drain {
            self.sink.release();
        }
        // A worker's tasks are reported by the worker, together.
        if self.part.is_none() && self.clock.reporting.due(finishing) {
            let total = self.total().read;
            self.clock.reporting.mark(&mut self.status, total);
            self.refresh_status(if finishing { "stopped" } else { "running" })?;
            report(&self.status);
        }
        Ok(Turn { caught_up, finished: finishing })
    }

    /// Reads one micro-batch from every partition and takes it in slices, partition after
    /// partition, moving the watermark after each: no partition runs far ahead of the others
    /// in event time, so what is late does not depend on how much the log held when read.
    /// Returns the events read.
    fn step(&mut self) -> Result<usize, StreamError> {
        let direct = self.evaluator.direct().cloned();
        let here: Vec<Source> =
            self.inputs.iter().map(|i| Source { topic: i.topic.clone(), decoder: i.decoder.clone(), from: i.positions.clone() }).collect();
        // A micro-batch read ahead that found nothing is read again: events may have come since.
        let MicroBatch { read: batches, mut decoded } = match self.ahead.take() {
            Some(ahead) if !ahead.read.is_empty() => ahead,
            _ => fetch_while(self.log, &here, direct.as_ref(), || ()).0?,
        };
        let total = batches.iter().map(|(_, _, r)| r.len()).sum();
        // Where the next micro-batch starts: after this one, which is taken whole.
        let mut next = here;
        for (i, p, records) in &batches {
            if let Some(last) = records.last() {
                next[*i].from.insert(*p, last.offset + 1);
            }
        }
        let log = self.log;
        // Events read say more may be waiting: they are read and decoded on other threads
        // while these are taken, and this thread helps decode them once it is done. (Caught
        // up, the next read waits for the poll.)
        let more = !batches.is_empty();
        let mut take_all = |runner: &mut Runner| -> Result<(), StreamError> {
            // A join's rows are its pairs, evaluated once found.
            if runner.evaluator.direct().is_none() && runner.join.is_none() {
                runner.evaluate_all(&mut decoded)?;
            }
            let rounds = batches.iter().map(|(.., r)| r.len().div_ceil(SLICE)).max().unwrap_or(0);
            for round in 0..rounds {
                for ((i, p, records), events) in batches.iter().zip(decoded.iter_mut()) {
                    let range = (round * SLICE).min(records.len())..((round + 1) * SLICE).min(records.len());
                    if range.is_empty() {
                        continue;
                    }
                    match events {
                        Events::Rows(rows) if runner.join.is_some() => runner.take_pairs(*i, *p, records, range, rows)?,
                        _ => runner.take(*p, records, range, events)?,
                    }
                }
            }
            Ok(())
        };
        if more {
            let (ahead, taken) = fetch_while(log, &next, direct.as_ref(), || take_all(self));
            taken?;
            self.ahead = Some(ahead?);
        } else {
            take_all(self)?;
        }
        if self.join.is_some() {
            self.evaluate_pairs()?;
        }
        if self.run.plan.shape == Shape::Running {
            let changed = self.op.emit_early();
            self.stage(changed);
        }
        Ok(total)
    }

    /// The stateless part of every event of a micro-batch, in one query: DuckDB's cost is
    /// mostly per query, so a batch of 40,000 events costs about what one of 500 does.
    fn evaluate_all(&mut self, decoded: &mut [Events]) -> Result<(), StreamError> {
        let mut at: Vec<(usize, usize)> = vec![];
        let results: Vec<(usize, Evaluated)> = {
            let mut refs: Vec<&[decode::Cell]> = vec![];
            for (b, events) in decoded.iter().enumerate() {
                let Events::Rows(rows) = events else { continue };
                for (i, d) in rows.iter().enumerate() {
                    if let Ok((cells, _, _)) = d {
                        at.push((b, i));
                        refs.push(cells);
                    }
                }
            }
            if self.run.plan.shape == Shape::Stateless {
                let width = self.run.plan.outputs.len();
                self.evaluator.project(&refs, width)?.into_iter().map(|(i, row)| (i, Evaluated::Row(row))).collect()
            } else {
                self.evaluator.keyed(&refs)?.into_iter().map(|k| (k.index, Evaluated::Keyed(k.key, k.args))).collect()
            }
        };
        for (i, e) in results {
            let (b, r) = at[i];
            if let Some(Events::Rows(rows)) = decoded.get_mut(b)
                && let Some(Ok((_, _, slot))) = rows.get_mut(r)
            {
                *slot = Some(e);
            }
        }
        Ok(())
    }

    /// Folds in the records `range` of partition `p`, decoded (and evaluated) as `events`.
    fn take(&mut self, p: u32, records: &Records, range: std::ops::Range<usize>, events: &mut Events) -> Result<(), StreamError> {
        let now = now_ms();
        let mut c = Counts { read: range.len() as u64, ..Counts::default() };
        match events {
            Events::Rows(rows) => {
                for (r, d) in records.slice(range.clone()).zip(&mut rows[range.clone()]) {
                    if self.marker(&r, now) {
                        c.read -= 1;
                        continue;
                    }
                    let taken = match d {
                        Err(reason) => Err(std::mem::take(reason)),
                        Ok((_, ts, evaluated)) => Ok((
                            *ts,
                            match evaluated {
                                None => Taken::Filtered,
                                Some(Evaluated::Row(row)) => Taken::Row(std::mem::take(row)),
                                Some(Evaluated::Keyed(key, args)) => Taken::Keyed(key.as_str(), args.as_slice()),
                            },
                        )),
                    };
                    self.take_one(p, r, taken, now, &mut c);
                }
            }
            Events::Keyed(keyed) => {
                for (r, e) in records.slice(range.clone()).zip(keyed.events(range.clone())) {
                    if self.marker(&r, now) {
                        c.read -= 1;
                        continue;
                    }
                    let taken = e.map(|(key, ts, args)| (ts, Taken::Keyed(key, args))).map_err(str::to_string);
                    self.take_one(p, r, taken, now, &mut c);
                }
            }
        }
        let last = range.end.checked_sub(1).and_then(|i| records.get(i));
        if let Some(last) = last {
            self.inputs[0].positions.insert(p, last.offset + 1);
        }
        self.inputs[0].counts.entry(p).or_default().add(&c);
        let staged = self.pending.rows.len();
        self.advance(now);
        if self.pending.rows.len() > staged
            && self.closed_at.is_none()
            && let Some(last) = last
        {
            self.closed_at = Some(last.timestamp);
        }
        Ok(())
    }

    /// Behind a repartition: whether `r` is the first stage's report of a source partition's
    /// event time, taken into the watermark (it is no event).
    fn marker(&mut self, r: &RecordRef, now: i64) -> bool {
        if self.run.repartition.is_none() || r.raw_headers.is_empty() {
            return false;
        }
        let Some(m) = repartition::Marker::of(r) else { return false };
        self.inputs[0].watermarks.report(m.partition as usize, m.max_event_time, m.idle, now);
        true
    }

    /// One event of partition `p`, or why it is refused, into the state.
    fn take_one(&mut self, p: u32, r: RecordRef, taken: Result<(i64, Taken), String>, now: i64, c: &mut Counts) {
        let plan = &self.run.plan;
        let (ts, taken) = match taken {
            Ok(t) => t,
            Err(reason) => {
                c.rejected += 1;
                self.pending.rejected.push(aside(&plan.topic, p, r, reason, None));
                return;
            }
        };
        // A task's one partition is its watermark's only one; behind a repartition, the
        // markers move it.
        let slot = if self.part.is_some() { 0 } else { p as usize };
        let watermarks = &mut self.inputs[0].watermarks;
        let seen = if self.run.repartition.is_some() { watermarks.admits(ts, now) } else { watermarks.observe(slot, ts, now) };
        if plan.time_column.is_some()
            && let Err(crate::Refused::Future { by }) = seen
        {
            c.rejected += 1;
            self.pending.rejected.push(aside(&plan.topic, p, r, format!("dated {by} ms past what max_future allows"), None));
            return;
        }
        match taken {
            Taken::Filtered => c.filtered += 1,
            Taken::Row(values) => {
                c.counted += 1;
                self.pending.rows.push((values, false));
            }
            Taken::Keyed(key, args) => match self.op.insert(key, ts, args, self.wm) {
                Admitted::Counted => c.counted += 1,
                Admitted::Unwindowed => c.filtered += 1,
                Admitted::Late => {
                    c.late += 1;
                    let wm = self.wm.unwrap_or(i64::MIN);
                    let reason = format!(
                        "later than the allowed lateness ({} ms): every window it falls in closed before the watermark {}",
                        self.run.job.config.allowed_lateness_ms,
                        format_micros(wm.saturating_mul(1000))
                    );
                    self.pending.late.push(aside(&plan.topic, p, r, reason, Some((ts, wm))));
                }
            },
        }
    }

    fn advance(&mut self, now: i64) {
        if self.run.plan.time_column.is_none() {
            return;
        }
        let wm = self.watermark(now);
        if let Some(j) = &mut self.join {
            if wm != self.wm
                && let Some(w) = wm
            {
                self.wm = wm;
                j.advance(w);
            }
            return;
        }
        // Late updates go out at once, as Flink fires a late element within the lateness.
        if (wm != self.wm || self.op.has_updates())
            && let Some(w) = wm
        {
            self.wm = wm;
            let closed = self.op.advance(w);
            self.stage(closed);
        }
    }

    /// The least of the inputs' watermarks (a stream that has never had an event and has
    /// been idle for the timeout holds nothing back). It never goes back.
    fn watermark(&mut self, now: i64) -> Option<i64> {
        let mut least: Option<i64> = None;
        for input in &mut self.inputs {
            match input.watermarks.current(now) {
                Some(w) => least = Some(least.map_or(w, |l| l.min(w))),
                None if input.watermarks.silent(now) => {}
                None => return self.wm,
            }
        }
        match (least, self.wm) {
            (Some(l), Some(c)) => Some(l.max(c)),
            (l, c) => l.or(c),
        }
    }

    /// Per topic and partition: the next offset to read and the counts so far.
    fn positions(&self) -> sink::Positions {
        self.inputs
            .iter()
            .flat_map(|i| i.positions.iter().map(|(p, o)| ((i.topic.clone(), *p), (*o, i.counts.get(p).copied().unwrap_or_default()))))
            .collect()
    }

    /// Results as rows of the sink.
    fn stage(&mut self, emits: Vec<Emit<String>>) {
        // Rows that may be in the table already: running results and early ones are written
        // over and over; a window closed before a crash was written then.
        let always = self.run.plan.shape == Shape::Running || self.run.job.config.emit_every_ms.is_some();
        for e in emits {
            let parts = key_parts(&e.key);
            let row = result_row(&self.run.plan, &parts, &e.values, Some(e.window), &self.agg_int);
            let replayed = self.replayed_watermark.is_some_and(|w| e.window.max_timestamp() <= w);
            let may_exist = always || e.update || !e.replaces.is_empty() || replayed;
            self.pending.rows.push((row, may_exist));
        }
    }

    /// Writes what is pending with the positions; retries a sink that fails, with backoff,
    /// until it takes them or the job is told to stop (it then resumes from its last
    /// checkpoint when started again: nothing is lost).
    fn commit(&mut self, control: &Control) -> Result<(), StreamError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let positions = self.positions();
            match self.commit_once(&positions) {
                Ok(()) => {
                    // A worker's tasks let other workers write the warehouse between commits.
                    if self.part.is_some() {
                        self.sink.release();
                    }
                    self.pending = Batch::default();
                    self.status.last_error = None;
                    if let Some(at) = self.closed_at.take() {
                        if self.latencies.len() == LATENCIES_KEPT {
                            self.latencies.pop_front();
                        }
                        self.latencies.push_back((now_ms() - at).max(0));
                    }
                    return Ok(());
                }
                // Another run of the job took over, or (a worker's task) the partition was
                // dealt to another worker: trying again cannot succeed.
                Err(
                    e @ (StreamError::Log(weir_log::LogError::Fenced { .. } | weir_log::LogError::Rebalanced { .. })
                    | StreamError::Moved { .. }),
                ) => {
                    return Err(e);
                }
                // A worker's task does not wait here: its worker keeps the group's membership
                // alive meanwhile, and starts the task again from its checkpoint.
                Err(e) if self.part.is_some() => return Err(e),
                Err(e) => {
                    self.status.last_error = Some(format!("the sink refused a write, retrying in {:.1}s: {e}", delay.as_secs_f64()));
                    self.refresh_status("retrying")?;
                    if control.stop.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One attempt at writing what is pending. With a topic sink: the state is written down
    /// as the next checkpoint first, then the late and rejected events and the counts go to
    /// the warehouse, then the records and the input positions to the log in one commit that
    /// carries the checkpoint's number, and the next checkpoint becomes the checkpoint. After
    /// a crash anywhere in between, [`settle_checkpoint`] keeps the checkpoint the log has.
    fn commit_once(&mut self, positions: &sink::Positions) -> Result<(), StreamError> {
        let Some(out) = &self.run.out_topic else {
            return self.sink.commit(&self.pending, positions, self.wm, now_ms());
        };
        // Numbered by time, so no number of a job reset since comes back.
        self.seq = (self.seq + 1).max(now_ms() as u64);
        let next = self.names.next(self.seq);
        self.checkpoint(Some(&next))?;
        if !self.aside_written {
            self.sink.commit(&self.pending, positions, self.wm, now_ms())?;
            self.aside_written = true;
        }
        let now = now_ms();
        let records: Vec<weir_log::Record> = self
            .pending
            .rows
            .iter()
            .map(|(row, _)| record(self.sink.layout(), row, now, &self.out, &self.out_headers))
            .collect::<Result<_, _>>()
            .map_err(|e| StreamError::Job(format!("{}: a result does not fit its topic's schema: {e}", self.run.job.path.display())))?;
        let mut committed: weir_log::Positions = positions.iter().map(|(at, (o, _))| (at.clone(), *o)).collect();
        committed.insert(self.names.mark.clone(), self.seq);
        let commit = weir_log::Commit {
            outputs: vec![weir_log::Output { topic: out.name.clone(), partition: None, records }],
            positions: committed,
        };
        self.log.commit(&self.run.group(), &commit)?;
        self.aside_written = false;
        self.run.checkpoints.promote(&next, &self.names.checkpoint)
    }

    /// Writes the window state with the positions (everything up to them is in the sink) as
    /// the checkpoint, or as the document `next`.
    fn checkpoint(&mut self, next: Option<&str>) -> Result<(), StreamError> {
        let now = now_ms();
        let partitions: Vec<J> = self
            .positions()
            .iter()
            .map(|((t, p), (o, c))| {
                json!({"topic": t, "partition": p, "offset": o, "read": c.read, "counted": c.counted, "late": c.late, "rejected": c.rejected, "filtered": c.filtered})
            })
            .collect();
        let mut doc = json!({
            "version": 1,
            "job": self.run.job.name,
            "fingerprint": self.fingerprint,
            "written_at": now,
            "partitions": partitions,
            "watermarks": self.inputs[0].watermarks.checkpoint(),
            "operator": self.op.checkpoint(),
            "seq": self.seq,
        });
        if let (Some(j), Some(joined)) = (&self.join, self.inputs.get(1)) {
            doc["watermarks_joined"] = joined.watermarks.checkpoint();
            doc["join"] = j.checkpoint();
        }
        self.run.checkpoints.put(next.unwrap_or(&self.names.checkpoint), doc.to_string().as_bytes())?;
        self.status.checkpointed_at = Some(now);
        Ok(())
    }

    fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.inputs.iter().flat_map(|i| i.counts.values()) {
            t.add(c);
        }
        t
    }

    fn refresh_status(&mut self, state: &str) -> Result<(), StreamError> {
        let mut described = BTreeMap::new();
        for input in &self.inputs {
            described.insert(input.topic.clone(), self.log.describe(&input.topic)?);
        }
        self.refresh_status_from(state, &described)
    }

    /// As [`Runner::refresh_status`], with the topics' partitions as `described` (a worker
    /// describes its topic once for all its tasks); a topic missing there has no lag.
    fn refresh_status_from(&mut self, state: &str, described: &BTreeMap<String, weir_log::TopicInfo>) -> Result<(), StreamError> {
        self.status.lag.clear();
        for input in &self.inputs {
            let Some(info) = described.get(&input.topic) else { continue };
            for p in info.partitions.iter().filter(|p| input.positions.contains_key(&p.partition)) {
                let behind = p.end.saturating_sub(input.positions.get(&p.partition).copied().unwrap_or(0));
                self.status.lag.insert((input.topic.clone(), p.partition), behind);
            }
        }
        self.status.state = state.to_string();
        self.status.updated_at = now_ms();
        self.status.watermark = self.wm;
        self.status.positions = self.positions().into_iter().map(|(at, (o, _))| (at, o)).collect();
        self.status.counts = self.total();
        self.status.windows_held = self.join.as_ref().map_or_else(|| self.op.windows_held(), pairs::Joining::held);
        let mut sorted: Vec<i64> = self.latencies.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied();
        self.status.latency_ms = at(0.5).zip(at(0.99));
        // A worker's tasks are reported by the worker, together.
        if self.part.is_some() {
            return Ok(());
        }
        write_atomically(&self.run.dir.join("status.json"), self.status.to_json().to_string().as_bytes())
    }
}

/// When a run reports (every second, and as it stops) and how fast it has read since the
/// last report.
struct Reporting {
    last: Instant,
    /// The events read in all at the last report, and at the start of this run.
    read_then: u64,
    read_before: u64,
}

impl Reporting {
    fn new(read: u64) -> Reporting {
        Reporting { last: Instant::now(), read_then: read, read_before: read }
    }

    fn due(&self, finishing: bool) -> bool {
        finishing || self.last.elapsed() >= Duration::from_secs(1)
    }

    /// Sets `status`'s rate and events read this run, `total` having been read in all.
    fn mark(&mut self, status: &mut Status, total: u64) {
        status.events_per_second = total.saturating_sub(self.read_then) as f64 / self.last.elapsed().as_secs_f64().max(1e-3);
        status.read_this_run = total.saturating_sub(self.read_before);
        (self.last, self.read_then) = (Instant::now(), total);
    }
}

/// Where a micro-batch is read from: a topic, per partition the offset to read from, and how
/// its events are decoded.
#[derive(Clone)]
struct Source {
    topic: String,
    decoder: Decoder,
    from: BTreeMap<u32, u64>,
}

/// A micro-batch: per input and partition, in that order, the records read and what each
/// became.
struct MicroBatch {
    read: Vec<(usize, u32, Records)>,
    decoded: Vec<Events>,
}

/// Reads a micro-batch of each source's partitions and decodes it, on other threads while
/// `meanwhile` runs on this one; this thread then helps decode what is left. Decoding is
/// most of an event's cost and needs nothing but the event, while what follows (the
/// watermark, the window state) takes the events in order on one thread: with the work cut
/// in pieces that any free thread takes, every core stays busy whichever part is slower.
fn fetch_while<T>(
    log: &dyn Log,
    sources: &[Source],
    direct: Option<&eval::Direct>,
    meanwhile: impl FnOnce() -> T,
) -> (Result<MicroBatch, StreamError>, T) {
    let helpers = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1);
    let work: OnceLock<Work> = OnceLock::new();
    let (ready, wait) = std::sync::mpsc::channel::<()>();
    let (read, out) = std::thread::scope(|scope| {
        let work = &work;
        let reader = scope.spawn(move || -> Result<(), StreamError> {
            let read = read_batch(log, sources)?;
            let work = work.get_or_init(|| Work::new(read));
            let _ = ready.send(());
            let others: Vec<_> = (1..helpers).map(|_| scope.spawn(move || work.help(sources, direct))).collect();
            work.help(sources, direct);
            // A helper that failed leaves its piece undone: its events are refused.
            for h in others {
                let _ = h.join();
            }
            Ok(())
        });
        let out = meanwhile();
        // Nothing comes when the reader failed or died: it says why when joined.
        if wait.recv().is_ok()
            && let Some(work) = work.get()
        {
            work.help(sources, direct);
        }
        let read = match reader.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StreamError::Job("reading the next micro-batch failed".into())),
        };
        (read, out)
    });
    let batch =
        read.and_then(|()| work.into_inner().map(|w| w.finish(direct)).ok_or_else(|| StreamError::Job("no micro-batch was read".into())));
    (batch, out)
}

/// Where a job with no positions of its own starts reading each partition, as its
/// `start_from` says.
fn start_positions(run: &JobRun, log: &dyn Log, inputs: &mut [Input], part: Option<u32>) -> Result<(), StreamError> {
    let from = run.job.config.start_from;
    let committed = if from == StartFrom::Committed { log.positions(&run.group())? } else { weir_log::Positions::new() };
    for input in inputs {
        for p in log.describe(&input.topic)?.partitions.into_iter().filter(|p| part.is_none_or(|mine| mine == p.partition)) {
            let at = match from {
                StartFrom::Earliest => p.start,
                StartFrom::Latest => p.end,
                StartFrom::Committed => committed.get(&(input.topic.clone(), p.partition)).copied().unwrap_or(p.start),
                StartFrom::Time(ms) => log.offset_for_time(&input.topic, p.partition, ms)?,
            };
            input.positions.insert(p.partition, at);
        }
    }
    Ok(())
}

/// Per source and partition with events, the records read.
fn read_batch(log: &dyn Log, sources: &[Source]) -> Result<Vec<(usize, u32, Records)>, StreamError> {
    let mut read = vec![];
    for (i, source) in sources.iter().enumerate() {
        for (p, from) in &source.from {
            let records = log.read_records(&source.topic, *p, *from, READ_MAX)?;
            if !records.is_empty() {
                read.push((i, *p, records));
            }
        }
    }
    Ok(read)
}

/// Events a decoding thread takes at a time: small enough that the threads finish together.
const PIECE: usize = 2048;

/// A micro-batch read, being decoded piece by piece by whichever threads are free.
struct Work {
    read: Vec<(usize, u32, Records)>,
    /// Per piece: the batch of `read` and the records of it.
    pieces: Vec<(usize, std::ops::Range<usize>)>,
    /// The next piece to take.
    next: AtomicUsize,
    done: Mutex<Vec<Option<Events>>>,
}

impl Work {
    fn new(read: Vec<(usize, u32, Records)>) -> Work {
        let mut pieces = vec![];
        for (b, (.., records)) in read.iter().enumerate() {
            pieces.extend((0..records.len()).step_by(PIECE).map(|at| (b, at..(at + PIECE).min(records.len()))));
        }
        let done = Mutex::new((0..pieces.len()).map(|_| None).collect());
        Work { read, pieces, next: AtomicUsize::new(0), done }
    }

    /// Decodes pieces until none is left to take.
    fn help(&self, sources: &[Source], direct: Option<&eval::Direct>) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((b, range)) = self.pieces.get(i) else { return };
            let (input, _, records) = &self.read[*b];
            let decoder = &sources[*input].decoder;
            let events = match direct {
                Some(d) => Events::Keyed(KeyedEvents::decode(decoder, d, records, range.clone())),
                None => Events::Rows(
                    records.slice(range.clone()).map(|r| decoder.decode_record(&r).map(|(cells, ts)| (cells, ts, None))).collect(),
                ),
            };
            if let Ok(mut done) = self.done.lock() {
                done[i] = Some(events);
            }
        }
    }

    /// The micro-batch, each partition's pieces put back together. A piece a failed thread
    /// left undone has its events refused with the reason, one for one, never dropped.
    fn finish(self, direct: Option<&eval::Direct>) -> MicroBatch {
        let done = self.done.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut decoded: Vec<Events> = vec![];
        let mut last = None;
        for ((b, range), events) in self.pieces.iter().zip(done) {
            let events = events.unwrap_or_else(|| {
                let reason = "the decoder failed on this event's batch";
                match direct {
                    Some(d) => Events::Keyed(KeyedEvents::refused(range.len(), d.width(), reason)),
                    None => Events::Rows(vec![Err(reason.to_string()); range.len()]),
                }
            });
            match decoded.last_mut() {
                Some(prev) if last == Some(*b) => prev.append(events),
                _ => decoded.push(events),
            }
            last = Some(*b);
        }
        MicroBatch { read: self.read, decoded }
    }
}

/// The sink table's columns and keys for `plan`; `value_types` are the SQL types of the
/// keys (a stateful job) or of the outputs (a projection).
fn layout(plan: &Plan, value_types: &[String]) -> Layout {
    let mut columns = vec![];
    let (mut keys, mut start, mut end) = (vec![], None, None);
    let mut expr_i = 0;
    for (i, (name, o)) in plan.outputs.iter().enumerate() {
        let ty = match o {
            Output::Key(k) => {
                keys.push(i);
                value_types.get(*k).cloned().unwrap_or_else(|| "VARCHAR".into())
            }
            Output::WindowStart => {
                start = Some(i);
                "TIMESTAMP".into()
            }
            Output::WindowEnd => {
                end = Some(i);
                "TIMESTAMP".into()
            }
            Output::Agg(j) => {
                let a = &plan.aggs[*j];
                let int_arg = a
                    .arg
                    .as_ref()
                    .and_then(|s| s.column.as_ref())
                    .and_then(|c| plan.columns.iter().find(|(n, _)| n == c))
                    .is_some_and(|(_, t)| Kind::of(t) == Kind::Int);
                match a.agg {
                    Agg::Count | Agg::CountValues | Agg::CountDistinct => "BIGINT".into(),
                    Agg::Sum | Agg::Min | Agg::Max if int_arg => "BIGINT".into(),
                    _ => "DOUBLE".into(),
                }
            }
            Output::Expr(_) => {
                expr_i += 1;
                value_types.get(expr_i - 1).cloned().unwrap_or_else(|| "VARCHAR".into())
            }
        };
        columns.push((name.clone(), ty));
    }
    Layout {
        columns,
        keys,
        window: start.zip(end),
        session: matches!(plan.window, WindowSpec::Session { .. }),
        append: plan.shape == Shape::Stateless,
    }
}

/// Per aggregate: whether its values are whole numbers (counts, sums of integers), as the
/// sink's column for it says.
fn agg_int(plan: &Plan, layout: &Layout) -> Vec<bool> {
    let mut int = vec![false; plan.aggs.len()];
    for ((_, o), (_, ty)) in plan.outputs.iter().zip(&layout.columns) {
        if let Output::Agg(j) = o {
            int[*j] = ty == "BIGINT";
        }
    }
    int
}

/// A group's result as a row of the sink: its key's `parts`, the window's bounds and the
/// aggregates' `values`, each as text, in the outputs' order.
fn result_row(plan: &Plan, parts: &[Option<String>], values: &[Option<f64>], window: Option<crate::Window>, agg_int: &[bool]) -> eval::Row {
    plan.outputs
        .iter()
        .map(|(_, o)| match o {
            Output::Key(i) => parts.get(*i).cloned().flatten(),
            Output::WindowStart => window.map(|w| format_micros(w.start.saturating_mul(1000))),
            Output::WindowEnd => window.map(|w| format_micros(w.end.saturating_mul(1000))),
            Output::Agg(j) => values.get(*j).copied().flatten().map(|v| {
                if agg_int.get(*j).copied().unwrap_or(false) && v.fract() == 0.0 { format!("{}", v as i64) } else { v.to_string() }
            }),
            Output::Expr(_) => None,
        })
        .collect()
}

fn aside(topic: &str, partition: u32, r: RecordRef, reason: String, times: Option<(i64, i64)>) -> Aside {
    Aside { topic: topic.to_string(), partition, offset: r.offset, event: event_text(r.value), reason, times }
}

/// An event as the text kept beside its reason: itself when it is text, else (binary, such
/// as Avro, or holding NUL bytes, which the warehouse's text cannot) `base64:` and its bytes
/// in base64, so that nothing of it is lost and the row can be written.
fn event_text(value: &[u8]) -> String {
    use base64::Engine;
    match std::str::from_utf8(value) {
        Ok(text) if !text.contains('\0') => text.to_string(),
        _ => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(value)),
    }
}

/// The columns (with types DuckDB reads) and rows, as text, of the `i`th table a job joins.
type TableRows = (Vec<(String, String)>, Vec<Vec<Option<String>>>);

fn read_table(run: &JobRun, i: usize, wh: &dyn Warehouse) -> Result<TableRows, StreamError> {
    let rel = run.tables.get(i).ok_or_else(|| StreamError::Job(format!("{}: the table it joins is not known", run.job.path.display())))?;
    let mut conn = wh.connect()?;
    let columns = conn.columns(rel)?;
    if columns.is_empty() {
        return Err(StreamError::Job(format!(
            "{}: {} does not exist: build it first (`weir build --select +{}`)",
            run.job.path.display(),
            wh.render(rel),
            run.job.name
        )));
    }
    let names: Vec<String> = columns.iter().map(|c| wh.quote(&c.name)).collect();
    let result = conn.query(&format!("select {} from {}", names.join(", "), wh.render(rel)))?;
    let rows = result
        .rows
        .into_iter()
        .map(|r| r.into_iter().map(|d| if d == weir_core::Datum::Null { None } else { Some(d.to_string()) }).collect())
        .collect();
    // Types DuckDB knows by the warehouse's names; anything else is read as text.
    let typed = columns
        .into_iter()
        .map(|c| {
            let t = c.data_type.to_ascii_uppercase();
            let known = !t.is_empty() && !t.contains("USER-DEFINED") && !t.contains("ARRAY") && t != "JSONB";
            (c.name, if known { c.data_type } else { "VARCHAR".into() })
        })
        .collect();
    Ok((typed, rows))
}

/// A topic sink's checkpoint while its log commit is under way.
const NEXT_CHECKPOINT: &str = "checkpoint.next.json";
/// A job's checkpoint.
const CHECKPOINT: &str = "checkpoint.json";
/// Where a topic sink's consumer group keeps its checkpoint's number, beside its positions.
const CHECKPOINT_SEQ: &str = "_weir_checkpoint";
/// The same for each partition's checkpoint, when workers share the job.
const PARTITION_SEQ: &str = "_weir_partition_checkpoint";

/// Keeps the checkpoint that matches the log: after a crash between writing a topic sink's
/// next checkpoint and renaming it, the log's commit says whether it happened (the group
/// holds the next checkpoint's number: it stands) or not (it is dropped, and the job reads
/// again from the checkpoint before it).
fn settle_checkpoint(run: &JobRun, log: &dyn Log, names: &Names) -> Result<(), StreamError> {
    let store = run.checkpoints.as_ref();
    let committed = log.positions(&run.group())?.get(&names.mark).copied();
    let next = names.next(committed.unwrap_or(0));
    let Some(doc) = read_checkpoint(store, &next)? else { return Ok(()) };
    if committed.is_some() && committed == doc.get("seq").and_then(J::as_u64) {
        store.promote(&next, &names.checkpoint)
    } else {
        store.delete(&next)
    }
}

/// A result row as a topic record: a JSON object of the output columns (numbers as numbers,
/// times as ISO 8601 in UTC), a CSV line of them, or a message of the topic's registry
/// format, keyed by the group keys and the window's start (in the same form).
fn record(layout: &Layout, row: &[Option<String>], now: i64, out: &Out, header_columns: &[usize]) -> Result<weir_log::Record, String> {
    let json_of = |ty: &str, v: Option<&str>| -> J {
        let Some(v) = v else { return J::Null };
        let ty = ty.to_ascii_uppercase();
        let typed = match ty.as_str() {
            "BIGINT" | "INTEGER" | "SMALLINT" | "TINYINT" | "HUGEINT" | "UBIGINT" | "UINTEGER" => v.parse::<i64>().ok().map(J::from),
            t if t == "DOUBLE" || t == "FLOAT" || t == "REAL" || t.starts_with("DECIMAL") => {
                v.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(J::Number)
            }
            "BOOLEAN" => v.parse::<bool>().ok().map(J::Bool),
            // A timestamp without a time zone is UTC here (a `timestamptz` keeps its offset).
            "TIMESTAMP" => Some(J::String(format!("{}Z", v.replacen(' ', "T", 1)))),
            _ => None,
        };
        typed.unwrap_or_else(|| J::String(v.to_string()))
    };
    let object = |columns: &mut dyn Iterator<Item = usize>| -> serde_json::Map<String, J> {
        columns.map(|i| (layout.columns[i].0.clone(), json_of(&layout.columns[i].1, row.get(i).and_then(|v| v.as_deref())))).collect()
    };
    // The columns the topic takes as headers go there, as text (none when null).
    let headers: weir_log::Headers =
        header_columns.iter().filter_map(|i| Some((layout.columns[*i].0.clone(), row.get(*i)?.as_deref()?.as_bytes().to_vec()))).collect();
    let value_columns = || (0..layout.columns.len()).filter(|i| !header_columns.contains(i));
    let key_columns = key_columns(layout);
    let (values, keys) = match out {
        Out::Json => {
            let key = (!key_columns.is_empty()).then(|| J::Object(object(&mut key_columns.into_iter())).to_string().into_bytes());
            let value = J::Object(object(&mut value_columns())).to_string().into_bytes();
            return Ok(weir_log::Record { key, value, timestamp: now, headers });
        }
        Out::Csv => {
            let line = |columns: &mut dyn Iterator<Item = usize>| csv_line(columns.map(|i| row.get(i).and_then(|v| v.as_deref())));
            let key = if key_columns.is_empty() { None } else { Some(line(&mut key_columns.into_iter())?) };
            return Ok(weir_log::Record { key, value: line(&mut value_columns())?, timestamp: now, headers });
        }
        Out::Registry(w) => (&w.0, &w.1),
    };
    let fields = fields_of(layout, row)?;
    let key = match keys {
        Some(k) => Some(k.write(&key_columns.iter().map(|i| fields[*i].clone()).collect::<Vec<Field>>())?),
        None => None,
    };
    let value: Vec<Field> = value_columns().map(|i| fields[i].clone()).collect();
    Ok(weir_log::Record { key, value: values.write(&value)?, timestamp: now, headers })
}

/// How a sink topic's records are written (its `format:`).
enum Out {
    Json,
    Csv,
    /// The registry's formats: values' writer and, when results have keys, keys'.
    Registry(Box<(Writer, Option<Writer>)>),
}

/// The columns a result's record is keyed by: the group keys and the window's start.
fn key_columns(layout: &Layout) -> Vec<usize> {
    layout.keys.iter().copied().chain(layout.window.map(|(start, _)| start)).collect()
}

/// A sink topic's writers: its values' (the output columns but its header columns) and, when results have keys,
/// its keys', both under the subjects the topic's strategy names.
fn out_writers(
    run: &JobRun,
    out: &weir_log::TopicSpec,
    decl: &Topic,
    format: weir_registry::SchemaType,
    layout: &Layout,
    header_columns: &[usize],
) -> Result<(Writer, Option<Writer>), StreamError> {
    let registry = run.registry_for(decl)?;
    let register = decl.auto_register.unwrap_or(run.auto_register);
    let open = |record: &str, key: bool, columns: &[(String, String)]| {
        let target = Target { format, naming: decl.subject_strategy, topic: &out.name, record, key, register };
        Writer::open(registry, &target, columns).map_err(|e| {
            StreamError::Job(format!("{}: its results do not fit topic '{}' of the schema registry: {e}", run.job.path.display(), out.name))
        })
    };
    let value_columns: Vec<(String, String)> =
        layout.columns.iter().enumerate().filter(|(i, _)| !header_columns.contains(i)).map(|(_, c)| c.clone()).collect();
    let values = open(&out.name, false, &value_columns)?;
    let key_columns: Vec<(String, String)> = key_columns(layout).into_iter().map(|i| layout.columns[i].clone()).collect();
    let keys = if key_columns.is_empty() { None } else { Some(open(&format!("{}_key", out.name), true, &key_columns)?) };
    Ok((values, keys))
}

/// A result row's values typed by their columns' SQL types (see
/// `weir_registry::codec::Kind`).
fn fields_of<'r>(layout: &Layout, row: &'r [Option<String>]) -> Result<Vec<Field<'r>>, String> {
    let mut fields = Vec::with_capacity(layout.columns.len());
    for (i, (name, ty)) in layout.columns.iter().enumerate() {
        fields.push(match row.get(i).and_then(|v| v.as_deref()) {
            None => Field::Null,
            Some(v) => weir_registry::codec::field_of(weir_registry::codec::Kind::of(ty), v)
                .ok_or_else(|| format!("{name}: '{v}' is not a {ty}"))?,
        });
    }
    Ok(fields)
}

/// The checkpoint document `name` of a store, if there is one.
fn read_checkpoint(store: &dyn CheckpointStore, name: &str) -> Result<Option<J>, StreamError> {
    let Some(bytes) = store.get(name)? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| StreamError::Job(format!("{}: damaged: {e}", store.location(name))))
}

/// Writes a file of the job's folder whole or not at all, making the folder on first use.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StreamError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| StreamError::io(dir, e))?;
    Ok(weir_log::write_atomically(path, bytes)?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event the warehouse's text cannot hold (a NUL byte, binary) is kept in base64,
    /// not lost, nor left to fail the rejected table's write again and again.
    #[test]
    fn events_that_are_not_text_are_kept_whole() {
        use base64::Engine;
        assert_eq!(event_text(b"{\"a\": 1}"), "{\"a\": 1}");
        for bytes in [&b"a\0b"[..], &[0, 0, 0, 0, 1, 2, 0xff][..]] {
            let kept = event_text(bytes);
            let b64 = kept.strip_prefix("base64:").unwrap();
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), bytes);
        }
    }

    fn worker(member: &str, state: &str, updated_at: i64, partitions: &[(u32, u64)], read: u64) -> Status {
        Status {
            job: "revenue".into(),
            state: state.into(),
            updated_at,
            positions: partitions.iter().map(|(p, o)| (("orders".to_string(), *p), *o)).collect(),
            lag: partitions.iter().map(|(p, _)| (("orders".to_string(), *p), 1)).collect(),
            counts: Counts { read, ..Counts::default() },
            watermark: Some(updated_at),
            workers: if member.is_empty() { vec![] } else { vec![member.into()] },
            ..Status::default()
        }
    }

    #[test]
    fn the_status_of_workers_is_read_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, s: &Status| std::fs::write(dir.path().join(name), s.to_json().to_string()).unwrap();
        let now = now_ms();
        // Run in one process once, long ago.
        write("status.json", &worker("", "stopped", now - 60_000, &[(0, 5), (1, 5), (2, 5)], 15));
        assert!(Status::read(dir.path()).unwrap().workers.is_empty(), "only the run in one process");
        // Two live workers, and one that died with partitions the others took since.
        write("worker-0.json", &worker("h-0", "running", now, &[(0, 40)], 40));
        write("worker-1.json", &worker("h-1", "running", now - 1_000, &[(1, 30), (2, 20)], 50));
        write("worker-2.json", &worker("h-2", "running", now - 30_000, &[(2, 9)], 9));
        let s = Status::read(dir.path()).unwrap();
        assert_eq!(s.workers, vec!["h-0", "h-1"]);
        assert_eq!(s.positions.values().copied().collect::<Vec<_>>(), vec![40, 30, 20]);
        assert_eq!((s.counts.read, s.lag.len(), s.watermark), (90, 3, Some(now - 1_000)));
        // None live: where the last ones left them.
        for (name, member) in [("worker-0.json", "h-0"), ("worker-1.json", "h-1")] {
            write(name, &worker(member, "stopped", now - 20_000, &[(0, 41)], 41));
        }
        let s = Status::read(dir.path()).unwrap();
        assert_eq!((s.state.as_str(), s.workers.len()), ("stopped", 3), "{s:?}");
    }
}
