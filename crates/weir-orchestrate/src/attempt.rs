//! One attempt of one task: start what it does, capture its output to a log, enforce its
//! timeout, and say how it ended.
//!
//! Processes (shell commands, and `weir build|load|sql` for the warehouse kinds) run in a
//! process group of their own, with stdout and stderr merged into one pipe as a terminal
//! would show them. A timeout, or the run being cancelled, kills the whole group, so a
//! command's own children die with it. Output is written to the attempt's log file up to a
//! size limit (the rest is counted, not kept) and its last lines are kept for the store.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as J};

use crate::executor::{Settings, sleep_until};
use crate::spec::{Condition, HttpCall, Task, TaskKind};
use crate::template::Renderer;

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done; the named JSON values it published.
    Success {
        published: Vec<(String, J)>,
    },
    Failed {
        message: String,
        exit_code: Option<i32>,
    },
    /// Killed after running this long.
    TimedOut(Duration),
    /// A sensor whose condition does not hold yet, and what it saw.
    NotYet(String),
}

/// What an attempt needs besides the task.
pub(crate) struct Attempt<'a> {
    pub settings: &'a Settings,
    pub renderer: &'a Renderer,
    pub task: &'a Task,
    /// Where this attempt's scratch files go (the log's folder).
    pub dir: PathBuf,
    pub number: u32,
    /// Told the process (group) id of each process the attempt starts, as it starts, so
    /// that crash recovery can kill what a dead worker left running.
    pub on_spawn: &'a (dyn Fn(u32) + Send + Sync),
}

impl Attempt<'_> {
    /// Runs the attempt, writing its output to `log`. `limit` bounds how long it may run.
    pub async fn run(&self, log: &mut Log, limit: Option<Duration>) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = match &self.task.kind {
            TaskKind::Shell { command } => self.shell(command, log, limit).await,
            TaskKind::Build { select, exclude, full_refresh } => {
                let mut args = vec!["build".to_string(), "--select".into()];
                match select.iter().map(|s| self.render(s)).collect::<Result<Vec<_>, _>>() {
                    Ok(s) => args.extend(s),
                    Err(e) => return Outcome::Failed { message: format!("cannot render the selection: {e}"), exit_code: None },
                }
                if !exclude.is_empty() {
                    args.push("--exclude".into());
                    args.extend(exclude.iter().cloned());
                }
                if *full_refresh {
                    args.push("--full-refresh".into());
                }
                self.weir(args, None, log, limit).await
            }
            TaskKind::Load { loads, full_refresh } => {
                let mut args = vec!["load".to_string()];
                args.extend(loads.iter().cloned());
                if *full_refresh {
                    args.push("--full-refresh".into());
                }
                self.weir(args, None, log, limit).await
            }
            TaskKind::Sql { sql, target } => match self.sql(sql, target.as_deref(), log, limit).await {
                Ok(first_row) => {
                    let published = match (&self.task.xcom, first_row) {
                        (Some(name), row) => vec![(name.clone(), row.map(J::Object).unwrap_or(J::Null))],
                        (None, _) => Vec::new(),
                    };
                    Outcome::Success { published }
                }
                Err(o) => o,
            },
            TaskKind::Http(call) => match limit {
                Some(l) => tokio::time::timeout(l, self.http(call, log)).await.unwrap_or(Outcome::TimedOut(l)),
                None => self.http(call, log).await,
            },
            TaskKind::Sensor(s) => self.poke(&s.condition, log, limit).await,
            TaskKind::Pipeline { .. } => Outcome::Failed { message: "pipeline tasks are run by the executor".into(), exit_code: None },
        };
        log.note(&format!("attempt {} ended after {:.2}s: {}", self.number, started.elapsed().as_secs_f64(), describe(&outcome)));
        outcome
    }

    fn render(&self, text: &str) -> Result<String, String> {
        self.renderer.render(text, &self.task.name)
    }

    fn env(&self) -> Result<Vec<(String, String)>, String> {
        let mut env = self.renderer.ctx.env();
        env.push(("WEIR_TASK".into(), self.task.name.clone()));
        env.push(("WEIR_TRY_NUMBER".into(), self.number.to_string()));
        for (k, v) in &self.task.env {
            env.push((k.clone(), self.render(v).map_err(|e| format!("env {k}: {e}"))?));
        }
        Ok(env)
    }

    async fn shell(&self, command: &str, log: &mut Log, limit: Option<Duration>) -> Outcome {
        let (command, mut env) = match (self.render(command), self.env()) {
            (Ok(c), Ok(e)) => (c, e),
            (Err(e), _) | (_, Err(e)) => return Outcome::Failed { message: format!("cannot render the command: {e}"), exit_code: None },
        };
        let xcom_file = self.dir.join(format!("{}.{}.xcom.json", self.task.name, self.number));
        let _ = std::fs::remove_file(&xcom_file);
        env.push(("WEIR_XCOM".into(), xcom_file.display().to_string()));
        log.note(&format!("$ {command}"));
        let end =
            run_process(Path::new("/bin/sh"), &["-c".to_string(), command], &env, &self.settings.project_dir, limit, log, self.on_spawn)
                .await;
        match end {
            ProcessEnd::Exited(0) => {
                let mut published = Vec::new();
                if let Ok(text) = std::fs::read_to_string(&xcom_file) {
                    match serde_json::from_str::<J>(&text) {
                        Ok(J::Object(m)) => published.extend(m),
                        _ => {
                            return Outcome::Failed {
                                message: format!("$WEIR_XCOM must hold a JSON object of named values; it holds: {}", clip(&text, 120)),
                                exit_code: Some(0),
                            };
                        }
                    }
                }
                if !published.iter().any(|(k, _)| k == "return_value")
                    && let Some(last) = log.last_line()
                    && last.len() <= self.settings.xcom_max_bytes
                {
                    published.push(("return_value".into(), J::String(last)));
                }
                Outcome::Success { published }
            }
            other => other.into_outcome(),
        }
    }

    /// `weir ARGS` with the run's variables as `--vars`.
    async fn weir(&self, mut args: Vec<String>, target: Option<&str>, log: &mut Log, limit: Option<Duration>) -> Outcome {
        let Some(weir) = &self.settings.weir else {
            return Outcome::Failed {
                message: "this executor has no weir binary to run build, load and sql tasks with".into(),
                exit_code: None,
            };
        };
        let env = match self.env() {
            Ok(e) => e,
            Err(e) => return Outcome::Failed { message: e, exit_code: None },
        };
        let mut full = weir.args.clone();
        if let Some(t) = target {
            full.extend(["--target".to_string(), t.to_string()]);
        }
        full.extend(["--vars".to_string(), J::Object(self.renderer.ctx.vars()).to_string()]);
        full.append(&mut args);
        log.note(&format!("$ weir {}", full.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")));
        match run_process(&weir.exe, &full, &env, &self.settings.project_dir, limit, log, self.on_spawn).await.into_outcome() {
            // The task's message, and so its alerts, say what failed: the checks that did not
            // pass with their values and thresholds, the models that broke and why.
            Outcome::Failed { message, exit_code: Some(code) } => Outcome::Failed {
                message: match weir_failure(&log.tail_text()) {
                    Some(what) => format!("{message}: {what}"),
                    None => message,
                },
                exit_code: Some(code),
            },
            other => other,
        }
    }

    /// Runs SQL with `weir sql`; the first row of the last statement, if any.
    async fn sql(
        &self,
        sql: &str,
        target: Option<&str>,
        log: &mut Log,
        limit: Option<Duration>,
    ) -> Result<Option<Map<String, J>>, Outcome> {
        let sql = self
            .renderer
            .render_sql(sql, &self.task.name)
            .map_err(|e| Outcome::Failed { message: format!("cannot render the SQL: {e}"), exit_code: None })?;
        let out = self.dir.join(format!("{}.{}.rows.json", self.task.name, self.number));
        let _ = std::fs::remove_file(&out);
        let args = vec!["sql".to_string(), "--json-out".into(), out.display().to_string(), sql];
        match self.weir(args, target, log, limit).await {
            Outcome::Success { .. } => {}
            other => return Err(other),
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        match serde_json::from_str::<J>(&text) {
            Ok(J::Array(rows)) => Ok(rows.into_iter().next().and_then(|r| match r {
                J::Object(m) => Some(m),
                _ => None,
            })),
            _ => Ok(None),
        }
    }

    async fn http(&self, call: &HttpCall, log: &mut Log) -> Outcome {
        let rendered = (|| -> Result<_, String> {
            let url = self.render(&call.url)?;
            let body = call.body.as_deref().map(|b| self.render(b)).transpose()?;
            let headers = call.headers.iter().map(|(k, v)| Ok((k.clone(), self.render(v)?))).collect::<Result<Vec<_>, String>>()?;
            Ok((url, body, headers))
        })();
        let (url, body, headers) = match rendered {
            Ok(r) => r,
            Err(e) => return Outcome::Failed { message: format!("cannot render the request: {e}"), exit_code: None },
        };
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        log.note(&format!("{method} {url}"));
        let mut req = http_client().request(method, &url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            let json = serde_json::from_str::<J>(&b).is_ok();
            req = req.body(b);
            if json && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                req = req.header("content-type", "application/json");
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed { message: format!("{url}: {}", weir_core::error_chain(&e)), exit_code: None },
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        log.write(format!("HTTP {status}\n{}\n", clip(&text, 4000)).as_bytes());
        let ok = if call.expect.is_empty() { (200..300).contains(&status) } else { call.expect.contains(&status) };
        if !ok {
            let wanted = if call.expect.is_empty() {
                "2xx".to_string()
            } else {
                call.expect.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
            };
            return Outcome::Failed { message: format!("{url} answered {status}, not {wanted}: {}", clip(&text, 200)), exit_code: None };
        }
        let published = match &self.task.xcom {
            Some(name) => vec![(name.clone(), serde_json::from_str(&text).unwrap_or(J::String(text)))],
            None => Vec::new(),
        };
        Outcome::Success { published }
    }

    /// Checks a sensor's condition once.
    async fn poke(&self, condition: &Condition, log: &mut Log, limit: Option<Duration>) -> Outcome {
        match condition {
            Condition::File(pattern) => {
                let pattern = match self.render(pattern) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Failed { message: format!("cannot render the pattern: {e}"), exit_code: None },
                };
                let full = if Path::new(&pattern).is_absolute() {
                    pattern.clone()
                } else {
                    self.settings.project_dir.join(&pattern).display().to_string()
                };
                match glob::glob(&full) {
                    Ok(paths) => match paths.filter_map(Result::ok).next() {
                        Some(p) => {
                            log.note(&format!("found {}", p.display()));
                            Outcome::Success { published: vec![("path".into(), J::String(p.display().to_string()))] }
                        }
                        None => Outcome::NotYet(format!("no file matches {pattern}")),
                    },
                    Err(e) => Outcome::Failed { message: format!("'{pattern}' is not a file pattern: {e}"), exit_code: None },
                }
            }
            Condition::Http { url, status } => {
                let url = match self.render(url) {
                    Ok(u) => u,
                    Err(e) => return Outcome::Failed { message: format!("cannot render the url: {e}"), exit_code: None },
                };
                match http_client().get(&url).send().await {
                    Ok(r) if r.status().as_u16() == *status => Outcome::Success { published: Vec::new() },
                    Ok(r) => Outcome::NotYet(format!("{url} answered {}", r.status().as_u16())),
                    Err(e) => Outcome::NotYet(format!("{url}: {}", weir_core::error_chain(&e))),
                }
            }
            Condition::Sql { sql, target } => match self.sql(sql, target.as_deref(), log, limit).await {
                Ok(row) => {
                    let first = row.as_ref().and_then(|r| r.values().next().cloned()).unwrap_or(J::Null);
                    if truthy(&first) {
                        Outcome::Success { published: Vec::new() }
                    } else {
                        Outcome::NotYet(format!("the query returned {first}"))
                    }
                }
                Err(o) => o,
            },
            Condition::Asset(asset) => {
                let end = self.renderer.ctx.interval.end;
                match self.renderer.store.asset_updated_at(asset) {
                    Ok(Some(at)) if at >= end => {
                        log.note(&format!("{asset} was updated at {}", at.to_rfc3339()));
                        Outcome::Success { published: Vec::new() }
                    }
                    Ok(Some(at)) => {
                        Outcome::NotYet(format!("{asset} was last updated at {}, before {}", at.to_rfc3339(), end.to_rfc3339()))
                    }
                    Ok(None) => Outcome::NotYet(format!("{asset} has never been updated")),
                    Err(e) => Outcome::Failed { message: e.to_string(), exit_code: None },
                }
            }
        }
    }
}

/// The `weir` binary build, load and sql tasks run, and the global flags they get
/// (`--project-dir`, `--target`, `--profiles-dir`).
#[derive(Debug, Clone)]
pub struct WeirCommand {
    pub exe: PathBuf,
    pub args: Vec<String>,
}

/// An attempt's output: a log file capped at a size, and the last lines in memory.
pub(crate) struct Log {
    file: Option<std::fs::File>,
    written: u64,
    cap: u64,
    dropped: u64,
    tail: VecDeque<u8>,
}

const TAIL_BYTES: usize = 8 * 1024;

impl Log {
    pub fn open(path: PathBuf, cap: u64) -> Log {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).ok();
        Log { file, written: 0, cap, dropped: 0, tail: VecDeque::with_capacity(TAIL_BYTES) }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = bytes.len().min(room);
        if let Some(f) = &mut self.file
            && keep > 0
        {
            let _ = f.write_all(&bytes[..keep]);
        }
        self.written += keep as u64;
        self.dropped += (bytes.len() - keep) as u64;
        let skip = bytes.len().saturating_sub(TAIL_BYTES);
        self.tail.extend(&bytes[skip..]);
        while self.tail.len() > TAIL_BYTES {
            self.tail.pop_front();
        }
    }

    /// A line of Weir's own, marked apart from the task's output.
    pub fn note(&mut self, text: &str) {
        let line = format!("[weir {}] {text}\n", chrono::Utc::now().format("%H:%M:%S%.3f"));
        self.write(line.as_bytes());
    }

    /// The last non-empty line of output.
    pub fn last_line(&self) -> Option<String> {
        let text = self.tail_text();
        text.lines().rev().find(|l| !l.trim().is_empty() && !l.starts_with("[weir ")).map(|l| l.trim_end().to_string())
    }

    pub fn tail_text(&self) -> String {
        let (a, b) = self.tail.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Records how much output was left out, once the attempt is over.
    pub fn close(&mut self) {
        if self.dropped > 0 {
            let (dropped, cap) = (self.dropped, self.cap);
            self.dropped = 0;
            // The note itself is always kept.
            self.cap = u64::MAX;
            self.note(&format!(
                "{} of output were not kept: a log is limited to {} (max_log_bytes in weir.yml)",
                weir_core::size::human(dropped),
                weir_core::size::human(cap)
            ));
        }
    }
}

enum ProcessEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
    NotStarted(String),
}

impl ProcessEnd {
    fn into_outcome(self) -> Outcome {
        match self {
            ProcessEnd::Exited(0) => Outcome::Success { published: Vec::new() },
            ProcessEnd::Exited(code) => Outcome::Failed { message: format!("exited with code {code}"), exit_code: Some(code) },
            ProcessEnd::Signalled(sig) => Outcome::Failed { message: format!("killed by signal {sig}"), exit_code: None },
            ProcessEnd::TimedOut(d) => Outcome::TimedOut(d),
            ProcessEnd::NotStarted(m) => Outcome::Failed { message: m, exit_code: None },
        }
    }
}

/// Kills a process and what it started when dropped, unless disarmed: a cancelled run
/// leaves no processes.
struct GroupKiller(Option<i32>);

impl GroupKiller {
    /// Kills the process's group, and every descendant that left the group (`setsid`, a
    /// daemonising child) but is still reachable through its parents: found before the kill,
    /// since a killed parent's children are handed to init and no longer lead back to it.
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let descendants = descendants(pid);
            // SAFETY: killpg and kill only send a signal; a process that is gone makes them
            // return ESRCH.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
                for d in descendants {
                    libc::kill(d, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every live descendant of `pid`, by the parent ids in `/proc` (none where there is no
/// `/proc`: the process group is then all that is killed).
fn descendants(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for e in entries.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`; the command name may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|v| v.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            next.push(c);
        }
    }
    out
}

/// Runs a program in a new process group with merged output into `log`. The process is
/// killed if the thread that started it dies (a worker killed with -9 leaves no task
/// running on); what it started in turn is killed by crash recovery, by process group.
///
/// The output is read without blocking a thread: a descendant that left the group and
/// keeps the pipe open (a `setsid` child) neither delays the timeout nor holds the run once
/// the task is over; after the task ends, what is left in the pipe is read for a moment
/// (not at all after a timeout), then the pipe is closed.
async fn run_process(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    limit: Option<Duration>,
    log: &mut Log,
    on_spawn: &(dyn Fn(u32) + Send + Sync),
) -> ProcessEnd {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return ProcessEnd::NotStarted(format!("cannot create a pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return ProcessEnd::NotStarted(format!("cannot create a pipe: {e}")),
    };
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader)) {
        Ok(p) => p,
        Err(e) => return ProcessEnd::NotStarted(format!("cannot read a pipe: {e}")),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args).current_dir(dir).stdin(std::process::Stdio::null()).stdout(writer).stderr(writer2).process_group(0).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The parent's copies of the pipe's write end must close, or reading never ends.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ProcessEnd::NotStarted(format!("cannot start {}: {e}", exe.display())),
    };
    let mut killer = GroupKiller(child.id().map(|p| p as i32));
    if let Some(pid) = child.id() {
        on_spawn(pid);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    let started = tokio::time::Instant::now();
    let deadline = limit.map(|l| started + l);
    let mut timed_out = false;
    let status = loop {
        tokio::select! {
            ready = pipe.readable(), if open => {
                open = ready.is_ok() && read_some(&pipe, &mut buf, log) != Pipe::Closed;
            }
            status = child.wait() => break status,
            _ = sleep_until(deadline), if deadline.is_some() && !timed_out => {
                timed_out = true;
                killer.kill();
            }
        }
    };
    if timed_out {
        // What is already in the pipe, without waiting for more.
        while open && read_some(&pipe, &mut buf, log) == Pipe::Read {}
    } else {
        let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
        while open {
            tokio::select! {
                ready = pipe.readable() => {
                    open = ready.is_ok() && read_some(&pipe, &mut buf, log) != Pipe::Closed;
                }
                _ = tokio::time::sleep_until(drain_until) => {
                    log.note("the task's output was still open after it exited; stopped reading");
                    break;
                }
            }
        }
    }
    drop(pipe);
    killer.0 = None;
    if timed_out {
        return ProcessEnd::TimedOut(limit.unwrap_or_default());
    }
    match status {
        Ok(s) => match s.code() {
            Some(c) => ProcessEnd::Exited(c),
            None => ProcessEnd::Signalled(std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
        },
        Err(e) => ProcessEnd::NotStarted(format!("lost the process: {e}")),
    }
}

/// What one read of a task's pipe found.
#[derive(PartialEq)]
enum Pipe {
    Read,
    Empty,
    Closed,
}

/// Reads what the pipe holds into the log, without blocking.
fn read_some(pipe: &tokio::net::unix::pipe::Receiver, buf: &mut [u8], log: &mut Log) -> Pipe {
    match pipe.try_read(buf) {
        Ok(0) => Pipe::Closed,
        Ok(n) => {
            log.write(&buf[..n]);
            Pipe::Read
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Pipe::Empty,
        Err(_) => Pipe::Closed,
    }
}

fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().connect_timeout(Duration::from_secs(30)).build().unwrap_or_default()).clone()
}

fn truthy(v: &J) -> bool {
    match v {
        J::Bool(b) => *b,
        J::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        J::String(s) => !s.is_empty() && !matches!(s.to_ascii_lowercase().as_str(), "false" | "f" | "0" | "no"),
        J::Array(a) => !a.is_empty(),
        J::Object(o) => !o.is_empty(),
        J::Null => false,
    }
}

pub(crate) fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Success { .. } => "success".into(),
        Outcome::Failed { message, .. } => format!("failed: {message}"),
        Outcome::TimedOut(d) => format!("timed out after {}", weir_core::duration::show_duration(d.as_secs_f64())),
        Outcome::NotYet(seen) => format!("not yet: {seen}"),
    }
}

/// What a failed `weir` command said went wrong, from its output's tail: the failures and
/// errors its closing summary lists (a check names itself, its value and its threshold), or
/// else its last `error:` line.
fn weir_failure(tail: &str) -> Option<String> {
    // Text output starts each line with the time (`12:00:01  `).
    let lines: Vec<&str> = tail
        .lines()
        .map(|l| match l.as_bytes() {
            [a, b, b':', c, d, b':', e, f, b' ', b' ', ..] if [a, b, c, d, e, f].iter().all(|x| x.is_ascii_digit()) => &l[10..],
            _ => l,
        })
        .collect();
    if let Some(at) = lines.iter().rposition(|l| l.starts_with("Completed with ")) {
        let listed: Vec<&str> =
            lines[at + 1..].iter().take_while(|l| !l.starts_with("Done. ")).map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
        if !listed.is_empty() {
            return Some(clip(&listed.join("; "), 800));
        }
    }
    lines.iter().rev().find_map(|l| l.strip_prefix("error: ")).map(|e| clip(e, 800))
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::weir_failure;

    #[test]
    fn a_failed_weir_command_says_what_failed() {
        let build = "12:00:01  1 of 2 OK created sql table model main.orders ..... [OK in 0.01s]\n\
                     12:00:01  2 of 2 FAIL checks on orders ....................... [FAIL 1 in 0.01s]\n\
                     12:00:01        FAIL  min(total) >= 0 ........ -3.5 (expected >= 0)  [checks/orders.yml:3:5]\n\
                     12:00:01  \n\
                     12:00:01  Completed with 1 error and 0 warnings:\n\
                     12:00:01  \n\
                     12:00:01  Failure in check.shop.orders\n\
                     12:00:01    fail min(total) >= 0: measured -3.5, expected >= 0\n\
                     12:00:01  \n\
                     12:00:01  Done. PASS=1 WARN=0 ERROR=1 SKIP=0 TOTAL=2\n";
        assert_eq!(
            weir_failure(build).as_deref(),
            Some("Failure in check.shop.orders; fail min(total) >= 0: measured -3.5, expected >= 0")
        );
        let refused = "12:00:00  error: models/a.sql:3:7: unexpected '}'\n";
        assert_eq!(weir_failure(refused).as_deref(), Some("models/a.sql:3:7: unexpected '}'"));
        assert_eq!(weir_failure("some output\n"), None);
    }
}
