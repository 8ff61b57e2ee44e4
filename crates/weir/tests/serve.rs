//! `weir serve` as real processes: a scheduler killed with -9 mid-task and another taking
//! its run over (the orphaned task killed first, then retried); two schedulers sharing one
//! PostgreSQL store without running anything twice; `weir db backup` and `restore`; events
//! posted to the server and produced by `weir log` at once, into one log.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value as J;

/// Whether a process runs (a zombie, dead but not yet reaped by whoever adopted it, does not).
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    state.is_some_and(|s| s != 'Z' && s != 'X')
}

const FAST_HEARTBEATS: &str = "orchestrator:\n  heartbeat_interval: 250ms\n  worker_timeout: 2s\n";

#[test]
fn a_scheduler_killed_mid_task_has_its_run_taken_over_and_the_task_retried_once() {
    let dir = minimal(&[
        ("weir.yml", FAST_HEARTBEATS),
        (
            "pipelines/slow.yml",
            "tasks:\n  slow:\n    retries: 1\n    retry_delay: 1s\n    shell: |\n\
             \x20     if [ -f sleep.pid ] && grep -qv ') Z' \"/proc/$(cat sleep.pid)/stat\" 2>/dev/null; then echo overlap >> tries.txt; fi\n\
             \x20     echo \"try $WEIR_TRY_NUMBER\" >> tries.txt\n\
             \x20     if [ \"$WEIR_TRY_NUMBER\" = 1 ]; then sleep 600 & echo $! > sleep.pid; wait $!; fi\n\
             \x20 after_slow:\n    shell: echo done >> after.txt\n    after: slow\n",
        ),
    ]);
    let first = Serve::start(dir.path(), &[]);
    let run = first.call("POST", "/api/v1/pipelines/slow/runs", Some(r#"{"run_id": "r1"}"#)).unwrap();
    assert_eq!(run["state"], "queued", "{run}");
    wait(Duration::from_secs(30), "the first try to start", || dir.path().join("sleep.pid").exists());
    let sleeper = std::fs::read_to_string(dir.path().join("sleep.pid")).unwrap();
    drop(first); // kill -9
    assert!(alive(&sleeper), "the task's own child outlives a kill -9 of its scheduler");

    let second = Serve::start(dir.path(), &[]);
    wait(Duration::from_secs(60), "the run to be taken over and finish", || {
        second.call("GET", "/api/v1/pipelines/slow/runs/r1", None).is_some_and(|r| r["state"] == "success")
    });
    assert!(!alive(&sleeper), "recovery killed what the dead scheduler left running");
    let tries = std::fs::read_to_string(dir.path().join("tries.txt")).unwrap();
    assert_eq!(tries, "try 1\ntry 2\n", "retried once, never two at a time");
    assert_eq!(std::fs::read_to_string(dir.path().join("after.txt")).unwrap(), "done\n");
    let task = second.call("GET", "/api/v1/pipelines/slow/runs/r1/tasks/slow", None).unwrap();
    assert_eq!(task["attempts"][0]["state"], "failed");
    assert!(task["attempts"][0]["message"].as_str().unwrap_or("").contains("died"), "{task}");
    second.terminate();
}

#[test]
fn two_schedulers_on_one_postgres_store_run_every_task_once() {
    let schema = format!("weir_serve_test_{}", std::process::id());
    let start = (chrono::Utc::now() - chrono::Duration::hours(10)).format("%Y-%m-%dT%H:00:00");
    let dir = minimal(&[
        ("weir.yml", &format!("metadata_store:\n  url: postgresql://postgres@127.0.0.1:5432/test\n  schema: {schema}\n{FAST_HEARTBEATS}")),
        (
            "pipelines/hourly.yml",
            &format!(
                "schedule: '@hourly'\nstart_date: '{start}'\ncatchup: true\nmax_active_runs: 2\ntasks:\n\
                 \x20 a: {{shell: 'echo {{{{ run_id }}}} a >> done.txt; sleep 0.2'}}\n\
                 \x20 b: {{shell: 'echo {{{{ run_id }}}} b >> done.txt', after: a}}\n"
            ),
        ),
    ]);
    let (one, two) = (Serve::start(dir.path(), &[]), Serve::start(dir.path(), &[]));
    let mut runs = Vec::new();
    wait(Duration::from_secs(90), "every interval to succeed", || {
        runs = one.call("GET", "/api/v1/pipelines/hourly/runs?limit=100", None).and_then(|j| j.as_array().cloned()).unwrap_or_default();
        runs.len() >= 10 && runs.iter().all(|r| r["state"] == "success")
    });
    one.terminate();
    two.terminate();
    let done = std::fs::read_to_string(dir.path().join("done.txt")).unwrap();
    let mut lines: Vec<&str> = done.lines().collect();
    let n = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(n, lines.len(), "a task ran twice:\n{done}");
    assert_eq!(n, runs.len() * 2, "{done}");
    let mut pg = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls).unwrap();
    pg.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
}

#[test]
fn the_store_is_backed_up_while_in_use_and_restored_only_when_no_worker_lives() {
    let dir = minimal(&[("pipelines/p.yml", "tasks:\n  a: {shell: 'true'}\n")]);
    assert!(weir(dir.path(), &["pipeline", "run", "p", "--run-id", "before"]).status.success());
    let serve = Serve::start(dir.path(), &[]);
    let backup = dir.path().join("backup.db");
    let o = weir(dir.path(), &["db", "backup", backup.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(weir(dir.path(), &["pipeline", "run", "p", "--run-id", "after"]).status.success());
    let refused = weir(dir.path(), &["db", "restore", backup.to_str().unwrap()]);
    assert!(!refused.status.success() && text(&refused).contains("refusing to restore while workers are alive"), "{}", text(&refused));
    serve.terminate();
    let o = weir(dir.path(), &["db", "restore", backup.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let runs = text(&weir(dir.path(), &["pipeline", "runs", "p"]));
    assert!(runs.contains("before: success") && !runs.contains("after"), "{runs}");
    let again = weir(dir.path(), &["db", "backup", backup.to_str().unwrap()]);
    assert!(text(&again).contains("exists"), "a backup never overwrites: {}", text(&again));
}

#[test]
fn events_posted_to_weir_serve_are_read_back_by_weir_log_while_it_runs() {
    let dir = minimal(&[("streams/app.yml", "topics:\n  - name: clicks\n    partitions: 2\n    key: user\n")]);
    let serve = Serve::start(dir.path(), &[]);
    let body = r#"[{"user": "u1", "page": "/a"}, {"user": "u2", "page": "/b"}, {"user": "u1", "page": "/c"}]"#;
    let answer = serve.call("POST", "/api/v1/topics/clicks/records", Some(body)).unwrap();
    assert_eq!(answer["offsets"].as_array().map(Vec::len), Some(3), "{answer}");
    // Another process appends to the same log while the server holds it open.
    let o = weir_command(dir.path()).args(["log", "produce", "clicks"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"{\"user\": \"u3\", \"page\": \"/d\"}\n")?;
        c.wait_with_output()
    });
    assert!(o.unwrap().status.success());
    let answer = serve.call("POST", "/api/v1/topics/clicks/records", Some(r#"[{"user": "u3", "page": "/e"}]"#)).unwrap();
    assert_eq!(answer["offsets"].as_array().map(Vec::len), Some(1), "{answer}");
    let o = weir(dir.path(), &["log", "consume", "clicks"]);
    let pages: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<J>(l).unwrap()["value"]["page"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = pages.clone();
    sorted.sort();
    assert_eq!(sorted, ["/a", "/b", "/c", "/d", "/e"], "every event once, none overwritten: {pages:?}");

    // Record headers of every event, as request headers.
    let post = |headers: &[&str]| {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/topics/clicks/records", serve.base))
            .bearer_auth(TOKEN)
            .body(r#"[{"user": "u4", "page": "/f"}]"#);
        for h in headers {
            req = req.header("Weir-Record-Header", *h);
        }
        req.send().unwrap()
    };
    assert_eq!(post(&["source=web", "hop=1", "sampled"]).status().as_u16(), 200);
    let o = weir(dir.path(), &["log", "consume", "clicks"]);
    let f: Vec<J> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<J>(l).unwrap())
        .filter(|r| r["value"]["page"] == "/f")
        .collect();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["headers"], serde_json::json!([["source", "web"], ["hop", "1"], ["sampled", ""]]));
    serve.terminate();
}

#[test]
fn weir_serve_runs_the_stream_jobs_restarts_a_failing_one_and_takes_turns_with_builds() {
    let topics = "topics:\n  - name: orders\n    partitions: 2\n    key: country\n    \
        columns: {country: varchar, amount: double, ordered_at: timestamp}\n    \
        watermark: ordered_at - interval '1 second'\n";
    let revenue = "{{ config(checkpoint_interval='200ms') }}\n\
        select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
        from tumble({{ stream('orders') }}, ordered_at, interval '1 second')\n\
        group by country, window_start, window_end\n";
    let dir = minimal(&[
        ("streams/shop.yml", topics),
        ("streams/revenue.sql", revenue),
        // Its table exists with other columns: it fails until reset, and is started again.
        ("streams/broken.sql", "select country, amount from {{ stream('orders') }}\n"),
        ("streams/quiet.sql", "{{ config(enabled=false) }}\nselect country from {{ stream('orders') }}\n"),
        ("models/by_country.sql", "select country, sum(orders) as orders from {{ ref('revenue') }} group by country\n"),
    ]);
    let db = dir.path().join("t.duckdb");
    query(&db, "create table broken (x integer)");
    let serve = Serve::start(dir.path(), &[]);
    let events: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"country": "{}", "amount": 2.5, "ordered_at": "2026-12-01T10:00:{:02}.000Z"}}"#, ["DE", "FR"][i % 2], i))
        .collect();
    let answer = serve.call("POST", "/api/v1/topics/orders/records", Some(&format!("[{}]", events.join(", ")))).unwrap();
    assert_eq!(answer["offsets"].as_array().map(Vec::len), Some(40), "{answer}");

    wait(Duration::from_secs(60), "revenue to read every event", || {
        serve.call("GET", "/api/v1/streams/revenue", None).is_some_and(|j| j["events"]["read"] == 40 && j["state"] == "running")
    });
    let all = serve.call("GET", "/api/v1/streams", None).unwrap();
    let by = |name: &str| all.as_array().unwrap().iter().find(|j| j["name"] == name).cloned().unwrap();
    assert_eq!(by("revenue")["window"], "tumble 1s");
    assert_eq!(by("revenue")["sink"], "main.revenue");
    assert_eq!((by("quiet")["enabled"].clone(), by("quiet")["state"].clone()), (J::Bool(false), J::from("disabled")));
    wait(Duration::from_secs(30), "broken to be started again", || {
        serve.call("GET", "/api/v1/streams/broken", None).is_some_and(|j| j["restarts"].as_u64() >= Some(1))
    });
    let broken = serve.call("GET", "/api/v1/streams/broken", None).unwrap();
    assert!(broken["last_error"].as_str().unwrap().contains("has columns (x)"), "{broken}");
    let missing = serve.call("GET", "/api/v1/streams/nope", None).unwrap();
    assert!(missing["error"].as_str().unwrap().contains("jobs: broken, quiet, revenue"), "{missing}");

    // One runner per job: the server's.
    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(!o.status.success() && text(&o).contains("is running already (process"), "{}", text(&o));
    // A build in another process takes its turn at the DuckDB file between the job's writes,
    // leaves the job to the server and builds the model that refs its table.
    let o = weir(dir.path(), &["build", "--select", "revenue", "by_country"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK left to its running stream job revenue") && text(&o).contains("[RUNNING"), "{}", text(&o));
    let results = std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap();
    assert!(results.contains("kept up to date by its running job (process"), "{results}");
    serve.terminate();
    let totals = query(&db, "select sum(orders)::bigint from by_country");
    assert!(totals[0][0].parse::<u64>().unwrap() > 30, "{totals:?}");
    let o = weir(dir.path(), &["stream", "status", "revenue"]);
    assert!(text(&o).contains("revenue (stopped): ") && text(&o).contains("40 read = "), "{}", text(&o));
}
