//! Where a job's checkpoints are kept: its window state (or a join's held events) with the
//! input positions, as documents named `checkpoint.json` and, while a topic sink's commit is
//! under way, `checkpoint.next.json`. A job reads and writes them through
//! [`CheckpointStore`] only, so a store that every worker reaches (an object-store path, the
//! metadata database) can stand in for the local folder.

use std::path::PathBuf;

use crate::StreamError;

/// Documents stored by name, each written whole or not at all.
pub trait CheckpointStore: std::fmt::Debug + Send + Sync {
    /// Where the document `name` is, for messages.
    fn location(&self, name: &str) -> String;
    /// The document `name`, if there is one.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError>;
    /// Stores `bytes` as `name`: after a crash the document is either the old one or this.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError>;
    /// Makes the document `from` the document `to` and forgets `from`: after a crash `to` is
    /// either the old one or `from`'s.
    fn promote(&self, from: &str, to: &str) -> Result<(), StreamError>;
    /// Forgets the document `name`, if there is one.
    fn delete(&self, name: &str) -> Result<(), StreamError>;
    /// Forgets every document (the job is reset).
    fn clear(&self) -> Result<(), StreamError>;
}

/// Checkpoints as files of a local folder (`.weir/streams/<job>/`), written to a temporary
/// file, synced and renamed over the old one.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }
}

impl CheckpointStore for LocalDir {
    fn location(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StreamError::io(&path, e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| StreamError::io(&self.dir, e))?;
        Ok(weir_log::write_atomically(&self.dir.join(name), bytes)?)
    }

    fn promote(&self, from: &str, to: &str) -> Result<(), StreamError> {
        let from = self.dir.join(from);
        std::fs::rename(&from, self.dir.join(to)).map_err(|e| StreamError::io(&from, e))
    }

    fn delete(&self, name: &str) -> Result<(), StreamError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StreamError::io(&path, e)),
        }
    }

    fn clear(&self) -> Result<(), StreamError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StreamError::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("checkpoint") || name.starts_with("partition-") {
                self.delete(&name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_put_promoted_and_deleted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().join("streams/job"));
        assert_eq!(store.get("checkpoint.json").unwrap(), None);
        store.put("checkpoint.json", b"one").unwrap();
        store.put("checkpoint.next.json", b"two").unwrap();
        assert_eq!(store.get("checkpoint.json").unwrap().as_deref(), Some(&b"one"[..]));
        store.promote("checkpoint.next.json", "checkpoint.json").unwrap();
        assert_eq!(store.get("checkpoint.json").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(store.get("checkpoint.next.json").unwrap(), None);
        store.delete("checkpoint.json").unwrap();
        store.delete("checkpoint.json").unwrap();
        assert_eq!(store.get("checkpoint.json").unwrap(), None);
        store.put("partition-3.json", b"three").unwrap();
        store.put("status.json", b"{}").unwrap();
        store.clear().unwrap();
        assert_eq!(store.get("partition-3.json").unwrap(), None);
        assert!(store.get("status.json").unwrap().is_some(), "only checkpoints are forgotten");
        assert!(store.location("checkpoint.json").ends_with("streams/job/checkpoint.json"));
    }
}
