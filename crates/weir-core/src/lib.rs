//! Shared vocabulary for every Weir crate: where something is in a user's files ([`Location`]),
//! what a warehouse object is called ([`Relation`]), and what a query returns ([`QueryResult`]), and column types
//! as they move between engines ([`ColumnType`]).
//!
//! This crate holds plain data only. It knows no engine and does no I/O, so every layer can
//! depend on it without pulling anything else in.

pub mod duration;
mod error;
pub mod files;
mod location;
mod relation;
mod result;
pub mod size;
mod types;

pub use error::error_chain;
pub use location::{Location, Snippet};
pub use relation::{Relation, RelationKind};
pub use result::{Column, Datum, QueryResult};
pub use types::ColumnType;
