//! The dependency graph over a manifest's nodes: cycles, ancestors, descendants, order.

use std::collections::{BTreeSet, HashMap, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::GraphError;
use crate::parse::Manifest;

/// Edges point from a dependency to the node that depends on it.
#[derive(Clone)]
pub struct Graph {
    pub g: DiGraph<String, ()>,
    pub index: HashMap<String, NodeIndex>,
}

impl Graph {
    /// Builds the graph; a cycle is an error that prints it (`a -> b -> a`).
    pub fn build(m: &Manifest) -> Result<Graph, GraphError> {
        let mut g = DiGraph::new();
        let mut index = HashMap::new();
        for id in m.nodes.keys() {
            index.insert(id.clone(), g.add_node(id.clone()));
        }
        for n in m.nodes.values() {
            for d in &n.depends_on {
                if let (Some(&a), Some(&b)) = (index.get(d), index.get(&n.unique_id)) {
                    g.add_edge(a, b, ());
                }
            }
        }
        let graph = Graph { g, index };
        if let Some(cycle) = graph.find_cycle() {
            return Err(GraphError::Graph(format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        Ok(graph)
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        for scc in tarjan_scc(&self.g) {
            let self_loop = scc.len() == 1 && self.g.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            // Walk forward inside the component until a node repeats.
            let mut path = vec![scc[0]];
            let mut seen = HashMap::from([(scc[0], 0usize)]);
            let mut cur = scc[0];
            loop {
                let next = self.g.neighbors(cur).find(|n| members.contains(n))?;
                if let Some(&start) = seen.get(&next) {
                    let mut cycle: Vec<String> = path[start..].iter().map(|i| self.g[*i].clone()).collect();
                    cycle.push(self.g[next].clone());
                    return Some(cycle);
                }
                seen.insert(next, path.len());
                path.push(next);
                cur = next;
            }
        }
        None
    }

    fn walk(&self, start: &str, forward: bool, depth: Option<usize>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(&s) = self.index.get(start) else { return out };
        let dir = if forward { petgraph::Direction::Outgoing } else { petgraph::Direction::Incoming };
        let mut frontier = vec![s];
        let mut level = 0;
        let mut seen = HashSet::from([s]);
        while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
            let mut next = vec![];
            for n in frontier {
                for m in self.g.neighbors_directed(n, dir) {
                    if seen.insert(m) {
                        out.insert(self.g[m].clone());
                        next.push(m);
                    }
                }
            }
            frontier = next;
            level += 1;
        }
        out
    }

    pub fn ancestors(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, false, depth)
    }

    pub fn descendants(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, true, depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_printed_in_order() {
        let mut g = DiGraph::new();
        let a = g.add_node("model.p.a".to_string());
        let b = g.add_node("model.p.b".to_string());
        let c = g.add_node("model.p.c".to_string());
        g.add_edge(a, b, ());
        g.add_edge(b, c, ());
        g.add_edge(c, a, ());
        let graph = Graph { g, index: HashMap::new() };
        let cycle = graph.find_cycle().unwrap();
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.first(), cycle.last());
    }
}
