//! Stream jobs' checkpoint documents: where the workers of one job keep each partition's
//! window state, so that a partition's state travels with it to whichever worker is dealt
//! it next. On PostgreSQL every machine's workers reach them; on SQLite, one machine's.

use chrono::Utc;

use crate::{Col, StoreError, Tx, Val};

impl crate::Store {
    /// The document `name` of stream job `job`, if there is one.
    pub fn checkpoint_document(&self, job: &str, name: &str) -> Result<Option<String>, StoreError> {
        let rows = self.select(
            "select document from weir_stream_checkpoints where job = $1 and name = $2",
            &[text(job), text(name)],
            &[Col::Text],
        )?;
        Ok(rows.into_iter().next().and_then(|r| r.first().and_then(Val::text)))
    }

    /// Stores `document` as `name` of `job`, replacing the one there was.
    pub fn put_checkpoint_document(&self, job: &str, name: &str, document: &str) -> Result<(), StoreError> {
        self.transaction(|tx| put(tx, job, name, document))
    }

    /// Makes the document `from` the document `to` and forgets `from`, in one transaction;
    /// false when there is no `from` (then nothing changes).
    pub fn promote_checkpoint_document(&self, job: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        self.transaction(|tx| {
            let rows = tx.select(
                "select document from weir_stream_checkpoints where job = $1 and name = $2",
                &[text(job), text(from)],
                &[Col::Text],
            )?;
            let Some(document) = rows.into_iter().next().and_then(|r| r.first().and_then(Val::text)) else { return Ok(false) };
            put(tx, job, to, &document)?;
            tx.exec("delete from weir_stream_checkpoints where job = $1 and name = $2", &[text(job), text(from)])?;
            Ok(true)
        })
    }

    /// Forgets the document `name` of `job` (every document of it with `None`).
    pub fn delete_checkpoint_documents(&self, job: &str, name: Option<&str>) -> Result<u64, StoreError> {
        match name {
            Some(name) => self.exec("delete from weir_stream_checkpoints where job = $1 and name = $2", &[text(job), text(name)]),
            None => self.exec("delete from weir_stream_checkpoints where job = $1", &[text(job)]),
        }
    }
}

fn put(tx: &mut dyn Tx, job: &str, name: &str, document: &str) -> Result<(), StoreError> {
    tx.exec(
        "insert into weir_stream_checkpoints (job, name, document, written_at) values ($1, $2, $3, $4)
         on conflict (job, name) do update set document = excluded.document, written_at = excluded.written_at",
        &[text(job), text(name), text(document), text(&Utc::now().to_rfc3339())],
    )?;
    Ok(())
}

fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::Store;

    fn documents_behave(store: &Store) {
        assert_eq!(store.checkpoint_document("job", "partition-0.json").unwrap(), None);
        store.put_checkpoint_document("job", "partition-0.json", "{\"seq\":1}").unwrap();
        store.put_checkpoint_document("job", "partition-0.next-2.json", "{\"seq\":2}").unwrap();
        store.put_checkpoint_document("other", "partition-0.json", "{}").unwrap();
        assert!(store.promote_checkpoint_document("job", "partition-0.next-2.json", "partition-0.json").unwrap());
        assert_eq!(store.checkpoint_document("job", "partition-0.json").unwrap().as_deref(), Some("{\"seq\":2}"));
        assert_eq!(store.checkpoint_document("job", "partition-0.next-2.json").unwrap(), None);
        assert!(!store.promote_checkpoint_document("job", "partition-0.next-2.json", "partition-0.json").unwrap(), "promoted once");
        assert_eq!(store.checkpoint_document("job", "partition-0.json").unwrap().as_deref(), Some("{\"seq\":2}"));
        assert_eq!(store.delete_checkpoint_documents("job", None).unwrap(), 1);
        assert_eq!(store.checkpoint_document("job", "partition-0.json").unwrap(), None);
        assert_eq!(store.checkpoint_document("other", "partition-0.json").unwrap().as_deref(), Some("{}"), "another job's stay");
    }

    #[test]
    fn sqlite_keeps_checkpoint_documents() {
        let dir = tempfile::tempdir().unwrap();
        documents_behave(&Store::sqlite(&dir.path().join("w.db")).unwrap());
    }

    /// The same on the shared PostgreSQL, in a schema of the test's own.
    #[test]
    fn postgres_keeps_checkpoint_documents() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_stream_docs_test_{}", std::process::id());
        let store = match Store::postgres(url, Some(&schema)) {
            Ok(s) => s,
            Err(e) => panic!("PostgreSQL at {url} is required for this test: {e}"),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| documents_behave(&store)));
        drop(store);
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
