//! One hand-off per node kind: each node the walk reaches goes to its executor (models,
//! seeds, snapshots, data tests and unit tests to `weir-transform`, checks to `weir-quality`,
//! loads to `weir-connect`, stream jobs to `weir-stream`), and what the executor says becomes
//! the node's result.
//!
//! This is the one place that knows every executor; they do not know each other. Where one
//! kind needs another's service (a check's custom queries are rendered in its dataset's dbt
//! context), the hand-off brings them together.

use std::sync::Arc;
use std::time::Instant;

use weir_connect::ProgressFn;
use weir_graph::{Node, ResourceType, Status};
use weir_transform::session::{ConnSlot, ExecHost, with_conn};
use weir_transform::{ExecOptions, RunReport, Session};

use crate::error::BuildError;
use crate::result::NodeResult;

/// Runs one node with its executor and times it; an executor's error is the node's error,
/// never the run's.
pub(crate) fn run_node(
    host: &ExecHost,
    slot: &ConnSlot,
    n: &Node,
    (exec, load_progress): (&ExecOptions, Option<&ProgressFn>),
    thread_id: &str,
) -> NodeResult {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let mut result = NodeResult {
        unique_id: n.unique_id.clone(),
        status: Status::Success,
        message: None,
        started_at,
        compile_done_at: started_at,
        completed_at: started_at,
        execution_time: 0.0,
        rows_affected: None,
        failures: None,
        compiled_code: None,
        relation_name: n.relation.as_ref().map(|r| host.session.warehouse.render(r)),
        thread_id: thread_id.to_string(),
        checks: None,
        load: None,
    };
    let outcome = match n.resource_type {
        ResourceType::Check => run_check(host, slot, n, &mut result),
        ResourceType::Load => run_load(host, n, load_progress, &mut result),
        ResourceType::Stream => run_stream(host, n, &mut result),
        ResourceType::SavedQuery => {
            result.status = Status::NoOp;
            Ok(())
        }
        _ => run_transform(host, slot, n, exec, &mut result),
    };
    if let Err(e) = outcome {
        result.status = Status::Error;
        result.message = Some(e.to_string());
    }
    result.completed_at = chrono::Utc::now();
    result.execution_time = clock.elapsed().as_secs_f64();
    result
}

/// Models, seeds, snapshots, data tests and unit tests: `weir-transform`. What it reported
/// before an error (the compiled SQL) is kept with the error.
fn run_transform(host: &ExecHost, slot: &ConnSlot, n: &Node, exec: &ExecOptions, result: &mut NodeResult) -> Result<(), BuildError> {
    let mut report = RunReport::default();
    let outcome = weir_transform::run_node(host, slot, n, exec, &mut report);
    let RunReport { status, message, rows_affected, failures, compiled_code, relation_name, compile_done_at } = report;
    result.status = status;
    result.message = message;
    result.rows_affected = rows_affected;
    result.failures = failures;
    result.compiled_code = compiled_code;
    result.relation_name = relation_name.or(result.relation_name.take());
    result.compile_done_at = compile_done_at.unwrap_or(result.started_at);
    Ok(outcome?)
}

/// Runs a load node: extracts its source into its raw table, all or nothing, and records
/// the run, its high-water mark and its files in the metadata store.
fn run_load(host: &ExecHost, n: &Node, progress: Option<&ProgressFn>, result: &mut NodeResult) -> Result<(), BuildError> {
    let session = &host.session;
    let m = &session.manifest;
    if let Some(load) = n.load.as_deref().filter(|l| l.cdc().is_some()) {
        return run_cdc(host, load, result);
    }
    let Some(load) = n.load.as_deref() else { return Ok(()) };
    let store = session.store.as_ref().ok_or_else(|| BuildError::Walk(format!("{} needs the metadata store", n.unique_id)))?;
    // A load into a topic writes it on the event log `streams/*.yml` puts it on, and its
    // registry formats through the registry in the store, as a stream job would.
    let topic = match &load.topic {
        Some(name) => Some(Arc::new(
            weir_connect::topic::TopicOut::in_project(&m.project.root, name)?
                .with_registry(weir_registry::Registry::new(store.clone()), m.target.auto_register_schemas()),
        )),
        None => None,
    };
    let opts = weir_connect::LoadOptions {
        root: m.project.root.clone(),
        database: n.relation.as_ref().map_or_else(|| m.target.database(), |r| r.database.clone()),
        full_refresh: m.flags.full_refresh,
        progress: progress.cloned(),
        topic,
    };
    let report = weir_connect::run_load(session.warehouse.as_ref(), load, store, &opts)?;
    result.rows_affected = Some(report.rows_loaded);
    result.failures = Some(report.rows_rejected as i64);
    result.message = Some(report.summary());
    result.load = Some(Arc::new(report));
    Ok(())
}

/// Brings a cdc source's mirrors up to the source's log position as the node starts (a new
/// mirror first takes its snapshot), as `weir cdc run` would and then stops;
/// `--full-refresh` takes a new snapshot. A follower running elsewhere (`weir cdc run`,
/// `weir serve`) keeps the mirrors up to date itself: the node succeeds and says so.
fn run_cdc(host: &ExecHost, load: &weir_graph::loads::Load, result: &mut NodeResult) -> Result<(), BuildError> {
    let session = &host.session;
    let root = &session.manifest.project.root;
    let mut source = weir_cdc::source::CdcSource::in_project(load, &session.manifest.target.database(), root)?;
    // Change events of `format: avro` topics are written through the registry in the store.
    if let Some(store) = &session.store {
        source = source.with_registry(weir_registry::Registry::new(store.clone()), session.manifest.target.auto_register_schemas());
    }
    if session.manifest.flags.full_refresh {
        source.forget(session.warehouse.clone())?;
    }
    match source.catch_up(session.warehouse.clone()) {
        Ok(p) => {
            result.rows_affected = Some(p.snapshot_rows + p.applied.upserted + p.applied.deleted);
            result.message = Some(p.summary());
            Ok(())
        }
        Err(e) if e.slot_in_use() => {
            let held = match source.origin {
                weir_cdc::source::Origin::Postgres(_) => format!("slot '{}' is in use", source.cdc.slot),
                weir_cdc::source::Origin::Mariadb(_) => "it holds the source's lock".to_string(),
            };
            result.message = Some(format!("kept up to date by its running follower ({held})"));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Brings a stream job's sink table up to date: the job reads every event the log holds
/// now, writes what closed, checkpoints and stops, as `weir stream run --drain` does
/// (`--full-refresh` resets it first). A job running elsewhere (`weir serve`) keeps its
/// table up to date itself: the node succeeds and says so.
fn run_stream(host: &ExecHost, n: &Node, result: &mut NodeResult) -> Result<(), BuildError> {
    use weir_stream::job::{self, Control, JobRun};
    let session = &host.session;
    let root = &session.manifest.project.root;
    let Some(j) = n.stream.as_deref() else { return Ok(()) };
    let topics = weir_graph::streams::read_topics(root)?;
    let mut run = JobRun::in_project(&session.manifest, j.clone(), &topics)?;
    // Topics of the registry's formats are read and written through the registry in the store.
    if let Some(store) = &session.store {
        run = run.with_registry(weir_registry::Registry::new(store.clone()), session.manifest.target.auto_register_schemas());
    }
    let logs = weir_graph::logs::project_logs(root, &topics)?;
    let log = logs.for_topics(&run.topic_names()).map_err(weir_stream::StreamError::from)?;
    let drained = (|| {
        if session.manifest.flags.full_refresh {
            job::reset(&run, session.warehouse.as_ref())?;
        }
        job::run(&run, log.as_ref(), session.warehouse.clone(), &Control { drain: true, ..Control::default() }, &mut |_| {})
    })();
    match drained {
        Ok(s) => {
            let c = &s.counts;
            result.rows_affected = Some(s.read_this_run);
            result.message = Some(format!(
                "read {} new event(s) from '{}'; in all {} read = {} counted + {} late + {} rejected + {} filtered out",
                s.read_this_run,
                run.topics_text(),
                c.read,
                c.counted,
                c.late,
                c.rejected,
                c.filtered
            ));
            Ok(())
        }
        Err(weir_stream::StreamError::Busy { pid, .. }) => {
            result.message = Some(format!("kept up to date by its running job (process {pid})"));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Measures a check node's suite on its dataset, records every value in the metadata store,
/// and turns the worst verdict into the node's status: a failed `error`-severity check is a
/// failure (blocking what is downstream under `weir build`), a warning only warns.
fn run_check(host: &ExecHost, slot: &ConnSlot, n: &Node, result: &mut NodeResult) -> Result<(), BuildError> {
    let session = &host.session;
    let m = &session.manifest;
    let Some(suite) = n.check.as_deref() else { return Ok(()) };
    let wh = session.warehouse.as_ref();
    let (dataset, mut bound) = bind_check(session, n)?;
    result.relation_name = Some(bound.relation.clone());
    for c in &suite.checks {
        if let weir_quality::Metric::Query { name, sql } = &c.metric {
            let ctx = weir_transform::compile::context(host, dataset);
            bound.queries.insert(name.clone(), m.jinja.render(&n.file, sql, &ctx)?);
        }
    }
    let store = session.store.as_deref();
    let outcome = with_conn(session, slot, |c| Ok(weir_quality::measure(c, wh, suite, &bound, store)))??;
    let failed: Vec<&weir_quality::Outcome> =
        outcome.outcomes.iter().filter(|o| matches!(o.verdict, weir_quality::Verdict::Fail | weir_quality::Verdict::Error)).collect();
    let warned = outcome.count(weir_quality::Verdict::Warn);
    result.status = match outcome.verdict() {
        weir_quality::Verdict::Pass => Status::Pass,
        weir_quality::Verdict::Warn => Status::Warn,
        weir_quality::Verdict::Fail => Status::Fail,
        weir_quality::Verdict::Error => Status::Error,
    };
    result.failures = Some((if failed.is_empty() { warned } else { failed.len() }) as i64);
    if result.status != Status::Pass {
        let lines: Vec<String> = outcome
            .outcomes
            .iter()
            .filter(|o| o.verdict != weir_quality::Verdict::Pass)
            .map(|o| {
                let why = o.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                format!("{} {}: measured {}, expected {}{why}", o.verdict.as_str(), o.check, o.shown, o.threshold)
            })
            .collect();
        result.message = Some(lines.join("\n"));
    }
    result.checks = Some(Arc::new(outcome));
    Ok(())
}

/// A check node's dataset, and the relations its suite reads (custom queries are templated
/// when the check runs, in the dataset's Jinja context).
pub fn bind_check<'a>(session: &'a Session, n: &Node) -> Result<(&'a Node, weir_quality::Bound), BuildError> {
    let m = &session.manifest;
    let wh = session.warehouse.as_ref();
    let dataset =
        n.depends_on.first().and_then(|d| m.node(d)).ok_or_else(|| BuildError::Walk(format!("{} has no dataset", n.unique_id)))?;
    let render = |node: &Node| node.relation.as_ref().map(|r| wh.render(r)).unwrap_or_default();
    let mut bound = weir_quality::Bound { relation: render(dataset), run_id: m.flags.invocation_id.clone(), ..Default::default() };
    for c in n.check.iter().flat_map(|s| &s.checks) {
        if let weir_quality::Metric::Reference { other, .. } = &c.metric
            && let Some(o) = n.depends_on.iter().skip(1).filter_map(|d| m.node(d)).find(|o| named(o, other))
        {
            bound.others.insert(other.clone(), render(o));
        }
    }
    Ok((dataset, bound))
}

/// Whether a node is the dataset a checks file calls `name` (`orders`, `raw.orders`).
fn named(n: &Node, name: &str) -> bool {
    match &n.source {
        Some((s, t)) => format!("{s}.{t}") == name,
        None => n.name == name,
    }
}
