//! What a run puts in place before the walk starts: the relation cache, deferred parents,
//! the schemas it writes to, and the loads' bookkeeping tables. Each is done once, on one
//! connection, so the workers never race on a catalog.

use std::collections::{BTreeSet, HashSet};

use weir_graph::{PriorState, ResourceType};
use weir_transform::Session;
use weir_transform::compile::schemas_of;
use weir_warehouse::Connection;

use crate::error::BuildError;

/// Prepares the run of `ids` (the runnable part of `selected`); `defer` is the `--state`
/// manifest under `--defer`.
pub fn prepare(session: &Session, selected: &BTreeSet<String>, ids: &[String], defer: Option<&PriorState>) -> Result<(), BuildError> {
    let m = &session.manifest;
    let mut conn = session.warehouse.connect()?;
    // One catalog query for the relation cache, over every schema the project's relations
    // live in; then every schema the run writes to.
    let ids_set: BTreeSet<String> = ids.iter().cloned().collect();
    let schemas = schemas_of(m, &ids_set);
    let mut cache_schemas = schemas.clone();
    for id in selected {
        if let Some(r) = m.node(id).and_then(|n| n.relation.as_ref()) {
            cache_schemas.push((r.database.clone(), r.schema.clone()));
        }
    }
    for n in m.nodes.values() {
        if let Some(r) = &n.relation {
            cache_schemas.push((r.database.clone(), r.schema.clone()));
        }
    }
    cache_schemas.sort();
    cache_schemas.dedup();
    session.relations.load(conn.as_mut(), &cache_schemas)?;
    if let Some(prior) = defer {
        defer_missing_parents(session, &ids_set, prior);
    }
    for (db, schema) in &schemas {
        conn.execute(&session.warehouse.create_schema_sql(db, schema))?;
    }
    prepare_loads(session, conn.as_mut(), ids)
}

/// `--defer`: every parent of the run that is not selected and does not exist in this target
/// is read from where the `--state` run built it, as dbt defers.
fn defer_missing_parents(session: &Session, ids: &BTreeSet<String>, prior: &PriorState) {
    let m = &session.manifest;
    let parents: BTreeSet<&String> =
        ids.iter().filter_map(|id| m.node(id)).flat_map(|n| n.depends_on.iter()).filter(|d| !ids.contains(*d)).collect();
    for id in parents {
        let Some(n) = m.node(id) else { continue };
        if !matches!(n.resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot)
            || n.is_ephemeral()
            || n.relation.as_ref().is_some_and(|r| session.cached(r).is_some())
        {
            continue;
        }
        if let Some(rel) = prior.relation(id) {
            (session.log)(&format!("Deferring {} to {}", n.name, session.warehouse.render(rel)));
            session.defer(id, rel.clone());
        }
    }
}

/// What a run's loads share, made before they start in parallel: each destination schema's
/// bookkeeping tables (see [`weir_connect::prepare_destination`]).
fn prepare_loads(session: &Session, conn: &mut dyn Connection, ids: &[String]) -> Result<(), BuildError> {
    let mut done = HashSet::new();
    for n in ids.iter().filter_map(|id| session.manifest.node(id)).filter(|n| n.resource_type == ResourceType::Load) {
        if let Some(r) = &n.relation
            && done.insert((r.database.clone(), r.schema.clone()))
        {
            weir_connect::prepare_destination(session.warehouse.as_ref(), conn, &r.database, &r.schema)?;
        }
    }
    Ok(())
}
