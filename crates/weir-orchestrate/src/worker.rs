//! Workers and their heartbeats: how a process that runs pipeline runs (`weir serve`,
//! `weir pipeline run`) tells the others it is alive, and how they tell it is not.
//!
//! A worker records itself in the metadata store when it starts and then beats every
//! `heartbeat_interval`. A scheduler that finds a worker silent for `worker_timeout` declares
//! it dead (once: the store lets only one caller stop it) and takes over its runs (see
//! [`crate::Executor::recover_run`]). A worker that beats and finds itself declared dead (it
//! was frozen, or cut off from the store, for longer than the timeout) stops running
//! anything at once, since another worker may already be running its tasks.

use chrono::Utc;
use std::sync::Arc;
use weir_store::{Store, Worker};

use crate::{Executor, OrchestrateError};

/// This process as a worker, recorded in the store.
pub struct WorkerHandle {
    pub id: String,
    store: Arc<Store>,
}

impl WorkerHandle {
    /// Records a new worker of `kind` (`scheduler`, `cli`) for this process.
    pub fn register(store: Arc<Store>, kind: &str) -> Result<WorkerHandle, OrchestrateError> {
        let now = Utc::now();
        let host = host_name();
        let id = format!("{kind}-{host}-{}-{}", std::process::id(), now.timestamp_millis());
        store.register_worker(&Worker {
            worker_id: id.clone(),
            kind: kind.into(),
            host,
            pid: std::process::id(),
            started_at: now,
            heartbeat_at: now,
            stopped_at: None,
            stopped_by: None,
        })?;
        Ok(WorkerHandle { id, store })
    }

    /// Beats every `interval` (the executor's settings) until the returned task is aborted.
    /// A beat that finds this worker declared dead cancels every run of `exec`: their
    /// tasks are killed. A beat that cannot reach the store is retried at the next one:
    /// the store being briefly away is not death.
    pub fn beat_for(&self, exec: Executor) -> tokio::task::JoinHandle<()> {
        let (store, id) = (self.store.clone(), self.id.clone());
        let interval = exec.settings().heartbeat_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.heartbeat(&id, Utc::now()) {
                    Ok(true) => {}
                    Ok(false) => {
                        exec.notice("error", format!("worker {id} was declared dead by another scheduler; stopping its runs"));
                        exec.cancel();
                        return;
                    }
                    Err(e) => exec.notice("warn", format!("worker {id}: heartbeat not recorded: {e}")),
                }
            }
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Records that this worker stopped (it ran, or handed back, all its runs).
    pub fn stop(&self) -> Result<(), OrchestrateError> {
        self.store.stop_worker(&self.id, Utc::now(), None)?;
        Ok(())
    }
}

/// This machine's name, as workers record it: recovery kills a dead worker's processes
/// only on the host they ran on.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Kills the process group a dead worker's task ran as, if it is still there.
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    // SAFETY: killpg only sends a signal; a group that is gone makes it return ESRCH.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}
