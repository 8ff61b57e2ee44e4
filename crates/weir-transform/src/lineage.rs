//! Column-level lineage over a whole project: a column's expression, the columns it reads,
//! theirs in turn back to the seeds, sources, loads and stream jobs, and the columns built on
//! it downstream. Each model and snapshot is compiled (macros and refs rendered) and read with
//! [`weir_graph::lineage`]; `select *` is expanded with the warehouse's columns of the tables
//! built. `weir ls --lineage` prints the steps, and `weir serve` answers them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use weir_graph::ResourceType;
use weir_graph::lineage::ColumnLineage;
use weir_graph::node::Node;
use weir_warehouse::Connection;

use crate::TransformError;
use crate::compile::compile;
use crate::session::{ExecHost, Session};

/// One column on the way from or to the column asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 0 for the column asked about; each step away from it adds one.
    pub depth: usize,
    /// `up` for what feeds the column, `down` for what it feeds.
    pub direction: Direction,
    /// The node the column belongs to; none for a relation the project does not know.
    pub node: Option<String>,
    /// The relation read, for a column of a node that is not compiled here (a seed, a source,
    /// a load, a stream job) or of a table the project does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    pub column: String,
    /// The SQL expression that makes the column, for a model's or snapshot's column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Why the column is not traced further (an unknown table, a subquery in an expression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// Lineage questions about one project, answered with one warehouse connection, each model
/// compiled and each table's columns asked for once, however many questions are asked.
pub struct ProjectLineage {
    host: ExecHost,
    /// Every node with a relation, by its parts joined with `.` (lower case), with and without
    /// the database.
    by_relation: BTreeMap<String, String>,
    /// What writes each topic: a load or a stream job, by topic name.
    topic_writers: BTreeMap<String, String>,
    conn: RefCell<Option<Box<dyn Connection>>>,
    tables: RefCell<BTreeMap<String, Option<Vec<String>>>>,
    topics: RefCell<Option<Vec<weir_graph::streams::Topic>>>,
    read: RefCell<BTreeMap<String, Vec<ColumnLineage>>>,
}

fn file_format(f: weir_core::files::FileFormat) -> &'static str {
    match f {
        weir_core::files::FileFormat::Csv => "csv",
        weir_core::files::FileFormat::JsonLines => "jsonl",
        weir_core::files::FileFormat::Parquet => "parquet",
    }
}

impl ProjectLineage {
    pub fn new(session: Arc<Session>) -> ProjectLineage {
        let mut by_relation = BTreeMap::new();
        let mut topic_writers = BTreeMap::new();
        for n in session.manifest.nodes.values() {
            if let Some(r) = &n.relation {
                by_relation.insert(format!("{}.{}.{}", r.database, r.schema, r.identifier).to_lowercase(), n.unique_id.clone());
                by_relation.insert(format!("{}.{}", r.schema, r.identifier).to_lowercase(), n.unique_id.clone());
            }
            let topic = match (&n.load, &n.stream) {
                (Some(l), _) => l.topic.clone(),
                (_, Some(j)) => match &j.config.sink {
                    weir_graph::stream_jobs::Sink::Topic { topic } => Some(topic.clone()),
                    _ => None,
                },
                _ => None,
            };
            if let Some(t) = topic {
                topic_writers.insert(t, n.unique_id.clone());
            }
        }
        ProjectLineage {
            host: ExecHost::new(session, Arc::new(Mutex::new(None))),
            by_relation,
            topic_writers,
            conn: RefCell::default(),
            tables: RefCell::default(),
            topics: RefCell::default(),
            read: RefCell::default(),
        }
    }

    /// Whether a node's columns are read from its SQL here (models, snapshots and stream
    /// jobs).
    pub fn is_traced(n: &Node) -> bool {
        matches!(n.resource_type, ResourceType::Model | ResourceType::Snapshot) || n.stream.is_some()
    }

    /// Every column of a model, snapshot or stream job, with what it reads. A stream job's
    /// topics are read as `topic NAME`, the tables it joins as the relations they are.
    pub fn columns(&self, n: &Node) -> Result<Vec<ColumnLineage>, TransformError> {
        if let Some(c) = self.read.borrow().get(&n.unique_id) {
            return Ok(c.clone());
        }
        let unreadable =
            |e: weir_graph::lineage::LineageError| TransformError::Graph(format!("{}: cannot read its columns: {e}", n.original_file_path));
        let all = match &n.stream {
            None => {
                let sql = compile(&self.host, n)?;
                weir_graph::lineage::lineage(&sql, &|name: &str| self.table_columns(name)).map_err(unreadable)?
            }
            Some(job) => {
                // The job's SQL names its topics as they are and its tables by placeholders.
                let tables: Vec<Option<String>> = job.tables.iter().map(|t| self.joined(n, t)).collect();
                let placeholder =
                    |name: &str| (0..tables.len()).find(|i| weir_graph::stream_jobs::table_placeholder(*i).eq_ignore_ascii_case(name));
                let catalog = |name: &str| match placeholder(name) {
                    Some(i) => tables[i].as_deref().and_then(|t| self.table_columns(t)),
                    None => self.topic_columns(name),
                };
                let mut all = weir_graph::lineage::lineage(&job.sql, &catalog).map_err(unreadable)?;
                for c in &mut all {
                    c.sources = std::mem::take(&mut c.sources)
                        .into_iter()
                        .map(|mut s| {
                            s.relation = match placeholder(&s.relation) {
                                Some(i) => tables[i].clone().unwrap_or(s.relation),
                                None => format!("topic {}", s.relation),
                            };
                            s
                        })
                        .collect();
                }
                all
            }
        };
        self.read.borrow_mut().insert(n.unique_id.clone(), all.clone());
        Ok(all)
    }

    /// The relation (`database.schema.table`) of a table a stream job joins.
    fn joined(&self, job: &Node, t: &weir_graph::stream_jobs::TableRef) -> Option<String> {
        let m = &self.host.session.manifest;
        let node = match t {
            weir_graph::stream_jobs::TableRef::Ref { package, name } => m.find_ref(package.as_deref(), name, &job.package),
            weir_graph::stream_jobs::TableRef::Source { source, table } => {
                m.nodes.values().find(|s| s.source.as_ref().is_some_and(|(a, b)| a == source && b == table))
            }
        }?;
        let r = node.relation.as_ref()?;
        Some(format!("{}.{}.{}", r.database, r.schema, r.identifier))
    }

    /// A topic's declared columns (`streams/*.yml`).
    fn topic_columns(&self, name: &str) -> Option<Vec<String>> {
        let mut topics = self.topics.borrow_mut();
        if topics.is_none() {
            *topics = Some(weir_graph::streams::read_topics(&self.host.session.manifest.project.root).unwrap_or_default());
        }
        let t = topics.as_ref()?.iter().find(|t| t.name == name)?;
        Some(t.columns.iter().map(|(c, _)| c.clone()).collect())
    }

    /// What feeds `column` of node `id` (depth first, in the order its sources sort), then
    /// the columns of the models built on it that it feeds, and theirs in turn. For a seed,
    /// source or load: where a load takes the column from, and what it feeds.
    pub fn trace(&self, id: &str, column: &str) -> Result<Vec<Step>, TransformError> {
        let manifest = self.host.session.manifest.clone();
        let start = manifest.node(id).ok_or_else(|| TransformError::Graph(format!("no node '{id}'")))?;
        if !Self::is_traced(start) {
            return self.table_column(start, column);
        }
        let mut steps = vec![];
        let mut seen = BTreeSet::new();
        let mut todo = vec![(0usize, id.to_string(), column.to_string())];
        while let Some((depth, id, col)) = todo.pop() {
            let Some(n) = manifest.node(&id) else { continue };
            let all = self.columns(n)?;
            let Some(c) = all.iter().find(|c| c.name.eq_ignore_ascii_case(&col)) else {
                let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                return Err(TransformError::Graph(format!("{}: no column '{col}' among its columns ({})", n.name, names.join(", "))));
            };
            steps.push(Step {
                depth,
                direction: Direction::Up,
                node: Some(n.unique_id.clone()),
                relation: None,
                column: c.name.clone(),
                expression: Some(c.expression.clone()),
                opaque: c.opaque.clone(),
            });
            if !seen.insert((id.clone(), col.to_lowercase())) {
                continue;
            }
            for s in c.sources.iter().rev() {
                let up = match s.relation.strip_prefix("topic ") {
                    Some(topic) => self.topic_writers.get(topic),
                    None => self.by_relation.get(&s.relation.to_lowercase()),
                };
                let up = up.and_then(|u| manifest.node(u));
                // A source over what a stream job or a load writes is that job or load.
                let up = up.map(|u| self.writer(u).unwrap_or(u));
                match up {
                    Some(up) if Self::is_traced(up) => todo.push((depth + 1, up.unique_id.clone(), s.column.clone())),
                    up => {
                        steps.push(Step {
                            depth: depth + 1,
                            direction: Direction::Up,
                            node: up.map(|u| u.unique_id.clone()),
                            relation: Some(s.relation.clone()),
                            column: s.column.clone(),
                            expression: None,
                            opaque: None,
                        });
                        if let Some(origin) = up.and_then(|u| self.origin(u, &s.relation, &s.column)) {
                            steps.push(Step { depth: depth + 2, ..origin });
                        }
                    }
                }
            }
        }
        steps.extend(self.downstream(id, column)?);
        Ok(steps)
    }

    /// A column of a table the project reads or loads (a seed, a source, a load): where a
    /// load takes it from, and the columns built on it.
    fn table_column(&self, n: &Node, column: &str) -> Result<Vec<Step>, TransformError> {
        // A source over a stream job's table: the job's column.
        if let Some(job) = self.writer(n).filter(|w| Self::is_traced(w)) {
            return self.trace(&job.unique_id, column);
        }
        let Some(r) = &n.relation else {
            return Err(TransformError::Graph(format!("{}: a {} has no columns", n.name, n.resource_type.as_str())));
        };
        let relation = format!("{}.{}.{}", r.database, r.schema, r.identifier);
        // Its columns as built, else as declared; when neither is known, the column is taken
        // as named.
        let known = self.table_columns(&relation).unwrap_or_else(|| n.columns.iter().map(|c| c.name.clone()).collect());
        let name = match known.iter().find(|c| c.eq_ignore_ascii_case(column)) {
            Some(name) => name.clone(),
            None if known.is_empty() => column.to_string(),
            None => {
                return Err(TransformError::Graph(format!("{}: no column '{column}' among its columns ({})", n.name, known.join(", "))));
            }
        };
        let name = &name;
        let mut steps = vec![Step {
            depth: 0,
            direction: Direction::Up,
            node: Some(n.unique_id.clone()),
            relation: Some(relation.clone()),
            column: name.clone(),
            expression: None,
            opaque: None,
        }];
        let origin = self.writer(n).unwrap_or(n);
        steps.extend(self.origin(origin, &relation, name).map(|o| Step { depth: 1, ..o }));
        steps.extend(self.downstream(&n.unique_id, name)?);
        Ok(steps)
    }

    /// The stream job or load that writes the table a source reads, if one does.
    fn writer<'m>(&'m self, n: &'m Node) -> Option<&'m Node> {
        if n.resource_type != ResourceType::Source {
            return None;
        }
        let m = &self.host.session.manifest;
        n.depends_on.iter().filter_map(|d| m.node(d)).find(|d| d.stream.is_some() || d.load.is_some())
    }

    /// Where a load's column comes from: the file, table, query or API it reads, the column
    /// of the same name (loads copy columns as they are; a query's are traced through it). A
    /// cdc source's column of mirror table `relation` is the column of the table it mirrors.
    fn origin(&self, n: &Node, relation: &str, column: &str) -> Option<Step> {
        use weir_graph::loads::Source;
        let load = n.load.as_ref()?;
        // The columns a load adds itself (`_weir_load_id`, `_weir_deleted`, ...) come from no
        // column of its source.
        if column.starts_with("_weir_") {
            return None;
        }
        let step = |relation: String, column: String, opaque: Option<String>| Step {
            depth: 0,
            direction: Direction::Up,
            node: None,
            relation: Some(relation),
            column,
            expression: None,
            opaque,
        };
        Some(match &load.source {
            Source::Files(f) => step(format!("{} {}", file_format(f.format), f.path), column.to_string(), None),
            Source::Http(h) => step(format!("http {}", h.url), column.to_string(), None),
            Source::Database(d) => {
                let engine = d.engine.as_str();
                match (&d.cdc, &d.table, &d.query) {
                    (Some(cdc), _, _) => {
                        let mirror = relation.rsplit('.').next().unwrap_or(relation);
                        let (schema, table) = cdc.source_tables().find(|(s, t)| cdc.mirror_of(s, t).eq_ignore_ascii_case(mirror))?;
                        step(format!("{engine} {schema}.{table}"), column.to_string(), None)
                    }
                    (None, Some(table), _) => step(format!("{engine} {table}"), column.to_string(), None),
                    (None, None, Some(query)) => {
                        let read = weir_graph::lineage::lineage(query, &|_: &str| None).ok();
                        let c = read.as_ref().and_then(|cols| cols.iter().find(|c| c.name.eq_ignore_ascii_case(column)));
                        match c {
                            Some(c) if c.sources.len() == 1 && c.opaque.is_none() => {
                                let s = c.sources.iter().next()?;
                                step(format!("{engine} {}", s.relation), s.column.clone(), None)
                            }
                            _ => step(
                                format!("{engine} query"),
                                column.to_string(),
                                Some("the load's query is not traced to one column".into()),
                            ),
                        }
                    }
                    (None, None, None) => return None,
                }
            }
        })
    }

    /// The columns of the models built on `id` that read its `column`, and theirs in turn.
    fn downstream(&self, id: &str, column: &str) -> Result<Vec<Step>, TransformError> {
        let manifest = self.host.session.manifest.clone();
        let mut children: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
        for n in manifest.nodes.values().filter(|n| Self::is_traced(n)) {
            for d in &n.depends_on {
                children.entry(d.as_str()).or_default().push(n);
            }
        }
        // What reads a source over a load's or a stream job's table reads that load or job.
        for source in manifest.nodes.values() {
            if let Some(w) = self.writer(source) {
                let readers = children.get(source.unique_id.as_str()).cloned().unwrap_or_default();
                children.entry(w.unique_id.as_str()).or_default().extend(readers);
            }
        }
        let mut steps = vec![];
        let mut down = vec![(1usize, id.to_string(), column.to_lowercase())];
        let mut fed = BTreeSet::new();
        while let Some((depth, id, col)) = down.pop() {
            let Some(rel) = manifest.node(&id).and_then(|n| n.relation.clone()) else { continue };
            let names = [format!("{}.{}.{}", rel.database, rel.schema, rel.identifier), format!("{}.{}", rel.schema, rel.identifier)];
            for child in children.get(id.as_str()).into_iter().flatten() {
                for c in self.columns(child)? {
                    let reads = c
                        .sources
                        .iter()
                        .any(|s| s.column.eq_ignore_ascii_case(&col) && names.iter().any(|n| n.eq_ignore_ascii_case(&s.relation)));
                    if reads && fed.insert((child.unique_id.clone(), c.name.to_lowercase())) {
                        steps.push(Step {
                            depth,
                            direction: Direction::Down,
                            node: Some(child.unique_id.clone()),
                            relation: None,
                            column: c.name.clone(),
                            expression: Some(c.expression.clone()),
                            opaque: None,
                        });
                        down.push((depth + 1, child.unique_id.clone(), c.name.to_lowercase()));
                    }
                }
            }
        }
        Ok(steps)
    }

    /// A table's columns as the warehouse has them, for `select *`; none for a table the
    /// project does not build or read, or one not built yet.
    fn table_columns(&self, name: &str) -> Option<Vec<String>> {
        let key = name.to_lowercase();
        if let Some(cols) = self.tables.borrow().get(&key) {
            return cols.clone();
        }
        let rel = self.by_relation.get(&key).and_then(|id| self.host.session.manifest.node(id)).and_then(|n| n.relation.clone());
        let cols = rel.and_then(|rel| {
            let mut conn = self.conn.borrow_mut();
            if conn.is_none() {
                *conn = self.host.session.warehouse.connect().ok();
            }
            conn.as_mut()?.columns(&rel).ok()
        });
        let cols = cols.filter(|c| !c.is_empty()).map(|c| c.into_iter().map(|c| c.name).collect::<Vec<String>>());
        self.tables.borrow_mut().insert(key, cols.clone());
        cols
    }
}
