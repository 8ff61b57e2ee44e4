//! Running a project's stream jobs for as long as `weir serve` runs: each enabled job on a
//! thread of its own, started again after it fails, with a pause that doubles from one
//! second up to a minute (and is one second again once the job has run a minute without
//! failing), as Flink's restart strategy does. A job that another process runs already
//! (`weir stream run`) is left to it and looked at again every ten seconds.
//!
//! What each job is doing is kept where the API reads it: [`Supervisor::states`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_log::Log;
use weir_warehouse::Warehouse;

use crate::StreamError;
use crate::job::{self, Control, JobRun};

/// The first pause before a failed job starts again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// How long a job must run without failing for its pause to start over at one second.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How often a job that another process runs is looked at again.
const ELSEWHERE_CHECK: Duration = Duration::from_secs(10);

/// What the supervisor knows of one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Supervised {
    /// `running`, `restarting` (waiting to start again after a failure), `elsewhere` (another
    /// process runs it), `disabled` (`config(enabled=false)`) or `stopped`.
    pub state: String,
    /// How many times it was started again after failing.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// When it starts again (ms since the epoch), while `restarting`.
    pub next_start_at: Option<i64>,
}

/// The project's jobs, running.
pub struct Supervisor {
    states: Arc<Mutex<BTreeMap<String, Supervised>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts every enabled job of `runs`; the disabled ones are only listed.
    pub fn start(runs: Vec<JobRun>, log: Arc<dyn Log>, wh: Arc<dyn Warehouse>) -> Supervisor {
        let states: Arc<Mutex<BTreeMap<String, Supervised>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        for run in runs {
            let name = run.job.name.clone();
            let enabled = run.job.config.enabled;
            set(&states, &name, |s| s.state = if enabled { "running" } else { "disabled" }.into());
            if !enabled {
                continue;
            }
            let (shared, halt, log, wh) = (states.clone(), stop.clone(), log.clone(), wh.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("stream {name}"))
                .spawn(move || keep_running(&run, log.as_ref(), wh, &shared, &halt));
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

    /// Each job's state, by name: what `GET /api/v1/streams` shows beside its status.
    pub fn states(&self) -> Arc<Mutex<BTreeMap<String, Supervised>>> {
        self.states.clone()
    }

    /// Stops every job (each writes what it has and checkpoints) and waits for them.
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
fn keep_running(run: &JobRun, log: &dyn Log, wh: Arc<dyn Warehouse>, states: &Mutex<BTreeMap<String, Supervised>>, stop: &Arc<AtomicBool>) {
    let name = &run.job.name;
    let mut pause = FIRST_PAUSE;
    while !stop.load(Ordering::Relaxed) {
        set(states, name, |s| {
            s.state = "running".into();
            s.next_start_at = None;
        });
        let started = Instant::now();
        let control = Control { stop: stop.clone(), drain: false };
        let outcome = job::run(run, log, wh.clone(), &control, &mut |_| {});
        // Whatever it ended in, its connections are closed: other processes may have the
        // database (a DuckDB file) while it waits.
        wh.release();
        if stop.load(Ordering::Relaxed) {
            set(states, name, |s| {
                s.state = "stopped".into();
                if let Err(e) = &outcome {
                    s.last_error = Some(e.to_string());
                }
            });
            return;
        }
        let wait = match outcome {
            Err(StreamError::Busy { pid, .. }) => {
                set(states, name, |s| {
                    s.state = "elsewhere".into();
                    s.last_error = Some(format!("process {pid} runs it"));
                });
                ELSEWHERE_CHECK
            }
            other => {
                if started.elapsed() >= HEALTHY_AFTER {
                    pause = FIRST_PAUSE;
                }
                let error = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "it stopped by itself".to_string(),
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
