//! Running a project's long-lived work (stream jobs, cdc followers) for as long as `weir
//! serve` runs: each enabled piece on a thread of its own, started again after it fails,
//! with a pause that doubles from one second up to a minute (and is one second again once it
//! has run a minute without failing), as Flink's restart strategy does. Work that another
//! process does already (`weir stream run`, `weir cdc run`) is left to it and looked at again
//! every ten seconds.
//!
//! What each piece is doing is kept where the API reads it: [`Supervisor::states`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first pause before a failed job starts again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// How long a job must run without failing for its pause to start over at one second.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How often a job that another process runs is looked at again.
const ELSEWHERE_CHECK: Duration = Duration::from_secs(10);

/// How a run of a piece of work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It was asked to stop, and did.
    Stopped,
    /// Another process does it (who, for the state's message).
    Elsewhere(String),
    /// It failed (or stopped without being asked): why.
    Failed(String),
}

/// One run of a piece of work: it goes on until the flag it is given is set.
pub type Run = Box<dyn FnMut(&Arc<AtomicBool>) -> Ended + Send>;

/// One piece of work to keep running.
pub struct Work {
    pub name: String,
    pub enabled: bool,
    pub run: Run,
}

/// What the supervisor knows of one piece of work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Supervised {
    /// `running`, `restarting` (waiting to start again after a failure), `elsewhere` (another
    /// process runs it), `disabled` or `stopped`.
    pub state: String,
    /// How many times it was started again after failing.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// When it starts again (ms since the epoch), while `restarting`.
    pub next_start_at: Option<i64>,
}

/// The project's long-lived work, running.
pub struct Supervisor {
    states: Arc<Mutex<BTreeMap<String, Supervised>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts every enabled piece of `work` (`kind` names their threads); the disabled ones
    /// are only listed.
    pub fn start(kind: &str, work: Vec<Work>) -> Supervisor {
        let states: Arc<Mutex<BTreeMap<String, Supervised>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        for mut w in work {
            let name = w.name.clone();
            set(&states, &name, |s| s.state = if w.enabled { "running" } else { "disabled" }.into());
            if !w.enabled {
                continue;
            }
            let (shared, halt) = (states.clone(), stop.clone());
            let spawned =
                std::thread::Builder::new().name(format!("{kind} {name}")).spawn(move || keep_running(&w.name, &mut w.run, &shared, &halt));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => set(&states, &name, |s| {
                    s.state = "stopped".into();
                    s.last_error = Some(format!("no thread for it: {e}"));
                }),
            }
        }
        Supervisor { states, stop, threads }
    }

    /// Each piece's state, by name: what the API shows beside its status.
    pub fn states(&self) -> Arc<Mutex<BTreeMap<String, Supervised>>> {
        self.states.clone()
    }

    /// Stops every piece (each finishes what it holds: a job checkpoints, a follower merges)
    /// and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn set(states: &Mutex<BTreeMap<String, Supervised>>, name: &str, change: impl FnOnce(&mut Supervised)) {
    if let Ok(mut s) = states.lock() {
        change(s.entry(name.to_string()).or_default());
    }
}

/// Runs `run` until `stop`, starting it again after each failure.
fn keep_running(name: &str, run: &mut Run, states: &Mutex<BTreeMap<String, Supervised>>, stop: &Arc<AtomicBool>) {
    let mut pause = FIRST_PAUSE;
    while !stop.load(Ordering::Relaxed) {
        set(states, name, |s| {
            s.state = "running".into();
            s.next_start_at = None;
        });
        let started = Instant::now();
        let outcome = run(stop);
        if stop.load(Ordering::Relaxed) {
            set(states, name, |s| {
                s.state = "stopped".into();
                if let Ended::Failed(e) = &outcome {
                    s.last_error = Some(e.clone());
                }
            });
            return;
        }
        let wait = match outcome {
            Ended::Elsewhere(who) => {
                set(states, name, |s| {
                    s.state = "elsewhere".into();
                    s.last_error = Some(who);
                });
                ELSEWHERE_CHECK
            }
            other => {
                if started.elapsed() >= HEALTHY_AFTER {
                    pause = FIRST_PAUSE;
                }
                let error = match other {
                    Ended::Failed(e) => e,
                    _ => "it stopped by itself".to_string(),
                };
                let wait = pause;
                set(states, name, |s| {
                    s.state = "restarting".into();
                    s.restarts += 1;
                    s.last_error = Some(error);
                    s.next_start_at = Some(chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64);
                });
                pause = (pause * 2).min(LONGEST_PAUSE);
                wait
            }
        };
        // Waits in small steps, so stopping is not held up by a long pause.
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    set(states, name, |s| s.state = "stopped".into());
}
