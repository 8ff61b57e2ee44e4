//! dbt's node selection syntax: `name`, `+name`, `name+2`, `@name`, `tag:x`, `path:models/x`,
//! `config.materialized:table`, `resource_type:seed`, `source:raw.orders`, `package:x`,
//! `test_type:generic`, `test_name:unique`, wildcards; spaces for unions, commas for
//! intersections, and `--exclude`.

use std::collections::BTreeSet;

use globset::{Glob, GlobMatcher};
use serde_json::Value as J;

use crate::dag::Graph;
use crate::error::GraphError;
use crate::node::{Node, ResourceType};
use crate::parse::Manifest;
use crate::state::PriorState;

/// A parsed selection: a union of intersections of atoms.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub unions: Vec<Vec<Atom>>,
    /// An earlier manifest, for `state:` selectors (`--state DIR`).
    pub state: Option<std::sync::Arc<PriorState>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    pub method: String,
    pub value: String,
    /// `+` before: ancestors (None = all depths).
    pub parents: Option<Option<usize>>,
    /// `+` after: descendants.
    pub children: Option<Option<usize>>,
    /// `@`: descendants and all their ancestors.
    pub at: bool,
}

impl Selector {
    /// Parses `--select` arguments (each may hold several space-separated items).
    pub fn parse(args: &[String]) -> Result<Selector, GraphError> {
        let mut unions = vec![];
        for arg in args {
            for item in arg.split_whitespace() {
                let atoms = item.split(',').filter(|s| !s.is_empty()).map(Atom::parse).collect::<Result<Vec<_>, _>>()?;
                if !atoms.is_empty() {
                    unions.push(atoms);
                }
            }
        }
        Ok(Selector { unions, state: None })
    }

    pub fn is_empty(&self) -> bool {
        self.unions.is_empty()
    }

    /// The unique ids this selector picks from the manifest.
    pub fn select(&self, m: &Manifest, g: &Graph) -> Result<BTreeSet<String>, GraphError> {
        let mut out = BTreeSet::new();
        for group in &self.unions {
            let mut acc: Option<BTreeSet<String>> = None;
            for atom in group {
                let set = atom.select(m, g, self.state.as_deref())?;
                acc = Some(match acc {
                    None => set,
                    Some(a) => a.intersection(&set).cloned().collect(),
                });
            }
            out.extend(acc.unwrap_or_default());
        }
        Ok(out)
    }
}

fn depth(digits: &str) -> Result<Option<usize>, GraphError> {
    if digits.is_empty() {
        Ok(None)
    } else {
        digits.parse().map(Some).map_err(|_| GraphError::Selection(format!("'{digits}' is not a depth")))
    }
}

impl Atom {
    pub fn parse(text: &str) -> Result<Atom, GraphError> {
        let mut s = text;
        let at = s.starts_with('@');
        if at {
            s = &s[1..];
        }
        let mut parents = None;
        if let Some(p) = s.find('+').filter(|&p| s[..p].chars().all(|c| c.is_ascii_digit())) {
            parents = Some(depth(&s[..p])?);
            s = &s[p + 1..];
        }
        let mut children = None;
        if let Some(p) = s.rfind('+').filter(|&p| s[p + 1..].chars().all(|c| c.is_ascii_digit())) {
            children = Some(depth(&s[p + 1..])?);
            s = &s[..p];
        }
        if s.is_empty() {
            return Err(GraphError::Selection(format!("selector '{text}' names nothing")));
        }
        let (method, value) = match s.split_once(':') {
            Some((m, v)) => (m.to_string(), v.to_string()),
            None if s.contains('/') || s.ends_with(".sql") || s.ends_with(".csv") => ("path".to_string(), s.to_string()),
            None => ("fqn".to_string(), s.to_string()),
        };
        const METHODS: &[&str] = &[
            "fqn",
            "tag",
            "path",
            "file",
            "resource_type",
            "source",
            "package",
            "test_type",
            "test_name",
            "config",
            "state",
            "exposure",
            "metric",
        ];
        let base = method.split('.').next().unwrap_or("");
        if !METHODS.contains(&base) {
            return Err(GraphError::Selection(format!("unknown selector method '{method}' in '{text}' (known: {})", METHODS.join(", "))));
        }
        Ok(Atom { method, value, parents, children, at })
    }

    fn select(&self, m: &Manifest, g: &Graph, state: Option<&PriorState>) -> Result<BTreeSet<String>, GraphError> {
        let glob = |p: &str| -> Result<GlobMatcher, GraphError> {
            Glob::new(p).map(|g| g.compile_matcher()).map_err(|e| GraphError::Selection(format!("bad pattern '{p}': {e}")))
        };
        let base: BTreeSet<String> = match self.method.as_str() {
            "fqn" => m.nodes.values().filter(|n| fqn_matches(n, &self.value)).map(|n| n.unique_id.clone()).collect(),
            "tag" => {
                let pat = glob(&self.value)?;
                m.nodes.values().filter(|n| n.tags().iter().any(|t| pat.is_match(t))).map(|n| n.unique_id.clone()).collect()
            }
            "path" | "file" => {
                let v = self.value.trim_end_matches('/');
                let pat = glob(v)?;
                m.nodes
                    .values()
                    .filter(|n| n.resource_type != ResourceType::Test || n.test.is_none())
                    .filter(|n| {
                        let p = n.original_file_path.as_str();
                        let file_name = p.rsplit('/').next().unwrap_or(p);
                        if self.method == "file" {
                            pat.is_match(file_name) || file_name.strip_suffix(".sql").is_some_and(|s| s == v)
                        } else {
                            p == v || p.starts_with(&format!("{v}/")) || pat.is_match(p)
                        }
                    })
                    .map(|n| n.unique_id.clone())
                    .collect()
            }
            "resource_type" => {
                let t = ResourceType::parse(&self.value)
                    .ok_or_else(|| GraphError::Selection(format!("unknown resource type '{}'", self.value)))?;
                m.nodes.values().filter(|n| n.resource_type == t).map(|n| n.unique_id.clone()).collect()
            }
            "source" => {
                let parts: Vec<&str> = self.value.split('.').collect();
                m.nodes
                    .values()
                    .filter(|n| {
                        let Some((s, t)) = &n.source else { return false };
                        let full = [n.package.as_str(), s.as_str(), t.as_str()];
                        match parts.as_slice() {
                            [src] => glob_eq(src, s),
                            [src, tbl] => glob_eq(src, s) && glob_eq(tbl, t),
                            [pkg, src, tbl] => glob_eq(pkg, full[0]) && glob_eq(src, s) && glob_eq(tbl, t),
                            _ => false,
                        }
                    })
                    .map(|n| n.unique_id.clone())
                    .collect()
            }
            "package" => m.nodes.values().filter(|n| glob_eq(&self.value, &n.package)).map(|n| n.unique_id.clone()).collect(),
            "test_type" => m
                .nodes
                .values()
                .filter(|n| match (n.resource_type, self.value.as_str()) {
                    (ResourceType::UnitTest, "unit") => true,
                    (ResourceType::Test, "generic" | "schema") => n.test.is_some(),
                    (ResourceType::Test, "singular" | "data") => n.test.is_none(),
                    _ => false,
                })
                .map(|n| n.unique_id.clone())
                .collect(),
            "test_name" => m
                .nodes
                .values()
                .filter(|n| n.test.as_ref().is_some_and(|t| glob_eq(&self.value, &t.name)))
                .map(|n| n.unique_id.clone())
                .collect(),
            "state" => {
                let state = state.ok_or_else(|| {
                    GraphError::Selection(format!(
                        "'state:{}' compares with an earlier run: pass --state DIR (the folder of its manifest.json)",
                        self.value
                    ))
                })?;
                let mut out = BTreeSet::new();
                for n in m.nodes.values() {
                    if state.matches(n, &self.value)? {
                        out.insert(n.unique_id.clone());
                    }
                }
                out
            }
            method if method.starts_with("config.") => {
                let key = &method["config.".len()..];
                m.nodes
                    .values()
                    .filter(|n| match n.config.get(key) {
                        Some(J::String(s)) => glob_eq(&self.value, s),
                        Some(J::Array(items)) => items.iter().any(|i| i.as_str().is_some_and(|s| glob_eq(&self.value, s))),
                        Some(J::Bool(b)) => self.value == b.to_string(),
                        Some(J::Number(n)) => self.value == n.to_string(),
                        _ => false,
                    })
                    .map(|n| n.unique_id.clone())
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        let mut out = base.clone();
        for id in &base {
            if self.at {
                for d in g.descendants(id, None) {
                    out.extend(g.ancestors(&d, None));
                    out.insert(d);
                }
                out.extend(g.ancestors(id, None));
            }
            if let Some(d) = self.parents {
                out.extend(g.ancestors(id, d));
            }
            if let Some(d) = self.children {
                out.extend(g.descendants(id, d));
            }
        }
        Ok(out)
    }
}

fn glob_eq(pattern: &str, s: &str) -> bool {
    if pattern.contains(['*', '?', '[']) {
        Glob::new(pattern).map(|g| g.compile_matcher().is_match(s)).unwrap_or(false)
    } else {
        pattern == s
    }
}

/// dbt's default method: a node's name, or a dotted prefix of its fqn with or without the
/// package, with shell wildcards.
fn fqn_matches(n: &Node, selector: &str) -> bool {
    if n.resource_type == ResourceType::Source {
        return false;
    }
    if n.fqn.last().is_some_and(|leaf| glob_eq(selector, leaf)) {
        return true;
    }
    let flat: Vec<&str> = n.fqn.iter().flat_map(|s| s.split('.')).collect();
    prefix_matches(&flat, selector) || prefix_matches(&flat[1.min(flat.len())..], selector)
}

fn prefix_matches(fqn: &[&str], selector: &str) -> bool {
    let parts: Vec<&str> = selector.split('.').collect();
    if fqn.len() < parts.len() {
        return false;
    }
    for (i, part) in parts.iter().enumerate() {
        if part.contains(['*', '?', '[']) {
            let rest = fqn[i..].join(".");
            let pattern = parts[i..].join(".");
            return glob_eq(&pattern, &rest);
        }
        if fqn[i] != *part {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_operators() {
        let a = Atom::parse("2+tag:nightly+").unwrap();
        assert_eq!((a.method.as_str(), a.value.as_str()), ("tag", "nightly"));
        assert_eq!(a.parents, Some(Some(2)));
        assert_eq!(a.children, Some(None));
        let b = Atom::parse("@stg_orders").unwrap();
        assert!(b.at && b.method == "fqn");
        assert_eq!(Atom::parse("models/staging").unwrap().method, "path");
        assert!(Atom::parse("colour:red").is_err());
    }

    #[test]
    fn fqn_prefixes_match_with_or_without_package() {
        let flat = ["shop", "staging", "stg_orders"];
        assert!(prefix_matches(&flat, "shop.staging"));
        assert!(prefix_matches(&flat[1..], "staging"));
        assert!(prefix_matches(&flat, "shop.staging.stg_*"));
        assert!(!prefix_matches(&flat, "shop.marts"));
    }

    #[test]
    fn unions_and_intersections_parse() {
        let s = Selector::parse(&["a b,tag:x".to_string(), "c".to_string()]).unwrap();
        assert_eq!(s.unions.len(), 3);
        assert_eq!(s.unions[1].len(), 2);
    }
}
