//! Node configs as dbt merges them: `dbt_project.yml` folder trees (deeper folders win), then a
//! node's schema YAML `config:`, then the `{{ config(...) }}` call in its file.
//!
//! A config is a JSON map, as in dbt, because projects and adapters add keys of their own.
//! Known keys are listed per resource type so misspellings are warned about with their place.

use std::path::Path;

use serde_json::{Map, Value as J};
use weir_core::Location;

use crate::error::{Warning, closest};
use crate::yaml::Node;

/// A node's config: `materialized`, `schema`, `tags`, ...
pub type ConfigMap = Map<String, J>;

/// Which kind of resource a config tree applies to; each has its own known keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Model,
    Seed,
    Test,
    Snapshot,
    Source,
}

const COMMON: &[&str] = &[
    "enabled",
    "tags",
    "pre-hook",
    "post-hook",
    "database",
    "schema",
    "alias",
    "persist_docs",
    "full_refresh",
    "meta",
    "grants",
    "docs",
    "group",
    "access",
    "quoting",
    "packages",
    "event_time",
    "contract",
];
const MODEL: &[&str] = &[
    "materialized",
    "sql_header",
    "on_configuration_change",
    "unique_key",
    "on_schema_change",
    "incremental_strategy",
    "incremental_predicates",
    "merge_update_columns",
    "merge_exclude_columns",
    "batch_size",
    "begin",
    "lookback",
    "concurrent_batches",
    "partition_by",
    "cluster_by",
    "indexes",
    "unlogged",
    "column_types",
    "bind",
    "location",
    "format",
    "options",
    "plugin",
    "file_format",
    "transient",
    "store_failures",
    "store_failures_as",
    "partitions",
];
const SEED: &[&str] = &["materialized", "quote_columns", "column_types", "delimiter", "column_types"];
const TEST: &[&str] =
    &["severity", "warn_if", "error_if", "fail_calc", "where", "limit", "store_failures", "store_failures_as", "materialized"];
const SNAPSHOT: &[&str] = &[
    "materialized",
    "strategy",
    "unique_key",
    "updated_at",
    "check_cols",
    "target_schema",
    "target_database",
    "snapshot_meta_column_names",
    "hard_deletes",
    "invalidate_hard_deletes",
    "dbt_valid_to_current",
];
const SOURCE: &[&str] = &["loaded_at_field", "freshness"];

impl ResourceKind {
    /// Config keys dbt knows for this resource type (normalised spelling).
    pub fn known_keys(self) -> impl Iterator<Item = &'static str> {
        let own = match self {
            ResourceKind::Model => MODEL,
            ResourceKind::Seed => SEED,
            ResourceKind::Test => TEST,
            ResourceKind::Snapshot => SNAPSHOT,
            ResourceKind::Source => SOURCE,
        };
        COMMON.iter().chain(own.iter()).copied()
    }

    pub fn is_known(self, key: &str) -> bool {
        self.known_keys().any(|k| k == key)
    }
}

/// dbt accepts `pre_hook` and `pre-hook`, `+key` and `key`; this is the one spelling kept.
pub fn normalize_key(key: &str) -> String {
    let key = key.strip_prefix('+').unwrap_or(key);
    match key {
        "pre_hook" => "pre-hook".to_string(),
        "post_hook" => "post-hook".to_string(),
        other => other.to_string(),
    }
}

/// Merges `from` over `into` with dbt's rules: `tags` and hooks accumulate, `meta`, `grants`
/// and `docs` merge key by key, everything else is replaced.
pub fn merge(into: &mut ConfigMap, from: &ConfigMap) {
    for (k, v) in from {
        let key = normalize_key(k);
        match key.as_str() {
            "tags" | "pre-hook" | "post-hook" => {
                let mut items = as_list(into.get(&key));
                for item in as_list(Some(v)) {
                    if key != "tags" || !items.contains(&item) {
                        items.push(item);
                    }
                }
                into.insert(key, J::Array(items));
            }
            "meta" | "grants" | "docs" | "persist_docs" => match (into.get_mut(&key), v) {
                (Some(J::Object(existing)), J::Object(new)) => {
                    for (mk, mv) in new {
                        existing.insert(mk.clone(), mv.clone());
                    }
                }
                _ => {
                    into.insert(key, v.clone());
                }
            },
            _ => {
                into.insert(key, v.clone());
            }
        }
    }
}

/// A scalar or a list, as a list (dbt allows `tags: nightly` and `tags: [nightly]`).
pub fn as_list(v: Option<&J>) -> Vec<J> {
    match v {
        None | Some(J::Null) => vec![],
        Some(J::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
    }
}

/// A `models:`/`seeds:`/`tests:` tree from one `dbt_project.yml`.
#[derive(Debug, Clone)]
pub struct ConfigTree {
    pub kind: ResourceKind,
    pub file: std::path::PathBuf,
    pub root: Option<Node>,
}

impl ConfigTree {
    pub fn new(kind: ResourceKind, file: &Path, root: Option<Node>) -> Self {
        ConfigTree { kind, file: file.to_path_buf(), root }
    }

    /// Configs that apply to a node with this fully qualified name (`[package, dir.., name]`),
    /// merged from the outermost level to the deepest.
    pub fn resolve(&self, fqn: &[String]) -> ConfigMap {
        let mut out = ConfigMap::new();
        let mut node = match &self.root {
            Some(n) => n,
            None => return out,
        };
        let mut depth = 0;
        loop {
            if let Some(entries) = node.as_map() {
                let mut here = ConfigMap::new();
                for (k, v) in entries {
                    let Some(key) = k.key_text() else { continue };
                    if self.is_config_key(&key, v) {
                        here.insert(normalize_key(&key), v.to_json());
                    }
                }
                merge(&mut out, &here);
            }
            let Some(part) = fqn.get(depth) else { break };
            match node.get(part) {
                Some(child) if !self.is_config_key(part, child) => node = child,
                _ => break,
            }
            depth += 1;
        }
        out
    }

    fn is_config_key(&self, key: &str, value: &Node) -> bool {
        key.starts_with('+')
            || (self.kind.is_known(&normalize_key(key))
                && value.as_map().is_none_or(|_| {
                    matches!(
                        normalize_key(key).as_str(),
                        "meta"
                            | "grants"
                            | "docs"
                            | "persist_docs"
                            | "contract"
                            | "quoting"
                            | "column_types"
                            | "partition_by"
                            | "snapshot_meta_column_names"
                    )
                }))
    }

    /// Warnings for `+keys` that no resource type knows, with a "did you mean" when close.
    pub fn unknown_key_warnings(&self) -> Vec<Warning> {
        let mut out = vec![];
        if let Some(root) = &self.root {
            self.walk_keys(root, &mut out);
        }
        out
    }

    fn walk_keys(&self, node: &Node, out: &mut Vec<Warning>) {
        let Some(entries) = node.as_map() else { return };
        for (k, v) in entries {
            let Some(key) = k.key_text() else { continue };
            if key.starts_with('+') {
                let norm = normalize_key(&key);
                if !self.kind.is_known(&norm) {
                    let hint = closest(&norm, self.kind.known_keys())
                        .map(|c| format!(" (did you mean '+{c}'?)"))
                        .unwrap_or_else(|| " (custom settings belong under '+meta')".to_string());
                    out.push(Warning {
                        location: Location::new(&self.file, k.line, k.col),
                        message: format!("unknown config key '{key}'{hint}"),
                    });
                }
            } else if !self.is_config_key(&key, v) {
                self.walk_keys(v, out);
            }
        }
    }

    /// Every folder/node path written in the tree, with its place, to warn about paths that
    /// match no resource (as dbt does).
    pub fn paths(&self) -> Vec<(Vec<String>, Location)> {
        let mut out = vec![];
        if let Some(root) = &self.root {
            self.walk_paths(root, &mut vec![], &mut out);
        }
        out
    }

    fn walk_paths(&self, node: &Node, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Location)>) {
        let Some(entries) = node.as_map() else { return };
        for (k, v) in entries {
            let Some(key) = k.key_text() else { continue };
            if self.is_config_key(&key, v) {
                continue;
            }
            prefix.push(key);
            out.push((prefix.clone(), Location::new(&self.file, k.line, k.col)));
            self.walk_paths(v, prefix, out);
            prefix.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;
    use serde_json::json;

    fn tree(text: &str) -> ConfigTree {
        let node = yaml::parse(Path::new("dbt_project.yml"), text).unwrap().unwrap();
        ConfigTree::new(ResourceKind::Model, Path::new("dbt_project.yml"), node.get("models").cloned())
    }

    #[test]
    fn deeper_folders_override_and_tags_accumulate() {
        let t =
            tree("models:\n  +tags: [all]\n  shop:\n    +materialized: view\n    marts:\n      +materialized: table\n      tags: marts\n");
        let c = t.resolve(&["shop".into(), "marts".into(), "daily".into()]);
        assert_eq!(c["materialized"], json!("table"));
        assert_eq!(c["tags"], json!(["all", "marts"]));
        let c = t.resolve(&["shop".into(), "staging".into(), "stg".into()]);
        assert_eq!(c["materialized"], json!("view"));
    }

    #[test]
    fn misspelled_plus_keys_are_warned_with_their_line() {
        let t = tree("models:\n  shop:\n    +materialised: table\n");
        let w = t.unknown_key_warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].location.line, 3);
        assert!(w[0].message.contains("did you mean '+materialized'"), "{}", w[0].message);
    }

    #[test]
    fn hooks_accumulate_across_levels() {
        let mut a = ConfigMap::new();
        merge(&mut a, json!({"pre_hook": "select 1"}).as_object().unwrap());
        merge(&mut a, json!({"pre-hook": ["select 2"]}).as_object().unwrap());
        assert_eq!(a["pre-hook"], json!(["select 1", "select 2"]));
    }
}
