//! The scheduler against real processes and real stores: catchup and max_active_runs,
//! triggered runs, pausing, taking over a dead worker's runs (its leftover process killed,
//! its tasks retried or failed by policy), and two schedulers sharing one PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use weir_orchestrate::{Executor, Pipelines, Scheduler, Settings, WorkerHandle};
use weir_store::{PipelineRun, Store, TaskAttempt, TaskInstance, Worker};

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("pipelines").join(name), text).unwrap();
    }
    dir
}

fn scheduler(dir: &Path, store: Arc<Store>) -> Scheduler {
    let worker = WorkerHandle::register(store.clone(), "scheduler").unwrap();
    let mut settings = Settings::new(dir.to_path_buf());
    settings.worker_id = Some(worker.id.clone());
    settings.heartbeat_interval = Duration::from_millis(200);
    settings.worker_timeout = Duration::from_secs(2);
    let pipelines = Pipelines::load(&dir.join("pipelines")).unwrap();
    let exec = Executor::new(settings, store, pipelines, |_| {}).unwrap();
    Scheduler::new(exec, worker).unwrap()
}

/// Runs schedulers until `done` holds for the store (checked every 100 ms), at most `limit`.
fn run_until(schedulers: Vec<Scheduler>, store: &Store, limit: Duration, done: impl Fn(&Store) -> bool) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (stop, rx) = watch::channel(false);
        let mut set = tokio::task::JoinSet::new();
        for s in schedulers {
            let rx = rx.clone();
            set.spawn(async move { s.run(rx).await });
        }
        let until = tokio::time::Instant::now() + limit;
        while !done(store) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send(true).unwrap();
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    });
}

fn runs(store: &Store, pipeline: &str) -> Vec<PipelineRun> {
    let mut r = store.pipeline_runs(Some(pipeline), 1000).unwrap();
    r.sort_by_key(|r| r.interval_start);
    r
}

/// Spans [start, end] written by the tasks to a file, one "start end" line per task.
fn overlapping(spans: &str) -> bool {
    let mut v: Vec<(f64, f64)> =
        spans.lines().filter_map(|l| l.split_once(' ')).map(|(a, b)| (a.trim().parse().unwrap(), b.trim().parse().unwrap())).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v.windows(2).any(|w| w[1].0 < w[0].1)
}

#[test]
fn catchup_queues_every_missed_interval_and_runs_them_one_at_a_time() {
    let start = (Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d");
    let dir = project(&[(
        "daily.yml",
        &format!(
            "schedule: '@daily'\nstart_date: {start}\ncatchup: true\nmax_active_runs: 1\ntasks:\n  work:\n    shell: |\n      s=$(date +%s.%N); sleep 0.2; echo \"$s $(date +%s.%N)\" >> spans.txt; echo '{{{{ ds }}}}' >> days.txt\n"
        ),
    )]);
    let store = Arc::new(Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap());
    let s = scheduler(dir.path(), store.clone());
    run_until(vec![s], &store, Duration::from_secs(30), |st| {
        let r = runs(st, "daily");
        r.len() == 3 && r.iter().all(|r| r.state == "success")
    });
    let r = runs(&store, "daily");
    assert_eq!(r.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(), ["success"; 3], "{r:#?}");
    assert!(r.iter().all(|r| r.run_type == "scheduled" && r.run_id.starts_with("scheduled__")));
    let days = std::fs::read_to_string(dir.path().join("days.txt")).unwrap();
    assert_eq!(days.lines().count(), 3, "one run per day: {days}");
    let spans = std::fs::read_to_string(dir.path().join("spans.txt")).unwrap();
    assert!(!overlapping(&spans), "max_active_runs: 1 runs one at a time: {spans}");
    // A second scheduler on the same store has nothing left to queue.
    let again = scheduler(dir.path(), store.clone());
    assert!(again.tick().unwrap().queued.is_empty());
}

#[test]
fn triggered_runs_wait_while_paused_and_run_with_their_params() {
    let dir = project(&[("adhoc.yml", "params: {who: world}\ntasks:\n  hello:\n    shell: echo 'hello {{ params.who }}' >> out.txt\n")]);
    let store = Arc::new(Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap());
    let s = scheduler(dir.path(), store.clone());
    store.set_paused("adhoc", true).unwrap();
    let now = Utc::now();
    let queued = PipelineRun {
        pipeline: "adhoc".into(),
        run_id: "manual__api".into(),
        run_type: "manual".into(),
        state: "queued".into(),
        interval_start: Some(now),
        interval_end: Some(now),
        params: r#"{"who": "weir"}"#.into(),
        queued_at: now,
        started_at: None,
        finished_at: None,
        message: None,
        owner: None,
    };
    assert!(store.enqueue_run(&queued).unwrap());
    assert!(s.tick().unwrap().claimed.is_empty(), "a paused pipeline's runs wait");
    store.set_paused("adhoc", false).unwrap();
    run_until(vec![s], &store, Duration::from_secs(20), |st| {
        st.pipeline_run("adhoc", "manual__api").unwrap().is_some_and(|r| r.state == "success")
    });
    assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap(), "hello weir\n");
}

/// A worker that died mid-run (here: recorded as such, with a real process it left behind)
/// is declared dead; its leftover process is killed; the interrupted task with a retry left
/// runs again and the one without fails; the run ends, once.
#[test]
fn a_dead_workers_run_is_taken_over_and_its_tasks_retried_or_failed_by_policy() {
    let dir = project(&[(
        "nightly.yml",
        "tasks:\n  retried:\n    shell: echo again >> retried.txt\n    retries: 1\n    retry_delay: 1s\n    retry_jitter: false\n  not_retried:\n    shell: echo never >> not_retried.txt\n  after:\n    shell: echo after >> after.txt\n    after: [retried]\n",
    )]);
    let store = Arc::new(Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap());
    let long_ago = Utc::now() - chrono::Duration::minutes(5);
    store
        .register_worker(&Worker {
            worker_id: "dead-one".into(),
            kind: "scheduler".into(),
            host: weir_orchestrate::worker::host_name(),
            pid: 999_999,
            started_at: long_ago,
            heartbeat_at: long_ago,
            stopped_at: None,
            stopped_by: None,
        })
        .unwrap();
    let run = PipelineRun {
        pipeline: "nightly".into(),
        run_id: "manual__crashed".into(),
        run_type: "manual".into(),
        state: "running".into(),
        interval_start: Some(long_ago),
        interval_end: Some(long_ago),
        params: "{}".into(),
        queued_at: long_ago,
        started_at: Some(long_ago),
        finished_at: None,
        message: None,
        owner: Some("dead-one".into()),
    };
    store.save_run(&run).unwrap();
    // What the dead worker left running: a process group of its own.
    let mut orphan = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut orphan, 0);
    let mut orphan = orphan.arg("300").spawn().unwrap();
    for (task, max_tries) in [("retried", 2), ("not_retried", 1)] {
        store
            .save_task(&TaskInstance {
                pipeline: "nightly".into(),
                run_id: run.run_id.clone(),
                task: task.into(),
                state: "running".into(),
                try_number: 1,
                max_tries: Some(max_tries),
                started_at: Some(long_ago),
                finished_at: None,
                message: None,
            })
            .unwrap();
        store
            .save_attempt(&TaskAttempt {
                pipeline: "nightly".into(),
                run_id: run.run_id.clone(),
                task: task.into(),
                attempt: 1,
                state: "running".into(),
                started_at: long_ago,
                finished_at: None,
                exit_code: None,
                message: None,
                log_path: None,
                log_tail: None,
                worker: Some("dead-one".into()),
                pid: (task == "retried").then(|| orphan.id()),
            })
            .unwrap();
    }
    let s = scheduler(dir.path(), store.clone());
    run_until(vec![s], &store, Duration::from_secs(20), |st| {
        st.pipeline_run("nightly", "manual__crashed").unwrap().is_some_and(|r| r.state == "failed" || r.state == "success")
    });
    let status = orphan.try_wait().unwrap().or_else(|| {
        std::thread::sleep(Duration::from_millis(500));
        orphan.try_wait().unwrap()
    });
    assert!(status.is_some(), "the dead worker's leftover process was killed");
    let r = store.pipeline_run("nightly", "manual__crashed").unwrap().unwrap();
    assert_eq!(r.state, "failed", "not_retried had no tries left: {r:?}");
    let tasks = store.task_instances("nightly", "manual__crashed").unwrap();
    let state = |t: &str| tasks.iter().find(|i| i.task == t).map(|i| (i.state.clone(), i.try_number)).unwrap();
    assert_eq!(state("retried"), ("success".into(), 2), "retried as its second try");
    assert_eq!(state("not_retried").0, "failed");
    assert!(tasks.iter().find(|i| i.task == "not_retried").unwrap().message.as_deref().unwrap_or("").contains("died"));
    assert_eq!(state("after"), ("success".into(), 1));
    assert!(!dir.path().join("not_retried.txt").exists(), "a task without tries left does not run");
    let lost = store.task_attempts("nightly", "manual__crashed", "retried").unwrap();
    assert_eq!(lost[0].state, "failed");
    assert!(lost[0].message.as_deref().unwrap_or("").contains("dead-one"), "{:?}", lost[0].message);
    // The retry waited its retry_delay (1s) from when the lost attempt was settled.
    let waited = lost[1].started_at - lost[0].finished_at.unwrap();
    assert!(waited >= chrono::Duration::milliseconds(950), "retried {waited} after the takeover");
    let w = store.worker("dead-one").unwrap().unwrap();
    assert!(w.stopped_at.is_some() && w.stopped_by.is_some(), "declared dead by the scheduler");
}

/// Two schedulers on one PostgreSQL store (each its own connection) with a pipeline
/// catching up: every interval runs exactly once, each task exactly once, and both
/// schedulers run their part.
#[test]
fn two_schedulers_on_postgres_never_run_a_task_twice() {
    let url = "postgresql://postgres@127.0.0.1:5432/test";
    let schema = format!("weir_sched_test_{}", std::process::id());
    let start = (Utc::now() - chrono::Duration::hours(12)).format("%Y-%m-%dT%H:00:00");
    let dir = project(&[(
        "hourly.yml",
        &format!(
            "schedule: '@hourly'\nstart_date: '{start}'\ncatchup: true\nmax_active_runs: 4\ntasks:\n  a:\n    shell: echo '{{{{ run_id }}}} a' >> done.txt\n  b:\n    shell: echo '{{{{ run_id }}}} b' >> done.txt\n    after: a\n"
        ),
    )]);
    let open = || Arc::new(Store::postgres(url, Some(&schema)).unwrap_or_else(|e| panic!("PostgreSQL at {url} is required: {e}")));
    let store = open();
    let (one, two) = (scheduler(dir.path(), open()), scheduler(dir.path(), open()));
    run_until(vec![one, two], &store, Duration::from_secs(60), |st| {
        let r = runs(st, "hourly");
        r.len() >= 12 && r.iter().all(|r| r.state == "success")
    });
    let r = runs(&store, "hourly");
    assert!(r.len() >= 12 && r.iter().all(|r| r.state == "success"), "{r:#?}");
    let done = std::fs::read_to_string(dir.path().join("done.txt")).unwrap();
    let mut lines: Vec<&str> = done.lines().collect();
    let n = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(n, lines.len(), "a task ran twice:\n{done}");
    assert_eq!(n, r.len() * 2);
    let mut owners: std::collections::BTreeMap<Option<String>, usize> = Default::default();
    for run in &r {
        *owners.entry(run.owner.clone()).or_default() += 1;
    }
    drop(store);
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
    // Both schedulers took their part of the work.
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(owners.values().all(|n| *n >= r.len() / 4), "{owners:?}");
}
