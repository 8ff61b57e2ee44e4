//! Loading a Weir project folder, which is a dbt project plus Weir's own files, and the dbt
//! Jinja context its SQL is rendered with.
//!
//! This crate reads and validates; it never connects to a warehouse. Whatever Jinja needs from
//! the warehouse or the model graph goes through [`jinja::Host`], implemented above.

pub mod config;
pub mod deps;
pub mod error;
pub mod jinja;
pub mod profiles;
pub mod project;
pub mod schema;
pub mod yaml;

pub use config::{ConfigMap, ConfigTree, ResourceKind};
pub use error::{ProjectError, Warning};
pub use profiles::Target;
pub use project::{FileKind, Package, Project, ProjectFile, Settings};
pub use schema::SchemaFile;
