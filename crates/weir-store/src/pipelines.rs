//! Orchestration state: pipeline runs, their task instances, every attempt of every task
//! with its log, the small values tasks pass to each other (XCom), and when each asset was
//! last updated (for asset sensors).
//!
//! Each write is one upsert keyed by what it describes, so recording the same fact twice (a
//! rerun, a resumed backfill) changes nothing. Times are RFC 3339 text in UTC with
//! milliseconds, which sorts as time on both backends.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{Col, Store, StoreError, Val};

/// One run of one pipeline, for one data interval.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineRun {
    pub pipeline: String,
    /// Unique within the pipeline: `manual__…`, `scheduled__…`, `backfill__…`.
    pub run_id: String,
    /// `manual`, `scheduled` or `backfill`.
    pub run_type: String,
    /// `queued`, `running`, `success` or `failed`.
    pub state: String,
    pub interval_start: Option<DateTime<Utc>>,
    pub interval_end: Option<DateTime<Utc>>,
    /// The run's params, a JSON object.
    pub params: String,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
    /// The worker (a scheduler, a `weir pipeline run`) running it, while it runs.
    pub owner: Option<String>,
}

/// Which runs [`Store::find_runs`] returns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<String>,
    /// Queued at or after.
    pub since: Option<DateTime<Utc>>,
    /// Queued before.
    pub until: Option<DateTime<Utc>>,
}

/// Where one task of one run stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstance {
    pub pipeline: String,
    pub run_id: String,
    pub task: String,
    /// `none`, `running`, `up_for_retry`, `up_for_reschedule`, `success`, `failed`,
    /// `skipped` or `upstream_failed`.
    pub state: String,
    /// Attempts started so far.
    pub try_number: u32,
    /// The highest attempt number allowed before the task fails for good (as Airflow's
    /// `max_tries`): set when the task starts afresh, kept when a lost attempt is retried.
    pub max_tries: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
}

/// One attempt of one task: its outcome and where its output went.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAttempt {
    pub pipeline: String,
    pub run_id: String,
    pub task: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `running`, `success`, `failed`, `timed_out` or `rescheduled` (a sensor that was not
    /// satisfied yet).
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// The attempt's full log file.
    pub log_path: Option<String>,
    /// The log's last lines, kept in the store so a log can be read without the file.
    pub log_tail: Option<String>,
    /// The worker that ran it, and its process (group) id while it runs: what crash
    /// recovery kills before the task runs again.
    pub worker: Option<String>,
    pub pid: Option<u32>,
}

/// A process that runs pipeline runs (`weir serve`, `weir pipeline run`), known to the
/// others by its heartbeats: one whose heartbeat stops is declared dead and its runs are
/// taken over.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub worker_id: String,
    /// `scheduler` or `cli`.
    pub kind: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// `None` when it stopped itself, else the worker that declared it dead.
    pub stopped_by: Option<String>,
}

/// One alert sent (or given up on) for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDelivery {
    pub pipeline: String,
    pub run_id: String,
    pub task: Option<String>,
    /// `failure`, `retry`, `success` or `deadline`.
    pub event: String,
    /// Where it went, without secrets: `webhook https://host/…`, `email a@b`.
    pub channel: String,
    /// `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub message: Option<String>,
    pub delivered_at: DateTime<Utc>,
}

impl Store {
    /// Records the outcome of one alert's delivery.
    pub fn record_alert(&self, a: &AlertDelivery) -> Result<(), StoreError> {
        let sql = "insert into weir_alert_deliveries (pipeline, run_id, task, event, channel, status, attempts, message, delivered_at)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        self.exec(
            sql,
            &[
                text(&a.pipeline),
                text(&a.run_id),
                Val::Text(a.task.clone()),
                text(&a.event),
                text(&a.channel),
                text(&a.status),
                Val::Int(Some(i64::from(a.attempts))),
                Val::Text(a.message.clone()),
                time(Some(a.delivered_at)),
            ],
        )
        .map(drop)
    }

    /// The alerts of a run, in the order they were delivered.
    pub fn alerts(&self, pipeline: &str, run_id: &str) -> Result<Vec<AlertDelivery>, StoreError> {
        let sql = "select task, event, channel, status, attempts, message, delivered_at from weir_alert_deliveries
                   where pipeline = $1 and run_id = $2 order by delivered_at";
        let kinds = &[Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text];
        Ok(self
            .select(sql, &[text(pipeline), text(run_id)], kinds)?
            .into_iter()
            .map(|r| AlertDelivery {
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                task: r[0].text(),
                event: r[1].text().unwrap_or_default(),
                channel: r[2].text().unwrap_or_default(),
                status: r[3].text().unwrap_or_default(),
                attempts: r[4].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                message: r[5].text(),
                delivered_at: parse(&r[6]).unwrap_or_default(),
            })
            .collect())
    }

    /// Records a run (a new one, or a new state of a known one).
    pub fn save_run(&self, r: &PipelineRun) -> Result<(), StoreError> {
        let sql = "insert into weir_pipeline_runs (pipeline, run_id, run_type, state, interval_start, interval_end, params,
                       queued_at, started_at, finished_at, message, owner)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   on conflict (pipeline, run_id) do update set run_type = excluded.run_type, state = excluded.state,
                       interval_start = excluded.interval_start, interval_end = excluded.interval_end, params = excluded.params,
                       started_at = excluded.started_at, finished_at = excluded.finished_at, message = excluded.message,
                       owner = excluded.owner";
        self.exec(
            sql,
            &[
                text(&r.pipeline),
                text(&r.run_id),
                text(&r.run_type),
                text(&r.state),
                time(r.interval_start),
                time(r.interval_end),
                text(&r.params),
                time(Some(r.queued_at)),
                time(r.started_at),
                time(r.finished_at),
                Val::Text(r.message.clone()),
                Val::Text(r.owner.clone()),
            ],
        )
        .map(drop)
    }

    /// Adds a run in state `queued` unless the pipeline already has a run of that id, or
    /// (for a run with an interval) any run of that interval; returns whether it was added.
    /// Two schedulers adding the same scheduled run add it once.
    pub fn enqueue_run(&self, r: &PipelineRun) -> Result<bool, StoreError> {
        self.transaction(|tx| {
            if let Some(start) = r.interval_start.filter(|_| r.run_type != "manual") {
                let sql = "select count(*) from weir_pipeline_runs where pipeline = $1 and interval_start = $2";
                let n = tx.select(sql, &[text(&r.pipeline), time(Some(start))], &[Col::Int])?;
                if n.first().and_then(|r| r[0].int()).unwrap_or(0) > 0 {
                    return Ok(false);
                }
            }
            let sql = "insert into weir_pipeline_runs (pipeline, run_id, run_type, state, interval_start, interval_end, params,
                           queued_at, started_at, finished_at, message, owner)
                       values ($1, $2, $3, 'queued', $4, $5, $6, $7, null, null, null, null)
                       on conflict (pipeline, run_id) do nothing";
            let params = [
                text(&r.pipeline),
                text(&r.run_id),
                text(&r.run_type),
                time(r.interval_start),
                time(r.interval_end),
                text(&r.params),
                time(Some(r.queued_at)),
            ];
            Ok(tx.exec(sql, &params)? == 1)
        })
    }

    /// Takes queued runs of a pipeline for `owner` (state `running`), as many as its
    /// `max_active_runs` leaves room for, oldest first, unless the pipeline is paused.
    ///
    /// On PostgreSQL the pipeline's state row is locked `for update skip locked`: while one
    /// scheduler claims a pipeline's runs another skips that pipeline for this round rather
    /// than wait, and the count of active runs it reads cannot change under it. The queued
    /// rows are locked the same way. On SQLite the transaction holds the write lock.
    ///
    /// With `schedulers` live schedulers on the store, `owner` takes no more than its fair
    /// part of the runnable runs (queued or running, up to `max_active`), counting those it
    /// runs already: every scheduler gets work, as Airflow's HA schedulers each pick up
    /// tasks, rather than the quickest taking all of it.
    pub fn claim_runs(
        &self,
        pipeline: &str,
        owner: &str,
        max_active: usize,
        schedulers: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<PipelineRun>, StoreError> {
        self.transaction(|tx| {
            let pg = tx.is_postgres();
            let ensure =
                "insert into weir_pipeline_state (pipeline, paused, updated_at) values ($1, 0, $2) on conflict (pipeline) do nothing";
            tx.exec(ensure, &[text(pipeline), time(Some(now))])?;
            let lock = if pg { " for update skip locked" } else { "" };
            let state =
                tx.select(&format!("select paused from weir_pipeline_state where pipeline = $1{lock}"), &[text(pipeline)], &[Col::Int])?;
            let Some(paused) = state.first() else { return Ok(Vec::new()) };
            if paused[0].int().unwrap_or(0) != 0 {
                return Ok(Vec::new());
            }
            let counts = tx.select(
                // SQLite numbers `$n` parameters in the order they appear: $1 comes first.
                "select count(*) filter (where state = 'running'), count(*) filter (where state = 'queued'),
                        count(*) filter (where state = 'running' and owner = $1)
                 from weir_pipeline_runs where pipeline = $2 and state in ('running', 'queued')",
                &[text(owner), text(pipeline)],
                &[Col::Int, Col::Int, Col::Int],
            )?;
            let count = |i: usize| counts.first().and_then(|r| r[i].int()).unwrap_or(0).max(0) as usize;
            let (active, queued, mine) = (count(0), count(1), count(2));
            let share = (active + queued).min(max_active).div_ceil(schedulers.max(1));
            let room = max_active.saturating_sub(active).min(share.saturating_sub(mine));
            if room == 0 {
                return Ok(Vec::new());
            }
            let sql =
                format!("{RUN_COLUMNS} where pipeline = $1 and state = 'queued' order by queued_at, interval_start, run_id limit $2{lock}");
            let rows = tx.select(&sql, &[text(pipeline), Val::Int(Some(room as i64))], RUN_KINDS)?;
            let mut claimed = Vec::new();
            for row in rows {
                let mut r = run_from(row);
                let sql = "update weir_pipeline_runs set state = 'running', owner = $1, started_at = $2
                           where pipeline = $3 and run_id = $4 and state = 'queued'";
                if tx.exec(sql, &[text(owner), time(Some(now)), text(pipeline), text(&r.run_id)])? == 1 {
                    r.state = "running".into();
                    r.owner = Some(owner.to_string());
                    r.started_at = Some(now);
                    claimed.push(r);
                }
            }
            Ok(claimed)
        })
    }

    /// Puts a run back in the queue (after its worker died, or to rerun cleared tasks),
    /// if it is still in one of `from` states and owned by `owner` when one is given.
    pub fn requeue_run(
        &self,
        pipeline: &str,
        run_id: &str,
        from: &[&str],
        owner: Option<&str>,
        message: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut sql = format!(
            "update weir_pipeline_runs set state = 'queued', owner = null, finished_at = null, message = $1
             where pipeline = $2 and run_id = $3 and state in ({})",
            state_list(from)
        );
        let mut params = vec![Val::Text(message.map(str::to_string)), text(pipeline), text(run_id)];
        if let Some(o) = owner {
            sql.push_str(" and owner = $4");
            params.push(text(o));
        }
        Ok(self.exec(&sql, &params)? == 1)
    }

    /// Makes a run `running` under `owner` if it is in one of `from` states: the one
    /// atomic step by which a worker takes a queued or failed run, so two cannot both.
    pub fn take_run(&self, pipeline: &str, run_id: &str, from: &[&str], owner: Option<&str>) -> Result<bool, StoreError> {
        let sql = format!(
            "update weir_pipeline_runs set state = 'running', owner = $1, started_at = $2
             where pipeline = $3 and run_id = $4 and state in ({})",
            state_list(from)
        );
        Ok(self.exec(&sql, &[Val::Text(owner.map(str::to_string)), time(Some(Utc::now())), text(pipeline), text(run_id)])? == 1)
    }

    /// Ends a running run of `owner` as failed with `message` (a run its worker claimed but
    /// could not run), so that it does not stay `running`.
    pub fn fail_run(&self, pipeline: &str, run_id: &str, owner: &str, message: &str) -> Result<bool, StoreError> {
        let sql = "update weir_pipeline_runs set state = 'failed', finished_at = $1, message = $2
                   where pipeline = $3 and run_id = $4 and state = 'running' and owner = $5";
        Ok(self.exec(sql, &[time(Some(Utc::now())), text(message), text(pipeline), text(run_id), text(owner)])? == 1)
    }

    /// Moves a running run from one owner (`None`: none recorded) to `to`, if it still has
    /// that owner: a dead worker's run is recovered by exactly one other.
    pub fn adopt_run(&self, pipeline: &str, run_id: &str, from: Option<&str>, to: &str) -> Result<bool, StoreError> {
        let base = "update weir_pipeline_runs set owner = $1 where pipeline = $2 and run_id = $3 and state = 'running'";
        let n = match from {
            Some(o) => self.exec(&format!("{base} and owner = $4"), &[text(to), text(pipeline), text(run_id), text(o)])?,
            None => self.exec(&format!("{base} and owner is null"), &[text(to), text(pipeline), text(run_id)])?,
        };
        Ok(n == 1)
    }

    /// The runs in a state (of one owner, when given), oldest first.
    pub fn runs_in_state(&self, state: &str, owner: Option<&str>) -> Result<Vec<PipelineRun>, StoreError> {
        let rows = match owner {
            Some(o) => self.select(
                &format!("{RUN_COLUMNS} where state = $1 and owner = $2 order by queued_at"),
                &[text(state), text(o)],
                RUN_KINDS,
            )?,
            None => self.select(&format!("{RUN_COLUMNS} where state = $1 order by queued_at"), &[text(state)], RUN_KINDS)?,
        };
        Ok(rows.into_iter().map(run_from).collect())
    }

    /// The newest interval start of a pipeline's scheduled and backfilled runs: where a
    /// catching-up scheduler goes on from.
    pub fn latest_interval_start(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "select max(interval_start) from weir_pipeline_runs where pipeline = $1 and run_type <> 'manual'";
        Ok(self.select(sql, &[text(pipeline)], &[Col::Text])?.first().and_then(|r| parse(&r[0])))
    }

    /// How many runs of a pipeline are in a state.
    pub fn count_runs(&self, pipeline: &str, state: &str) -> Result<u64, StoreError> {
        let sql = "select count(*) from weir_pipeline_runs where pipeline = $1 and state = $2";
        Ok(self.select(sql, &[text(pipeline), text(state)], &[Col::Int])?.first().and_then(|r| r[0].int()).unwrap_or(0).max(0) as u64)
    }

    /// Pauses or unpauses a pipeline: a paused one gets no new scheduled runs, and its queued
    /// runs wait.
    pub fn set_paused(&self, pipeline: &str, paused: bool) -> Result<(), StoreError> {
        let sql = "insert into weir_pipeline_state (pipeline, paused, updated_at) values ($1, $2, $3)
                   on conflict (pipeline) do update set paused = excluded.paused, updated_at = excluded.updated_at";
        self.exec(sql, &[text(pipeline), Val::Int(Some(i64::from(paused))), time(Some(Utc::now()))]).map(drop)
    }

    /// Whether a pipeline is paused (never paused: not).
    pub fn is_paused(&self, pipeline: &str) -> Result<bool, StoreError> {
        let rows = self.select("select paused from weir_pipeline_state where pipeline = $1", &[text(pipeline)], &[Col::Int])?;
        Ok(rows.first().and_then(|r| r[0].int()).unwrap_or(0) != 0)
    }

    /// Clears tasks of a finished run and queues the run again, in one transaction: `false`
    /// (and nothing changed) unless the run was finished (`success` or `failed`), so of
    /// several clears at once one wins. A cleared task keeps its record and its attempts, with
    /// its state back to `none` and its published values gone: its rerun is its next
    /// attempt (number, record and log of its own) with fresh retries, as Airflow clears.
    pub fn clear_tasks(&self, pipeline: &str, run_id: &str, tasks: &[String], message: &str) -> Result<bool, StoreError> {
        self.transaction(|tx| {
            let sql = "update weir_pipeline_runs set state = 'queued', owner = null, finished_at = null, message = $1
                       where pipeline = $2 and run_id = $3 and state in ('success', 'failed')";
            if tx.exec(sql, &[text(message), text(pipeline), text(run_id)])? != 1 {
                return Ok(false);
            }
            for t in tasks {
                let key = [text(pipeline), text(run_id), text(t)];
                tx.exec(
                    "update weir_task_instances set state = 'none', max_tries = null, started_at = null, finished_at = null,
                     message = 'cleared' where pipeline = $1 and run_id = $2 and task = $3",
                    &key,
                )?;
                tx.exec("delete from weir_xcom where pipeline = $1 and run_id = $2 and task = $3", &key)?;
            }
            Ok(true)
        })
    }

    /// Records a worker that has started.
    pub fn register_worker(&self, w: &Worker) -> Result<(), StoreError> {
        let sql = "insert into weir_workers (worker_id, kind, host, pid, started_at, heartbeat_at, stopped_at, stopped_by)
                   values ($1, $2, $3, $4, $5, $6, null, null)";
        self.exec(
            sql,
            &[
                text(&w.worker_id),
                text(&w.kind),
                text(&w.host),
                Val::Int(Some(i64::from(w.pid))),
                time(Some(w.started_at)),
                time(Some(w.heartbeat_at)),
            ],
        )
        .map(drop)
    }

    /// A live worker's heartbeat; `false` when it is no longer live (it was declared dead
    /// while it could not beat, and must stop running anything).
    pub fn heartbeat(&self, worker_id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let sql = "update weir_workers set heartbeat_at = $1 where worker_id = $2 and stopped_at is null";
        Ok(self.exec(sql, &[time(Some(at)), text(worker_id)])? == 1)
    }

    /// Marks a worker stopped (by itself, or declared dead by `by`); `true` for the one
    /// call that did it, so two schedulers never both take over a dead worker's runs.
    pub fn stop_worker(&self, worker_id: &str, at: DateTime<Utc>, by: Option<&str>) -> Result<bool, StoreError> {
        let sql = "update weir_workers set stopped_at = $1, stopped_by = $2 where worker_id = $3 and stopped_at is null";
        Ok(self.exec(sql, &[time(Some(at)), Val::Text(by.map(str::to_string)), text(worker_id)])? == 1)
    }

    /// Forgets workers that stopped before `before` (their runs keep their owner's id).
    pub fn prune_workers(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.exec("delete from weir_workers where stopped_at is not null and stopped_at < $1", &[time(Some(before))])
    }

    /// One worker, if known.
    pub fn worker(&self, worker_id: &str) -> Result<Option<Worker>, StoreError> {
        let sql = format!("{WORKER_COLUMNS} where worker_id = $1");
        Ok(self.select(&sql, &[text(worker_id)], WORKER_KINDS)?.into_iter().next().map(worker_from))
    }

    /// Live workers whose last heartbeat is older than `cutoff`: presumed dead.
    pub fn silent_workers(&self, cutoff: DateTime<Utc>) -> Result<Vec<Worker>, StoreError> {
        let sql = format!("{WORKER_COLUMNS} where stopped_at is null and heartbeat_at < $1 order by heartbeat_at");
        Ok(self.select(&sql, &[time(Some(cutoff))], WORKER_KINDS)?.into_iter().map(worker_from).collect())
    }

    /// The workers not stopped, oldest first.
    pub fn live_workers(&self) -> Result<Vec<Worker>, StoreError> {
        let sql = format!("{WORKER_COLUMNS} where stopped_at is null order by started_at");
        Ok(self.select(&sql, &[], WORKER_KINDS)?.into_iter().map(worker_from).collect())
    }

    /// One run, if it exists.
    pub fn pipeline_run(&self, pipeline: &str, run_id: &str) -> Result<Option<PipelineRun>, StoreError> {
        let sql = format!("{RUN_COLUMNS} where pipeline = $1 and run_id = $2");
        Ok(self.select(&sql, &[text(pipeline), text(run_id)], RUN_KINDS)?.into_iter().next().map(run_from))
    }

    /// The newest runs, of one pipeline or of all, newest first.
    pub fn pipeline_runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<PipelineRun>, StoreError> {
        let limit = Val::Int(Some(limit.min(i64::MAX as usize) as i64));
        let rows = match pipeline {
            Some(p) => {
                let sql = format!("{RUN_COLUMNS} where pipeline = $1 order by queued_at desc, run_id desc limit $2");
                self.select(&sql, &[text(p), limit], RUN_KINDS)?
            }
            None => self.select(&format!("{RUN_COLUMNS} order by queued_at desc, run_id desc limit $1"), &[limit], RUN_KINDS)?,
        };
        Ok(rows.into_iter().map(run_from).collect())
    }

    /// The newest runs of a pipeline that a filter admits, newest first: in a state, queued
    /// from `since` and before `until`.
    pub fn find_runs(&self, pipeline: &str, filter: &RunFilter, limit: usize) -> Result<Vec<PipelineRun>, StoreError> {
        let mut sql = format!("{RUN_COLUMNS} where pipeline = $1");
        let mut params = vec![text(pipeline)];
        let mut add = |clause: &str, v: Val| {
            params.push(v);
            sql.push_str(&format!(" and {clause} ${}", params.len()));
        };
        if let Some(state) = &filter.state {
            add("state =", text(state));
        }
        if let Some(t) = filter.since {
            add("queued_at >=", time(Some(t)));
        }
        if let Some(t) = filter.until {
            add("queued_at <", time(Some(t)));
        }
        params.push(Val::Int(Some(limit.min(i64::MAX as usize) as i64)));
        sql.push_str(&format!(" order by queued_at desc, run_id desc limit ${}", params.len()));
        Ok(self.select(&sql, &params, RUN_KINDS)?.into_iter().map(run_from).collect())
    }

    /// The task instances of several runs of a pipeline in one query (a grid's cells).
    pub fn task_instances_of(&self, pipeline: &str, run_ids: &[String]) -> Result<Vec<TaskInstance>, StoreError> {
        let mut out = vec![];
        // A few hundred parameters at a time: well inside both engines' limits.
        for chunk in run_ids.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "select run_id, task, state, try_number, started_at, finished_at, message, max_tries from weir_task_instances
                 where pipeline = $1 and run_id in ({})",
                marks.join(", ")
            );
            let mut params = vec![text(pipeline)];
            params.extend(chunk.iter().map(|r| text(r)));
            let kinds = &[Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text, Col::Int];
            out.extend(self.select(&sql, &params, kinds)?.into_iter().map(|r| TaskInstance {
                pipeline: pipeline.to_string(),
                run_id: r[0].text().unwrap_or_default(),
                task: r[1].text().unwrap_or_default(),
                state: r[2].text().unwrap_or_default(),
                try_number: r[3].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                max_tries: r[7].int().map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
                started_at: parse(&r[4]),
                finished_at: parse(&r[5]),
                message: r[6].text(),
            }));
        }
        Ok(out)
    }

    /// The runs of a pipeline for the data interval starting at `start`, newest first.
    pub fn runs_for_interval(&self, pipeline: &str, start: DateTime<Utc>) -> Result<Vec<PipelineRun>, StoreError> {
        let sql = format!("{RUN_COLUMNS} where pipeline = $1 and interval_start = $2 order by queued_at desc");
        Ok(self.select(&sql, &[text(pipeline), time(Some(start))], RUN_KINDS)?.into_iter().map(run_from).collect())
    }

    /// Records where a task instance stands.
    pub fn save_task(&self, t: &TaskInstance) -> Result<(), StoreError> {
        let sql = "insert into weir_task_instances (pipeline, run_id, task, state, try_number, started_at, finished_at, message, max_tries)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   on conflict (pipeline, run_id, task) do update set state = excluded.state, try_number = excluded.try_number,
                       started_at = excluded.started_at, finished_at = excluded.finished_at, message = excluded.message,
                       max_tries = coalesce(excluded.max_tries, weir_task_instances.max_tries)";
        self.exec(
            sql,
            &[
                text(&t.pipeline),
                text(&t.run_id),
                text(&t.task),
                text(&t.state),
                Val::Int(Some(i64::from(t.try_number))),
                time(t.started_at),
                time(t.finished_at),
                Val::Text(t.message.clone()),
                Val::Int(t.max_tries.map(i64::from)),
            ],
        )
        .map(drop)
    }

    /// The task instances of a run, by task name.
    pub fn task_instances(&self, pipeline: &str, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        let sql = "select task, state, try_number, started_at, finished_at, message, max_tries from weir_task_instances
                   where pipeline = $1 and run_id = $2 order by task";
        let kinds = &[Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text, Col::Int];
        Ok(self
            .select(sql, &[text(pipeline), text(run_id)], kinds)?
            .into_iter()
            .map(|r| TaskInstance {
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                task: r[0].text().unwrap_or_default(),
                state: r[1].text().unwrap_or_default(),
                try_number: r[2].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                max_tries: r[6].int().map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
                started_at: parse(&r[3]),
                finished_at: parse(&r[4]),
                message: r[5].text(),
            })
            .collect())
    }

    /// Records an attempt (when it starts, and again when it ends).
    pub fn save_attempt(&self, a: &TaskAttempt) -> Result<(), StoreError> {
        let sql = "insert into weir_task_attempts (pipeline, run_id, task, attempt, state, started_at, finished_at, exit_code,
                       message, log_path, log_tail, worker, pid)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                   on conflict (pipeline, run_id, task, attempt) do update set state = excluded.state,
                       finished_at = excluded.finished_at, exit_code = excluded.exit_code, message = excluded.message,
                       log_path = excluded.log_path, log_tail = excluded.log_tail, worker = excluded.worker, pid = excluded.pid";
        self.exec(
            sql,
            &[
                text(&a.pipeline),
                text(&a.run_id),
                text(&a.task),
                Val::Int(Some(i64::from(a.attempt))),
                text(&a.state),
                time(Some(a.started_at)),
                time(a.finished_at),
                Val::Int(a.exit_code.map(i64::from)),
                Val::Text(a.message.clone()),
                Val::Text(a.log_path.clone()),
                Val::Text(a.log_tail.clone()),
                Val::Text(a.worker.clone()),
                Val::Int(a.pid.map(i64::from)),
            ],
        )
        .map(drop)
    }

    /// Every attempt of a task in a run, first first.
    pub fn task_attempts(&self, pipeline: &str, run_id: &str, task: &str) -> Result<Vec<TaskAttempt>, StoreError> {
        let sql = "select attempt, state, started_at, finished_at, exit_code, message, log_path, log_tail, worker, pid
                   from weir_task_attempts where pipeline = $1 and run_id = $2 and task = $3 order by attempt";
        let kinds = &[Col::Int, Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text, Col::Text, Col::Int];
        Ok(self
            .select(sql, &[text(pipeline), text(run_id), text(task)], kinds)?
            .into_iter()
            .map(|r| TaskAttempt {
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                task: task.to_string(),
                attempt: r[0].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                state: r[1].text().unwrap_or_default(),
                started_at: parse(&r[2]).unwrap_or_default(),
                finished_at: parse(&r[3]),
                exit_code: r[4].int().and_then(|c| i32::try_from(c).ok()),
                message: r[5].text(),
                log_path: r[6].text(),
                log_tail: r[7].text(),
                worker: r[8].text(),
                pid: r[9].int().and_then(|p| u32::try_from(p).ok()),
            })
            .collect())
    }

    /// Publishes a named JSON value of a task (replacing one of the same name).
    pub fn push_xcom(&self, pipeline: &str, run_id: &str, task: &str, name: &str, json: &str) -> Result<(), StoreError> {
        let sql = "insert into weir_xcom (pipeline, run_id, task, name, value) values ($1, $2, $3, $4, $5)
                   on conflict (pipeline, run_id, task, name) do update set value = excluded.value";
        self.exec(sql, &[text(pipeline), text(run_id), text(task), text(name), text(json)]).map(drop)
    }

    /// The named values a task of a run published, by name.
    pub fn xcoms(&self, pipeline: &str, run_id: &str, task: &str) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "select name, value from weir_xcom where pipeline = $1 and run_id = $2 and task = $3 order by name";
        Ok(self
            .select(sql, &[text(pipeline), text(run_id), text(task)], &[Col::Text, Col::Text])?
            .into_iter()
            .map(|r| (r[0].text().unwrap_or_default(), r[1].text().unwrap_or_default()))
            .collect())
    }

    /// Forgets what a task published (before it runs again).
    pub fn clear_xcoms(&self, pipeline: &str, run_id: &str, task: &str) -> Result<(), StoreError> {
        self.exec("delete from weir_xcom where pipeline = $1 and run_id = $2 and task = $3", &[text(pipeline), text(run_id), text(task)])
            .map(drop)
    }

    /// Records that a task updated an asset (a load's table, a model).
    pub fn record_asset_event(&self, asset: &str, pipeline: &str, run_id: &str, task: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "insert into weir_asset_events (asset, pipeline, run_id, task, updated_at) values ($1, $2, $3, $4, $5)";
        self.exec(sql, &[text(asset), text(pipeline), text(run_id), text(task), time(Some(at))]).map(drop)
    }

    /// When an asset was last updated: by a pipeline task, or by a committed load run whose
    /// name or destination table it is.
    pub fn asset_updated_at(&self, asset: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let events = self.select("select max(updated_at) from weir_asset_events where asset = $1", &[text(asset)], &[Col::Text])?;
        let loads = self.select(
            "select finished_at from weir_load_runs where status = 'committed' and (load_name = $1 or destination = $1)",
            &[text(asset)],
            &[Col::Text],
        )?;
        Ok(events.iter().chain(&loads).filter_map(|r| parse(&r[0])).max())
    }
}

const RUN_COLUMNS: &str = "select pipeline, run_id, run_type, state, interval_start, interval_end, params, queued_at, started_at,
    finished_at, message, owner from weir_pipeline_runs";
const RUN_KINDS: &[Col] = &[Col::Text; 12];

const WORKER_COLUMNS: &str = "select worker_id, kind, host, pid, started_at, heartbeat_at, stopped_at, stopped_by from weir_workers";
const WORKER_KINDS: &[Col] = &[Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text, Col::Text];

fn worker_from(r: Vec<Val>) -> Worker {
    Worker {
        worker_id: r[0].text().unwrap_or_default(),
        kind: r[1].text().unwrap_or_default(),
        host: r[2].text().unwrap_or_default(),
        pid: r[3].int().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        started_at: parse(&r[4]).unwrap_or_default(),
        heartbeat_at: parse(&r[5]).unwrap_or_default(),
        stopped_at: parse(&r[6]),
        stopped_by: r[7].text(),
    }
}

fn run_from(r: Vec<Val>) -> PipelineRun {
    PipelineRun {
        pipeline: r[0].text().unwrap_or_default(),
        run_id: r[1].text().unwrap_or_default(),
        run_type: r[2].text().unwrap_or_default(),
        state: r[3].text().unwrap_or_default(),
        interval_start: parse(&r[4]),
        interval_end: parse(&r[5]),
        params: r[6].text().unwrap_or_else(|| "{}".into()),
        queued_at: parse(&r[7]).unwrap_or_default(),
        started_at: parse(&r[8]),
        finished_at: parse(&r[9]),
        message: r[10].text(),
        owner: r[11].text(),
    }
}

/// Run states as an SQL list; states are Weir's own words, never user input.
fn state_list(states: &[&str]) -> String {
    states.iter().filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_')).map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

pub(crate) fn time(t: Option<DateTime<Utc>>) -> Val {
    Val::Text(t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)))
}

pub(crate) fn parse(v: &Val) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&v.text()?).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, state: &str, start: Option<DateTime<Utc>>) -> PipelineRun {
        PipelineRun {
            pipeline: "daily".into(),
            run_id: id.into(),
            run_type: "manual".into(),
            state: state.into(),
            interval_start: start,
            interval_end: start,
            params: "{}".into(),
            queued_at: Utc::now(),
            started_at: None,
            finished_at: None,
            message: None,
            owner: None,
        }
    }

    #[test]
    fn runs_tasks_attempts_xcoms_and_assets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        let day = DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z").unwrap().with_timezone(&Utc);
        store.save_run(&run("r1", "running", Some(day))).unwrap();
        store.save_run(&run("r1", "success", Some(day))).unwrap();
        let got = store.pipeline_run("daily", "r1").unwrap().unwrap();
        assert_eq!((got.state.as_str(), got.interval_start), ("success", Some(day)));
        assert_eq!(store.runs_for_interval("daily", day).unwrap().len(), 1);
        assert!(store.pipeline_run("daily", "r2").unwrap().is_none());

        let mut t = TaskInstance {
            pipeline: "daily".into(),
            run_id: "r1".into(),
            task: "extract".into(),
            state: "running".into(),
            try_number: 1,
            max_tries: Some(3),
            started_at: Some(day),
            finished_at: None,
            message: None,
        };
        store.save_task(&t).unwrap();
        t.state = "success".into();
        store.save_task(&t).unwrap();
        assert_eq!(store.task_instances("daily", "r1").unwrap(), vec![t]);

        let a = TaskAttempt {
            pipeline: "daily".into(),
            run_id: "r1".into(),
            task: "extract".into(),
            attempt: 1,
            state: "failed".into(),
            started_at: day,
            finished_at: Some(day),
            exit_code: Some(3),
            message: Some("exit 3".into()),
            log_path: None,
            log_tail: Some("boom".into()),
            worker: Some("w1".into()),
            pid: Some(42),
        };
        store.save_attempt(&a).unwrap();
        assert_eq!(store.task_attempts("daily", "r1", "extract").unwrap(), vec![a]);

        store.push_xcom("daily", "r1", "extract", "rows", "42").unwrap();
        store.push_xcom("daily", "r1", "extract", "rows", "43").unwrap();
        assert_eq!(store.xcoms("daily", "r1", "extract").unwrap(), vec![("rows".to_string(), "43".to_string())]);
        store.clear_xcoms("daily", "r1", "extract").unwrap();
        assert!(store.xcoms("daily", "r1", "extract").unwrap().is_empty());

        assert_eq!(store.asset_updated_at("raw.orders").unwrap(), None);
        store.record_asset_event("raw.orders", "daily", "r1", "extract", day).unwrap();
        assert_eq!(store.asset_updated_at("raw.orders").unwrap(), Some(day));
    }

    fn queued(id: &str, start: Option<DateTime<Utc>>) -> PipelineRun {
        PipelineRun { run_type: "scheduled".into(), state: "queued".into(), ..run(id, "queued", start) }
    }

    fn day(d: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2024-03-{d:02}T00:00:00Z")).unwrap().with_timezone(&Utc)
    }

    /// Queues, claims (up to max_active_runs, not while paused), requeues; workers beat,
    /// go silent and are stopped once.
    fn queue_and_workers(store: &Store) {
        assert!(store.enqueue_run(&queued("s1", Some(day(1)))).unwrap());
        assert!(!store.enqueue_run(&queued("s1", Some(day(1)))).unwrap(), "the same run is queued once");
        assert!(!store.enqueue_run(&queued("other", Some(day(1)))).unwrap(), "an interval with a run gets no other");
        assert!(store.enqueue_run(&queued("s2", Some(day(2)))).unwrap());
        store.set_paused("daily", true).unwrap();
        assert!(store.claim_runs("daily", "w1", 1, 1, Utc::now()).unwrap().is_empty(), "a paused pipeline's runs wait");
        store.set_paused("daily", false).unwrap();
        let got = store.claim_runs("daily", "w1", 1, 1, Utc::now()).unwrap();
        assert_eq!(got.iter().map(|r| (r.run_id.as_str(), r.owner.as_deref())).collect::<Vec<_>>(), vec![("s1", Some("w1"))]);
        assert!(store.claim_runs("daily", "w2", 1, 1, Utc::now()).unwrap().is_empty(), "max_active_runs is 1");
        assert_eq!(store.runs_in_state("running", Some("w1")).unwrap().len(), 1);
        assert!(!store.requeue_run("daily", "s1", &["running"], Some("w2"), None).unwrap(), "only the owner's run");
        assert!(store.requeue_run("daily", "s1", &["running"], Some("w1"), Some("worker died")).unwrap());
        let again = store.claim_runs("daily", "w2", 2, 1, Utc::now()).unwrap();
        assert_eq!(again.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["s1", "s2"]);
        assert_eq!(store.latest_interval_start("daily").unwrap(), Some(day(2)));
        assert_eq!(store.count_runs("daily", "running").unwrap(), 2);
        assert!(!store.fail_run("daily", "s2", "w1", "x").unwrap(), "only the owner ends it");
        assert!(store.fail_run("daily", "s2", "w2", "could not run").unwrap());
        assert_eq!(
            store.find_runs("daily", &RunFilter { state: Some("failed".into()), ..Default::default() }, 10).unwrap()[0].message.as_deref(),
            Some("could not run")
        );
        assert!(store.take_run("daily", "s2", &["failed"], Some("w2")).unwrap());

        let t0 = Utc::now() - chrono::Duration::seconds(60);
        for id in ["w1", "w2"] {
            let w = Worker {
                worker_id: id.into(),
                kind: "scheduler".into(),
                host: "h".into(),
                pid: 7,
                started_at: t0,
                heartbeat_at: t0,
                stopped_at: None,
                stopped_by: None,
            };
            store.register_worker(&w).unwrap();
        }
        assert!(store.heartbeat("w2", Utc::now()).unwrap());
        let silent = store.silent_workers(Utc::now() - chrono::Duration::seconds(30)).unwrap();
        assert_eq!(silent.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(), vec!["w1"]);
        assert!(store.stop_worker("w1", Utc::now(), Some("w2")).unwrap());
        assert!(!store.stop_worker("w1", Utc::now(), Some("w3")).unwrap(), "declared dead once");
        assert!(!store.heartbeat("w1", Utc::now()).unwrap(), "a dead worker learns it from its next beat");
        assert_eq!(store.worker("w1").unwrap().unwrap().stopped_by.as_deref(), Some("w2"));
        assert_eq!(store.live_workers().unwrap().len(), 1);
        assert_eq!(store.prune_workers(Utc::now() - chrono::Duration::days(1)).unwrap(), 0, "stopped just now: kept");
        assert_eq!(store.prune_workers(Utc::now() + chrono::Duration::seconds(1)).unwrap(), 1, "only the stopped one");
        assert!(store.worker("w1").unwrap().is_none() && store.worker("w2").unwrap().is_some());
    }

    #[test]
    fn runs_filtered_by_state_and_time_and_a_grid_of_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        let at = |h: i64| DateTime::from_timestamp(1_700_000_000 + h * 3600, 0).unwrap();
        for h in 0..6 {
            let mut r = run(&format!("r{h}"), if h % 2 == 0 { "success" } else { "failed" }, None);
            r.queued_at = at(h);
            store.save_run(&r).unwrap();
            for task in ["a", "b"] {
                let t = TaskInstance {
                    pipeline: "daily".into(),
                    run_id: r.run_id.clone(),
                    task: task.into(),
                    state: r.state.clone(),
                    try_number: 1,
                    max_tries: None,
                    started_at: Some(at(h)),
                    finished_at: None,
                    message: None,
                };
                store.save_task(&t).unwrap();
            }
        }
        let ids = |f: &RunFilter, limit| store.find_runs("daily", f, limit).unwrap().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(ids(&RunFilter::default(), 3), ["r5", "r4", "r3"]);
        assert_eq!(ids(&RunFilter { state: Some("failed".into()), ..Default::default() }, 10), ["r5", "r3", "r1"]);
        let window = RunFilter { since: Some(at(1)), until: Some(at(4)), ..Default::default() };
        assert_eq!(ids(&window, 10), ["r3", "r2", "r1"]);
        let both = RunFilter { state: Some("success".into()), ..window };
        assert_eq!(ids(&both, 10), ["r2"]);
        let cells = store.task_instances_of("daily", &["r1".into(), "r4".into(), "nope".into()]).unwrap();
        let mut got: Vec<(String, String, String)> = cells.into_iter().map(|t| (t.run_id, t.task, t.state)).collect();
        got.sort();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("r1".into(), "a".into(), "failed".into()));
        assert_eq!(got[3], ("r4".into(), "b".into(), "success".into()));
    }

    #[test]
    fn schedulers_each_claim_their_fair_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        for n in 0..10 {
            store.enqueue_run(&queued(&format!("r{n}"), Some(day(1) + chrono::Duration::hours(n)))).unwrap();
        }
        // Three schedulers, room for 16: ten runs make four, four and two.
        let take = |w: &str| store.claim_runs("daily", w, 16, 3, Utc::now()).unwrap().len();
        assert_eq!((take("a"), take("a"), take("b"), take("c"), take("c")), (4, 0, 4, 2, 0));
        // Room for 4 between two schedulers: two each, though more are queued.
        for n in 0..6 {
            store
                .enqueue_run(&PipelineRun {
                    pipeline: "other".into(),
                    ..queued(&format!("o{n}"), Some(day(2) + chrono::Duration::hours(n)))
                })
                .unwrap();
        }
        let take = |w: &str| store.claim_runs("other", w, 4, 2, Utc::now()).unwrap().len();
        assert_eq!((take("a"), take("a"), take("b"), take("b")), (2, 0, 2, 0));
        // One scheduler alone takes all there is room for.
        assert_eq!(store.claim_runs("other", "a", 6, 1, Utc::now()).unwrap().len(), 2);
    }

    #[test]
    fn sqlite_queue_claims_and_workers() {
        let dir = tempfile::tempdir().unwrap();
        queue_and_workers(&Store::sqlite(&dir.path().join("w.db")).unwrap());
    }

    /// Two connections claiming one pipeline's runs at once, in threads, on the shared
    /// PostgreSQL: every run is claimed once, and never more than max_active_runs at a time.
    #[test]
    fn postgres_claims_race_without_doubles() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_claim_test_{}", std::process::id());
        let store = Store::postgres(url, Some(&schema)).unwrap_or_else(|e| panic!("PostgreSQL at {url} is required: {e}"));
        queue_and_workers(&store);
        for n in 0..40 {
            store.enqueue_run(&queued(&format!("r{n:02}"), Some(day(1) + chrono::Duration::hours(n + 48)))).unwrap();
        }
        let claimed = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for w in ["a", "b", "c"] {
                let claimed = &claimed;
                let schema = &schema;
                scope.spawn(move || {
                    let mine = Store::postgres(url, Some(schema)).unwrap();
                    for _ in 0..200 {
                        for r in mine.claim_runs("daily", w, 3, 1, Utc::now()).unwrap() {
                            claimed.lock().unwrap().push(r.run_id.clone());
                            let mut done = r.clone();
                            done.state = "success".into();
                            done.owner = None;
                            mine.save_run(&done).unwrap();
                        }
                    }
                });
            }
        });
        let mut got = claimed.into_inner().unwrap();
        let n = got.len();
        got.sort();
        got.dedup();
        assert_eq!((n, got.len()), (40, 40), "every queued run claimed exactly once");
        drop(store);
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
    }
}
