//! Extract-and-load state: every load run (what it read, wrote and rejected), each load's
//! high-water mark, and the files already loaded, so a rerun extracts only what is new.
//!
//! A load commits in the warehouse first and is recorded here after. A run left `running`
//! by a killed process is settled by the loader against the warehouse's own record of
//! committed loads ([`Store::unsettled_loads`]), so the high-water mark advances exactly when
//! the data did. A load into a topic is recorded here before its events are committed
//! ([`Store::prepare_load`]) and settled from the event log's own mark.

use chrono::{DateTime, Utc};

use crate::{Backend, Store, StoreError};

/// One run of one load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRun {
    pub load_id: String,
    pub load_name: String,
    /// The destination table as the warehouse renders it: the key, so targets keep apart.
    pub destination: String,
    /// `running`, `committed` or `failed`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows_read: Option<u64>,
    pub rows_loaded: Option<u64>,
    pub rows_rejected: Option<u64>,
    /// The high-water mark of the incremental cursor after this run.
    pub cursor: Option<String>,
    pub message: Option<String>,
}

/// A file a load has read, recognised by its size, time and content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedFile {
    pub path: String,
    pub size: u64,
    /// Modification time, RFC 3339.
    pub modified: String,
    /// `blake3:<hex>` of the bytes; a bare hex is a SHA-256 recorded by an older Weir.
    pub content_hash: String,
}

impl LoadedFile {
    /// Files as the JSON text a run's record keeps them in (the destination's `_weir_loads`,
    /// a prepared run here).
    pub fn list_json(files: &[LoadedFile]) -> String {
        let items = files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "size": f.size, "modified": f.modified, "content_hash": f.content_hash}));
        serde_json::Value::Array(items.collect()).to_string()
    }

    /// The files of [`LoadedFile::list_json`]'s text (`sha256` for the hash, as an older
    /// Weir wrote it, too); `None` when it is not such a list.
    pub fn parse_list(json: &str) -> Option<Vec<LoadedFile>> {
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str(json) else { return None };
        items
            .iter()
            .map(|f| {
                Some(LoadedFile {
                    path: f.get("path")?.as_str()?.to_string(),
                    size: f.get("size")?.as_u64()?,
                    modified: f.get("modified")?.as_str()?.to_string(),
                    content_hash: f.get("content_hash").or_else(|| f.get("sha256"))?.as_str()?.to_string(),
                })
            })
            .collect()
    }
}

impl LoadRun {
    /// A run that ended without committing anything, as a later run settles it.
    pub fn failed(load_id: &str, load_name: &str, destination: &str, message: &str) -> LoadRun {
        LoadRun {
            load_id: load_id.to_string(),
            load_name: load_name.to_string(),
            destination: destination.to_string(),
            status: "failed".into(),
            started_at: Utc::now(),
            finished_at: Some(Utc::now()),
            rows_read: None,
            rows_loaded: None,
            rows_rejected: None,
            cursor: None,
            message: Some(message.to_string()),
        }
    }
}

impl Store {
    /// Records that a load run started.
    pub fn begin_load(&self, run: &LoadRun) -> Result<(), StoreError> {
        let sql = "insert into weir_load_runs (load_id, load_name, destination, status, started_at) values ($1, $2, $3, $4, $5)";
        let at = run.started_at.to_rfc3339();
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .execute(sql, rusqlite::params![run.load_id, run.load_name, run.destination, run.status, at])
                .map(drop)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => {
                c.execute(sql, &[&run.load_id, &run.load_name, &run.destination, &run.status, &at]).map(drop).map_err(Into::into)
            }
        })
    }

    /// Records how a load run ended and, when it committed, the files it read, in one
    /// transaction.
    pub fn finish_load(&self, run: &LoadRun, files: &[LoadedFile]) -> Result<(), StoreError> {
        // Parameters in the order they appear: SQLite numbers `$n` names by appearance.
        let update = "update weir_load_runs set status = $1, finished_at = $2, rows_read = $3, rows_loaded = $4,
                      rows_rejected = $5, cursor_value = $6, message = $7 where load_id = $8";
        let file_sql = "insert into weir_load_files (destination, path, size, modified, content_hash, load_id, loaded_at)
                        values ($1, $2, $3, $4, $5, $6, $7)
                        on conflict (destination, path) do update set size = excluded.size, modified = excluded.modified,
                        content_hash = excluded.content_hash, load_id = excluded.load_id, loaded_at = excluded.loaded_at";
        let at = run.finished_at.unwrap_or_else(Utc::now).to_rfc3339();
        let n = |v: Option<u64>| v.map(|v| v as i64);
        let (read, loaded, rejected) = (n(run.rows_read), n(run.rows_loaded), n(run.rows_rejected));
        let keep_files = run.status == "committed";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let tx = conn.transaction().map_err(err)?;
                tx.execute(update, rusqlite::params![run.status, at, read, loaded, rejected, run.cursor, run.message, run.load_id])
                    .map_err(err)?;
                if keep_files {
                    let mut stmt = tx.prepare_cached(file_sql).map_err(err)?;
                    for f in files {
                        stmt.execute(rusqlite::params![
                            run.destination,
                            f.path,
                            f.size as i64,
                            f.modified,
                            f.content_hash,
                            run.load_id,
                            at
                        ])
                        .map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            }
            Backend::Postgres(c) => {
                let mut tx = c.transaction()?;
                tx.execute(update, &[&run.status, &at, &read, &loaded, &rejected, &run.cursor, &run.message, &run.load_id])?;
                if keep_files {
                    let stmt = tx.prepare(file_sql)?;
                    for f in files {
                        let size = f.size as i64;
                        tx.execute(&stmt, &[&run.destination, &f.path, &size, &f.modified, &f.content_hash, &run.load_id, &at])?;
                    }
                }
                tx.commit().map_err(Into::into)
            }
        })
    }

    /// Records what a run is about to commit where the store cannot be part of the commit (an
    /// event log): its counts, high-water mark and files, under status `publishing`. A run a
    /// killed process left so is settled from the log's own record ([`Store::prepared_load`]).
    pub fn prepare_load(&self, run: &LoadRun, files: &[LoadedFile]) -> Result<(), StoreError> {
        let sql = "update weir_load_runs set status = 'publishing', rows_read = $1, rows_loaded = $2, rows_rejected = $3,
                   cursor_value = $4, pending_files = $5 where load_id = $6";
        let n = |v: Option<u64>| v.map(|v| v as i64);
        let (read, loaded, rejected) = (n(run.rows_read), n(run.rows_loaded), n(run.rows_rejected));
        let files = LoadedFile::list_json(files);
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => conn
                .execute(sql, rusqlite::params![read, loaded, rejected, run.cursor, files, run.load_id])
                .map(drop)
                .map_err(|source| StoreError::Sqlite { path: path.clone(), source }),
            Backend::Postgres(c) => {
                c.execute(sql, &[&read, &loaded, &rejected, &run.cursor, &files, &run.load_id]).map(drop).map_err(Into::into)
            }
        })
    }

    /// What a run left `publishing` was about to commit: its counts and high-water mark (in
    /// a [`LoadRun`] otherwise as it began), and its files.
    pub fn prepared_load(&self, load_id: &str) -> Result<Option<(LoadRun, Vec<LoadedFile>)>, StoreError> {
        let sql = "select load_name, destination, started_at, rows_read, rows_loaded, rows_rejected, cursor_value, pending_files
                   from weir_load_runs where load_id = $1 and status = 'publishing'";
        type Row = (String, String, String, Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<String>);
        let row: Option<Row> = self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let mut rows = stmt.query([load_id]).map_err(err)?;
                match rows.next().map_err(err)? {
                    Some(r) => Ok(Some((
                        r.get(0).map_err(err)?,
                        r.get(1).map_err(err)?,
                        r.get(2).map_err(err)?,
                        r.get(3).map_err(err)?,
                        r.get(4).map_err(err)?,
                        r.get(5).map_err(err)?,
                        r.get(6).map_err(err)?,
                        r.get(7).map_err(err)?,
                    ))),
                    None => Ok(None),
                }
            }
            Backend::Postgres(c) => {
                Ok(c.query_opt(sql, &[&load_id])?.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7))))
            }
        })?;
        let Some((load_name, destination, started, read, loaded, rejected, cursor, files)) = row else { return Ok(None) };
        let bad = |what: &str| StoreError::Config(format!("weir_load_runs holds a damaged {what} for {load_id}"));
        let started_at = DateTime::parse_from_rfc3339(&started).map_err(|_| bad("start time"))?.with_timezone(&Utc);
        let files = LoadedFile::parse_list(files.as_deref().unwrap_or("[]")).ok_or_else(|| bad("list of files"))?;
        let u = |v: Option<i64>| v.map(|v| v as u64);
        let run = LoadRun {
            load_id: load_id.to_string(),
            load_name,
            destination,
            status: "publishing".into(),
            started_at,
            finished_at: None,
            rows_read: u(read),
            rows_loaded: u(loaded),
            rows_rejected: u(rejected),
            cursor,
            message: None,
        };
        Ok(Some((run, files)))
    }

    /// The high-water mark of the newest committed run that set one.
    pub fn load_cursor(&self, destination: &str) -> Result<Option<String>, StoreError> {
        let sql = "select cursor_value from weir_load_runs where destination = $1 and status = 'committed'
                   and cursor_value is not null order by finished_at desc limit 1";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let mut rows = stmt.query([destination]).map_err(err)?;
                match rows.next().map_err(err)? {
                    Some(r) => r.get(0).map_err(err),
                    None => Ok(None),
                }
            }
            Backend::Postgres(c) => Ok(c.query_opt(sql, &[&destination])?.and_then(|r| r.get(0))),
        })
    }

    /// Forgets a destination's high-water mark and files (a full refresh starts over).
    pub fn reset_load_state(&self, destination: &str) -> Result<(), StoreError> {
        let sqls =
            ["update weir_load_runs set cursor_value = null where destination = $1", "delete from weir_load_files where destination = $1"];
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let tx = conn.transaction().map_err(err)?;
                for sql in sqls {
                    tx.execute(sql, [destination]).map_err(err)?;
                }
                tx.commit().map_err(err)
            }
            Backend::Postgres(c) => {
                let mut tx = c.transaction()?;
                for sql in sqls {
                    tx.execute(sql, &[&destination])?;
                }
                tx.commit().map_err(Into::into)
            }
        })
    }

    /// The files already loaded into a destination.
    pub fn loaded_files(&self, destination: &str) -> Result<Vec<LoadedFile>, StoreError> {
        let sql = "select path, size, modified, content_hash from weir_load_files where destination = $1 order by path";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows = stmt
                    .query_map([destination], |r| {
                        Ok(LoadedFile { path: r.get(0)?, size: r.get::<_, i64>(1)? as u64, modified: r.get(2)?, content_hash: r.get(3)? })
                    })
                    .map_err(err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(err)
            }
            Backend::Postgres(c) => Ok(c
                .query(sql, &[&destination])?
                .iter()
                .map(|r| LoadedFile { path: r.get(0), size: r.get::<_, i64>(1) as u64, modified: r.get(2), content_hash: r.get(3) })
                .collect()),
        })
    }

    /// Runs of a destination still marked `running` or `publishing`: their process died
    /// before recording how they ended.
    pub fn unsettled_loads(&self, destination: &str) -> Result<Vec<String>, StoreError> {
        let sql = "select load_id from weir_load_runs where destination = $1 and status in ('running', 'publishing') order by started_at";
        self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows = stmt.query_map([destination], |r| r.get(0)).map_err(err)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(err)
            }
            Backend::Postgres(c) => Ok(c.query(sql, &[&destination])?.iter().map(|r| r.get(0)).collect()),
        })
    }

    /// The newest runs of a load, newest first, for `weir load --history`.
    pub fn load_runs(&self, load_name: &str, limit: usize) -> Result<Vec<LoadRun>, StoreError> {
        let sql = "select load_id, load_name, destination, status, started_at, finished_at, rows_read, rows_loaded,
                   rows_rejected, cursor_value, message from weir_load_runs where load_name = $1 order by started_at desc limit $2";
        type Row =
            (String, String, String, String, String, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<String>);
        let limit = limit as i64;
        let rows: Vec<Row> = self.with(|b| match b {
            Backend::Sqlite { conn, path } => {
                let err = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn.prepare_cached(sql).map_err(err)?;
                let rows = stmt
                    .query_map(rusqlite::params![load_name, limit], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                            r.get(9)?,
                            r.get(10)?,
                        ))
                    })
                    .map_err(err)?;
                rows.collect::<Result<Vec<Row>, _>>().map_err(err)
            }
            Backend::Postgres(c) => Ok(c
                .query(sql, &[&load_name, &limit])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8), r.get(9), r.get(10)))
                .collect()),
        })?;
        let time = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        rows.into_iter()
            .map(|(load_id, load_name, destination, status, started, finished, read, loaded, rejected, cursor, message)| {
                let bad = |v: &str| StoreError::Config(format!("weir_load_runs holds '{v}' for {load_id}, which is not a time"));
                let u = |v: Option<i64>| v.map(|v| v as u64);
                Ok(LoadRun {
                    started_at: time(&started).map_err(|_| bad(&started))?,
                    finished_at: finished.as_deref().map(|f| time(f).map_err(|_| bad(f))).transpose()?,
                    load_id,
                    load_name,
                    destination,
                    status,
                    rows_read: u(read),
                    rows_loaded: u(loaded),
                    rows_rejected: u(rejected),
                    cursor,
                    message,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: &str, cursor: Option<&str>) -> LoadRun {
        LoadRun {
            load_id: id.into(),
            load_name: "orders".into(),
            destination: "\"raw\".\"orders\"".into(),
            status: status.into(),
            started_at: Utc::now(),
            finished_at: Some(Utc::now()),
            rows_read: Some(3),
            rows_loaded: Some(2),
            rows_rejected: Some(1),
            cursor: cursor.map(str::to_string),
            message: None,
        }
    }

    #[test]
    fn the_cursor_advances_only_with_committed_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        let dest = "\"raw\".\"orders\"";
        let file = LoadedFile { path: "a.csv".into(), size: 10, modified: "2024-01-01T00:00:00Z".into(), content_hash: "blake3:ab".into() };
        let first = run("l1", "running", None);
        store.begin_load(&first).unwrap();
        assert_eq!(store.unsettled_loads(dest).unwrap(), vec!["l1".to_string()]);
        store.finish_load(&run("l1", "committed", Some("5")), std::slice::from_ref(&file)).unwrap();
        assert_eq!(store.load_cursor(dest).unwrap().as_deref(), Some("5"));
        assert_eq!(store.loaded_files(dest).unwrap(), vec![file.clone()]);
        store.begin_load(&run("l2", "running", None)).unwrap();
        let other = LoadedFile { path: "b.csv".into(), ..file.clone() };
        store.finish_load(&run("l2", "failed", Some("9")), &[other]).unwrap();
        assert_eq!(store.load_cursor(dest).unwrap().as_deref(), Some("5"), "a failed run moves nothing");
        assert_eq!(store.loaded_files(dest).unwrap().len(), 1);
        assert!(store.unsettled_loads(dest).unwrap().is_empty());
        let runs = store.load_runs("orders", 10).unwrap();
        assert_eq!(runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), vec!["failed", "committed"]);
        store.reset_load_state(dest).unwrap();
        assert_eq!(store.load_cursor(dest).unwrap(), None);
        assert!(store.loaded_files(dest).unwrap().is_empty());
    }

    #[test]
    fn a_prepared_run_keeps_what_it_was_about_to_commit_until_it_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(&dir.path().join("w.db")).unwrap();
        let dest = "topic:orders";
        let file = LoadedFile { path: "a.csv".into(), size: 10, modified: "2024-01-01T00:00:00Z".into(), content_hash: "blake3:ab".into() };
        let begun = LoadRun { destination: dest.into(), ..run("l1", "running", None) };
        store.begin_load(&begun).unwrap();
        assert_eq!(store.prepared_load("l1").unwrap(), None, "not prepared yet");
        store.prepare_load(&LoadRun { cursor: Some("7".into()), ..begun.clone() }, std::slice::from_ref(&file)).unwrap();
        assert_eq!(store.unsettled_loads(dest).unwrap(), vec!["l1".to_string()], "publishing is not settled");
        assert_eq!(store.load_cursor(dest).unwrap(), None, "the mark moves only once it committed");
        let (prepared, files) = store.prepared_load("l1").unwrap().unwrap();
        assert_eq!((prepared.rows_loaded, prepared.cursor.as_deref(), prepared.status.as_str()), (Some(2), Some("7"), "publishing"));
        assert_eq!(files, vec![file.clone()]);
        store.finish_load(&LoadRun { status: "committed".into(), finished_at: Some(Utc::now()), ..prepared }, &files).unwrap();
        assert_eq!(store.load_cursor(dest).unwrap().as_deref(), Some("7"));
        assert_eq!(store.loaded_files(dest).unwrap(), vec![file]);
        assert!(store.unsettled_loads(dest).unwrap().is_empty());
    }
}
