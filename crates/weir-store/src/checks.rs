//! Data-quality history: every measured value of every check on every run, so drift
//! checks can compare a metric with its own past and `weir check --history` can show it.
//!
//! The store keeps what was measured and decided; it does not judge. Thresholds and
//! verdicts are `weir-quality`'s.

use chrono::{DateTime, Utc};

use crate::{Backend, Store, StoreError};

/// One check's outcome on one run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// The invocation id of the run.
    pub run_id: String,
    /// The checked relation as the warehouse renders it: the key, so targets keep apart.
    pub dataset: String,
    /// The check as written (`missing_count(email) = 0`).
    pub check: String,
    /// The metric it measured (`missing_count(email)`): drift checks read history by it.
    pub metric: String,
    pub value: Option<f64>,
    /// `pass`, `warn`, `fail` or `error`.
    pub status: String,
    /// What it was held against (`= 0`, `between 10 and 20`).
    pub threshold: String,
    pub message: Option<String>,
    /// Failing rows, sampled, as a JSON array of objects.
    pub samples: Option<String>,
    pub measured_at: DateTime<Utc>,
}

impl Store {
    /// Records a run's check outcomes, all or none.
    pub fn record_checks(&self, records: &[CheckRecord]) -> Result<(), StoreError> {
        let sql = "insert into weir_check_results
                   (run_id, dataset, check_text, metric, value, status, threshold, message, samples, measured_at)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let tx = conn.transaction().map_err(err)?;
                {
                    let mut stmt = tx.prepare_cached(sql).map_err(err)?;
                    for r in records {
                        stmt.execute(rusqlite::params![
                            r.run_id,
                            r.dataset,
                            r.check,
                            r.metric,
                            r.value,
                            r.status,
                            r.threshold,
                            r.message,
                            r.samples,
                            r.measured_at.to_rfc3339()
                        ])
                        .map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            }
            Backend::Postgres(c) => {
                let mut tx = c.transaction()?;
                let stmt = tx.prepare(sql)?;
                for r in records {
                    let at = r.measured_at.to_rfc3339();
                    tx.execute(
                        &stmt,
                        &[&r.run_id, &r.dataset, &r.check, &r.metric, &r.value, &r.status, &r.threshold, &r.message, &r.samples, &at],
                    )?;
                }
                tx.commit().map_err(Into::into)
            }
        })
    }

    /// The last `limit` values of a metric on a dataset, newest first, one per run, leaving
    /// out the run `excluding` (the one measuring now).
    pub fn metric_history(&self, dataset: &str, metric: &str, excluding: &str, limit: usize) -> Result<Vec<f64>, StoreError> {
        let sql = "select max(value), max(measured_at) as at from weir_check_results
                   where dataset = $1 and metric = $2 and run_id <> $3 and value is not null
                   group by run_id order by at desc limit $4";
        let limit = limit as i64;
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows = stmt.query_map(rusqlite::params![dataset, metric, excluding, limit], |r| r.get::<_, f64>(0)).map_err(err)?;
                rows.collect::<Result<Vec<f64>, _>>().map_err(err)
            }
            Backend::Postgres(c) => {
                Ok(c.query(sql, &[&dataset, &metric, &excluding, &limit])?.iter().map(|r| r.get::<_, f64>(0)).collect())
            }
        })
    }

    /// The newest `limit` outcomes recorded on one dataset, oldest first: the history a
    /// check's chart draws.
    pub fn dataset_checks(&self, dataset: &str, limit: usize) -> Result<Vec<CheckRecord>, StoreError> {
        let sql = "select * from (
                     select run_id, dataset, check_text, metric, value, status, threshold, message, samples, measured_at
                     from weir_check_results where dataset = $1 order by measured_at desc limit $2
                   ) newest order by measured_at";
        self.check_records(sql, dataset, limit)
    }

    /// Recorded outcomes whose dataset or check text contains `pattern`, oldest first,
    /// at most the newest `limit`.
    pub fn check_history(&self, pattern: &str, limit: usize) -> Result<Vec<CheckRecord>, StoreError> {
        let sql = "select * from (
                     select run_id, dataset, check_text, metric, value, status, threshold, message, samples, measured_at
                     from weir_check_results
                     where strpos(dataset, $1) > 0 or strpos(check_text, $1) > 0
                     order by measured_at desc limit $2
                   ) newest order by measured_at";
        self.check_records(&sql.replace("strpos(", if self.sqlite_file().is_some() { "instr(" } else { "strpos(" }), pattern, limit)
    }

    /// Check outcomes a query with one text parameter and a limit selects.
    fn check_records(&self, sql: &str, param: &str, limit: usize) -> Result<Vec<CheckRecord>, StoreError> {
        let limit = limit as i64;
        type Row = (String, String, String, String, Option<f64>, String, String, Option<String>, Option<String>, String);
        let rows: Vec<Row> = self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows = stmt
                    .query_map(rusqlite::params![param, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
                    })
                    .map_err(err)?;
                rows.collect::<Result<Vec<Row>, _>>().map_err(err)
            }
            Backend::Postgres(c) => Ok(c
                .query(sql, &[&param, &limit])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8), r.get(9)))
                .collect()),
        })?;
        rows.into_iter()
            .map(|(run_id, dataset, check, metric, value, status, threshold, message, samples, at)| {
                let measured_at = DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| StoreError::Config(format!("weir_check_results holds '{at}', which is not a timestamp")))?
                    .with_timezone(&Utc);
                Ok(CheckRecord { run_id, dataset, check, metric, value, status, threshold, message, samples, measured_at })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: &str, metric: &str, value: f64, secs: i64) -> CheckRecord {
        CheckRecord {
            run_id: run.into(),
            dataset: "db.main.orders".into(),
            check: format!("{metric} > 0"),
            metric: metric.into(),
            value: Some(value),
            status: "pass".into(),
            threshold: "> 0".into(),
            message: None,
            samples: None,
            measured_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn metric_history_is_newest_first_one_value_per_run_without_the_current_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        history_behaves(&store);
    }

    /// The same on the shared PostgreSQL, in a schema of the test's own.
    #[test]
    fn postgres_keeps_check_history_too() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_checks_test_{}", std::process::id());
        let store = match Store::postgres(url, Some(&schema)) {
            Ok(s) => s,
            Err(e) => panic!("PostgreSQL at {url} is required for this test: {e}"),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| history_behaves(&store)));
        drop(store);
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    fn history_behaves(store: &Store) {
        store.record_checks(&[rec("r1", "row_count", 10.0, 1), rec("r1", "row_count", 10.0, 1), rec("r1", "avg(x)", 3.0, 1)]).unwrap();
        store.record_checks(&[rec("r2", "row_count", 12.0, 2)]).unwrap();
        store.record_checks(&[rec("r3", "row_count", 13.0, 3)]).unwrap();
        assert_eq!(store.metric_history("db.main.orders", "row_count", "r3", 5).unwrap(), vec![12.0, 10.0]);
        assert_eq!(store.metric_history("db.main.orders", "row_count", "r9", 1).unwrap(), vec![13.0]);
        assert!(store.metric_history("db.main.other", "row_count", "r9", 5).unwrap().is_empty());
        let h = store.check_history("row_count", 2).unwrap();
        assert_eq!(h.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["r2", "r3"], "the newest two, oldest first");
        let mut other = rec("r4", "row_count", 1.0, 4);
        other.dataset = "db.main.orders_v2".into();
        store.record_checks(&[other]).unwrap();
        let d = store.dataset_checks("db.main.orders", 3).unwrap();
        assert_eq!(
            d.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r1", "r2", "r3"],
            "the newest three of its own, oldest first"
        );
        assert_eq!(store.check_history("orders_v2", 5).unwrap().len(), 1);
    }
}
