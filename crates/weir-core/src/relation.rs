//! Names of warehouse objects. Quoting and rendering belong to the warehouse adapter, which
//! knows its engine's rules; a [`Relation`] is only the three parts of the name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a relation is in the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    Table,
    View,
    /// An ephemeral model: never built, inlined into its consumers as a CTE.
    Cte,
}

impl RelationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::Table => "table",
            RelationKind::View => "view",
            RelationKind::Cte => "cte",
        }
    }
}

/// `database.schema.identifier`, as dbt's `this`, `ref()` and `source()` return it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Relation {
    pub database: String,
    pub schema: String,
    pub identifier: String,
}

impl Relation {
    pub fn new(database: impl Into<String>, schema: impl Into<String>, identifier: impl Into<String>) -> Self {
        Relation { database: database.into(), schema: schema.into(), identifier: identifier.into() }
    }

    /// The same relation with another identifier, for temporary and backup relations.
    pub fn with_identifier(&self, identifier: impl Into<String>) -> Self {
        Relation { identifier: identifier.into(), ..self.clone() }
    }

    /// Case-insensitive key, since both supported engines fold unquoted names.
    pub fn key(&self) -> (String, String, String) {
        (self.database.to_lowercase(), self.schema.to_lowercase(), self.identifier.to_lowercase())
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.database, self.schema, self.identifier)
    }
}
