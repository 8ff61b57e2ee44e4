//! `weir log topics|describe|produce|consume`: the project's event logs for people, the
//! embedded one (`.weir/log/`) and the Kafka cluster of topics declared `log: kafka`.
//! Topics declared in `streams/*.yml` are made on first use with their partitions and
//! retention; produce reads JSON lines or CSV from a file or stdin.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as J, json};
use weir_graph::streams::{Topic, event_record, read_topics};
use weir_log::{Backend, Log, Logs, TopicInfo, TopicSpec};
use weir_registry::codec::{Field, Kind, Reader, Target, Writer};
use weir_registry::{Registry, SchemaType};

use crate::cli::{Global, LogCommand, LogFormat};
use crate::output::Output;
use crate::workspace::{Error, project_dir, require_project};

/// Events appended per write (each write is synced to disk once).
const BATCH: usize = 10_000;

pub fn run(g: &Global, cmd: &LogCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let root = project_dir(g);
    // The log lives in the project (`.weir/log/`), as its topics do (`streams/*.yml`).
    require_project(&root)?;
    let declared = read_topics(&root)?;
    let logs = weir_graph::logs::project_logs(&root, &declared)?;
    match cmd {
        LogCommand::Topics => topics(&logs, &declared, out),
        LogCommand::Describe { topic } => describe(logs.for_topic(topic)?.as_ref(), &declared, topic, out),
        LogCommand::Produce { topic, file, format, key, partitions, headers } => {
            let headers: weir_log::Headers = headers
                .iter()
                .map(|h| match h.split_once('=') {
                    Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.as_bytes().to_vec())),
                    _ => Err(format!("--header {h}: expected NAME=VALUE")),
                })
                .collect::<Result<_, _>>()?;
            let log = logs.for_topic(topic)?;
            let log = log.as_ref();
            let decl = declared.iter().find(|t| t.name == *topic);
            ensure_topic(log, decl, topic, *partitions)?;
            let key = key.clone().or_else(|| decl.and_then(|t| t.key.clone()));
            // A topic of a registry format takes the same JSON lines (or CSV), each written
            // as a message of the schema of the topic's columns, registered as a job's would be.
            let writer = match decl.and_then(|t| t.format.schema_type().map(|f| (t, f))) {
                Some((t, format)) => Some(EventWriter::open(g, t, format)?),
                None => None,
            };
            // A CSV topic takes each event's values as one line, in its columns' order.
            let csv_columns: Option<Vec<String>> =
                decl.filter(|t| t.format == weir_graph::streams::Format::Csv).map(|t| t.columns.iter().map(|(c, _)| c.clone()).collect());
            if let (Some(t), Some(&[])) = (decl, csv_columns.as_deref()) {
                return Err(format!(
                    "topic '{topic}' ({}) is `format: csv` and declares no `columns`: they name a line's fields, in order",
                    t.location
                )
                .into());
            }
            let encode = |event: &J, now: i64| -> Result<weir_log::Record, String> {
                let record = weir_log::Record { headers: headers.clone(), ..event_record(event, key.as_deref(), now) };
                if let Some(columns) = &csv_columns {
                    let text = |c: &String| match event.get(c) {
                        None | Some(J::Null) => None,
                        Some(J::String(s)) => Some(s.clone()),
                        Some(other) => Some(other.to_string()),
                    };
                    let values: Vec<Option<String>> = columns.iter().map(text).collect();
                    return Ok(weir_log::Record { value: weir_registry::codec::csv_line(values.iter().map(|v| v.as_deref()))?, ..record });
                }
                match &writer {
                    Some(w) => Ok(weir_log::Record { value: w.write(event)?, ..record }),
                    None => Ok(record),
                }
            };
            let (source, reader): (String, Box<dyn Read>) = match file {
                Some(f) => (f.display().to_string(), Box::new(std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?)),
                None => ("stdin".to_string(), Box::new(std::io::stdin())),
            };
            // A raw topic takes lines as they are unless told otherwise.
            let format = match (format.as_deref(), decl.map(|t| t.format)) {
                (Some(f), _) => f,
                (None, Some(weir_graph::streams::Format::Raw)) => "raw",
                // A CSV topic's file has a header naming its columns.
                (None, Some(weir_graph::streams::Format::Csv)) => "csv",
                (None, _) => "json",
            };
            if writer.is_some() && format == "raw" {
                return Err("--format raw: the topic's messages are written under its schema, from JSON lines or CSV".into());
            }
            // Events piped in live (`tail -f ... | weir log produce`) are appended as soon as
            // the pipe has nothing more to give, not held back until a batch is full.
            let live = file.is_none() && !std::fs::metadata("/dev/stdin").is_ok_and(|m| m.is_file());
            let input = BufReader::with_capacity(1 << 20, reader);
            let produced = produce(log, topic, input, &source, (format, key.as_deref(), &headers), &encode, live)?;
            // Retention is applied where events arrive, as `weir serve` does once a minute.
            log.apply_retention(chrono::Utc::now().timestamp_millis())?;
            out.info(format!("Produced {produced} event{} to '{topic}'", if produced == 1 { "" } else { "s" }));
            Ok(0)
        }
        LogCommand::Consume { topic, partition, offset, from_end, max, follow } => {
            let log = logs.for_topic(topic)?;
            if let Some(t) = declared.iter().find(|t| t.name == *topic) {
                log.create_topic(&t.spec())?;
            }
            // A registry format's messages are printed decoded, with the schemas their ids name.
            let reader = match declared.iter().find(|t| t.name == *topic && t.format.schema_type().is_some()) {
                Some(_) => {
                    let (url, schema) = crate::workspace::store_settings(&root)?;
                    Some(Reader::new(Registry::new(Arc::new(weir_store::Store::open(&url, &root, schema.as_deref())?))))
                }
                None => None,
            };
            consume(log.as_ref(), topic, *partition, (*offset, *from_end), *max, *follow, reader.as_ref())
        }
    }
}

/// Makes a topic on first use: as `streams/*.yml` declares it, else with `--partitions`.
fn ensure_topic(log: &dyn Log, decl: Option<&Topic>, name: &str, partitions: Option<u32>) -> Result<(), Error> {
    match (decl, partitions) {
        (Some(t), Some(p)) if p != t.partitions => {
            Err(format!("topic '{name}' is declared with {} partition(s) at {}, not {p}", t.partitions, t.location).into())
        }
        (Some(t), _) => Ok(log.create_topic(&t.spec()).map(|_| ())?),
        (None, Some(p)) => Ok(log.create_topic(&TopicSpec::new(name, p)).map(|_| ())?),
        (None, None) if log.describe(name).is_ok() => Ok(()),
        (None, None) => Err(format!(
            "no topic named '{name}': declare it in streams/*.yml (topics: [{{name: {name}, partitions: 1}}]) or pass --partitions"
        )
        .into()),
    }
}

/// Appends every event of `input`; a line that is not an event stops it with its place,
/// after the events before it were appended.
fn produce(
    log: &dyn Log,
    topic: &str,
    mut input: BufReader<Box<dyn Read>>,
    source: &str,
    (format, key, headers): (&str, Option<&str>, &weir_log::Headers),
    encode: &dyn Fn(&J, i64) -> Result<weir_log::Record, String>,
    live: bool,
) -> Result<u64, Error> {
    let now = || chrono::Utc::now().timestamp_millis();
    let mut batch = Vec::with_capacity(BATCH);
    let mut produced = 0u64;
    let mut flush = |batch: &mut Vec<weir_log::Record>| -> Result<(), Error> {
        if !batch.is_empty() {
            log.append(topic, None, batch)?;
            produced += batch.len() as u64;
            batch.clear();
        }
        Ok(())
    };
    let stopped = |line: usize, why: String, done: u64| -> Error {
        format!("{source}:{line}: {why}; the {done} event(s) before it were produced, this one and the rest were not").into()
    };
    // The next line, after appending what is batched when reading it would wait.
    let next_line = |input: &mut BufReader<Box<dyn Read>>,
                     batch: &mut Vec<weir_log::Record>,
                     flush: &mut dyn FnMut(&mut Vec<weir_log::Record>) -> Result<(), Error>|
     -> Result<Option<String>, Error> {
        if live && input.buffer().is_empty() {
            flush(batch)?;
        }
        let mut line = String::new();
        match input.read_line(&mut line).map_err(|e| format!("{source}: {e}"))? {
            0 => Ok(None),
            _ => Ok(Some(line.trim_end_matches(['\n', '\r']).to_string())),
        }
    };
    match format {
        "json" | "jsonl" => {
            let mut i = 0;
            while let Some(line) = next_line(&mut input, &mut batch, &mut flush)? {
                i += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let event: J = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        flush(&mut batch)?;
                        return Err(stopped(i, format!("not JSON ({e})"), produced));
                    }
                };
                match encode(&event, now()) {
                    Ok(r) => batch.push(r),
                    Err(why) => {
                        flush(&mut batch)?;
                        return Err(stopped(i, why, produced));
                    }
                }
                if batch.len() == BATCH {
                    flush(&mut batch)?;
                }
            }
        }
        "csv" => {
            let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(input);
            let header: Vec<String> = reader.headers().map_err(|e| format!("{source}:1: {e}"))?.iter().map(str::to_string).collect();
            if let Some(k) = key.filter(|k| !header.iter().any(|h| h == k)) {
                return Err(format!("{source}:1: the key column '{k}' is not in the header ({})", header.join(", ")).into());
            }
            for row in reader.records() {
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        flush(&mut batch)?;
                        let line = e.position().map_or(0, |p| p.line() as usize);
                        return Err(stopped(line, e.to_string(), produced));
                    }
                };
                let event: Map<String, J> = header.iter().cloned().zip(row.iter().map(|v| J::String(v.to_string()))).collect();
                match encode(&J::Object(event), now()) {
                    Ok(r) => batch.push(r),
                    Err(why) => {
                        flush(&mut batch)?;
                        return Err(stopped(row.position().map_or(0, |p| p.line() as usize), why, produced));
                    }
                }
                if batch.len() == BATCH {
                    flush(&mut batch)?;
                }
            }
        }
        "raw" => {
            while let Some(line) = next_line(&mut input, &mut batch, &mut flush)? {
                batch.push(weir_log::Record { key: None, value: line.into_bytes(), timestamp: now(), headers: headers.clone() });
                if batch.len() == BATCH {
                    flush(&mut batch)?;
                }
            }
        }
        other => return Err(format!("--format {other}: use json (one JSON value per line), csv or raw (each line as it is)").into()),
    }
    flush(&mut batch)?;
    Ok(produced)
}

/// Writes JSON events as messages of a registry format: each event's values, typed by the
/// topic's declared columns, under the schema of those columns.
struct EventWriter {
    writer: Writer,
    columns: Vec<(String, String, Kind)>,
}

impl EventWriter {
    /// Registers (or, with registration off for the topic or the target, finds) the schema
    /// of `t`'s columns under its subject.
    fn open(g: &Global, t: &Topic, format: SchemaType) -> Result<EventWriter, Error> {
        if t.columns.is_empty() {
            return Err(format!(
                "topic '{}' ({}) is `format: {}` and declares no `columns`: its schema is made from them",
                t.name,
                t.location,
                t.format.name()
            )
            .into());
        }
        let (project, target) = crate::workspace::project_and_target(g)?;
        let (url, schema) = crate::workspace::store_settings(&project.root)?;
        let registry = Registry::new(Arc::new(weir_store::Store::open(&url, &project.root, schema.as_deref())?));
        let register = t.auto_register.unwrap_or_else(|| target.auto_register_schemas());
        let columns: Vec<(String, String)> = t.columns.clone();
        let to = Target { format, naming: t.subject_strategy, topic: &t.name, record: &t.name, key: false, register };
        let writer = Writer::open(&registry, &to, &columns).map_err(|e| format!("topic '{}': {e}", t.name))?;
        Ok(EventWriter { writer, columns: columns.into_iter().map(|(n, ty)| (n, ty.clone(), Kind::of(&ty))).collect() })
    }

    fn write(&self, event: &J) -> Result<Vec<u8>, String> {
        let J::Object(event) = event else { return Err(format!("not a JSON object: {event}")) };
        let mut fields = Vec::with_capacity(self.columns.len());
        for (name, ty, kind) in &self.columns {
            let v = event.get(name).unwrap_or(&J::Null);
            let bad = || format!("{name}: expected {ty}, got {v}");
            let blank = v.as_str().is_some_and(|s| s.trim().is_empty());
            fields.push(match (kind, v) {
                (_, J::Null) => Field::Null,
                (Kind::Text, J::String(s)) => Field::Text(s),
                // An empty CSV cell is a null.
                (_, J::String(_)) if blank => Field::Null,
                (Kind::Int, J::Number(n)) => Field::Int(n.as_i64().ok_or_else(bad)?),
                (Kind::Int, J::String(s)) => Field::Int(s.trim().parse().map_err(|_| bad())?),
                (Kind::Float, J::Number(n)) => Field::Float(n.as_f64().ok_or_else(bad)?),
                (Kind::Float, J::String(s)) => Field::Float(s.trim().parse().map_err(|_| bad())?),
                (Kind::Bool, J::Bool(b)) => Field::Bool(*b),
                (Kind::Bool, J::String(s)) => Field::Bool(s.trim().parse().map_err(|_| bad())?),
                (Kind::Date, J::String(s)) => {
                    let day = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| bad())?;
                    Field::Date((day - chrono::NaiveDate::default()).num_days() as i32)
                }
                (Kind::Timestamp, J::String(s)) => Field::Micros(weir_registry::codec::parse_timestamp(s).ok_or_else(bad)?),
                // Numbers as times are milliseconds since the epoch, as stream jobs read them.
                (Kind::Timestamp, J::Number(n)) => Field::Micros(n.as_i64().and_then(|ms| ms.checked_mul(1000)).ok_or_else(bad)?),
                _ => return Err(bad()),
            });
        }
        self.writer.write(&fields)
    }
}

/// Prints events as JSON lines, partition by partition (or as they arrive, with `follow`).
fn consume(
    log: &dyn Log,
    topic: &str,
    partition: Option<u32>,
    (offset, from_end): (Option<u64>, bool),
    max: Option<usize>,
    follow: bool,
    reader: Option<&Reader>,
) -> Result<u8, Error> {
    let info = log.describe(topic)?;
    let parts: Vec<u32> = match partition {
        Some(p) if p as usize >= info.partitions.len() => {
            return Err(format!("topic '{topic}' has {} partition(s); there is no partition {p}", info.partitions.len()).into());
        }
        Some(p) => vec![p],
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut next: Vec<u64> = parts
        .iter()
        .map(|p| {
            let pi = info.partitions[*p as usize];
            if from_end { pi.end } else { offset.unwrap_or(pi.start).max(pi.start) }
        })
        .collect();
    let mut left = max.unwrap_or(usize::MAX);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    loop {
        let mut got_any = false;
        for (i, p) in parts.iter().enumerate() {
            while left > 0 {
                let records = log.read(topic, *p, next[i], left.min(1000))?;
                let Some(last) = records.last() else { break };
                next[i] = last.offset + 1;
                got_any = true;
                for r in &records {
                    let text = || J::String(String::from_utf8_lossy(&r.value).into());
                    let (value, error) = match reader.map(|d| d.read(&r.value)) {
                        Some(Ok(m)) => (weir_registry::codec::to_json(m), None),
                        Some(Err(why)) => (text(), Some(why)),
                        None => (serde_json::from_slice::<J>(&r.value).unwrap_or_else(|_| text()), None),
                    };
                    // Keys a job wrote in the topic's format are decoded too; others are text.
                    let key = r.key.as_ref().map(|k| match reader.and_then(|d| d.read(k).ok()) {
                        Some(m) => weir_registry::codec::to_json(m),
                        None => J::String(String::from_utf8_lossy(k).into_owned()),
                    });
                    let mut line = json!({"partition": p, "offset": r.offset, "timestamp": r.timestamp, "key": key, "value": value});
                    if let Some(why) = error {
                        line["error"] = J::String(why);
                    }
                    // Headers' values as text where they are UTF-8, else as their bytes.
                    if !r.headers.is_empty() {
                        let value = |v: &[u8]| match std::str::from_utf8(v) {
                            Ok(t) => J::String(t.to_string()),
                            Err(_) => J::from(v.to_vec()),
                        };
                        line["headers"] = J::Array(r.headers.iter().map(|(k, v)| json!([k, value(v)])).collect());
                    }
                    if writeln!(w, "{line}").is_err() {
                        // The reader went away (`| head`): nothing more to do.
                        return Ok(0);
                    }
                }
                left -= records.len().min(left);
            }
        }
        if w.flush().is_err() || left == 0 || !follow {
            return Ok(0);
        }
        if !got_any {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn topics(logs: &Logs, declared: &[Topic], out: &Output) -> Result<u8, Error> {
    /// One topic's line: declared, made, or both.
    struct Row {
        name: String,
        log: Backend,
        partitions: u32,
        /// Events and bytes kept, once the topic is made (bytes: on the embedded log).
        kept: Option<(u64, Option<u64>)>,
        declared_at: Option<String>,
    }
    let mut existing: Vec<(Backend, TopicInfo)> = logs.embedded()?.topics()?.into_iter().map(|t| (Backend::Embedded, t)).collect();
    if logs.uses_kafka() {
        existing.extend(logs.kafka()?.topics()?.into_iter().map(|t| (Backend::Kafka, t)));
    }
    let kept = |b: Backend, i: &TopicInfo| {
        let bytes = (b == Backend::Embedded).then(|| i.partitions.iter().map(|p| p.bytes).sum());
        (i.partitions.iter().map(|p| p.end.saturating_sub(p.start)).sum(), bytes)
    };
    let mut rows: Vec<Row> = declared
        .iter()
        .map(|t| {
            let info = existing.iter().find(|(b, e)| *b == t.log && e.spec.name == t.name);
            Row {
                name: t.name.clone(),
                log: t.log,
                partitions: info.map_or(t.partitions, |(_, i)| i.spec.partitions),
                kept: info.map(|(b, i)| kept(*b, i)),
                declared_at: Some(t.location.to_string()),
            }
        })
        .collect();
    for (b, e) in existing.iter().filter(|(b, e)| !declared.iter().any(|d| d.log == *b && d.name == e.spec.name)) {
        rows.push(Row { name: e.spec.name.clone(), log: *b, partitions: e.spec.partitions, kept: Some(kept(*b, e)), declared_at: None });
    }
    let log_name = |b: Backend| if b == Backend::Kafka { "kafka" } else { "embedded" };
    if out.format == LogFormat::Json {
        let docs: Vec<J> = rows
            .iter()
            .map(|r| {
                json!({"topic": r.name, "log": log_name(r.log), "declared_at": r.declared_at, "partitions": r.partitions,
                       "events": r.kept.map(|k| k.0), "bytes": r.kept.and_then(|k| k.1)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(0);
    }
    if rows.is_empty() {
        out.info("No topics: declare them in streams/*.yml (see docs/streams.md), or produce with --partitions.");
        return Ok(0);
    }
    out.info(format!("{:<30} {:<8} {:>10} {:>12} {:>12}  declared", "topic", "log", "partitions", "events", "bytes"));
    for r in rows {
        let (events, bytes) =
            r.kept.map_or(("-".into(), "-".into()), |(e, b)| (e.to_string(), b.map_or_else(|| "-".into(), |b| b.to_string())));
        let at = r.declared_at.unwrap_or_else(|| "(not declared)".into());
        out.info(format!("{:<30} {:<8} {:>10} {events:>12} {bytes:>12}  {at}", r.name, log_name(r.log), r.partitions));
    }
    Ok(0)
}

fn describe(log: &dyn Log, declared: &[Topic], topic: &str, out: &Output) -> Result<u8, Error> {
    if let Some(t) = declared.iter().find(|t| t.name == topic) {
        log.create_topic(&t.spec())?;
    }
    let info = log.describe(topic)?;
    let mut groups = vec![];
    for g in log.groups()? {
        let positions = log.positions(&g)?;
        let mine: Vec<(u32, u64)> = positions.iter().filter(|((t, _), _)| t == topic).map(|((_, p), o)| (*p, *o)).collect();
        if !mine.is_empty() {
            groups.push((g, mine));
        }
    }
    let lag = |p: u32, o: u64| info.partitions.get(p as usize).map_or(0, |pi| pi.end.saturating_sub(o));
    if out.format == LogFormat::Json {
        let doc = json!({
            "topic": topic,
            "retention": {"ms": info.spec.retention.ms, "bytes": info.spec.retention.bytes},
            "partitions": info.partitions.iter().map(|p| json!({"partition": p.partition, "start": p.start, "end": p.end, "bytes": p.bytes})).collect::<Vec<_>>(),
            "groups": groups.iter().map(|(g, ps)| json!({"group": g, "positions": ps.iter().map(|(p, o)| json!({"partition": p, "offset": o, "lag": lag(*p, *o)})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    out.info(format!("Topic '{topic}': {} partition(s)", info.partitions.len()));
    out.info(format!("  {:>9} {:>14} {:>14} {:>14}", "partition", "first offset", "next offset", "bytes"));
    for p in &info.partitions {
        out.info(format!("  {:>9} {:>14} {:>14} {:>14}", p.partition, p.start, p.end, p.bytes));
    }
    for (g, ps) in &groups {
        let total: u64 = ps.iter().map(|(p, o)| lag(*p, *o)).sum();
        out.info(format!("  group '{g}': lag {total} ({})", ps.iter().map(|(p, o)| format!("p{p} at {o}")).collect::<Vec<_>>().join(", ")));
    }
    Ok(0)
}
