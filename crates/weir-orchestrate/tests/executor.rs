//! The executor against real processes: shell tasks in a temporary project, state in a real
//! SQLite store.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value as J};
use weir_orchestrate::{Event, Executor, Pipelines, RunRequest, Settings, TaskState};
use weir_store::Store;

struct Project {
    dir: tempfile::TempDir,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Project {
    fn new(files: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("pipelines").join(name), text).unwrap();
        }
        Project { dir, events: Arc::new(Mutex::new(Vec::new())) }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> Arc<Store> {
        Arc::new(Store::sqlite(&self.path().join(".weir/weir.db")).unwrap())
    }

    fn executor(&self, tune: impl FnOnce(&mut Settings)) -> Executor {
        let mut settings = Settings::new(self.path().to_path_buf());
        tune(&mut settings);
        let pipelines = Pipelines::load(&self.path().join("pipelines")).unwrap();
        let events = self.events.clone();
        Executor::new(settings, self.store(), pipelines, move |e| events.lock().unwrap().push(e.clone())).unwrap()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path().join(file)).unwrap_or_default()
    }
}

fn run(exec: &Executor, pipeline: &str, req: RunRequest) -> weir_orchestrate::RunOutcome {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(exec.run(pipeline, req)).unwrap()
}

/// Whether a process is running (a zombie waiting for its parent is not).
fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

fn state_of(out: &weir_orchestrate::RunOutcome, task: &str) -> TaskState {
    out.tasks.iter().find(|(t, _)| t == task).map(|(_, s)| *s).unwrap_or(TaskState::None)
}

#[test]
fn tasks_run_in_order_pass_values_and_see_their_interval() {
    let p = Project::new(&[(
        "daily.yml",
        r#"schedule: '@daily'
timezone: Europe/Amsterdam
params: {region: eu}
tasks:
  count:
    shell: echo 41
  stats:
    shell: |
      echo '{"rows": 7, "max": "2024-03-01"}' > "$WEIR_XCOM"
  report:
    shell: |
      echo "{{ ds }} {{ params.region }} {{ xcom('count') | int + 1 }} {{ xcom('stats', 'rows') }} $WEIR_DS $GREETING" > report.txt
    after: [count, stats]
    env: {GREETING: 'hi {{ ds_nodash }}'}
"#,
    )]);
    let exec = p.executor(|_| {});
    let start = chrono::DateTime::parse_from_rfc3339("2024-02-29T23:00:00Z").unwrap().to_utc();
    let interval = weir_orchestrate::DataInterval { start, end: start + chrono::Duration::days(1) };
    let mut params = Map::new();
    params.insert("region".into(), J::from("us"));
    let out = run(&exec, "daily", RunRequest { run_type: "manual".into(), interval: Some(interval), params, ..Default::default() });
    assert_eq!(out.state, "success", "{:?}", out.tasks);
    assert_eq!(p.read("report.txt").trim(), "2024-03-01 us 42 7 2024-03-01 hi 20240301");
    let store = p.store();
    let tis = store.task_instances("daily", &out.run_id).unwrap();
    assert!(tis.iter().all(|t| t.state == "success" && t.try_number == 1), "{tis:?}");
    let run = store.pipeline_run("daily", &out.run_id).unwrap().unwrap();
    assert_eq!((run.state.as_str(), run.interval_start), ("success", Some(start)));
    assert!(run.params.contains("\"us\""));
    // The log of each attempt is on disk and its tail in the store.
    let attempts = store.task_attempts("daily", &out.run_id, "count").unwrap();
    assert_eq!(attempts[0].log_tail.as_deref().map(|t| t.contains("41")), Some(true));
    assert!(Path::new(attempts[0].log_path.as_deref().unwrap()).exists());
}

#[test]
fn failures_are_retried_with_growing_delays_then_succeed() {
    // Fails on its first two attempts, succeeds on the third.
    let p = Project::new(&[(
        "flaky.yml",
        "tasks:\n  flaky:\n    shell: echo x >> tries; test $(wc -l < tries) -ge 3\n    retries: 3\n    retry_delay: 200ms\n    retry_backoff: 2\n    retry_jitter: false\n",
    )]);
    let exec = p.executor(|_| {});
    let out = run(&exec, "flaky", RunRequest::default());
    assert_eq!(out.state, "success");
    let attempts = p.store().task_attempts("flaky", &out.run_id, "flaky").unwrap();
    let states: Vec<&str> = attempts.iter().map(|a| a.state.as_str()).collect();
    assert_eq!(states, vec!["failed", "failed", "success"]);
    assert_eq!(attempts[0].exit_code, Some(1));
    let gap = |i: usize| (attempts[i + 1].started_at - attempts[i].finished_at.unwrap()).num_milliseconds();
    assert!(gap(0) >= 200 && gap(1) >= 400, "retry delays {} ms then {} ms", gap(0), gap(1));
    let retries = p.events.lock().unwrap().iter().filter(|e| matches!(e, Event::TaskRetrying { .. })).count();
    assert_eq!(retries, 2);
}

#[test]
fn a_timeout_kills_the_task_and_its_children() {
    let p = Project::new(&[("slow.yml", "tasks:\n  slow:\n    shell: sleep 30 & echo $! > child.pid; sleep 30\n    timeout: 500ms\n")]);
    let exec = p.executor(|_| {});
    let started = std::time::Instant::now();
    let out = run(&exec, "slow", RunRequest::default());
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout did not stop the task");
    assert_eq!(out.state, "failed");
    let ti = &p.store().task_instances("slow", &out.run_id).unwrap()[0];
    assert!(ti.message.as_deref().unwrap_or_default().contains("timed out after"), "{ti:?}");
    let pid: i32 = p.read("child.pid").trim().parse().unwrap();
    // The background child was in the task's process group, so it is gone too.
    assert!(!alive(pid), "the task's child {pid} outlived the timeout");
}

#[test]
fn a_timeout_ends_the_run_when_a_descendant_left_the_group_holding_the_output() {
    // `setsid` takes the child out of the task's process group, and it keeps the task's
    // output pipe open: neither may hold the run past the timeout.
    let p = Project::new(&[(
        "escape.yml",
        "tasks:\n  slow:\n    shell: setsid sleep 30 & echo $! > child.pid; echo started; sleep 30\n    timeout: 500ms\n",
    )]);
    let exec = p.executor(|_| {});
    let started = std::time::Instant::now();
    let out = run(&exec, "escape", RunRequest::default());
    assert!(started.elapsed() < Duration::from_secs(10), "the run waited {:?} on the task's output", started.elapsed());
    assert_eq!(state_of(&out, "slow"), TaskState::Failed, "{out:?}");
    let ti = &p.store().task_instances("escape", &out.run_id).unwrap()[0];
    assert!(ti.message.as_deref().unwrap_or_default().contains("timed out after"), "{ti:?}");
    let run_dir = std::fs::read_dir(p.path().join(".weir/logs/escape")).unwrap().next().unwrap().unwrap().path();
    let log = std::fs::read_to_string(run_dir.join("slow/attempt-1.log")).unwrap_or_default();
    assert!(log.contains("started"), "output before the timeout is kept: {log}");
    // The escaped child was still a descendant of the task, so it was killed too.
    let pid: i32 = p.read("child.pid").trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(pid), "the escaped child {pid} outlived the timeout");
}

#[test]
fn trigger_rules_decide_what_runs_after_a_failure() {
    let p = Project::new(&[(
        "rules.yml",
        "tasks:\n  extract: {shell: exit 3}\n  other: {shell: 'true'}\n\
         \x20 transform: {shell: touch transformed, after: extract}\n\
         \x20 report: {shell: touch reported, after: transform}\n\
         \x20 cleanup: {shell: touch cleaned, after: [extract, other], trigger_rule: all_done}\n\
         \x20 alert: {shell: touch alerted, after: [extract, other], trigger_rule: one_failed}\n\
         \x20 happy: {shell: touch happy, after: [extract, other], trigger_rule: none_failed}\n",
    )]);
    let exec = p.executor(|_| {});
    let out = run(&exec, "rules", RunRequest::default());
    assert_eq!(out.state, "failed");
    assert_eq!(state_of(&out, "extract"), TaskState::Failed);
    assert_eq!(state_of(&out, "transform"), TaskState::UpstreamFailed);
    assert_eq!(state_of(&out, "report"), TaskState::UpstreamFailed);
    assert_eq!(state_of(&out, "cleanup"), TaskState::Success);
    assert_eq!(state_of(&out, "alert"), TaskState::Success);
    assert_eq!(state_of(&out, "happy"), TaskState::UpstreamFailed);
    assert!(!p.path().join("transformed").exists() && p.path().join("cleaned").exists() && p.path().join("alerted").exists());
    let run = p.store().pipeline_run("rules", &out.run_id).unwrap().unwrap();
    assert!(run.message.unwrap_or_default().contains("extract"));
}

#[test]
fn a_waiting_sensor_holds_no_slot() {
    // One slot in all: if the sensor kept it while waiting, `arrive` could never run and the
    // sensor would time out. `arrive` starts after `kick`, when the sensor has already asked
    // for the slot (slots are given in order), so the sensor always looks before the file exists.
    let p = Project::new(&[(
        "wait.yml",
        "tasks:\n  wait:\n    sensor: {file: 'inbox/*.csv'}\n    poke_interval: 100ms\n    timeout: 20s\n\
         \x20 kick: {shell: 'sleep 0.2'}\n\
         \x20 arrive: {shell: 'mkdir -p inbox; touch inbox/orders.csv', after: kick}\n\
         \x20 process: {shell: 'echo {{ xcom(\"wait\", \"path\") }} > found', after: wait}\n",
    )]);
    let exec = p.executor(|s| s.parallelism = 1);
    let out = run(&exec, "wait", RunRequest::default());
    assert_eq!(out.state, "success", "{:?}", out.tasks);
    assert!(p.read("found").trim().ends_with("inbox/orders.csv"));
    let waits = p.events.lock().unwrap().iter().filter(|e| matches!(e, Event::SensorWaiting { .. })).count();
    assert!(waits >= 1, "the sensor never waited");
    // All pokes were one attempt.
    assert_eq!(p.store().task_attempts("wait", &out.run_id, "wait").unwrap().len(), 1);
}

#[test]
fn a_sensor_that_never_sees_its_condition_times_out() {
    let p =
        Project::new(&[("never.yml", "tasks:\n  wait:\n    sensor: {file: nothing.csv}\n    poke_interval: 50ms\n    timeout: 300ms\n")]);
    let out = run(&p.executor(|_| {}), "never", RunRequest::default());
    assert_eq!(out.state, "failed");
    let ti = &p.store().task_instances("never", &out.run_id).unwrap()[0];
    assert!(ti.message.as_deref().unwrap_or_default().contains("sensor timed out after waiting"), "{ti:?}");
}

#[test]
fn a_rerun_resumes_where_the_run_failed_and_a_done_run_is_not_repeated() {
    let p = Project::new(&[(
        "resume.yml",
        "tasks:\n  a: {shell: echo a >> ran}\n  b: {shell: 'echo b >> ran; test -f ready', after: a}\n  c: {shell: echo c >> ran, after: b}\n",
    )]);
    let exec = p.executor(|_| {});
    let req = RunRequest { run_type: "manual".into(), run_id: Some("manual__fixed".into()), ..Default::default() };
    let first = run(&exec, "resume", req.clone());
    assert_eq!(first.state, "failed");
    std::fs::write(p.path().join("ready"), "").unwrap();
    let second = run(&exec, "resume", req.clone());
    assert_eq!(second.state, "success");
    assert_eq!(p.read("ran"), "a\nb\nb\nc\n", "a ran once; b was retried by the rerun");
    let b = p.store().task_attempts("resume", "manual__fixed", "b").unwrap();
    assert_eq!(b.iter().map(|a| a.attempt).collect::<Vec<_>>(), vec![1, 2], "attempts count on across reruns");
    let third = run(&exec, "resume", req);
    assert!(third.already_done);
    assert_eq!(p.read("ran"), "a\nb\nb\nc\n");
}

#[test]
fn megabytes_of_output_are_capped_in_the_log() {
    let p = Project::new(&[("loud.yml", "tasks:\n  loud: {shell: 'head -c 5000000 /dev/zero | tr \"\\\\0\" x; echo; echo done'}\n")]);
    let exec = p.executor(|s| s.max_log_bytes = 100_000);
    let out = run(&exec, "loud", RunRequest::default());
    assert_eq!(out.state, "success");
    let a = &p.store().task_attempts("loud", &out.run_id, "loud").unwrap()[0];
    let size = std::fs::metadata(a.log_path.as_deref().unwrap()).unwrap().len();
    assert!(size < 101_000, "log is {size} bytes");
    let tail = a.log_tail.clone().unwrap_or_default();
    assert!(tail.contains("done") && tail.contains("were not kept"), "{}", &tail[tail.len().saturating_sub(300)..]);
}

#[test]
fn a_value_past_the_limit_fails_the_task_clearly() {
    let p = Project::new(&[(
        "big.yml",
        "tasks:\n  big: {shell: 'printf \"{\\\"blob\\\": \\\"%s\\\"}\" $(head -c 3000 /dev/zero | tr \"\\\\0\" x) > \"$WEIR_XCOM\"'}\n",
    )]);
    let exec = p.executor(|s| s.xcom_max_bytes = 1000);
    let out = run(&exec, "big", RunRequest::default());
    assert_eq!(out.state, "failed");
    let ti = &p.store().task_instances("big", &out.run_id).unwrap()[0];
    let m = ti.message.clone().unwrap_or_default();
    assert!(m.contains("the value 'blob' is 2.9 KiB") && m.contains("limited to 1000 B"), "{m}");
}

#[test]
fn a_pipeline_task_runs_the_other_pipeline_for_the_same_interval() {
    let p = Project::new(&[
        (
            "parent.yml",
            "schedule: '@daily'\ntasks:\n  child: {pipeline: child, params: {who: 'parent {{ ds }}'}}\n  after: {shell: touch after, after: child}\n",
        ),
        ("child.yml", "params: {who: nobody}\ntasks:\n  greet: {shell: 'echo \"{{ params.who }} {{ ds }}\" > greeting'}\n"),
    ]);
    let exec = p.executor(|_| {});
    let start = chrono::DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z").unwrap().to_utc();
    let interval = weir_orchestrate::DataInterval { start, end: start + chrono::Duration::days(1) };
    let out = run(&exec, "parent", RunRequest { interval: Some(interval), ..Default::default() });
    assert_eq!(out.state, "success", "{:?}", out.tasks);
    assert_eq!(p.read("greeting").trim(), "parent 2024-05-01 2024-05-01");
    assert!(p.path().join("after").exists());
    assert_eq!(p.store().pipeline_runs(Some("child"), 10).unwrap().len(), 1);
}

#[test]
fn cancelling_a_run_kills_its_tasks_and_records_it() {
    let p = Project::new(&[("long.yml", "tasks:\n  long: {shell: 'echo $$ > pid; sleep 60'}\n")]);
    let exec = p.executor(|_| {});
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let e2 = exec.clone();
    let out = rt.block_on(async move {
        let handle = tokio::spawn(async move { e2.run("long", RunRequest::default()).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        exec.cancel();
        handle.await.unwrap().unwrap()
    });
    assert_eq!(out.state, "failed");
    let run = p.store().pipeline_run("long", &out.run_id).unwrap().unwrap();
    assert_eq!(run.message.as_deref(), Some("interrupted"));
    let pid = p.read("pid").trim().to_string();
    std::thread::sleep(Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the task's process {pid} survived the cancel");
}

/// Requests an HTTP receiver got: path and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP receiver on a free port: records each request's path and body; answers 500 to
/// the first request and 200 after.
fn receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = first.split_whitespace().nth(1).unwrap_or_default().to_string();
            seen.lock().unwrap().push((path, String::from_utf8_lossy(&body).into_owned()));
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, got)
}

/// A minimal SMTP server on a free port: records each message's data.
fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = mails.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = write!(stream, "220 test ESMTP\r\n");
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => {
                        let _ = write!(stream, "250 test\r\n");
                    }
                    "DATA" => {
                        let _ = write!(stream, "354 go ahead\r\n");
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        kept.lock().unwrap().push(data);
                        let _ = write!(stream, "250 queued\r\n");
                    }
                    "QUIT" => {
                        let _ = write!(stream, "221 bye\r\n");
                        break;
                    }
                    _ => {
                        let _ = write!(stream, "250 OK\r\n");
                    }
                }
            }
        }
    });
    (port, mails)
}

#[test]
fn alerts_reach_a_webhook_and_a_mailbox_and_a_dead_endpoint_blocks_nothing() {
    let (hook, hooked) = receiver();
    let (smtp, mails) = smtp_server();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = Project::new(&[(
        "alerting.yml",
        &format!(
            "deadline: 300ms\nalerts:\n\
             \x20 - on: [failure, retry, success, deadline]\n    webhook: 'http://127.0.0.1:{hook}/hook/{{{{ pipeline }}}}'\n\
             \x20 - on: failure\n    email: {{to: [oncall@example.com], from: weir@example.com, smtp: 'smtp://127.0.0.1:{smtp}'}}\n\
             \x20 - on: failure\n    webhook: 'http://127.0.0.1:{dead}/down/secret-key'\n\
             tasks:\n  slow: {{shell: sleep 0.6}}\n  flaky: {{shell: echo broken; exit 1, retries: 1, retry_delay: 50ms, retry_jitter: false}}\n"
        ),
    )]);
    let exec = p.executor(|_| {});
    let out = run(&exec, "alerting", RunRequest::default());
    assert_eq!(out.state, "failed");
    assert_eq!(state_of(&out, "slow"), TaskState::Success, "tasks ran while alerts were retried");

    let hooked = hooked.lock().unwrap().clone();
    let events: Vec<String> =
        hooked.iter().map(|(_, b)| serde_json::from_str::<J>(b).unwrap()["event"].as_str().unwrap().to_string()).collect();
    // The first POST got a 500 and was sent again.
    for e in ["retry", "failure", "deadline"] {
        assert!(events.iter().any(|x| x == e), "no {e} alert in {events:?}");
    }
    assert!(!events.iter().any(|x| x == "success"), "the run failed: {events:?}");
    assert!(hooked.iter().all(|(path, _)| path == "/hook/alerting"), "{hooked:?}");
    let failure: J = hooked.iter().map(|(_, b)| serde_json::from_str::<J>(b).unwrap()).find(|j| j["event"] == "failure").unwrap();
    assert_eq!(failure["task"], "flaky");
    assert!(failure["text"].as_str().unwrap().contains("task flaky failed: failed: exited with code 1"), "{failure}");

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: oncall@example.com") && mails[0].contains("task flaky failed"), "{}", mails[0]);

    let recorded = p.store().alerts("alerting", &out.run_id).unwrap();
    let down = recorded.iter().find(|a| a.channel.contains(&dead.to_string())).unwrap();
    assert_eq!((down.status.as_str(), down.attempts), ("failed", 4));
    assert!(!down.channel.contains("secret-key"), "the webhook's path is not recorded: {}", down.channel);
    assert!(recorded.iter().filter(|a| a.status == "sent").count() >= 4, "{recorded:?}");
}
