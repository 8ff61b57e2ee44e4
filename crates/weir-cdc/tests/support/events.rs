//! Reading a topic of change events back in the tests: the snapshot's and the stream's events
//! of the same rows compared.

use serde_json::Value as J;
use weir_log::Log;

/// The events of `topic`'s first partition, with ops `ops` in order: two rows read by the
/// snapshot (a full one, one of nulls), then the same two inserted again under other ids.
/// Asserts each pair's `after` is the same but for the id, and returns the first's.
pub fn snapshot_and_stream_agree(log: &dyn Log, topic: &str) -> J {
    let events: Vec<J> = log.read(topic, 0, 0, 10).unwrap().iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
    let after = |i: usize| {
        let mut a = events[i]["after"].clone();
        a.as_object_mut().unwrap().remove("id");
        a
    };
    assert_eq!(events.iter().map(|e| e["op"].as_str().unwrap()).collect::<String>(), "rrcc");
    assert_eq!(after(0), after(2), "a full row, by the snapshot and by the stream");
    assert_eq!(after(1), after(3), "a row of nulls, by the snapshot and by the stream");
    after(0)
}
