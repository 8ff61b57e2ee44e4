//! Build history: each node's outcome on every build, so the UI can show a model's last
//! builds with their rows and timings, and colour the asset graph by each node's last status.
//! `target/run_results.json` holds only the last invocation; this keeps them all.

use chrono::{DateTime, Utc};

use crate::pipelines::{parse, text, time};
use crate::{Col, Store, StoreError, Val};

/// One node's outcome in one build.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRun {
    pub unique_id: String,
    /// The build's invocation id.
    pub invocation: String,
    /// `success`, `error`, `skipped`, `pass`, `warn`, `fail`, ...
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub rows: Option<u64>,
    pub message: Option<String>,
    /// The pipeline run and task that ran the build, when a pipeline did.
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

const COLUMNS: &str = "unique_id, invocation, status, started_at, completed_at, rows_affected, message, pipeline, run_id";
const KINDS: &[Col] = &[Col::Text, Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Text, Col::Text];

impl Store {
    /// Records a build's outcomes, all or none.
    pub fn record_node_runs(&self, runs: &[NodeRun]) -> Result<(), StoreError> {
        let sql = format!("insert into weir_node_runs ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        let runs = runs.to_vec();
        self.transaction(move |tx| {
            for r in &runs {
                tx.exec(
                    &sql,
                    &[
                        text(&r.unique_id),
                        text(&r.invocation),
                        text(&r.status),
                        time(Some(r.started_at)),
                        time(Some(r.completed_at)),
                        Val::Int(r.rows.map(|n| n.min(i64::MAX as u64) as i64)),
                        Val::Text(r.message.clone()),
                        Val::Text(r.pipeline.clone()),
                        Val::Text(r.run_id.clone()),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// A node's last `limit` builds, newest first.
    pub fn node_runs(&self, unique_id: &str, limit: usize) -> Result<Vec<NodeRun>, StoreError> {
        let sql = format!("select {COLUMNS} from weir_node_runs where unique_id = $1 order by completed_at desc limit $2");
        let limit = Val::Int(Some(limit.min(i64::MAX as usize) as i64));
        Ok(self.select(&sql, &[text(unique_id), limit], KINDS)?.into_iter().map(node_run).collect())
    }

    /// Every node's last build.
    pub fn last_node_runs(&self) -> Result<Vec<NodeRun>, StoreError> {
        let sql = format!(
            "select {COLUMNS} from (select *, row_number() over (partition by unique_id order by completed_at desc) as n
                 from weir_node_runs) last where n = 1"
        );
        Ok(self.select(&sql, &[], KINDS)?.into_iter().map(node_run).collect())
    }
}

fn node_run(r: Vec<Val>) -> NodeRun {
    NodeRun {
        unique_id: r[0].text().unwrap_or_default(),
        invocation: r[1].text().unwrap_or_default(),
        status: r[2].text().unwrap_or_default(),
        started_at: parse(&r[3]).unwrap_or_default(),
        completed_at: parse(&r[4]).unwrap_or_default(),
        rows: r[5].int().and_then(|n| u64::try_from(n).ok()),
        message: r[6].text(),
        pipeline: r[7].text(),
        run_id: r[8].text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, invocation: &str, status: &str, at: i64) -> NodeRun {
        let t = DateTime::from_timestamp(at, 0).unwrap();
        NodeRun {
            unique_id: id.into(),
            invocation: invocation.into(),
            status: status.into(),
            started_at: t,
            completed_at: t + chrono::Duration::seconds(2),
            rows: Some(at as u64),
            message: None,
            pipeline: None,
            run_id: None,
        }
    }

    #[test]
    fn keeps_every_build_and_finds_each_nodes_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("weir.db")).unwrap();
        store.record_node_runs(&[run("model.a", "i1", "success", 100), run("model.b", "i1", "error", 100)]).unwrap();
        store.record_node_runs(&[run("model.a", "i2", "error", 200)]).unwrap();
        let a = store.node_runs("model.a", 10).unwrap();
        assert_eq!(a.iter().map(|r| r.invocation.as_str()).collect::<Vec<_>>(), ["i2", "i1"]);
        assert_eq!(a[1].rows, Some(100));
        let mut last: Vec<(String, String)> = store.last_node_runs().unwrap().into_iter().map(|r| (r.unique_id, r.status)).collect();
        last.sort();
        assert_eq!(last, [("model.a".to_string(), "error".to_string()), ("model.b".to_string(), "error".to_string())]);
        assert_eq!(store.node_runs("model.a", 1).unwrap().len(), 1);
    }
}
