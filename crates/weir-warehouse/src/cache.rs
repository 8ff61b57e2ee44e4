//! The relations known to exist in the warehouse, shared by every node of a run.
//!
//! It is filled by one catalog query over the schemas a run touches, before the run starts,
//! and kept up to date as nodes build and drop relations, so no node waits on an
//! `information_schema` scan to learn whether its table exists.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use weir_core::{Relation, RelationKind};

use crate::{Connection, WarehouseError};

/// Relations by their case-folded (database, schema, identifier) key.
#[derive(Debug, Default)]
pub struct RelationCache {
    known: Mutex<HashMap<Key, (Relation, RelationKind)>>,
    /// The case-folded (database, schema) pairs listed: what the cache can answer for.
    listed: Mutex<HashSet<(String, String)>>,
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
        if let Ok(mut listed) = self.listed.lock() {
            listed.extend(schemas.iter().map(|(d, s)| (d.to_lowercase(), s.to_lowercase())));
        }
        Ok(())
    }

    /// Whether the relations of `database.schema` were listed: if not, the cache knows
    /// nothing about that schema (a command that runs no selection, such as `weir show`).
    pub fn listed(&self, database: &str, schema: &str) -> bool {
        self.listed.lock().is_ok_and(|l| l.contains(&(database.to_lowercase(), schema.to_lowercase())))
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
