//! The relations known to exist in the warehouse, shared by every node of a run.
//!
//! It is filled by one catalog query over the schemas a run touches, before the run starts,
//! and kept up to date as nodes build and drop relations, so no node waits on an
//! `information_schema` scan to learn whether its table exists.

use std::collections::HashMap;
use std::sync::Mutex;

use weir_core::{Relation, RelationKind};

use crate::{Connection, WarehouseError};

/// Relations by their case-folded (database, schema, identifier) key.
#[derive(Debug, Default)]
pub struct RelationCache {
    known: Mutex<HashMap<Key, (Relation, RelationKind)>>,
}

/// A relation's case-folded (database, schema, identifier).
type Key = (String, String, String);

impl RelationCache {
    /// Adds every relation of `schemas` (as `(database, schema)`), one catalog query per database.
    pub fn load(&self, conn: &mut dyn Connection, schemas: &[(String, String)]) -> Result<(), WarehouseError> {
        let mut by_db: HashMap<String, Vec<String>> = HashMap::new();
        for (db, schema) in schemas {
            by_db.entry(db.clone()).or_default().push(schema.clone());
        }
        let mut known = self.known.lock().map_err(|_| WarehouseError::Io("relation cache poisoned".into()))?;
        for (db, schemas) in by_db {
            for (rel, kind) in conn.list_relations(&db, &schemas)? {
                known.insert(rel.key(), (rel, kind));
            }
        }
        Ok(())
    }

    /// What `r` is, if it exists.
    pub fn get(&self, r: &Relation) -> Option<RelationKind> {
        self.known.lock().ok()?.get(&r.key()).map(|(_, k)| *k)
    }

    /// Records that `r` now exists as `kind`, or (`None`) that it no longer does.
    pub fn set(&self, r: &Relation, kind: Option<RelationKind>) {
        if let Ok(mut known) = self.known.lock() {
            match kind {
                Some(k) => known.insert(r.key(), (r.clone(), k)),
                None => known.remove(&r.key()),
            };
        }
    }
}
