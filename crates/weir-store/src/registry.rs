//! The schema registry's records: schemas by global id, subjects' versions, the references
//! between them and the registry's settings (compatibility levels, modes).
//!
//! Ids are global and never reused: a schema keeps its row after every version naming it is
//! deleted, so the next id is always past it. Writes go through [`Store::registry_write`],
//! one transaction under one lock (SQLite's write lock, a PostgreSQL advisory lock), so that
//! several `weir serve` processes on one store allot ids and versions as one registry would,
//! and a compatibility check sees the versions it is checked against.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::{Col, StoreError, Tx, Val};

/// A schema ready to be stored: parsed and fingerprinted by the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchema {
    /// `AVRO`, `JSON` or `PROTOBUF`.
    pub schema_type: String,
    /// What makes two registrations the same schema (type, normalised text, references).
    pub fingerprint: String,
    pub schema: String,
    pub references: Vec<RegistryReference>,
}

/// A schema as stored, under its global id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchema {
    pub id: i64,
    pub schema_type: String,
    pub fingerprint: String,
    pub schema: String,
    pub references: Vec<RegistryReference>,
}

/// A reference from one schema to a version of another subject, under the name the
/// referring schema uses for it (an Avro type's full name, a `.proto` import, a `$ref`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i64,
    pub schema_id: i64,
    /// Soft-deleted: hidden from the subject but still found by id.
    pub deleted: bool,
}

/// Where a registration puts a schema new to its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The id to use in IMPORT mode; otherwise the schema's id if it has one, else the next.
    pub id: Option<i64>,
    /// The version to use in IMPORT mode; otherwise the subject's next.
    pub version: Option<i64>,
}

/// The registry's statements inside one write transaction.
pub struct RegistryTx<'t> {
    tx: &'t mut dyn Tx,
}

type Select<'a> = dyn FnMut(&str, &[Val], &[Col]) -> Result<Vec<Vec<Val>>, StoreError> + 'a;

impl crate::Store {
    /// Runs `f` as one registry write: one transaction, holding the registry's lock.
    pub fn registry_write<T: Send, E: Send>(
        &self,
        f: impl FnOnce(&mut RegistryTx<'_>) -> Result<Result<T, E>, StoreError> + Send,
    ) -> Result<Result<T, E>, StoreError> {
        self.transaction(|tx| {
            if tx.is_postgres() {
                // One advisory lock key for the registry's writes, held to the transaction's end.
                tx.select("select pg_advisory_xact_lock(7365829105)::text", &[], &[Col::Text])?;
            }
            f(&mut RegistryTx { tx })
        })
    }

    /// The schema with id `id`, while a version of some subject (deleted or not) names it.
    pub fn registry_schema(&self, id: i64) -> Result<Option<StoredSchema>, StoreError> {
        schema(&mut |s, p, c| self.select(s, p, c), id, true)
    }

    /// Every version naming schema `id`, deleted ones too.
    pub fn registry_schema_versions(&self, id: i64) -> Result<Vec<SubjectVersion>, StoreError> {
        let rows = self.select(
            "select subject, version, schema_id, deleted from weir_registry_versions where schema_id = $1 order by subject, version",
            &[Val::Int(Some(id))],
            VERSION_COLS,
        )?;
        Ok(rows.iter().map(|r| version_row(r)).collect())
    }

    /// The subjects with a version left; with `deleted`, those whose versions are all
    /// soft-deleted too.
    pub fn registry_subjects(&self, deleted: bool) -> Result<Vec<String>, StoreError> {
        let sql = if deleted {
            "select distinct subject from weir_registry_versions order by subject"
        } else {
            "select distinct subject from weir_registry_versions where deleted = 0 order by subject"
        };
        let rows = self.select(sql, &[], &[Col::Text])?;
        Ok(rows.iter().filter_map(|r| r[0].text()).collect())
    }

    /// Every version of `subject`, oldest first, soft-deleted ones included.
    pub fn registry_versions(&self, subject: &str) -> Result<Vec<SubjectVersion>, StoreError> {
        versions(&mut |s, p, c| self.select(s, p, c), subject)
    }

    /// The schema with id `id`, with no regard to whether a version still names it.
    pub fn registry_schema_any(&self, id: i64) -> Result<Option<StoredSchema>, StoreError> {
        schema(&mut |s, p, c| self.select(s, p, c), id, false)
    }

    /// The ids of the schemas with `new`'s type, text and references, oldest first (one,
    /// unless IMPORT mode brought the same schema under several ids).
    pub fn registry_ids_of(&self, new: &NewSchema) -> Result<Vec<i64>, StoreError> {
        ids_of(&mut |s, p, c| self.select(s, p, c), new)
    }

    /// The ids of the schemas whose references name `subject` version `version`, while a
    /// version not soft-deleted names them.
    pub fn registry_referenced_by(&self, subject: &str, version: i64) -> Result<Vec<i64>, StoreError> {
        referenced_by(&mut |s, p, c| self.select(s, p, c), subject, version)
    }

    /// A registry setting (`compatibility`, `mode`) of `subject`, or the global one with `None`.
    pub fn registry_setting(&self, subject: Option<&str>, name: &str) -> Result<Option<String>, StoreError> {
        setting(&mut |s, p, c| self.select(s, p, c), subject, name)
    }
}

impl RegistryTx<'_> {
    /// Every version of `subject`, oldest first, soft-deleted ones included.
    pub fn versions(&mut self, subject: &str) -> Result<Vec<SubjectVersion>, StoreError> {
        versions(&mut |s, p, c| self.tx.select(s, p, c), subject)
    }

    /// The schema with id `id`, whether a version names it or not.
    pub fn schema(&mut self, id: i64) -> Result<Option<StoredSchema>, StoreError> {
        schema(&mut |s, p, c| self.tx.select(s, p, c), id, false)
    }

    /// The id of the schema with `new`'s type, text and references, if it has one.
    pub fn find(&mut self, new: &NewSchema) -> Result<Option<i64>, StoreError> {
        Ok(ids_of(&mut |s, p, c| self.tx.select(s, p, c), new)?.first().copied())
    }

    /// Whether any subject has a version, deleted or not (IMPORT mode wants an empty registry).
    pub fn is_empty(&mut self) -> Result<bool, StoreError> {
        Ok(self.tx.select("select count(*) from weir_registry_versions", &[], &[Col::Int])?.first().and_then(|r| r[0].int()) == Some(0))
    }

    /// The ids of the schemas whose references name `subject` version `version`.
    pub fn referenced_by(&mut self, subject: &str, version: i64) -> Result<Vec<i64>, StoreError> {
        referenced_by(&mut |s, p, c| self.tx.select(s, p, c), subject, version)
    }

    /// A setting of `subject` (the global one with `None`).
    pub fn setting(&mut self, subject: Option<&str>, name: &str) -> Result<Option<String>, StoreError> {
        setting(&mut |s, p, c| self.tx.select(s, p, c), subject, name)
    }

    /// Adds `new` to `subject` as its next version (or the one `at` names), under the id it
    /// already has, the one `at` names or the next free one.
    pub fn add_version(&mut self, subject: &str, new: &NewSchema, at: Placement) -> Result<SubjectVersion, StoreError> {
        let now = Utc::now().to_rfc3339();
        let id = match at.id {
            Some(id) => id,
            None => match self.find(new)? {
                Some(id) => id,
                None => {
                    let rows = self.tx.select("select coalesce(max(id), 0) + 1 from weir_registry_schemas", &[], &[Col::Int])?;
                    rows.first().and_then(|r| r[0].int()).unwrap_or(1)
                }
            },
        };
        if self.schema(id)?.is_none() {
            let refs = serde_json::to_string(&new.references).map_err(|e| StoreError::Config(e.to_string()))?;
            self.tx.exec(
                "insert into weir_registry_schemas (id, schema_type, fingerprint, schema_text, refs, registered_at) values ($1, $2, $3, $4, $5, $6)",
                &[Val::Int(Some(id)), text(&new.schema_type), text(&new.fingerprint), text(&new.schema), text(&refs), text(&now)],
            )?;
            for r in &new.references {
                self.tx.exec(
                    "insert into weir_registry_references (schema_id, name, subject, version) values ($1, $2, $3, $4)",
                    &[Val::Int(Some(id)), text(&r.name), text(&r.subject), Val::Int(Some(r.version))],
                )?;
            }
        }
        let version = match at.version {
            Some(v) => v,
            None => {
                let rows = self.tx.select(
                    "select coalesce(max(version), 0) + 1 from weir_registry_versions where subject = $1",
                    &[text(subject)],
                    &[Col::Int],
                )?;
                rows.first().and_then(|r| r[0].int()).unwrap_or(1)
            }
        };
        self.tx.exec(
            "insert into weir_registry_versions (subject, version, schema_id, deleted, registered_at) values ($1, $2, $3, 0, $4)",
            &[text(subject), Val::Int(Some(version)), Val::Int(Some(id)), text(&now)],
        )?;
        Ok(SubjectVersion { subject: subject.to_string(), version, schema_id: id, deleted: false })
    }

    /// Soft-deletes (hides) or permanently deletes one version.
    pub fn delete_version(&mut self, subject: &str, version: i64, permanent: bool) -> Result<(), StoreError> {
        let params = [text(subject), Val::Int(Some(version))];
        if permanent {
            self.tx.exec("delete from weir_registry_versions where subject = $1 and version = $2", &params)?;
        } else {
            self.tx.exec("update weir_registry_versions set deleted = 1 where subject = $1 and version = $2", &params)?;
        }
        Ok(())
    }

    /// Sets a setting of `subject` (the global one with `None`).
    pub fn put_setting(&mut self, subject: Option<&str>, name: &str, value: &str) -> Result<(), StoreError> {
        self.tx.exec(
            "insert into weir_registry_settings (subject, name, value) values ($1, $2, $3)
             on conflict (subject, name) do update set value = excluded.value",
            &[text(subject.unwrap_or(GLOBAL)), text(name), text(value)],
        )?;
        Ok(())
    }

    /// Forgets a setting of `subject` (the global one with `None`).
    pub fn delete_setting(&mut self, subject: Option<&str>, name: &str) -> Result<(), StoreError> {
        self.tx
            .exec("delete from weir_registry_settings where subject = $1 and name = $2", &[text(subject.unwrap_or(GLOBAL)), text(name)])?;
        Ok(())
    }
}

/// The subject under which global settings are kept: subjects are never empty.
const GLOBAL: &str = "";

const VERSION_COLS: &[Col] = &[Col::Text, Col::Int, Col::Int, Col::Int];
const SCHEMA_COLS: &[Col] = &[Col::Int, Col::Text, Col::Text, Col::Text, Col::Text];

fn versions(select: &mut Select<'_>, subject: &str) -> Result<Vec<SubjectVersion>, StoreError> {
    let rows = select(
        "select subject, version, schema_id, deleted from weir_registry_versions where subject = $1 order by version",
        &[text(subject)],
        VERSION_COLS,
    )?;
    Ok(rows.iter().map(|r| version_row(r)).collect())
}

fn ids_of(select: &mut Select<'_>, new: &NewSchema) -> Result<Vec<i64>, StoreError> {
    let rows = select(
        "select id, schema_type, fingerprint, schema_text, refs from weir_registry_schemas where fingerprint = $1 order by id",
        &[text(&new.fingerprint)],
        SCHEMA_COLS,
    )?;
    Ok(rows
        .iter()
        .map(|r| schema_row(r))
        .filter(|s| s.schema_type == new.schema_type && s.references == new.references)
        .map(|s| s.id)
        .collect())
}

fn schema(select: &mut Select<'_>, id: i64, named: bool) -> Result<Option<StoredSchema>, StoreError> {
    let sql = if named {
        "select id, schema_type, fingerprint, schema_text, refs from weir_registry_schemas s
         where id = $1 and exists (select 1 from weir_registry_versions v where v.schema_id = s.id)"
    } else {
        "select id, schema_type, fingerprint, schema_text, refs from weir_registry_schemas where id = $1"
    };
    let rows = select(sql, &[Val::Int(Some(id))], SCHEMA_COLS)?;
    Ok(rows.first().map(|r| schema_row(r)))
}

fn referenced_by(select: &mut Select<'_>, subject: &str, version: i64) -> Result<Vec<i64>, StoreError> {
    let rows = select(
        "select distinct r.schema_id from weir_registry_references r
         where r.subject = $1 and r.version = $2
           and exists (select 1 from weir_registry_versions v where v.schema_id = r.schema_id and v.deleted = 0)
         order by r.schema_id",
        &[text(subject), Val::Int(Some(version))],
        &[Col::Int],
    )?;
    Ok(rows.iter().filter_map(|r| r[0].int()).collect())
}

fn setting(select: &mut Select<'_>, subject: Option<&str>, name: &str) -> Result<Option<String>, StoreError> {
    let rows = select(
        "select value from weir_registry_settings where subject = $1 and name = $2",
        &[text(subject.unwrap_or(GLOBAL)), text(name)],
        &[Col::Text],
    )?;
    Ok(rows.first().and_then(|r| r[0].text()))
}

fn version_row(r: &[Val]) -> SubjectVersion {
    SubjectVersion {
        subject: r[0].text().unwrap_or_default(),
        version: r[1].int().unwrap_or_default(),
        schema_id: r[2].int().unwrap_or_default(),
        deleted: r[3].int() == Some(1),
    }
}

fn schema_row(r: &[Val]) -> StoredSchema {
    StoredSchema {
        id: r[0].int().unwrap_or_default(),
        schema_type: r[1].text().unwrap_or_default(),
        fingerprint: r[2].text().unwrap_or_default(),
        schema: r[3].text().unwrap_or_default(),
        // Written by `add_version` from the same type: a row that does not parse has none.
        references: r[4].text().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
    }
}

fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn new(schema: &str, refs: Vec<RegistryReference>) -> NewSchema {
        NewSchema { schema_type: "AVRO".into(), fingerprint: format!("fp:{schema}"), schema: schema.into(), references: refs }
    }

    fn add(store: &Store, subject: &str, n: &NewSchema) -> SubjectVersion {
        let r: Result<SubjectVersion, ()> =
            store.registry_write(|tx| Ok(Ok(tx.add_version(subject, n, Placement { id: None, version: None })?))).unwrap();
        r.unwrap()
    }

    fn registry_behaves(store: &Store) {
        let a = new("\"string\"", vec![]);
        let b = new("\"long\"", vec![]);
        let v1 = add(store, "s-value", &a);
        assert_eq!((v1.version, v1.schema_id), (1, 1));
        let v2 = add(store, "s-value", &b);
        assert_eq!((v2.version, v2.schema_id), (2, 2));
        let other = add(store, "t-value", &a);
        assert_eq!((other.version, other.schema_id), (1, 1), "the same schema keeps its id under another subject");
        let with_ref = new("{\"type\":\"record\"}", vec![RegistryReference { name: "x".into(), subject: "s-value".into(), version: 1 }]);
        let r = add(store, "u-value", &with_ref);
        assert_eq!(r.schema_id, 3);
        assert_eq!(store.registry_referenced_by("s-value", 1).unwrap(), vec![3]);
        assert_eq!(store.registry_schema(3).unwrap().unwrap().references, with_ref.references);
        assert_eq!(store.registry_subjects(false).unwrap(), vec!["s-value", "t-value", "u-value"]);

        let deleted: Result<(), ()> = store.registry_write(|tx| Ok(Ok(tx.delete_version("u-value", 1, false)?))).unwrap();
        deleted.unwrap();
        assert_eq!(store.registry_subjects(false).unwrap(), vec!["s-value", "t-value"]);
        assert_eq!(store.registry_subjects(true).unwrap(), vec!["s-value", "t-value", "u-value"]);
        assert!(store.registry_schema(3).unwrap().is_some(), "a soft-deleted version's schema is still found by id");
        assert_eq!(store.registry_referenced_by("s-value", 1).unwrap(), Vec::<i64>::new());
        let gone: Result<(), ()> = store.registry_write(|tx| Ok(Ok(tx.delete_version("u-value", 1, true)?))).unwrap();
        gone.unwrap();
        assert!(store.registry_schema(3).unwrap().is_none(), "no version names it");
        let next = add(store, "u-value", &new("\"int\"", vec![]));
        assert_eq!((next.version, next.schema_id), (1, 4), "ids are never reused");

        let set: Result<(), ()> = store
            .registry_write(|tx| {
                tx.put_setting(None, "compatibility", "FULL")?;
                tx.put_setting(Some("s-value"), "compatibility", "NONE")?;
                tx.put_setting(Some("s-value"), "compatibility", "FORWARD")?;
                Ok(Ok(()))
            })
            .unwrap();
        set.unwrap();
        assert_eq!(store.registry_setting(None, "compatibility").unwrap().as_deref(), Some("FULL"));
        assert_eq!(store.registry_setting(Some("s-value"), "compatibility").unwrap().as_deref(), Some("FORWARD"));
        assert_eq!(store.registry_setting(Some("t-value"), "compatibility").unwrap(), None);
    }

    #[test]
    fn sqlite_keeps_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        registry_behaves(&Store::sqlite(&dir.path().join("w.db")).unwrap());
    }

    /// The same on the shared PostgreSQL, in a schema of the test's own.
    #[test]
    fn postgres_keeps_the_registry() {
        let url = "postgresql://postgres@127.0.0.1:5432/test";
        let schema = format!("weir_registry_test_{}", std::process::id());
        let store = match Store::postgres(url, Some(&schema)) {
            Ok(s) => s,
            Err(e) => panic!("PostgreSQL at {url} is required for this test: {e}"),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| registry_behaves(&store)));
        drop(store);
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("drop schema \"{schema}\" cascade")).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
