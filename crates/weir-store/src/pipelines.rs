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
                       queued_at, started_at, finished_at, message)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                   on conflict (pipeline, run_id) do update set run_type = excluded.run_type, state = excluded.state,
                       interval_start = excluded.interval_start, interval_end = excluded.interval_end, params = excluded.params,
                       started_at = excluded.started_at, finished_at = excluded.finished_at, message = excluded.message";
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
            ],
        )
        .map(drop)
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

    /// The runs of a pipeline for the data interval starting at `start`, newest first.
    pub fn runs_for_interval(&self, pipeline: &str, start: DateTime<Utc>) -> Result<Vec<PipelineRun>, StoreError> {
        let sql = format!("{RUN_COLUMNS} where pipeline = $1 and interval_start = $2 order by queued_at desc");
        Ok(self.select(&sql, &[text(pipeline), time(Some(start))], RUN_KINDS)?.into_iter().map(run_from).collect())
    }

    /// Records where a task instance stands.
    pub fn save_task(&self, t: &TaskInstance) -> Result<(), StoreError> {
        let sql = "insert into weir_task_instances (pipeline, run_id, task, state, try_number, started_at, finished_at, message)
                   values ($1, $2, $3, $4, $5, $6, $7, $8)
                   on conflict (pipeline, run_id, task) do update set state = excluded.state, try_number = excluded.try_number,
                       started_at = excluded.started_at, finished_at = excluded.finished_at, message = excluded.message";
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
            ],
        )
        .map(drop)
    }

    /// The task instances of a run, by task name.
    pub fn task_instances(&self, pipeline: &str, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        let sql = "select task, state, try_number, started_at, finished_at, message from weir_task_instances
                   where pipeline = $1 and run_id = $2 order by task";
        let kinds = &[Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text];
        Ok(self
            .select(sql, &[text(pipeline), text(run_id)], kinds)?
            .into_iter()
            .map(|r| TaskInstance {
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                task: r[0].text().unwrap_or_default(),
                state: r[1].text().unwrap_or_default(),
                try_number: r[2].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                started_at: parse(&r[3]),
                finished_at: parse(&r[4]),
                message: r[5].text(),
            })
            .collect())
    }

    /// Records an attempt (when it starts, and again when it ends).
    pub fn save_attempt(&self, a: &TaskAttempt) -> Result<(), StoreError> {
        let sql = "insert into weir_task_attempts (pipeline, run_id, task, attempt, state, started_at, finished_at, exit_code,
                       message, log_path, log_tail)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                   on conflict (pipeline, run_id, task, attempt) do update set state = excluded.state,
                       finished_at = excluded.finished_at, exit_code = excluded.exit_code, message = excluded.message,
                       log_path = excluded.log_path, log_tail = excluded.log_tail";
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
            ],
        )
        .map(drop)
    }

    /// Every attempt of a task in a run, first first.
    pub fn task_attempts(&self, pipeline: &str, run_id: &str, task: &str) -> Result<Vec<TaskAttempt>, StoreError> {
        let sql = "select attempt, state, started_at, finished_at, exit_code, message, log_path, log_tail from weir_task_attempts
                   where pipeline = $1 and run_id = $2 and task = $3 order by attempt";
        let kinds = &[Col::Int, Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text];
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
    finished_at, message from weir_pipeline_runs";
const RUN_KINDS: &[Col] = &[Col::Text; 11];

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
    }
}

fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

fn time(t: Option<DateTime<Utc>>) -> Val {
    Val::Text(t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)))
}

fn parse(v: &Val) -> Option<DateTime<Utc>> {
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
}
