//! State-based selection: compare the project with an earlier run's `manifest.json`
//! (`--state DIR`), as dbt's `state:new` and `state:modified` do, so CI builds only what a
//! change touched (`weir build -s state:modified+ --state prod-artifacts/`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as J;
use weir_core::Relation;

use crate::error::GraphError;
use crate::node::Node;

/// What an earlier manifest says of each node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriorState {
    nodes: HashMap<String, PriorNode>,
}

#[derive(Debug, Clone, PartialEq)]
struct PriorNode {
    checksum: String,
    config: J,
    relation: Option<Relation>,
}

impl PriorState {
    /// Reads `DIR/manifest.json` (dbt's or Weir's).
    pub fn load(dir: &Path) -> Result<PriorState, GraphError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GraphError::io(&path, e))?;
        let doc: J = serde_json::from_str(&text).map_err(|e| {
            GraphError::Selection(format!(
                "{}: not a manifest ({e}); --state needs the folder of an earlier run's manifest.json",
                path.display()
            ))
        })?;
        let mut nodes = HashMap::new();
        for section in ["nodes", "sources"] {
            let Some(map) = doc.get(section).and_then(J::as_object) else { continue };
            for (id, n) in map {
                let text = |k: &str| n.get(k).and_then(J::as_str).map(str::to_string);
                let relation = match (text("database"), text("schema"), text("alias").or_else(|| text("identifier"))) {
                    (Some(d), Some(s), Some(a)) => Some(Relation::new(d, s, a)),
                    _ => None,
                };
                nodes.insert(
                    id.clone(),
                    PriorNode {
                        checksum: n.pointer("/checksum/checksum").and_then(J::as_str).unwrap_or_default().to_string(),
                        config: n.get("config").cloned().unwrap_or(J::Null),
                        relation,
                    },
                );
            }
        }
        Ok(PriorState { nodes })
    }

    /// Where the earlier run built a node, for `--defer`.
    pub fn relation(&self, unique_id: &str) -> Option<&Relation> {
        self.nodes.get(unique_id).and_then(|p| p.relation.as_ref())
    }

    /// Whether `n` matches `state:<what>`: `new`, `old`, `modified` (new, or its body,
    /// configs or relation changed), `modified.body`, `modified.configs`,
    /// `modified.relation`, `unmodified`.
    pub fn matches(&self, n: &Node, what: &str) -> Result<bool, GraphError> {
        let prior = self.nodes.get(&n.unique_id);
        let body = || prior.is_some_and(|p| !p.checksum.is_empty() && p.checksum != crate::artifacts::checksum_of(n).1);
        let configs =
            || prior.is_some_and(|p| normalized(&p.config, n.materialized()) != normalized(&J::Object(n.config.clone()), n.materialized()));
        let relation = || {
            prior.is_some_and(|p| n.relation.is_some() && n.relation.as_ref().map(Relation::key) != p.relation.as_ref().map(Relation::key))
        };
        Ok(match what {
            "new" => prior.is_none(),
            "old" => prior.is_some(),
            "modified" => prior.is_none() || body() || configs() || relation(),
            "unmodified" => prior.is_some() && !(body() || configs() || relation()),
            "modified.body" => prior.is_none() || body(),
            "modified.configs" => prior.is_none() || configs(),
            "modified.relation" => prior.is_none() || relation(),
            other => {
                return Err(GraphError::Selection(format!(
                    "unknown state selector 'state:{other}' (use new, old, modified, modified.body, modified.configs, modified.relation, unmodified)"
                )));
            }
        })
    }
}

/// A config without the values that only restate a default, so Weir's manifests (which
/// record what was set) and dbt's (which record every key) compare equal when nothing changed.
fn normalized(config: &J, materialized: &str) -> J {
    const DEFAULTS: &[(&str, &str)] = &[
        ("enabled", "true"),
        ("lookback", "1"),
        ("on_schema_change", "\"ignore\""),
        ("on_configuration_change", "\"apply\""),
        ("access", "\"protected\""),
        ("warn_if", "\"!= 0\""),
        ("error_if", "\"!= 0\""),
        ("fail_calc", "\"count(*)\""),
        ("schema", "\"dbt_test__audit\""),
        ("delimiter", "\",\""),
    ];
    let mut out = serde_json::Map::new();
    for (k, v) in config.as_object().into_iter().flatten() {
        let v = match (k.as_str(), v) {
            ("docs" | "contract", J::Object(o)) => {
                let kept: serde_json::Map<String, J> = o
                    .iter()
                    .filter(|(ik, iv)| {
                        !(iv.is_null()
                            || (*ik == "show" && **iv == J::Bool(true))
                            || (*ik == "enforced" && **iv == J::Bool(false))
                            || (*ik == "alias_types" && **iv == J::Bool(true)))
                    })
                    .map(|(ik, iv)| (ik.clone(), iv.clone()))
                    .collect();
                J::Object(kept)
            }
            ("severity", J::String(s)) => J::String(s.to_lowercase()),
            _ => v.clone(),
        };
        let empty = match &v {
            J::Null => true,
            J::Object(o) => o.is_empty(),
            J::Array(a) => a.is_empty(),
            _ => false,
        };
        let default = DEFAULTS.iter().any(|(dk, dv)| *dk == k && serde_json::from_str::<J>(dv).is_ok_and(|d| d == v))
            || (k == "severity" && v == J::String("error".into()))
            || (k == "materialized" && v.as_str() == Some(materialized));
        if !empty && !default {
            out.insert(k.clone(), v);
        }
    }
    J::Object(out)
}
