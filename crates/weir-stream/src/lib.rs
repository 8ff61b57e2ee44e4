//! The stateful core of stream jobs, Weir's own code: event-time windows as Flink defines
//! them ([`window`]), the watermark of a source read from several partitions
//! ([`watermark`]), keyed window state with lateness and emission ([`operator`]), the
//! interval join of two streams ([`join`]), and their checkpoints, restored bit for bit ([`checkpoint`]).
//!
//! That core is plain data and arithmetic over event times and values: no I/O, no clock of
//! its own (every call says what time it is), so every rule is tested against a batch
//! computation of the same events in any order. Around it, [`plan`] works out what a job's
//! SQL (`streams/*.sql`) asks for, and [`job`] runs it: the event log in, the stateless part
//! on an in-process DuckDB, the warehouse sink out, with checkpoints for exactly-once results;

pub mod checkpoint;
pub mod job;
pub mod join;
pub mod operator;
pub mod plan;
pub mod sketch;
pub mod watermark;
pub mod window;

pub use checkpoint::StateKey;
pub use join::{IntervalJoin, Side};
pub use operator::{Acc, Admitted, Agg, Emit, WindowOperator};
pub use sketch::Sketch;
pub use watermark::{Refused, WatermarkSpec, Watermarks};
pub use window::{Millis, Window, WindowSpec};

/// Why a stream job could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Graph(#[from] weir_graph::GraphError),
    #[error(transparent)]
    Log(#[from] weir_log::LogError),
    #[error(transparent)]
    Warehouse(#[from] weir_warehouse::WarehouseError),
    /// The job's SQL, run by DuckDB over a micro-batch, failed.
    #[error("{0}")]
    Sql(String),
    #[error("{0}")]
    Job(String),
    /// Another process runs the job (`weir serve`, `weir stream run`): one runner at a time.
    #[error("stream job '{job}' is running already (process {pid}); stop it first")]
    Busy { job: String, pid: String },
    /// A worker's task lost its partition to another worker's task since it began (a
    /// rebalance it missed): its commit was refused, and the other task goes on from there.
    #[error("stream job '{job}': partition {partition} of topic '{topic}' was claimed by another worker; this task's commit was refused")]
    Moved { job: String, topic: String, partition: u32 },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl StreamError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> StreamError {
        StreamError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}
