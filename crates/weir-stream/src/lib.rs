//! The stateful core of stream jobs, Weir's own code: event-time windows as Flink defines
//! them ([`window`]), the watermark of a source read from several partitions
//! ([`watermark`]), keyed window state with lateness and emission ([`operator`]), and
//! their checkpoints, restored bit for bit ([`checkpoint`]).
//!
//! It is plain data and arithmetic over event times and values: no I/O, no clock of its own
//! (every call says what time it is), so every rule is tested against a batch computation of
//! the same events in any order.

pub mod checkpoint;
pub mod operator;
pub mod sketch;
pub mod watermark;
pub mod window;

pub use checkpoint::StateKey;
pub use operator::{Acc, Admitted, Agg, Emit, WindowOperator};
pub use sketch::Sketch;
pub use watermark::{Refused, WatermarkSpec, Watermarks};
pub use window::{Millis, Window, WindowSpec};
