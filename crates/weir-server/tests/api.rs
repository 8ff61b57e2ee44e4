//! The API over a real scheduler and a real SQLite store, through real HTTP: tokens, the
//! OpenAPI document, triggering with params, pausing, clearing a failed task, logs, events
//! sent to the event log, and the errors bad requests get.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value as J, json};
use tokio::sync::watch;
use weir_log::Log;
use weir_orchestrate::{Executor, Pipelines, Scheduler, Settings, WorkerHandle};
use weir_server::{AppState, Events, ServerConfig};
use weir_store::Store;

const TOKEN: &str = "test-token-1234";

struct Server {
    base: String,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::write(pipelines.join("hello.yml"), "params: {who: world}\ntasks:\n  greet:\n    shell: echo 'hello {{ params.who }}'\n")
            .unwrap();
        // Fails until the file `fixed` exists; `report` runs after it.
        std::fs::write(
            pipelines.join("flaky.yml"),
            "tasks:\n  check:\n    shell: test -f fixed\n  report:\n    shell: echo reported >> reports.txt\n    after: check\n",
        )
        .unwrap();
        let store = Arc::new(Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap());
        let worker = WorkerHandle::register(store.clone(), "scheduler").unwrap();
        let mut settings = Settings::new(dir.path().to_path_buf());
        settings.worker_id = Some(worker.id.clone());
        let exec = Executor::new(settings, store, Pipelines::load(&pipelines).unwrap(), |_| {}).unwrap();
        let scheduler = Scheduler::new(exec.clone(), worker).unwrap();
        std::fs::create_dir_all(dir.path().join("streams")).unwrap();
        std::fs::write(
            dir.path().join("streams/shop.yml"),
            "topics:\n  - name: orders\n    partitions: 2\n    key: customer_id\n    columns: {customer_id: bigint, amount: double}\n",
        )
        .unwrap();
        // A stream job that never ran: the API shows it all the same.
        let topics = weir_graph::streams::read_topics(dir.path()).unwrap();
        let job = weir_graph::stream_jobs::parse_job(
            std::path::Path::new("streams/spend.sql"),
            "select customer_id, sum(amount) as spent from {{ stream('orders') }} group by customer_id",
        )
        .unwrap();
        let run = weir_stream::job::JobRun::new(dir.path(), job, &topics, weir_core::Relation::new("t", "main", "spend"), vec![]).unwrap();
        let streams = weir_server::Streams { jobs: vec![run], states: Default::default() };
        let events = Events {
            logs: weir_log::Logs::new(dir.path().join(".weir/log"), None, Default::default()),
            topics: weir_graph::streams::read_topics(dir.path()).unwrap(),
        };
        let state = AppState {
            exec,
            config: Arc::new(config),
            wake: scheduler.waker(),
            worker_id: scheduler.worker_id().to_string(),
            events: Some(Arc::new(events)),
            streams: Some(Arc::new(streams)),
            assets: None,
            cdc: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let mut rx2 = rx.clone();
        tokio::spawn(async move { scheduler.run(rx).await });
        tokio::spawn(weir_server::serve(listener, state, async move {
            let _ = rx2.changed().await;
        }));
        Server { base, http: reqwest::Client::new(), stop, _dir: dir }
    }

    fn path(&self) -> &std::path::Path {
        self._dir.path()
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, J) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(J::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, J) {
        self.call("GET", path, Some(TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Option<&str>) -> (StatusCode, J) {
        self.call("POST", path, Some(TOKEN), body).await
    }

    /// Polls a run until it is in `state` (at most 20 s).
    async fn wait_for(&self, pipeline: &str, run_id: &str, state: &str) -> J {
        for _ in 0..200 {
            let (_, run) = self.get(&format!("/api/v1/pipelines/{pipeline}/runs/{run_id}")).await;
            if run["state"] == state {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {run_id} of {pipeline} never became {state}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn guarded() -> ServerConfig {
    ServerConfig { token: Some(TOKEN.into()), ..ServerConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_everything_but_health_and_the_document() {
    let s = Server::start(guarded()).await;
    let (status, health) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."), "{doc}");
    for path in ["/api/v1/pipelines", "/api/v1/pipelines/{pipeline}/runs", "/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/clear"]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let (status, body) = s.call("GET", "/api/v1/pipelines", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let (status, body) = s.call("POST", "/api/v1/pipelines/hello/runs", Some("wrong"), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("wrong token")));
    let (status, body) = s.get("/api/v1/pipelines").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), ["flaky", "hello"]);
    assert_eq!(s.get("/api/v1/nothing/here").await.0, StatusCode::NOT_FOUND);

    // Open reads: GET without a token, but writes still need it.
    let open = Server::start(ServerConfig { open_reads: true, ..guarded() }).await;
    assert_eq!(open.call("GET", "/api/v1/pipelines", None, None).await.0, StatusCode::OK);
    assert_eq!(open.call("POST", "/api/v1/pipelines/hello/pause", None, None).await.0, StatusCode::UNAUTHORIZED);
    // No token configured: nothing guarded is allowed, and the answer says how to fix it.
    let bare = Server::start(ServerConfig::default()).await;
    let (status, body) = bare.call("POST", "/api/v1/pipelines/hello/runs", Some("anything"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("WEIR_API_TOKEN"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggered_runs_run_with_their_params_and_bad_requests_are_refused() {
    let s = Server::start(guarded()).await;
    let (status, run) = s.post("/api/v1/pipelines/hello/runs", Some(r#"{"params": {"who": "api"}, "run_id": "first"}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!((run["state"].as_str(), run["params"]["who"].as_str()), (Some("queued"), Some("api")));
    let done = s.wait_for("hello", "first", "success").await;
    assert_eq!(done["tasks"][0]["task"], "greet");
    assert_eq!(done["tasks"][0]["state"], "success");
    let (status, log) = s.call("GET", "/api/v1/pipelines/hello/runs/first/tasks/greet/logs", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.as_str().unwrap_or("").contains("hello api"), "{log}");
    let (_, detail) = s.get("/api/v1/pipelines/hello/runs/first/tasks/greet").await;
    assert_eq!(detail["attempts"][0]["exit_code"], 0);

    // An empty body runs with the defaults.
    let (status, run) = s.post("/api/v1/pipelines/hello/runs", None).await;
    assert_eq!((status, run["params"]["who"].as_str()), (StatusCode::CREATED, Some("world")));

    let cases = [
        ("/api/v1/pipelines/hello/runs", r#"{"params": {"who": "x"}, "run_id": "first"}"#, StatusCode::CONFLICT, "already has a run"),
        ("/api/v1/pipelines/hello/runs", r#"{"params": {"whom": "x"}}"#, StatusCode::UNPROCESSABLE_ENTITY, "whom"),
        ("/api/v1/pipelines/hello/runs", r#"{"params": "#, StatusCode::BAD_REQUEST, "line 1 column"),
        ("/api/v1/pipelines/hello/runs", r#"{"parms": {}}"#, StatusCode::BAD_REQUEST, "unknown field `parms`"),
        ("/api/v1/pipelines/hello/runs", r#"{"date": "yesterday"}"#, StatusCode::BAD_REQUEST, "date"),
        ("/api/v1/pipelines/hello/runs", r#"[{"who": "x"}, null, null]"#, StatusCode::BAD_REQUEST, "JSON object"),
        ("/api/v1/pipelines/nope/runs", "{}", StatusCode::NOT_FOUND, "no pipeline 'nope'"),
        ("/api/v1/pipelines/hello/runs/none/tasks/greet/clear", "{}", StatusCode::NOT_FOUND, "no run 'none'"),
        ("/api/v1/pipelines/hello/runs/first/tasks/nope/clear", "{}", StatusCode::NOT_FOUND, "no task 'nope'"),
    ];
    for (path, body, want, says) in cases {
        let (status, reply) = s.post(path, Some(body)).await;
        assert_eq!(status, want, "{path} {body}: {reply}");
        assert!(reply["error"].as_str().unwrap_or("").contains(says), "{path} {body}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_has_each_run_with_its_tasks_runs_filter_by_time_and_logs_follow_from_an_offset() {
    let s = Server::start(guarded()).await;
    for id in ["one", "two"] {
        let (status, _) = s.post("/api/v1/pipelines/flaky/runs", Some(&format!(r#"{{"run_id": "{id}"}}"#))).await;
        assert_eq!(status, StatusCode::CREATED);
        s.wait_for("flaky", id, "failed").await;
    }
    // The tasks in the order they run, the newest runs first, each with its task instances.
    let (status, grid) = s.get("/api/v1/pipelines/flaky/grid?limit=5").await;
    assert_eq!(status, StatusCode::OK, "{grid}");
    let tasks: Vec<&str> = grid["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["check", "report"]);
    let cells: Vec<(String, Vec<String>)> = grid["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut states: Vec<String> = r["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| format!("{}={}", t["task"].as_str().unwrap(), t["state"].as_str().unwrap()))
                .collect();
            states.sort();
            (r["run_id"].as_str().unwrap().to_string(), states)
        })
        .collect();
    let expected = vec!["check=failed".to_string(), "report=upstream_failed".to_string()];
    assert_eq!(cells, [("two".to_string(), expected.clone()), ("one".to_string(), expected)]);
    let (_, one) = s.get("/api/v1/pipelines/flaky/grid?limit=1").await;
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);

    // Runs queued in a time window, in a state.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let ids = |runs: &J| runs.as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (_, none) = s.get(&format!("/api/v1/pipelines/flaky/runs?since={}", later.replace('+', "%2B"))).await;
    assert_eq!(ids(&none), Vec::<String>::new());
    let (_, both) = s.get(&format!("/api/v1/pipelines/flaky/runs?until={}&state=failed", later.replace('+', "%2B"))).await;
    assert_eq!(ids(&both), ["two", "one"]);
    let (_, day) = s.get("/api/v1/pipelines/flaky/grid?since=2000-01-01&until=2000-01-02").await;
    assert_eq!(day["runs"], serde_json::json!([]));
    let (status, e) = s.get("/api/v1/pipelines/flaky/runs?since=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().starts_with("since:"), "{e}");

    // A log from a byte on, with its whole size in a header.
    let log = |offset: &str| {
        let url = format!("{}/api/v1/pipelines/flaky/runs/one/tasks/check/logs{offset}", s.base);
        let http = s.http.clone();
        async move {
            let r = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
            let size = r.headers().get("weir-log-size").map(|v| v.to_str().unwrap().to_string());
            (r.status(), size, r.text().await.unwrap())
        }
    };
    let (status, size, whole) = log("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(size, Some(whole.len().to_string()));
    assert!(!whole.is_empty());
    let (_, _, rest) = log("?offset=3").await;
    assert_eq!(rest, whole[3..]);
    let (_, _, nothing) = log(&format!("?offset={}", whole.len() + 100)).await;
    assert_eq!(nothing, "");
    let (status, _, _) = log("?offset=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A run retried in one step: its failed tasks, and what runs after them, cleared.
    std::fs::write(s.path().join("fixed"), "").unwrap();
    let (status, cleared) = s.post("/api/v1/pipelines/flaky/runs/one/clear", None).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["cleared"], serde_json::json!(["check", "report"]));
    s.wait_for("flaky", "one", "success").await;
    let (status, e) = s.post("/api/v1/pipelines/flaky/runs/one/clear", Some("{}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("no failed task"), "{e}");
    let (status, all) = s.post("/api/v1/pipelines/flaky/runs/one/clear", Some(r#"{"only_failed": false}"#)).await;
    assert_eq!((status, &all["cleared"]), (StatusCode::OK, &serde_json::json!(["check", "report"])));
    s.wait_for("flaky", "one", "success").await;
    let (status, _) = s.post("/api/v1/pipelines/flaky/runs/one/clear", Some(r#"{"only": true}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_pipelines_hold_their_runs_and_a_cleared_task_runs_again() {
    let s = Arc::new(Server::start(guarded()).await);
    let (_, p) = s.post("/api/v1/pipelines/flaky/pause", None).await;
    assert_eq!(p["paused"], true);
    assert_eq!(s.post("/api/v1/pipelines/flaky/runs", Some(r#"{"run_id": "r1"}"#)).await.0, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.get("/api/v1/pipelines/flaky/runs/r1").await.1["state"], "queued", "a paused pipeline's run waits");
    let (_, p) = s.post("/api/v1/pipelines/flaky/unpause", None).await;
    assert_eq!(p["paused"], false);
    let failed = s.wait_for("flaky", "r1", "failed").await;
    let states: Vec<(String, String)> = failed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task"].as_str().unwrap().to_string(), t["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, [("check".into(), "failed".into()), ("report".into(), "upstream_failed".into())]);

    let (_, first) = s.get("/api/v1/pipelines/flaky/runs/r1/tasks/check").await;
    std::fs::write(s.path().join("fixed"), "").unwrap();
    // Twenty clears at once: one clears and queues the run, the others find it queued. The
    // pipeline is paused meanwhile so the rerun cannot finish before a late clear arrives.
    assert_eq!(s.post("/api/v1/pipelines/flaky/pause", None).await.1["paused"], true);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        calls.spawn(async move { s.post("/api/v1/pipelines/flaky/runs/r1/tasks/check/clear", Some(r#"{"downstream": true}"#)).await });
    }
    let mut answers = vec![];
    while let Some(r) = calls.join_next().await {
        answers.push(r.unwrap());
    }
    let ok: Vec<&J> = answers.iter().filter(|(status, _)| *status == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(ok.len(), 1, "{answers:?}");
    assert_eq!(ok[0]["cleared"], json!(["check", "report"]));
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK || *status == StatusCode::CONFLICT), "{answers:?}");
    assert_eq!(s.post("/api/v1/pipelines/flaky/unpause", None).await.1["paused"], false);
    let done = s.wait_for("flaky", "r1", "success").await;
    assert_eq!(done["tasks"][0]["try_number"], 2, "the rerun is the task's next attempt");
    assert_eq!(std::fs::read_to_string(s.path().join("reports.txt")).unwrap(), "reported\n");
    // The first attempt keeps its record and its log; the rerun has its own.
    let (_, detail) = s.get("/api/v1/pipelines/flaky/runs/r1/tasks/check").await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert_eq!((attempts[0]["state"].as_str(), attempts[1]["state"].as_str()), (Some("failed"), Some("success")), "{detail}");
    assert_eq!(attempts[0], first["attempts"][0], "the first attempt's record is as it was");
    let log = |n: u32| {
        let s = s.clone();
        async move {
            s.get(&format!("/api/v1/pipelines/flaky/runs/r1/tasks/check/logs?attempt={n}")).await.1.as_str().unwrap_or_default().to_string()
        }
    };
    let (one, two) = (log(1).await, log(2).await);
    assert!(one.contains("attempt 1 ended") && !one.contains("attempt 2"), "{one}");
    assert!(two.contains("attempt 2 ended") && !two.contains("attempt 1"), "{two}");
    let (_, runs) = s.get("/api/v1/pipelines/flaky/runs?state=success").await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let (_, workers) = s.get("/api/v1/workers").await;
    assert_eq!(workers[0]["kind"], "scheduler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_triggers_never_collide_and_each_run_keeps_its_own_log() {
    let s = Arc::new(Server::start(guarded()).await);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        calls.spawn(async move { s.post("/api/v1/pipelines/hello/runs", None).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(r) = calls.join_next().await {
        let (status, run) = r.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{run}");
        ids.insert(run["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20, "{ids:?}");

    // Ids that differ only where a folder name could not hold them: each run its own log.
    for (id, who) in [("coll:x", "colon"), ("coll_x", "underscore"), ("coll x", "space")] {
        let body = json!({"run_id": id, "params": {"who": who}}).to_string();
        assert_eq!(s.post("/api/v1/pipelines/hello/runs", Some(&body)).await.0, StatusCode::CREATED);
    }
    for (id, who) in [("coll:x", "colon"), ("coll_x", "underscore"), ("coll x", "space")] {
        let path = id.replace(':', "%3A").replace(' ', "%20");
        s.wait_for("hello", &path, "success").await;
        let (_, log) = s.get(&format!("/api/v1/pipelines/hello/runs/{path}/tasks/greet/logs")).await;
        let log = log.as_str().unwrap_or_default().to_string();
        let said: Vec<&str> = log.lines().filter(|l| l.starts_with("hello ")).collect();
        assert_eq!(said, [format!("hello {who}")], "{id}: {log}");
    }
    // Ids that would leave their folder, end every attempt, or forge log lines are refused.
    for bad in [".", "..", "nul\u{0}", "forged\n[weir] line", "a/b"] {
        let body = json!({ "run_id": bad }).to_string();
        let (status, err) = s.post("/api/v1/pipelines/hello/runs", Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {err}");
        assert!(err["error"].as_str().unwrap_or_default().starts_with("run_id: "), "{err}");
    }
    let logs = std::fs::read_dir(s.path().join(".weir/logs")).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert_eq!(logs, ["hello"], "every log stays under its pipeline's folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheme_is_case_insensitive_health_tells_no_path_and_limits_are_checked() {
    let s = Server::start(guarded()).await;
    let resp = s.http.get(format!("{}/api/v1/pipelines", s.base)).header("authorization", format!("bearer {TOKEN}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, health) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(health["store"], "sqlite", "{health}");
    assert!(!health.to_string().contains(&s.path().display().to_string()), "{health}");
    for limit in ["0", "1001"] {
        let (status, err) = s.get(&format!("/api/v1/pipelines/hello/runs?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limit}: {err}");
        assert!(err["error"].as_str().unwrap_or_default().contains("limit must be from 1 to 1000"), "{err}");
    }
    assert_eq!(s.get("/api/v1/pipelines/hello/runs?limit=1000").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_says_what_the_server_does_and_every_error_is_json() {
    let s = Server::start(guarded()).await;
    let (_, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    let params = |path: &str, method: &str| doc["paths"][path][method]["parameters"].as_array().cloned().unwrap_or_default();
    for (path, name) in [
        ("/api/v1/pipelines/{pipeline}/runs", "limit"),
        ("/api/v1/pipelines/{pipeline}/runs", "state"),
        ("/api/v1/pipelines/{pipeline}/runs/{run_id}/tasks/{task}/logs", "attempt"),
    ] {
        let p = params(path, "get").into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name} missing from {path}"));
        assert_eq!((p["in"].as_str(), p["required"].as_bool()), (Some("query"), Some(false)), "{name}: {p}");
    }
    let mut guarded = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let open = path == "/api/v1/health" || path == "/api/v1/openapi.json";
            assert_eq!(op["responses"].get("401").is_some(), !open, "{method} {path}");
            guarded += usize::from(!open);
            if let Some(body) = op.get("requestBody") {
                assert_eq!(body["required"], false, "{method} {path}: an empty body is accepted");
            }
        }
    }
    assert_eq!(guarded, 23);
    let (status, jobs) = s.get("/api/v1/streams").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs[0]["name"], "spend", "{jobs}");
    assert_eq!((jobs[0]["state"].as_str(), jobs[0]["window"].as_str()), (Some("never run"), Some("none (running per key)")), "{jobs}");
    let (status, err) = s.get("/api/v1/streams/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap_or_default().contains("(jobs: spend)"), "{err}");

    let mut bad = vec![];
    bad.push(s.get("/api/v1/pipelines/hello/runs?limit=many").await);
    let resp = s.http.delete(format!("{}/api/v1/pipelines", s.base)).bearer_auth(TOKEN).send().await.unwrap();
    let status = resp.status();
    bad.push((status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(J::Null)));
    let big = format!("{{\"params\": {{\"who\": \"{}\"}}}}", "x".repeat(3 << 20));
    bad.push(s.post("/api/v1/pipelines/hello/runs", Some(&big)).await);
    let statuses: Vec<StatusCode> = bad.iter().map(|(st, _)| *st).collect();
    assert_eq!(statuses, [StatusCode::BAD_REQUEST, StatusCode::METHOD_NOT_ALLOWED, StatusCode::PAYLOAD_TOO_LARGE]);
    for (status, body) in &bad {
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{status}: {body}");
    }
}

/// A client that connects and sends nothing, stops inside a request's head or inside its
/// body, or keeps a connection idle after a response, is cut off after the read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_after_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_millis(600);
    let server = Server::start(ServerConfig { read_timeout: timeout, ..guarded() }).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let body_head = format!(
        "POST /api/v1/pipelines/hello/runs HTTP/1.1\r\nHost: weir\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"params\""
    );
    let cases = [
        ("nothing sent", String::new(), None),
        ("mid-header", "GET /api/v1/health HTTP/1.1\r\nHost: weir\r\n".to_string(), None),
        ("mid-body", body_head, Some("HTTP/1.1 408")),
        ("idle after a response", "GET /api/v1/health HTTP/1.1\r\nHost: weir\r\n\r\n".to_string(), Some("HTTP/1.1 200")),
    ];
    for (what, sent, reply_starts) in cases {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(sent.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut reply = vec![];
        let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut reply)).await;
        let elapsed = started.elapsed();
        assert!(read.is_ok(), "{what}: the connection is still open after 20 s");
        assert!(elapsed >= timeout / 2, "{what}: closed after {elapsed:?}, before the timeout");
        let reply = String::from_utf8_lossy(&reply);
        match reply_starts {
            Some(start) => assert!(reply.starts_with(start), "{what}: {reply}"),
            None => assert!(!reply.contains(" 200 "), "{what}: {reply}"),
        }
    }
}

/// schemathesis (`scripts/install-schemathesis.sh`) generates requests from the served
/// document, valid and invalid ones, single and in sequences that follow the document's
/// links, and holds every answer to the document with all its checks. Any failure fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_over_http_land_in_the_log_keyed_and_durable() {
    let server = Server::start(guarded()).await;
    let events = json!([
        {"order_id": 1, "customer_id": "c1", "amount": 10},
        {"order_id": 2, "customer_id": "c2", "amount": 20},
        {"order_id": 3, "customer_id": "c1", "amount": 30},
    ]);
    let (status, body) = server.post("/api/v1/topics/orders/records", Some(&events.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offsets = body["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    assert_eq!(offsets[0]["partition"], offsets[2]["partition"], "one customer's events share a partition");
    assert!(offsets[2]["offset"].as_u64().unwrap() > offsets[0]["offset"].as_u64().unwrap(), "and keep their order");

    // What the server appended, another handle on the same folder reads (as `weir log consume` does).
    let log = weir_log::EmbeddedLog::open(&server.path().join(".weir/log")).unwrap();
    let p = offsets[0]["partition"].as_u64().unwrap() as u32;
    let got = log.read("orders", p, 0, 10).unwrap();
    assert_eq!(got[0].key.as_deref(), Some(&b"c1"[..]));
    let first: J = serde_json::from_slice(&got[0].value).unwrap();
    assert_eq!(first["order_id"], 1);

    let (status, body) = server.post("/api/v1/topics/nope/records", Some("[{}]")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap().contains("declare it in streams/*.yml"));
    let (status, _) = server.post("/api/v1/topics/orders/records", Some(r#"{"order_id": 1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.post("/api/v1/topics/orders/records", Some("[1,")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = server.post("/api/v1/topics/orders/records", None).await;
    assert_eq!((status, body["offsets"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "an empty body appends nothing");
    let (status, _) = server.call("POST", "/api/v1/topics/orders/records", None, Some("[{}]")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_that_disagrees_with_the_document() {
    let s = Server::start(guarded()).await;
    schemathesis(&s, "/api/v1/openapi.json", "/api/v1/openapi.json").await;
}

/// The same for the schema registry's document, whose paths are under `/registry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_that_disagrees_with_the_registry_document() {
    let s = Server::start(guarded()).await;
    schemathesis(&s, "/registry/openapi.json", "/registry").await;
}

/// Runs schemathesis with every check on the document at `doc`, sending requests to `base`
/// (a path on the server), and fails with its report if it finds anything.
async fn schemathesis(s: &Server, doc: &str, base: &str) {
    let venv = std::env::var("WEIR_SCHEMATHESIS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/schemathesis-venv"));
    let st = venv.join("bin/st");
    assert!(st.exists(), "schemathesis is not installed at {}; run scripts/install-schemathesis.sh", st.display());
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // More examples find more (WEIR_SCHEMATHESIS_EXAMPLES=1000 for a long run); 40 keeps the
    // suite quick and still covers every operation, link and check.
    let examples = std::env::var("WEIR_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    // A fixed seed keeps the suite's requests the same from run to run; set
    // WEIR_SCHEMATHESIS_SEED (with more examples) to explore others.
    let seed = std::env::var("WEIR_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".into());
    let mut run = tokio::process::Command::new(&st);
    run.arg("--config-file").arg(&config).args(["run", &format!("{}{doc}", s.base), "--checks", "all", "--max-examples", &examples]);
    if base != doc {
        run.args(["--url", &format!("{}{base}", s.base)]);
    }
    let out = run
        .args(["--seed", &seed, "--workers", "1"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .env("NO_COLOR", "1")
        .current_dir(s.path())
        .output()
        .await
        .unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis failed:\n{report}");
}
