//! Running one model, seed, snapshot, data test or unit test: compile it, plan its
//! statements (a materialization, a seed's copy, a snapshot's merge, a test's query), run them
//! with the node's hooks in one transaction, and report what happened. The walk that decides
//! when each node runs, and what a failure skips, is `weir-build`'s.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value as J;
use weir_core::{Column, Location, Relation, RelationKind};
use weir_graph::{Node, ResourceType, Status};

use crate::compile::{compile, context};
use crate::error::TransformError;
use crate::materialize::{Step, check_contract, commit, contract_create, incremental_steps, run_plan, run_steps, swap_plan, tmp_relation};
use crate::microbatch::MicrobatchConfig;
use crate::seed;
use crate::session::{BatchWindow, ConnSlot, ExecHost, Session, with_conn};
use crate::snapshot::SnapshotConfig;

/// What this executor needs to know of the run it is part of.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--threads`: the most batches of one microbatch model written at once.
    pub threads: usize,
    /// Where compiled and run SQL are written (`target/compiled/`, `target/run/`).
    pub target_dir: PathBuf,
    /// `--event-time-start` / `--event-time-end`: the event-time range microbatch models build.
    pub event_time: (Option<chrono::NaiveDateTime>, Option<chrono::NaiveDateTime>),
    /// `weir backfill`: the range microbatch models build, instead of their usual one.
    pub backfill: Option<Backfill>,
}

/// What `weir backfill` asks of microbatch models.
#[derive(Debug, Clone, Copy)]
pub struct Backfill {
    /// The event-time range.
    pub range: weir_store::Interval,
    /// Reprocess every batch of the range, not only those the metadata store lacks.
    pub restate: bool,
}

/// What running one node said, for the run's results. Filled as the node goes, so what was
/// known before a failure (the compiled SQL) is kept with the error.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub status: Status,
    pub message: Option<String>,
    pub rows_affected: Option<u64>,
    pub failures: Option<i64>,
    pub compiled_code: Option<String>,
    /// The relation the node wrote, when not its own (a test's stored failures).
    pub relation_name: Option<String>,
    /// When compilation ended and execution began.
    pub compile_done_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for RunReport {
    fn default() -> Self {
        RunReport {
            status: Status::Success,
            message: None,
            rows_affected: None,
            failures: None,
            compiled_code: None,
            relation_name: None,
            compile_done_at: None,
        }
    }
}

/// Runs one node of this executor's kinds (models, seeds, snapshots, data tests, unit tests).
pub fn run_node(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, report: &mut RunReport) -> Result<(), TransformError> {
    match n.resource_type {
        ResourceType::Seed => run_seed(host, slot, n, opts, report),
        ResourceType::Test => run_test(host, slot, n, opts, report),
        ResourceType::Snapshot => run_snapshot(host, slot, n, opts, report),
        ResourceType::UnitTest => crate::unit::run_unit_test(host, slot, n, opts, report),
        _ => run_model(host, slot, n, opts, report),
    }
}

/// Writes compiled or run SQL under `target/compiled/` or `target/run/`, as dbt lays it out.
pub(crate) fn write_sql(opts: &ExecOptions, kind: &str, n: &Node, sql: &str) {
    let path = weir_graph::artifacts::node_sql_path(&opts.target_dir, kind, n);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = weir_graph::artifacts::write_if_changed(&path, sql);
}

fn hooks(n: &Node, key: &str) -> Vec<(String, bool)> {
    weir_project::config::as_list(n.config.get(key))
        .into_iter()
        .filter_map(|h| match h {
            J::String(s) => Some((s, true)),
            J::Object(o) => Some((o.get("sql")?.as_str()?.to_string(), o.get("transaction").and_then(J::as_bool).unwrap_or(true))),
            _ => None,
        })
        .collect()
}

/// Renders the hooks under `key` that run inside the transaction (`transactional`) or
/// outside it. A hook is rendered just before it runs, as in dbt: rendering may itself run
/// statements (a macro's `{% call statement %}`), which must see what came before.
fn render_hooks(host: &ExecHost, n: &Node, key: &str, transactional: bool) -> Result<Vec<Step>, TransformError> {
    let ctx = context(host, n);
    let mut out = vec![];
    for (sql, inside) in hooks(n, key) {
        if inside != transactional {
            continue;
        }
        let rendered = host.session.manifest.jinja.render(&n.file, &sql, &ctx)?;
        if !rendered.trim().is_empty() {
            out.push(Step::Sql(rendered));
        }
    }
    Ok(out)
}

fn run_outside(host: &ExecHost, slot: &ConnSlot, steps: &[Step]) -> Result<(), TransformError> {
    for s in steps {
        if let Step::Sql(sql) = s {
            with_conn(&host.session, slot, |c| c.execute(sql))?;
        }
    }
    Ok(())
}

fn run_model(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let wh = session.warehouse.as_ref();
    let (sql, rel) = compile_for_run(host, n, opts, result)?;
    let existing = session.cached(&rel);
    let tmp_existing = session.cached(&tmp_relation(&rel));
    let materialized = n.materialized().to_string();
    let enforced = n.config.get("contract").and_then(|c| c.get("enforced")).and_then(J::as_bool).unwrap_or(false);
    if enforced {
        with_conn(session, slot, |c| Ok(check_contract(c, n, &sql)))??;
    }
    let (body, main, kind): (Vec<Step>, usize, RelationKind) = match materialized.as_str() {
        "view" => {
            let create = vec![Step::Sql(wh.create_view_as_sql(&tmp_relation(&rel), &sql))];
            let steps = swap_plan(wh, &rel, existing, tmp_existing, create, RelationKind::View);
            (steps, usize::MAX, RelationKind::View)
        }
        "table" => {
            let create = if enforced {
                contract_create(wh, &tmp_relation(&rel), n, &sql)
            } else {
                vec![Step::Sql(wh.create_table_as_sql(&tmp_relation(&rel), &sql))]
            };
            let main = create.len() - 1 + usize::from(tmp_existing.is_some());
            (swap_plan(wh, &rel, existing, tmp_existing, create, RelationKind::Table), main, RelationKind::Table)
        }
        "incremental" if n.is_microbatch() => {
            return run_microbatch(host, slot, n, opts, result);
        }
        "incremental" => {
            if session.is_incremental(n) {
                let (dest, source) = with_conn(session, slot, |c| Ok((c.columns(&rel)?, c.describe_query(&sql)?)))?;
                let (steps, main) = incremental_steps(wh, n, &rel, &sql, &source, &dest)?;
                (steps, main, RelationKind::Table)
            } else {
                let create = if enforced {
                    contract_create(wh, &tmp_relation(&rel), n, &sql)
                } else {
                    vec![Step::Sql(wh.create_table_as_sql(&tmp_relation(&rel), &sql))]
                };
                let main = create.len() - 1 + usize::from(tmp_existing.is_some());
                (swap_plan(wh, &rel, existing, tmp_existing, create, RelationKind::Table), main, RelationKind::Table)
            }
        }
        "ephemeral" => return Ok(()),
        other => {
            return Err(TransformError::at(
                Location::file(&n.file),
                format!("model '{}': materialization '{other}' is not supported (use view, table, incremental or ephemeral)", n.name),
                None,
            ));
        }
    };
    let rows = run_with_hooks(host, slot, n, opts, (&rel, kind), (body, main))?;
    if main != usize::MAX {
        result.rows_affected = Some(rows);
    }
    Ok(())
}

/// Compiles a node for execution, recording the SQL in `target/compiled/` and the result.
fn compile_for_run(host: &ExecHost, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(String, Relation), TransformError> {
    let sql = compile(host, n)?;
    write_sql(opts, "compiled", n, &sql);
    result.compiled_code = Some(sql.clone());
    result.compile_done_at = Some(chrono::Utc::now());
    let rel = n.relation.clone().ok_or_else(|| TransformError::Graph(format!("{} has no relation", n.unique_id)))?;
    Ok((sql, rel))
}

/// Runs a node's plan with its hooks: transactional hooks inside the plan's one transaction,
/// the others before and after it. Post-hooks are rendered once the plan has run, inside its
/// transaction, so what they read (`adapter.get_relation(this)`, a statement on `this`) is the
/// new relation. Writes the whole script under `target/run/`, records the relation it built
/// (`built`) in the relation cache, and returns the rows the plan's `main` statement affected.
fn run_with_hooks(
    host: &ExecHost,
    slot: &ConnSlot,
    n: &Node,
    opts: &ExecOptions,
    built: (&Relation, RelationKind),
    (body, main): (Vec<Step>, usize),
) -> Result<u64, TransformError> {
    let (rel, kind) = built;
    let session = &host.session;
    let tmp = tmp_relation(rel);
    run_outside(host, slot, &render_hooks(host, n, "pre-hook", false)?)?;
    let mut steps = render_hooks(host, n, "pre-hook", true)?;
    let main = main.saturating_add(steps.len());
    steps.extend(body);
    let script = |steps: &[Step]| format!("{};\n", steps.iter().map(Step::text).collect::<Vec<_>>().join(";\n\n"));
    write_sql(opts, "run", n, &script(&steps));
    let cached_before = (session.cached(&tmp), session.cached(rel));
    let rows = with_conn(session, slot, |c| {
        c.execute("begin")?;
        Ok(run_steps(c, &steps, main))
    })??;
    session.set_cached(&tmp, None);
    session.set_cached(rel, Some(kind));
    let finish = || -> Result<(), TransformError> {
        let post = render_hooks(host, n, "post-hook", true)?;
        let mut all = steps.clone();
        all.extend(post.iter().cloned());
        write_sql(opts, "run", n, &script(&all));
        with_conn(session, slot, |c| Ok(run_steps(c, &post, usize::MAX).and_then(|_| commit(c))))??;
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = with_conn(session, slot, |c| c.execute("rollback"));
        session.set_cached(&tmp, cached_before.0);
        session.set_cached(rel, cached_before.1);
        return Err(e);
    }
    run_outside(host, slot, &render_hooks(host, n, "post-hook", false)?)?;
    Ok(rows)
}

/// A microbatch model: its event-time range cut into batches (`batch_size`), each rendered
/// with refs filtered to the batch and written in its own transaction (delete the batch's
/// range, insert its rows), so a failed batch leaves the others and a rerun redoes it alone.
/// Each batch done is recorded in the metadata store after its transaction commits.
///
/// The range is, under `weir backfill`, the batches of the asked range the store lacks (all
/// of them with `--restate`); else `--event-time-start`/`--event-time-end`; else from `begin`
/// on the first run (and with `--full-refresh`); else the last `lookback` batches and the
/// current one. Once the table exists, batches run in parallel up to `--threads` when the
/// model allows it (`concurrent_batches`); a failed batch does not stop the others.
fn run_microbatch(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let wh = session.warehouse.as_ref();
    let cfg = MicrobatchConfig::of(n)?.ok_or_else(|| TransformError::Graph(format!("{} is not a microbatch model", n.unique_id)))?;
    let fail = |m: String| TransformError::at(Location::file(&n.file), format!("model '{}': {m}", n.name), None);
    let rel = n.relation.clone().ok_or_else(|| TransformError::Graph(format!("{} has no relation", n.unique_id)))?;
    let key = wh.render(&rel);
    let exists = session.is_incremental(n);
    let windows = batch_windows(session, n, &cfg, &key, exists, opts).map_err(fail)?;
    if windows.is_empty() {
        result.message = Some("no missing batches".into());
        result.rows_affected = Some(0);
        return Ok(());
    }
    // The event_time column is checked on the first batch's query before anything is written.
    let first_sql = compile(&ExecHost { batch: windows.first().copied(), ..ExecHost::new(session.clone(), slot.clone()) }, n)?;
    write_sql(opts, "compiled", n, &first_sql);
    result.compiled_code = Some(first_sql.clone());
    result.compile_done_at = Some(chrono::Utc::now());
    cfg.check_columns(n, &with_conn(session, slot, |c| c.describe_query(&first_sql))?)?;
    if let Some(store) = &session.store {
        if !exists {
            // A new (or fully refreshed) table: records of the table it replaces no longer hold.
            store.forget_intervals(&key, None)?;
        } else if let Some(b) = opts.backfill.filter(|b| b.restate) {
            // Forgotten first, so a restatement cut short resumes as a plain backfill.
            store.forget_intervals(&key, Some(b.range))?;
        }
    }

    let progress = Progress { name: n.name.clone(), total: windows.len(), done: AtomicUsize::new(0), started: Instant::now() };
    let batch = Batch { host, n, cfg: &cfg, rel: &rel, key: &key, progress: &progress };
    let mut queue: VecDeque<BatchWindow> = windows.into();
    let mut rows = 0;
    if !exists && let Some(w) = queue.pop_front() {
        // The first batch creates the table; the others then insert into it.
        rows += batch.run(slot, w, None)?;
    }
    let dest = if queue.is_empty() { vec![] } else { with_conn(session, slot, |c| c.columns(&rel))? };
    let workers = if cfg.concurrent { opts.threads.max(1).min(queue.len()) } else { 1 };
    let queue = Mutex::new(queue);
    let (done_rows, failures) = (AtomicU64::new(0), Mutex::new(Vec::<(BatchWindow, String)>::new()));
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (queue, done_rows, failures, batch, dest) = (&queue, &done_rows, &failures, &batch, &dest);
            let slot: ConnSlot = if w == 0 { slot.clone() } else { Arc::new(Mutex::new(None)) };
            scope.spawn(move || {
                while let Some(window) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    match batch.run(&slot, window, Some(dest)) {
                        Ok(r) => {
                            done_rows.fetch_add(r, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push((window, e.to_string()));
                            }
                        }
                    }
                }
            });
        }
    });
    rows += done_rows.into_inner();
    result.rows_affected = Some(rows);
    let mut failures = failures.into_inner().map_err(|_| TransformError::Graph("batch failures lock poisoned".into()))?;
    failures.sort_by_key(|(w, _)| w.start);
    if let Some((w, first)) = failures.first() {
        return Err(TransformError::Data(format!(
            "model '{}': {} of {} batches failed (their rows are unchanged; the others were written and recorded). \
             First, [{}, {}): {first}. `weir backfill {} --start {} --end {}` processes only what is missing.",
            n.name,
            failures.len(),
            progress.total,
            w.start,
            w.end,
            n.name,
            w.start.format("%Y-%m-%dT%H:%M:%S"),
            failures.iter().map(|(w, _)| w.end).max().unwrap_or(w.end).format("%Y-%m-%dT%H:%M:%S"),
        )));
    }
    Ok(())
}

/// The batches a microbatch model builds this run (see [`run_microbatch`]).
fn batch_windows(
    session: &Session,
    n: &Node,
    cfg: &MicrobatchConfig,
    key: &str,
    exists: bool,
    opts: &ExecOptions,
) -> Result<Vec<BatchWindow>, String> {
    let now = chrono::Utc::now().naive_utc();
    let begin_check = |start: chrono::NaiveDateTime, what: &str| match cfg.begin {
        Some(b) if start < b => Err(format!("{what} {start}, which is before the model's begin {b}; start at {b} or later")),
        _ => Ok(()),
    };
    if let Some(b) = opts.backfill {
        begin_check(b.range.start, "the backfill range starts at")?;
        let all = crate::microbatch::batches(cfg.size, b.range.start, b.range.end);
        if b.restate || !exists {
            return Ok(all);
        }
        let store = session.store.as_ref().ok_or("backfill needs the metadata store, and none is open")?;
        let done: Vec<BatchWindow> = store.intervals(key).map_err(|e| e.to_string())?.into_iter().map(|p| p.interval).collect();
        let todo = weir_store::missing(&all, &done);
        if todo.is_empty() {
            (session.log)(&format!("  {}: all {} batches already processed; nothing to backfill", n.name, all.len()));
        } else if todo.len() < all.len() {
            (session.log)(&format!(
                "  {}: {} of {} batches already processed; backfilling the other {}",
                n.name,
                all.len() - todo.len(),
                all.len(),
                todo.len()
            ));
        }
        return Ok(todo);
    }
    let start = match opts.event_time.0 {
        Some(s) => {
            begin_check(s, "--event-time-start")?;
            s
        }
        None if exists => cfg.size.back(cfg.size.truncate(now), cfg.lookback),
        None => cfg.begin.ok_or("microbatch needs 'begin' for its first run (or --event-time-start)")?,
    };
    Ok(crate::microbatch::batches(cfg.size, start, opts.event_time.1.unwrap_or(now)))
}

/// What every batch of one microbatch model shares.
struct Batch<'a> {
    host: &'a ExecHost,
    n: &'a Node,
    cfg: &'a MicrobatchConfig,
    rel: &'a Relation,
    key: &'a str,
    progress: &'a Progress,
}

impl Batch<'_> {
    /// Renders and writes one batch in one transaction on `slot`'s connection: into the
    /// table (with its columns `dest`), or creating it (`None`); then records the interval.
    fn run(&self, slot: &ConnSlot, window: BatchWindow, dest: Option<&[Column]>) -> Result<u64, TransformError> {
        let clock = Instant::now();
        let outcome = self.write(slot, window, dest);
        let session = &self.host.session;
        if let (Ok(rows), Some(store)) = (&outcome, &session.store) {
            let p = weir_store::ProcessedInterval {
                model: self.n.unique_id.clone(),
                relation: self.key.to_string(),
                interval: window,
                run_id: session.manifest.flags.invocation_id.clone(),
                processed_at: chrono::Utc::now(),
                rows: Some(*rows),
            };
            store.record_interval(&p)?;
        }
        self.progress.finished(&session.log, window, clock.elapsed().as_secs_f64(), outcome.is_ok());
        outcome
    }

    fn write(&self, slot: &ConnSlot, window: BatchWindow, dest: Option<&[Column]>) -> Result<u64, TransformError> {
        let session = &self.host.session;
        let wh = session.warehouse.as_ref();
        let rel = self.rel;
        let sql = compile(&ExecHost { batch: Some(window), ..ExecHost::new(session.clone(), slot.clone()) }, self.n)?;
        let (steps, main) = match dest {
            Some(dest) => {
                let (create_tmp, tmp) = wh.create_temp_table_sql(&format!("{}__dbt_tmp", rel.identifier), &sql);
                let cols: Vec<String> = dest.iter().map(|c| wh.quote(&c.name)).collect();
                let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
                let et = &self.cfg.event_time;
                let steps = vec![
                    Step::Sql(create_tmp),
                    Step::Sql(format!(
                        "delete from {} where {et} >= '{}' and {et} < '{}'",
                        wh.render(rel),
                        fmt(window.start),
                        fmt(window.end)
                    )),
                    Step::Sql(format!("insert into {} ({c}) select {c} from {tmp}", wh.render(rel), c = cols.join(", "))),
                    Step::Sql(format!("drop table if exists {tmp}")),
                ];
                (steps, 2)
            }
            None => {
                let tmp_existing = session.cached(&tmp_relation(rel));
                let create = vec![Step::Sql(wh.create_table_as_sql(&tmp_relation(rel), &sql))];
                (swap_plan(wh, rel, session.cached(rel), tmp_existing, create, RelationKind::Table), usize::from(tmp_existing.is_some()))
            }
        };
        let rows = with_conn(session, slot, |c| Ok(run_plan(c, &steps, main)))??;
        if dest.is_none() {
            session.set_cached(&tmp_relation(rel), None);
            session.set_cached(rel, Some(RelationKind::Table));
        }
        Ok(rows)
    }
}

/// A microbatch model's batches done, logged with the rate and the time left as each ends.
struct Progress {
    name: String,
    total: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn finished(&self, log: &crate::session::LogSink, w: BatchWindow, took: f64, ok: bool) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = done as f64 / elapsed;
        let eta = (self.total - done) as f64 / rate;
        log(&format!(
            "  {}: batch {done}/{} [{}, {}) {} in {took:.2}s · {rate:.1} batches/s · ETA {}",
            self.name,
            self.total,
            w.start,
            w.end,
            if ok { "done" } else { "FAILED" },
            human_duration(eta)
        ));
    }
}

/// `42s`, `3m05s`, `1h02m`.
fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Where a test keeps its failing rows, if it stores them (`store_failures`, or
/// `--store-failures`): `<target schema>_dbt_test__audit.<test name>`, as dbt names it.
pub fn stored_failures_relation(m: &weir_graph::Manifest, n: &Node) -> Option<Relation> {
    if n.resource_type != ResourceType::Test || !n.config.get("store_failures").and_then(J::as_bool).unwrap_or(m.flags.store_failures) {
        return None;
    }
    let schema = n
        .config_str("schema")
        .map(|s| format!("{}_{s}", m.target.schema()))
        .unwrap_or_else(|| format!("{}_dbt_test__audit", m.target.schema()));
    Some(Relation::new(m.target.database(), schema, n.config_str("alias").unwrap_or_else(|| weir_graph::parse::test_alias(&n.name))))
}

fn run_snapshot(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let wh = session.warehouse.as_ref();
    let cfg = SnapshotConfig::from_node(n)?;
    let (sql, rel) = compile_for_run(host, n, opts, result)?;
    let (body, main) = match session.cached(&rel) {
        None => {
            let tmp = tmp_relation(&rel);
            let create = vec![Step::Sql(wh.create_table_as_sql(&tmp, &cfg.build_sql(wh, &sql)))];
            let main = usize::from(session.cached(&tmp).is_some());
            (swap_plan(wh, &rel, None, session.cached(&tmp), create, RelationKind::Table), main)
        }
        Some(RelationKind::Table) => {
            let target = wh.render(&rel);
            let (target_cols, query_cols) = with_conn(session, slot, |c| Ok((c.columns(&rel)?, c.describe_query(&sql)?)))?;
            let staging_sql = cfg.staging_sql(wh, &sql, &target, &target_cols, &query_cols);
            let staging_cols = with_conn(session, slot, |c| c.describe_query(&staging_sql))?;
            let internal = cfg.staging_only_columns();
            let kept: Vec<&Column> = staging_cols.iter().filter(|c| !internal.iter().any(|i| i.eq_ignore_ascii_case(&c.name))).collect();
            let (create_tmp, tmp) = wh.create_temp_table_sql(&format!("{}__dbt_tmp", rel.identifier), &staging_sql);
            let mut steps = vec![Step::Sql(create_tmp)];
            for c in kept.iter().filter(|c| !target_cols.iter().any(|t| t.name.eq_ignore_ascii_case(&c.name))) {
                steps.push(Step::Sql(format!("alter table {target} add column {} {}", wh.quote(&c.name), c.data_type)));
            }
            let insert_cols: Vec<String> = kept.iter().map(|c| wh.quote(&c.name)).collect();
            let [update, insert] = cfg.merge_sql(&target, &tmp, &insert_cols);
            steps.push(Step::Sql(update));
            steps.push(Step::Sql(insert));
            let main = steps.len() - 1;
            steps.push(Step::Sql(format!("drop table if exists {tmp}")));
            (steps, main)
        }
        Some(kind) => {
            return Err(TransformError::at(
                Location::file(&n.file),
                format!(
                    "snapshot '{}': {} exists as a {kind:?}, not a table; drop it or change the snapshot's alias",
                    n.name,
                    wh.render(&rel)
                ),
                None,
            ));
        }
    };
    result.rows_affected = Some(run_with_hooks(host, slot, n, opts, (&rel, RelationKind::Table), (body, main))?);
    Ok(())
}

fn run_seed(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let wh = session.warehouse.as_ref();
    let rel = n.relation.clone().ok_or_else(|| TransformError::Graph(format!("{} has no relation", n.unique_id)))?;
    let delimiter = n.config_str("delimiter").and_then(|d| d.chars().next()).unwrap_or(',');
    let schema = seed::infer(&n.file, delimiter as u8)?;
    let overrides = n.config.get("column_types").and_then(J::as_object).cloned().unwrap_or_default();
    let quote = n.config.get("quote_columns").and_then(J::as_bool).unwrap_or(false);
    let ident = |c: &str| if quote { wh.quote(c) } else { c.to_string() };
    let defs: Vec<String> = schema
        .columns
        .iter()
        .zip(&schema.types)
        .map(|(c, t)| {
            let ty = overrides.get(c).and_then(J::as_str).map(str::to_string).unwrap_or_else(|| t.clone());
            format!("{} {ty}", ident(c))
        })
        .collect();
    let tmp = tmp_relation(&rel);
    let create = vec![
        Step::Sql(format!("create table {} ({})", wh.render(&tmp), defs.join(", "))),
        Step::CopyCsv {
            target: wh.render(&tmp),
            // `copy_csv` quotes the names: give them as the table stores them (PostgreSQL
            // folds unquoted names to lower case).
            columns: schema
                .columns
                .iter()
                .map(|c| if quote || wh.adapter_type() != "postgres" { c.clone() } else { c.to_lowercase() })
                .collect(),
            path: n.file.clone(),
            delimiter,
        },
    ];
    let existing = session.cached(&rel);
    let steps = swap_plan(wh, &rel, existing, session.cached(&tmp), create, RelationKind::Table);
    let main = steps.iter().position(|s| matches!(s, Step::CopyCsv { .. })).unwrap_or(0);
    result.compile_done_at = Some(chrono::Utc::now());
    let rows = run_with_hooks(host, slot, n, opts, (&rel, RelationKind::Table), (steps, main))?;
    result.rows_affected = Some(if rows > 0 { rows } else { schema.rows as u64 });
    Ok(())
}

fn run_test(host: &ExecHost, slot: &ConnSlot, n: &Node, opts: &ExecOptions, result: &mut RunReport) -> Result<(), TransformError> {
    let session = &host.session;
    let m = &session.manifest;
    let wh = session.warehouse.as_ref();
    let (sql, config) = crate::compile::compile_with_config(host, n)?;
    let n = &Node { config, ..n.clone() };
    write_sql(opts, "compiled", n, &sql);
    result.compiled_code = Some(sql.clone());
    result.compile_done_at = Some(chrono::Utc::now());
    // The audit schema was created before the run started (see `compile::schemas_of`):
    // creating it here, from several threads at once, conflicts in DuckDB's catalog.
    let main_sql = if let Some(audit) = stored_failures_relation(m, n) {
        let steps = vec![Step::Sql(format!("drop table if exists {}", wh.render(&audit))), Step::Sql(wh.create_table_as_sql(&audit, &sql))];
        with_conn(session, slot, |c| Ok(run_plan(c, &steps, 1)))??;
        result.relation_name = Some(wh.render(&audit));
        format!("select * from {}", wh.render(&audit))
    } else {
        sql
    };
    let ctx = context(host, n);
    let fail_calc = n.config_str("fail_calc").unwrap_or_else(|| "count(*)".into());
    let warn_if = n.config_str("warn_if").unwrap_or_else(|| "!= 0".into());
    let error_if = n.config_str("error_if").unwrap_or_else(|| "!= 0".into());
    let limit = n.config.get("limit").and_then(J::as_i64).map(minijinja::Value::from).unwrap_or(minijinja::Value::from(()));
    let args = [minijinja::Value::from(main_sql), fail_calc.into(), warn_if.clone().into(), error_if.clone().into(), limit];
    let wrapped = m.jinja.call_macro(&ctx, "get_test_sql", &args)?.to_string();
    write_sql(opts, "run", n, &wrapped);
    let r = with_conn(session, slot, |c| c.query(&wrapped))?;
    let row = r.rows.first().cloned().unwrap_or_default();
    let failures = row.first().and_then(|d| d.as_i64()).unwrap_or(0);
    let should_warn = row.get(1).and_then(|d| d.as_bool()).unwrap_or(false);
    let should_error = row.get(2).and_then(|d| d.as_bool()).unwrap_or(false);
    let severity = n.config_str("severity").unwrap_or_else(|| "error".into()).to_lowercase();
    result.failures = Some(failures);
    result.status = if severity == "error" && should_error {
        Status::Fail
    } else if should_warn {
        Status::Warn
    } else {
        Status::Pass
    };
    if result.status != Status::Pass {
        result.message = Some(format!(
            "Got {failures} result{}, configured to {} if {}",
            if failures == 1 { "" } else { "s" },
            if result.status == Status::Fail { "fail" } else { "warn" },
            if result.status == Status::Fail { &error_if } else { &warn_if }
        ));
    }
    Ok(())
}

/// One project hook that ran, named as dbt names it in `run_results.json`
/// (`operation.<package>.<package>-on-run-start-<n>`).
#[derive(Debug, Clone)]
pub struct HookRun {
    pub unique_id: String,
    pub sql: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    pub execution_time: f64,
}

/// `on-run-start` / `on-run-end` hooks of every package, rendered and run in order.
pub fn run_project_hooks(session: &Arc<Session>, which: &str) -> Result<Vec<HookRun>, TransformError> {
    let m = &session.manifest;
    let slot: ConnSlot = Arc::new(Mutex::new(None));
    let host = ExecHost::new(session.clone(), slot.clone());
    let mut results = vec![];
    for pkg in &m.project.packages {
        let hooks = if which == "on-run-start" { &pkg.settings.on_run_start } else { &pkg.settings.on_run_end };
        for (i, hook) in hooks.iter().enumerate() {
            let scope = weir_project::jinja::NodeScope {
                unique_id: format!("operation.{}.{}-{which}-{i}", pkg.name, pkg.name),
                package: pkg.name.clone(),
                file: pkg.settings.file.clone(),
                this: None,
                model: weir_project::jinja::LazyModel::new(|| J::Null),
            };
            let mut ctx = weir_project::jinja::NodeContext::new(
                Arc::new(host.clone()),
                m.jinja.macros.clone(),
                scope,
                weir_project::jinja::RenderMode::Execute,
                Default::default(),
            );
            let schemas: BTreeSet<String> = m
                .nodes
                .values()
                .filter(|n| n.resource_type != ResourceType::Source)
                .filter_map(|n| n.relation.as_ref().map(|r| r.schema.clone()))
                .collect();
            ctx.set_extra("schemas", minijinja::Value::from(schemas.into_iter().collect::<Vec<_>>()));
            let started = chrono::Utc::now();
            let clock = Instant::now();
            let sql = m.jinja.render(&pkg.settings.file, hook, &ctx)?;
            if !sql.trim().is_empty() {
                with_conn(session, &slot, |c| c.execute(&sql))?;
            }
            results.push(HookRun {
                unique_id: format!("operation.{}.{}-{which}-{i}", pkg.name, pkg.name),
                sql,
                started_at: started,
                completed_at: chrono::Utc::now(),
                execution_time: clock.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(results)
}
