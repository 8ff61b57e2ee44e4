//! What the binary prints: dbt-style status lines for people, or one JSON object per line
//! for machines (`--log-format json`). Errors and warnings go to stderr.

use std::collections::HashMap;
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{HumanBytes, HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use weir_build::{NodeResult, Reporter, RunOutcome};
use weir_connect::{Progress, ProgressFn};
use weir_graph::{Node, ResourceType, Status};

use crate::cli::LogFormat;

pub struct Output {
    pub format: LogFormat,
    lock: Mutex<()>,
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

impl Output {
    pub fn new(format: LogFormat) -> Self {
        Output { format, lock: Mutex::new(()) }
    }

    /// One line for people, or one JSON object (with `extra`'s fields) for machines.
    pub fn emit(&self, level: &str, event: &str, text: &str, extra: serde_json::Value) {
        let _guard = self.lock.lock();
        match self.format {
            LogFormat::Text => {
                let line = if text.is_empty() { now() } else { format!("{}  {text}", now()) };
                if level == "error" || level == "warn" {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            LogFormat::Json => {
                let mut obj = json!({"ts": chrono::Utc::now().to_rfc3339(), "level": level, "event": event, "msg": text});
                if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
                    o.extend(e.clone());
                }
                let _ = writeln!(std::io::stdout(), "{obj}");
            }
        }
    }

    /// Progress bars for running loads (rows, bytes, rate; one line per load) on stderr,
    /// when it is a terminal and the output is for people.
    pub fn load_bars(&self) -> Option<ProgressFn> {
        if self.format != LogFormat::Text || !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix}: {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars: Mutex<HashMap<String, (ProgressBar, Instant)>> = Mutex::new(HashMap::new());
        Some(ProgressFn(Arc::new(move |load: &str, p: Progress| {
            let Ok(mut bars) = bars.lock() else { return };
            if p == Progress::Done {
                if let Some((bar, _)) = bars.remove(load) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                return;
            }
            let (bar, started) = bars.entry(load.to_string()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(load.to_string()));
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                (bar, Instant::now())
            });
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(match p {
                Progress::Extracting { rows, bytes } => format!(
                    "{} rows · {} · {} rows/s · {}/s",
                    HumanCount(rows),
                    HumanBytes(bytes),
                    HumanCount((rows as f64 / secs) as u64),
                    HumanBytes((bytes as f64 / secs) as u64)
                ),
                Progress::Writing { rows } => format!("writing {} rows", HumanCount(rows)),
                Progress::Done => String::new(),
            });
        })))
    }

    pub fn info(&self, text: impl AsRef<str>) {
        self.emit("info", "info", text.as_ref(), json!({}));
    }

    pub fn warn(&self, text: impl Display) {
        self.emit("warn", "warning", &format!("warning: {text}"), json!({}));
    }

    pub fn error(&self, e: &dyn Display) {
        self.emit("error", "error", &format!("error: {e}"), json!({}));
    }

    /// The closing summary, as dbt prints it.
    pub fn summary(&self, outcome: &RunOutcome, counts: &str) {
        let errors: Vec<&NodeResult> = outcome.results.iter().filter(|r| matches!(r.status, Status::Error | Status::Fail)).collect();
        let warns: Vec<&NodeResult> = outcome.results.iter().filter(|r| r.status == Status::Warn).collect();
        self.info("");
        self.info(format!("Finished running {counts} in {:.2}s.", outcome.elapsed));
        if errors.is_empty() && warns.is_empty() {
            self.info("Completed successfully");
        } else {
            self.info(format!(
                "Completed with {} error{} and {} warning{}:",
                errors.len(),
                plural(errors.len()),
                warns.len(),
                plural(warns.len())
            ));
            for r in errors.iter().chain(warns.iter()) {
                self.info("");
                let what = if r.status == Status::Warn {
                    "Warning"
                } else if r.status == Status::Fail {
                    "Failure"
                } else {
                    "Error"
                };
                self.info(format!("{what} in {}", r.unique_id));
                for line in r.message.as_deref().unwrap_or("").lines() {
                    self.info(format!("  {line}"));
                }
            }
        }
        let total = outcome.results.len();
        let pass = outcome.count(Status::Pass) + outcome.count(Status::Success);
        let no_op = outcome.count(Status::NoOp);
        let line = format!(
            "Done. PASS={pass} WARN={} ERROR={} SKIP={}{} TOTAL={total}",
            outcome.count(Status::Warn),
            outcome.count(Status::Error) + outcome.count(Status::Fail),
            outcome.count(Status::Skipped),
            if no_op > 0 { format!(" NO-OP={no_op}") } else { String::new() }
        );
        self.emit(
            "info",
            "run_summary",
            &line,
            json!({
                "pass": pass, "warn": outcome.count(Status::Warn), "error": outcome.count(Status::Error) + outcome.count(Status::Fail),
                "skip": outcome.count(Status::Skipped), "total": total, "elapsed": outcome.elapsed,
            }),
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One line per check (`PASS  row_count between 1 and 100 ... 42`), with up to five
/// failing rows under a check that did not pass when `samples` is set.
pub fn check_lines(suite: &weir_quality::SuiteOutcome, samples: bool) -> Vec<String> {
    let mut out = vec![];
    for o in &suite.outcomes {
        let word = o.verdict.as_str().to_uppercase();
        let left = format!("{word:<5} {}", o.check);
        let dots = ".".repeat(58usize.saturating_sub(left.chars().count()).max(1));
        let mut line = format!("{left} {dots} {}", o.shown);
        if o.verdict != weir_quality::Verdict::Pass {
            line.push_str(&format!(" (expected {})", o.threshold));
            if let Some(m) = &o.message {
                line.push_str(&format!(": {m}"));
            }
            line.push_str(&format!("  [{}]", o.location));
        } else if let Some(m) = &o.message {
            line.push_str(&format!(" ({m})"));
        }
        out.push(line);
        if samples && let Some(rows) = &o.samples {
            if rows.rows.is_empty() {
                continue;
            }
            out.push(format!("      {} failing row{} (sampled):", rows.rows.len(), plural(rows.rows.len())));
            out.extend(rows.to_grid().lines().map(|l| format!("      {l}")));
        }
    }
    out
}

/// Whether a node is a change data capture source (its mirrors caught up, not loaded).
fn is_cdc(n: &Node) -> bool {
    n.load.as_deref().is_some_and(|l| l.cdc().is_some())
}

/// "sql table model main.orders", "seed file main.raw_orders", "test not_null_orders_id".
pub fn describe(n: &Node) -> String {
    let rel = n.relation.as_ref().map(|r| format!("{}.{}", r.schema, r.identifier)).unwrap_or_else(|| n.name.clone());
    match n.resource_type {
        ResourceType::Model => format!("sql {} model {rel}", n.materialized()),
        ResourceType::Seed => format!("seed file {rel}"),
        ResourceType::Test => format!("test {}", n.name),
        ResourceType::Check => format!("checks on {}", n.name),
        ResourceType::Load => match n.load.as_deref().and_then(|l| Some((l, l.cdc()?))) {
            Some((l, cdc)) => format!("cdc load {} -> {}.{{{}}}", n.name, l.schema, cdc.mirror_tables().join(", ")),
            None => match n.load.as_deref().and_then(|l| l.topic.as_deref()) {
                Some(topic) => format!("load {} -> topic {topic}", n.name),
                None => format!("load {} -> {rel}", n.name),
            },
        },
        ResourceType::Stream => format!("stream job {} -> {rel}", n.name),
        other => format!("{} {rel}", other.as_str()),
    }
}

impl Reporter for Output {
    fn started(&self, _node: &Node, _index: usize, _total: usize) {}

    fn finished(&self, n: &Node, r: &NodeResult, index: usize, total: usize) {
        let (word, tag) = match (r.status, n.resource_type) {
            (Status::Success, ResourceType::Seed) => ("OK loaded".to_string(), format!("INSERT {}", r.rows_affected.unwrap_or(0))),
            (Status::Success, ResourceType::Load) if is_cdc(n) => match r.rows_affected {
                Some(n) => ("OK caught up".to_string(), format!("CHANGES {n}")),
                None => ("OK left to its running".to_string(), "RUNNING".to_string()),
            },
            (Status::Success, ResourceType::Load) => ("OK loaded".to_string(), format!("LOAD {}", r.rows_affected.unwrap_or(0))),
            // A job another process runs keeps its table up to date itself.
            (Status::Success, ResourceType::Stream) => match r.rows_affected {
                Some(n) => ("OK caught up".to_string(), format!("EVENTS {n}")),
                None => ("OK left to its running".to_string(), "RUNNING".to_string()),
            },
            (Status::Success, ResourceType::Snapshot) => ("OK snapshotted".to_string(), format!("INSERT {}", r.rows_affected.unwrap_or(0))),
            (Status::Success, _) => {
                let what = if n.materialized() == "incremental" && r.rows_affected.is_some() { "OK" } else { "OK created" };
                (
                    what.to_string(),
                    match r.rows_affected {
                        Some(n) => format!("OK {n}"),
                        None => "OK".to_string(),
                    },
                )
            }
            (Status::Pass, _) => ("PASS".into(), "PASS".into()),
            (Status::Warn, _) => ("WARN".into(), format!("WARN {}", r.failures.unwrap_or(0))),
            (Status::Fail, _) => ("FAIL".into(), format!("FAIL {}", r.failures.unwrap_or(0))),
            (Status::Error, _) => ("ERROR".into(), "ERROR".into()),
            (Status::Skipped, _) => ("SKIP".into(), "SKIP".into()),
            (Status::NoOp, _) => ("NO-OP".into(), "NO-OP".into()),
        };
        let left = format!("{index} of {total} {word} {}", describe(n));
        let dots = ".".repeat(72usize.saturating_sub(left.len()).max(1));
        let time = if r.status == Status::Skipped { String::new() } else { format!(" in {:.2}s", r.execution_time) };
        let level = match r.status {
            Status::Error | Status::Fail => "error",
            Status::Warn => "warn",
            _ => "info",
        };
        let text = format!("{left} {dots} [{tag}{time}]");
        let _guard = self.lock.lock();
        match self.format {
            LogFormat::Text => {
                println!("{}  {text}", now());
                if let Some(suite) = &r.checks {
                    for line in check_lines(suite, false) {
                        println!("{}      {line}", now());
                    }
                }
                if is_cdc(n)
                    && r.status == Status::Success
                    && let Some(m) = &r.message
                {
                    println!("{}      {m}", now());
                }
                if let Some(load) = &r.load {
                    println!("{}      {}", now(), load.summary());
                    for rej in &load.rejected_sample {
                        let raw: String = rej.raw.chars().take(60).collect();
                        println!("{}        rejected {}: {} [{raw}]", now(), rej.position, rej.reason);
                    }
                }
            }
            LogFormat::Json => println!(
                "{}",
                json!({"ts": chrono::Utc::now().to_rfc3339(), "level": level, "event": "node_finished", "msg": text,
                       "unique_id": n.unique_id, "status": r.status.as_str(), "index": index, "total": total,
                       "execution_time": r.execution_time, "rows_affected": r.rows_affected, "failures": r.failures, "message": r.message})
            ),
        }
    }
}
