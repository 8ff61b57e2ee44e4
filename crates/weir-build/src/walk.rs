//! The walk: selected nodes run in dependency order on `--threads` workers.
//!
//! Each worker owns one warehouse connection and hands each node it takes to the node's
//! executor ([`crate::handoff`]). A node whose upstream failed is skipped and the rest of the
//! run goes on, as in dbt; under `build`, a failing test or check skips the nodes downstream
//! of what it guards, and a unit test holds back its model.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use weir_graph::{Graph, Node, ResourceType, Status};
use weir_transform::session::{ConnSlot, ExecHost};
use weir_transform::{ExecOptions, Session};

use crate::error::BuildError;
use crate::handoff::run_node;
use crate::result::{NodeResult, RunOutcome};

/// Which command is running: it decides what is selected and how tests gate models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Build,
    Test,
    Seed,
    Snapshot,
    /// `weir check`: data-quality checks alone.
    Check,
    /// `weir load`: extract-and-load jobs alone.
    Load,
}

/// Progress callbacks, so the binary prints status lines and the library stays quiet.
pub trait Reporter: Send + Sync {
    fn started(&self, node: &Node, index: usize, total: usize);
    fn finished(&self, node: &Node, result: &NodeResult, index: usize, total: usize);
}

/// How a run goes.
pub struct RunOptions {
    pub fail_fast: bool,
    pub command: Command,
    /// `--threads` (the walk's workers), the target folder, the event-time range and backfill:
    /// what the model executor needs to know too.
    pub exec: ExecOptions,
    /// Told how loads are going, for progress bars.
    pub load_progress: Option<weir_connect::ProgressFn>,
}

/// Nodes of `selected` that a command executes, in a stable order.
pub fn runnable(session: &Session, selected: &BTreeSet<String>, command: Command) -> Vec<String> {
    let m = &session.manifest;
    selected
        .iter()
        .filter_map(|id| m.node(id))
        .filter(|n| match command {
            Command::Run => n.resource_type == ResourceType::Model && !n.is_ephemeral(),
            Command::Test => matches!(n.resource_type, ResourceType::Test | ResourceType::UnitTest),
            Command::Seed => n.resource_type == ResourceType::Seed,
            Command::Snapshot => n.resource_type == ResourceType::Snapshot,
            Command::Check => n.resource_type == ResourceType::Check,
            Command::Load => n.resource_type == ResourceType::Load,
            Command::Build => {
                matches!(
                    n.resource_type,
                    ResourceType::Model
                        | ResourceType::Seed
                        | ResourceType::Snapshot
                        | ResourceType::Test
                        | ResourceType::UnitTest
                        | ResourceType::SavedQuery
                        | ResourceType::Check
                        | ResourceType::Load
                        | ResourceType::Stream
                ) && !n.is_ephemeral()
            }
        })
        .map(|n| n.unique_id.clone())
        .collect()
}

struct Sched {
    waiting_on: HashMap<String, usize>,
    dependents: HashMap<String, Vec<String>>,
    deps: HashMap<String, Vec<String>>,
    ready: VecDeque<String>,
    status: HashMap<String, Status>,
    left: usize,
    stop: bool,
    index: usize,
}

/// Runs `ids` (already filtered by [`runnable`]) and reports each as it finishes.
pub fn execute(
    session: Arc<Session>,
    graph: &Graph,
    ids: &[String],
    opts: &RunOptions,
    reporter: &dyn Reporter,
) -> Result<RunOutcome, BuildError> {
    let start = Instant::now();
    let m = session.manifest.clone();
    let set: HashSet<&str> = ids.iter().map(String::as_str).collect();

    // Dependencies among the selected nodes, through unselected ones.
    let gates = |n: &Node| matches!(n.resource_type, ResourceType::Test | ResourceType::Check);
    // Under `weir build`, what each selected test or check guards: a test the nodes
    // downstream of all its parents, as dbt does; a check the nodes downstream of its
    // dataset, whatever else its suite reads. A failure stops them (a circuit breaker),
    // and the rest goes on. A gate never waits on a node it reads itself.
    let guards: Vec<(&Node, Vec<&String>, BTreeSet<String>)> = if opts.command == Command::Build {
        ids.iter()
            .filter_map(|t| m.node(t))
            .filter(|t| gates(t) && !t.depends_on.is_empty())
            .map(|t| {
                let guarded: Vec<&String> = match t.resource_type {
                    ResourceType::Check => t.depends_on.iter().take(1).collect(),
                    _ => t.depends_on.iter().collect(),
                };
                (t, guarded, graph.ancestors(&t.unique_id, None))
            })
            .collect()
    } else {
        vec![]
    };
    // A unit test runs after its model's parents and before the model, which it holds back
    // when it fails, as in dbt.
    let mut unit_tests_of: HashMap<&str, Vec<String>> = HashMap::new();
    for n in ids.iter().filter_map(|id| m.node(id)).filter(|n| n.resource_type == ResourceType::UnitTest) {
        if let Some(model) = n.depends_on.first() {
            unit_tests_of.entry(model.as_str()).or_default().push(n.unique_id.clone());
        }
    }
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for id in ids {
        let unit_model = m.node(id).filter(|n| n.resource_type == ResourceType::UnitTest).and_then(|n| n.depends_on.first());
        let ancestors = match unit_model {
            Some(model) => graph.ancestors(model, None),
            None => graph.ancestors(id, None),
        };
        let mut d: Vec<String> = ancestors.iter().filter(|a| set.contains(a.as_str())).cloned().collect();
        if let Some(tests) = unit_tests_of.get(id.as_str()) {
            d.extend(tests.iter().cloned());
        }
        // A saved query reads its models through metrics and semantic models, which dbt's
        // tests do not guard: it waits for the models, and only their own failures skip it.
        if m.node(id).is_some_and(|n| !gates(n) && n.resource_type != ResourceType::SavedQuery) {
            for (t, guarded, reads) in &guards {
                if guarded.iter().all(|p| ancestors.contains(*p)) && !reads.contains(id) {
                    d.push(t.unique_id.clone());
                }
            }
        }
        deps.insert(id.clone(), d);
    }
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    let mut waiting_on = HashMap::new();
    for (id, d) in &deps {
        waiting_on.insert(id.clone(), d.len());
        for x in d {
            dependents.entry(x.clone()).or_default().push(id.clone());
        }
    }
    let ready: VecDeque<String> = ids.iter().filter(|id| deps[*id].is_empty()).cloned().collect();
    let sched = Mutex::new(Sched { waiting_on, dependents, deps, ready, status: HashMap::new(), left: ids.len(), stop: false, index: 0 });
    let cv = Condvar::new();
    let results = Mutex::new(Vec::new());
    let total = ids.len();
    let threads = opts.exec.threads.max(1).min(total.max(1));

    std::thread::scope(|scope| {
        for t in 0..threads {
            let (session, sched, cv, results) = (&session, &sched, &cv, &results);
            scope.spawn(move || {
                let slot: ConnSlot = Arc::new(Mutex::new(None));
                let host = ExecHost::new(session.clone(), slot.clone());
                let thread_id = format!("Thread-{}", t + 1);
                loop {
                    let (id, index, skip_reason) = {
                        let Ok(mut s) = sched.lock() else { return };
                        loop {
                            if s.left == 0 {
                                cv.notify_all();
                                return;
                            }
                            if let Some(id) = s.ready.pop_front() {
                                s.index += 1;
                                let blocked = s
                                    .deps
                                    .get(&id)
                                    .and_then(|d| d.iter().find(|x| s.status.get(*x).is_some_and(|st| st.blocks())).cloned());
                                let reason = if s.stop {
                                    Some("skipped: the run stopped at the first failure (--fail-fast)".to_string())
                                } else {
                                    blocked.map(|b| format!("skipped: upstream {b} did not succeed"))
                                };
                                break (id, s.index, reason);
                            }
                            s = match cv.wait(s) {
                                Ok(g) => g,
                                Err(_) => return,
                            };
                        }
                    };
                    let Some(node) = session.manifest.node(&id) else { continue };
                    let result = match skip_reason {
                        Some(reason) => skipped(node, reason, &thread_id),
                        None => {
                            reporter.started(node, index, total);
                            run_node(&host, &slot, node, (&opts.exec, opts.load_progress.as_ref()), &thread_id)
                        }
                    };
                    reporter.finished(node, &result, index, total);
                    if let Ok(mut s) = sched.lock() {
                        s.status.insert(id.clone(), result.status);
                        if opts.fail_fast && matches!(result.status, Status::Error | Status::Fail) {
                            s.stop = true;
                        }
                        for d in s.dependents.get(&id).cloned().unwrap_or_default() {
                            if let Some(w) = s.waiting_on.get_mut(&d) {
                                *w -= 1;
                                if *w == 0 {
                                    s.ready.push_back(d);
                                }
                            }
                        }
                        s.left -= 1;
                    }
                    if let Ok(mut r) = results.lock() {
                        r.push(result);
                    }
                    cv.notify_all();
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| BuildError::Walk("results lock poisoned".into()))?;
    let order: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    results.sort_by_key(|r| order.get(r.unique_id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(RunOutcome { results, elapsed: start.elapsed().as_secs_f64() })
}

fn skipped(node: &Node, reason: String, thread_id: &str) -> NodeResult {
    NodeResult { message: Some(reason), ..NodeResult::blank(node.unique_id.clone(), Status::Skipped, chrono::Utc::now(), thread_id) }
}
