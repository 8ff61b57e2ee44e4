//! What a stream job's SQL asks for, worked out before anything runs: the topic it reads, its
//! window (`tumble`, `hop`, `session` as table functions over the stream, as Flink's window
//! table functions are written), its filter, its group keys and aggregates, and the columns
//! of its output in `select` order. Every mistake names its place in `streams/<job>.sql`.
//!
//! The plan splits the job in two. The stateless part (the filter, the group keys and the
//! aggregates' arguments, any scalar expression) is SQL handed to DuckDB per micro-batch,
//! or read straight from the events when each is a bare column. The stateful part (windows,
//! accumulators, watermarks, lateness) is [`crate::operator`]'s.

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, Query, SelectItem, SetExpr, Spanned,
    Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;
use weir_graph::GraphError;
use weir_graph::stream_jobs::StreamJob;
use weir_graph::streams::{Topic, interval_ms};

use crate::job::decode::Kind;
use crate::join::Side;
use crate::operator::Agg;
use crate::window::WindowSpec;

/// A job's SQL, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub topic: String,
    pub shape: Shape,
    /// The window of a windowed job; [`WindowSpec::Global`] for running aggregates and
    /// projections.
    pub window: WindowSpec,
    /// The topic's event-time column, when it has one (required to window).
    pub time_column: Option<String>,
    /// The `where` clause, as SQL over the topic's columns.
    pub filter: Option<String>,
    /// The group keys other than `window_start` and `window_end`.
    pub keys: Vec<Scalar>,
    pub aggs: Vec<AggCall>,
    /// The output's columns, in `select` order.
    pub outputs: Vec<(String, Output)>,
    /// The topic's columns the job reads, with their declared types, in the topic's order.
    pub columns: Vec<(String, String)>,
    /// A table of the warehouse joined to each event (a dimension).
    pub join: Option<TableJoin>,
    /// A second stream joined to the first within a time bound.
    pub stream_join: Option<StreamJoin>,
    /// When the stream is a table's change events (`cdc()`), the table's primary key: each
    /// change replaces what the row contributed before (the job runs as a changelog).
    pub changelog: Option<Vec<String>>,
}

/// An interval join of two streams (`from {{ stream('orders') }} o join {{ stream('payments') }}
/// p on o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at +
/// interval '1 hour'`): each pair of events with equal keys whose times are within the
/// bound is a row, found when the second of the two arrives (Flink's interval join).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamJoin {
    /// The joined stream's topic, the columns of it the job reads (with their declared
    /// types, in the topic's order) and its event-time column.
    pub topic: String,
    pub columns: Vec<(String, String)>,
    pub time_column: String,
    /// How the SQL names the joined stream and the stream of `from`.
    pub alias: String,
    pub stream_alias: String,
    /// Columns that must be equal (the `from` stream's, the joined stream's): the key events
    /// are held and looked up by.
    pub keys: Vec<(String, String)>,
    /// The bound on the joined event's time less the other's, in milliseconds, inclusive.
    pub lower: i64,
    pub upper: i64,
    /// The `on` condition as written, checked on each pair found (with anything it says
    /// beyond the keys and the bound).
    pub on: String,
}

/// A stream-table join: each event enriched with the row of a warehouse table that matches
/// it (`from {{ stream('orders') }} o join {{ ref('customers') }} c on o.customer_id = c.id`).
/// The table is read when the job starts and again every `table_refresh`, so it is joined as
/// it is when the event is processed (Flink's lookup join).
#[derive(Debug, Clone, PartialEq)]
pub struct TableJoin {
    /// Which of the job's `tables` it is.
    pub table: usize,
    /// How the SQL names the table and the stream (their aliases, else their names).
    pub alias: String,
    pub stream_alias: String,
    /// `left join`: events without a match are kept, with nulls for the table's columns;
    /// else they are filtered out.
    pub left: bool,
    /// The `on` condition, as written.
    pub on: String,
}

/// What kind of state a job keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `group by` a window: one result per key and window, emitted when the window closes.
    Windowed,
    /// `group by` without a window: one running result per key, upserted as it changes.
    Running,
    /// No `group by`: each event kept becomes a row (a filter and a projection).
    Stateless,
}

/// An expression over one event: SQL, and the column it is when it is a bare column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub sql: String,
    pub column: Option<String>,
}

/// One aggregate of the `select`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    pub agg: Agg,
    /// `None` for `count(*)`.
    pub arg: Option<Scalar>,
}

/// Where an output column comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Key(usize),
    WindowStart,
    WindowEnd,
    Agg(usize),
    /// A stateless job's expression.
    Expr(Scalar),
}

impl Plan {
    /// The window in words, for `weir stream list` and the API: `tumble 60s`,
    /// `hop 300s every 60s`, `session gap 30s`, `none (each event)`, `joined with payments
    /// from 0s to 3600s`.
    pub fn window_text(&self) -> String {
        let secs = |ms: i64| if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") };
        if let Some(j) = &self.stream_join {
            return format!("joined with {} from {} to {}", j.topic, secs(j.lower), secs(j.upper));
        }
        match (self.shape, &self.window) {
            (Shape::Stateless, _) if self.changelog.is_some() => "none (each row of the table)".into(),
            (Shape::Running, _) if self.changelog.is_some() => "none (running per key, over the table)".into(),
            (Shape::Stateless, _) => "none (each event)".into(),
            (_, WindowSpec::Tumble { size, .. }) => format!("tumble {}", secs(*size)),
            (_, WindowSpec::Hop { size, slide, .. }) => format!("hop {} every {}", secs(*size), secs(*slide)),
            (_, WindowSpec::Session { gap }) => format!("session gap {}", secs(*gap)),
            (_, WindowSpec::Global) => "none (running per key)".into(),
        }
    }

    /// What the job's state means, to refuse a checkpoint made by other SQL: the topic, the
    /// window, the filter, the keys and the aggregates.
    pub fn fingerprint(&self) -> String {
        let keys: Vec<&str> = self.keys.iter().map(|k| k.sql.as_str()).collect();
        let aggs: Vec<String> = self.aggs.iter().map(|a| format!("{:?}({})", a.agg, a.arg.as_ref().map_or("*", |s| &s.sql))).collect();
        format!(
            "topic={} shape={:?} window={:?} filter={} keys=[{}] aggs=[{}]{}",
            self.topic,
            self.shape,
            self.window,
            self.filter.as_deref().unwrap_or("-"),
            keys.join(", "),
            aggs.join(", "),
            self.join.as_ref().map(|j| format!(" join={}:{}", j.table, j.on)).unwrap_or_default()
        ) + &self.stream_join.as_ref().map(|j| format!(" stream_join={}:{}", j.topic, j.on)).unwrap_or_default()
    }

    /// Whether every key and argument is a bare column and nothing is filtered: the events
    /// are then read straight into the operator, with no SQL to run per batch.
    pub fn is_direct(&self) -> bool {
        self.filter.is_none()
            && self.join.is_none()
            && self.shape != Shape::Stateless
            && self.keys.iter().all(|k| k.column.is_some())
            && self.aggs.iter().all(|a| a.arg.as_ref().is_none_or(|s| s.column.is_some()))
    }
}

/// Works out `job`'s plan over the declared `topics`.
pub fn plan(job: &StreamJob, topics: &[Topic]) -> Result<Plan, GraphError> {
    let at = |span: sqlparser::tokenizer::Span, message: String| {
        let (line, col) = if span.start.line == 0 { (1, 1) } else { (span.start.line as usize, span.start.column as usize) };
        job.at(line, col, message)
    };
    let statements = Parser::parse_sql(&DuckDbDialect {}, &job.sql).map_err(|e| parse_error(job, &e.to_string()))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(job.at(1, 1, format!("a stream job is one `select` statement, not {} statement(s)", statements.len())));
    };
    let Query { body, order_by, limit_clause, with, .. } = query.as_ref();
    if let Some(w) = with {
        return Err(at(w.span(), "a stream job cannot use `with` yet: write the query without CTEs".into()));
    }
    if let Some(o) = order_by {
        return Err(at(o.span(), "a stream has no end to sort by: drop the `order by` (sort in a model over the sink table)".into()));
    }
    if let Some(l) = limit_clause {
        return Err(at(l.span(), "a stream has no end to limit: drop the `limit`".into()));
    }
    let SetExpr::Select(select) = body.as_ref() else {
        return Err(at(body.span(), "a stream job is one plain `select` (no union, intersect or values)".into()));
    };
    if let Some(Distinct::Distinct | Distinct::On(_)) = &select.distinct {
        return Err(at(select.span(), "`select distinct` over a stream is not supported: group by the columns instead".into()));
    }
    if let Some(h) = &select.having {
        return Err(at(h.span(), "`having` is not supported in stream jobs yet: filter the sink table in a model".into()));
    }
    // FROM: one topic, plain or under a window function.
    let [from] = select.from.as_slice() else {
        return Err(at(select.span(), "a stream job reads exactly one stream: from {{ stream('topic') }}".into()));
    };
    let (topic_name, window, window_col) = from_clause(job, &from.relation, &at)?;
    let (join, joined_stream) = match from.joins.as_slice() {
        [] => (None, None),
        [j] if stream_of(job, &j.relation).is_some() => (None, Some(j)),
        [j] => (Some(table_join(job, &topic_name, &from.relation, j, &at)?), None),
        [_, second, ..] => return Err(at(second.relation.span(), "a stream job joins one table or one stream to its stream".into())),
    };
    let dimension = join.as_ref().map(|j| j.alias.to_ascii_lowercase());
    // The stream joined to the one of `from`: its topic and how each is named.
    let other = match joined_stream {
        Some(j) => {
            let name = stream_of(job, &j.relation).unwrap_or_default();
            let other = topics.iter().find(|t| t.name == name).ok_or_else(|| {
                let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
                let hint = weir_project::error::closest(&name, names.iter().copied())
                    .map(|c| format!("; did you mean '{c}'?"))
                    .unwrap_or_default();
                at(j.relation.span(), format!("no topic named '{name}' is declared in streams/*.yml{hint}"))
            })?;
            let alias_of = |t: &TableFactor, name: &str| match t {
                TableFactor::Table { alias: Some(a), .. } => a.name.value.clone(),
                _ => name.to_string(),
            };
            let (left, right) = (alias_of(&from.relation, &topic_name), alias_of(&j.relation, &name));
            if name == topic_name {
                return Err(at(
                    j.relation.span(),
                    format!("joining '{name}' to itself is not supported: a join pairs the events of two topics"),
                ));
            }
            if left.eq_ignore_ascii_case(&right) {
                return Err(at(j.relation.span(), format!("both streams are named '{left}': give each an alias (o, p)")));
            }
            Some((other, left.to_ascii_lowercase(), right.to_ascii_lowercase()))
        }
        None => None,
    };
    let stream_alias =
        join.as_ref().map(|j| j.stream_alias.to_ascii_lowercase()).or_else(|| other.as_ref().map(|(_, left, _)| left.clone()));
    let topic = topics.iter().find(|t| t.name == topic_name).ok_or_else(|| {
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        let hint =
            weir_project::error::closest(&topic_name, names.iter().copied()).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
        at(from.relation.span(), format!("no topic named '{topic_name}' is declared in streams/*.yml{hint}"))
    })?;
    let changelog = (topic.format == weir_graph::streams::Format::Changelog).then(|| topic.primary_key.clone());
    if changelog.is_some() {
        let refused = if window.is_some() {
            Some(
                "a window over cdc() is not supported: a changelog's rows change after their time has passed; group by the \
                  columns for running results (a model over the mirror's history windows every change)",
            )
        } else if !from.joins.is_empty() {
            Some("a join with cdc() is not supported yet: join the mirror tables in a model")
        } else {
            None
        };
        if let Some(message) = refused {
            return Err(at(from.relation.span(), message.into()));
        }
    }
    if topic.columns.is_empty() {
        return Err(at(
            from.relation.span(),
            format!(
                "topic '{}' declares no columns: a job reads declared columns (columns: {{id: bigint, at: timestamp}}) at {}",
                topic.name, topic.location
            ),
        ));
    }
    if let Some((col, span)) = &window_col {
        match &topic.event_time {
            Some(et) if et.eq_ignore_ascii_case(col) => {}
            Some(et) => {
                return Err(at(
                    *span,
                    format!("the window is over '{col}', but the topic's event time is '{et}': windows are over event time"),
                ));
            }
            None => {
                return Err(at(
                    *span,
                    format!("topic '{}' has no event_time: declare `event_time: {col}` and a watermark to window by it", topic.name),
                ));
            }
        }
    }
    // A column of the joined table is named with its alias (`c.segment`): not the topic's.
    let of_table =
        |qualifier: Option<&Ident>| qualifier.is_some_and(|q| dimension.as_deref() == Some(q.value.to_ascii_lowercase().as_str()));
    let column_of = |e: &Expr| -> Option<String> {
        match e {
            Expr::Identifier(i) => Some(i.value.clone()),
            Expr::CompoundIdentifier(parts) if of_table(parts.iter().rev().nth(1)) => None,
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
            _ => None,
        }
    };
    let scalar = |e: &Expr| Scalar { sql: e.to_string(), column: column_of(e).map(|c| canonical(topic, &c)) };

    // Every column named must be the topic's (or, in a join of two streams, one of the two's).
    let mut used: Vec<String> = vec![];
    let mut used_other: Vec<String> = vec![];
    let mut check_columns = |e: &Expr| -> Result<(), GraphError> {
        let mut v = Columns::default();
        let _ = e.visit(&mut v);
        for (qualifier, ident) in v.found {
            if of_table(qualifier.as_ref()) {
                continue;
            }
            if let Some((other, left, right)) = &other {
                let name = &ident.value;
                let has = |t: &Topic| t.columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(name));
                let not_in = |t: &Topic, alias: &str| {
                    let names: Vec<&str> = t.columns.iter().map(|(c, _)| c.as_str()).collect();
                    let hint = weir_project::error::closest(name, names.iter().copied())
                        .map(|c| format!("; did you mean '{alias}.{c}'?"))
                        .unwrap_or_default();
                    at(ident.span, format!("'{name}' is not a column of topic '{}' ({}){hint}", t.name, names.join(", ")))
                };
                match qualifier.as_ref().map(|q| q.value.to_ascii_lowercase()) {
                    Some(q) if q == *right && has(other) => used_other.push(canonical(other, name)),
                    Some(q) if q == *right => return Err(not_in(other, right)),
                    Some(q) if q == *left && has(topic) => used.push(canonical(topic, name)),
                    Some(q) if q == *left => return Err(not_in(topic, left)),
                    Some(_) => {
                        let q = qualifier.as_ref().map_or(String::new(), |q| q.value.clone());
                        return Err(at(ident.span, format!("'{q}' names neither stream of the join ('{left}', '{right}')")));
                    }
                    None => match (has(topic), has(other)) {
                        (true, true) => {
                            return Err(at(
                                ident.span,
                                format!("'{name}' is a column of both streams: say which ({left}.{name} or {right}.{name})"),
                            ));
                        }
                        (true, false) => used.push(canonical(topic, name)),
                        (false, true) => used_other.push(canonical(other, name)),
                        (false, false) => return Err(not_in(topic, left)),
                    },
                }
                continue;
            }
            if let (Some(q), Some(alias)) = (&qualifier, &stream_alias)
                && q.value.to_ascii_lowercase() != *alias
            {
                return Err(at(q.span, format!("'{}' names neither the stream ('{alias}') nor the table joined to it", q.value)));
            }
            let name = &ident.value;
            if matches!(name.to_ascii_lowercase().as_str(), "window_start" | "window_end") {
                continue;
            }
            if !topic.columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(name)) {
                let names: Vec<&str> = topic.columns.iter().map(|(c, _)| c.as_str()).collect();
                let hint =
                    weir_project::error::closest(name, names.iter().copied()).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default();
                return Err(at(ident.span, format!("'{name}' is not a column of topic '{}' ({}){hint}", topic.name, names.join(", "))));
            }
            used.push(canonical(topic, name));
        }
        Ok(())
    };

    let mut on_clause = None;
    if let Some(j) = from.joins.first()
        && let sqlparser::ast::JoinOperator::Join(sqlparser::ast::JoinConstraint::On(on))
        | sqlparser::ast::JoinOperator::Inner(sqlparser::ast::JoinConstraint::On(on))
        | sqlparser::ast::JoinOperator::Left(sqlparser::ast::JoinConstraint::On(on))
        | sqlparser::ast::JoinOperator::LeftOuter(sqlparser::ast::JoinConstraint::On(on)) = &j.join_operator
    {
        check_columns(on)?;
        on_clause = Some(on);
    }
    let filter = match &select.selection {
        Some(w) => {
            check_columns(w)?;
            if let Some(span) = first_aggregate(w) {
                return Err(at(span, "an aggregate cannot be in `where`".into()));
            }
            Some(w.to_string())
        }
        None => None,
    };

    let group: Vec<&Expr> = match &select.group_by {
        GroupByExpr::Expressions(items, modifiers) if modifiers.is_empty() => items.iter().collect(),
        GroupByExpr::Expressions(..) => {
            return Err(at(select.span(), "`rollup`, `cube` and `grouping sets` are not supported in stream jobs".into()));
        }
        GroupByExpr::All(_) => return Err(at(select.span(), "`group by all` is not supported in stream jobs: name the keys".into())),
    };
    let is_window_col = |e: &Expr, which: &str| column_of(e).is_some_and(|c| c.eq_ignore_ascii_case(which));
    let mut keys: Vec<Scalar> = vec![];
    let (mut by_start, mut by_end) = (false, false);
    for g in &group {
        if is_window_col(g, "window_start") {
            by_start = true;
        } else if is_window_col(g, "window_end") {
            by_end = true;
        } else {
            check_columns(g)?;
            if let Some(span) = first_aggregate(g) {
                return Err(at(span, "an aggregate cannot be a group key".into()));
            }
            keys.push(scalar(g));
        }
    }
    let has_aggs = select.projection.iter().any(|p| match p {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => first_aggregate(e).is_some(),
        _ => false,
    });
    let shape = match (&window, group.is_empty() && !has_aggs) {
        (Some(_), true) => return Err(at(select.span(), "a windowed job groups by window_start and window_end (and its keys)".into())),
        (Some(_), false) if !(by_start && by_end) => {
            return Err(at(
                select.span(),
                "a windowed job must `group by window_start, window_end` (each window is a group, as in Flink's window aggregations)"
                    .into(),
            ));
        }
        (Some(_), false) => Shape::Windowed,
        (None, _) if by_start || by_end => {
            return Err(at(select.span(), "window_start and window_end exist only over tumble(), hop() or session()".into()));
        }
        (None, true) => Shape::Stateless,
        (None, false) => Shape::Running,
    };

    let mut every_column = false;
    let mut aggs: Vec<AggCall> = vec![];
    let mut outputs: Vec<(String, Output)> = vec![];
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) if other.is_some() => {
                return Err(at(
                    item.span(),
                    "name the columns of a join of two streams (o.order_id, p.paid_at): `*` is not supported".into(),
                ));
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) if shape == Shape::Stateless => {
                every_column = true;
                for (c, _) in &topic.columns {
                    outputs.push((c.clone(), Output::Expr(Scalar { sql: quote_ident(c), column: Some(c.clone()) })));
                }
                continue;
            }
            other => return Err(at(other.span(), "`*` selects a whole event: only a job without `group by` may use it".into())),
        };
        let named = |what: &str| -> Result<String, GraphError> {
            // A column is named by its own name, whichever side of a join it is from.
            let own_name = match expr {
                Expr::Identifier(i) => Some(i.value.clone()),
                Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
                _ => None,
            };
            alias.clone().or(own_name).ok_or_else(|| at(expr.span(), format!("name this {what}: `{expr} as <name>`")))
        };
        if shape == Shape::Stateless {
            check_columns(expr)?;
            let s = scalar(expr);
            outputs.push((named("column")?, Output::Expr(s)));
            continue;
        }
        if is_window_col(expr, "window_start") {
            outputs.push((named("column")?, Output::WindowStart));
        } else if is_window_col(expr, "window_end") {
            outputs.push((named("column")?, Output::WindowEnd));
        } else if let Some((call, arg_expr)) = aggregate(expr, &at)? {
            if let (Some(a), Some(arg_expr)) = (&call.arg, arg_expr) {
                check_columns(arg_expr)?;
                if let Some(span) = first_aggregate(arg_expr) {
                    return Err(at(span, "aggregates cannot be nested".into()));
                }
                if let (Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Percentile { .. }, Some(c)) = (call.agg, &a.column)
                    && let Some((_, ty)) = topic.columns.iter().find(|(n, _)| n == c)
                    && !matches!(Kind::of(ty), Kind::Int | Kind::Float)
                {
                    return Err(at(arg_expr.span(), format!("{:?} over '{c}', a {ty}: stream jobs aggregate numbers this way", call.agg)));
                }
            }
            aggs.push(call);
            outputs.push((named("aggregate")?, Output::Agg(aggs.len() - 1)));
        } else if let Some(span) = first_aggregate(expr) {
            return Err(at(
                span,
                "an aggregate must be a whole select item (`sum(amount) as revenue`); compute with it in a model over the sink table"
                    .into(),
            ));
        } else {
            let text = expr.to_string();
            let Some(k) = keys.iter().position(|k| k.sql.eq_ignore_ascii_case(&text)) else {
                return Err(at(expr.span(), format!("'{text}' is neither grouped by nor an aggregate: add it to `group by`")));
            };
            outputs.push((named("key")?, Output::Key(k)));
        }
    }
    if shape == Shape::Windowed
        && !(outputs.iter().any(|(_, o)| *o == Output::WindowStart) && outputs.iter().any(|(_, o)| *o == Output::WindowEnd))
    {
        return Err(at(select.span(), "select window_start and window_end: each window's row is kept and updated by them".into()));
    }
    if let Some(key) = &changelog {
        if let Some(i) = aggs.iter().position(|a| matches!(a.agg, Agg::Percentile { .. })) {
            let name = outputs.iter().find(|(_, o)| *o == Output::Agg(i)).map_or("", |(n, _)| n.as_str());
            return Err(at(
                select.span(),
                format!("'{name}': approx_quantile() over cdc() is not supported: a sketch cannot take back a changed row's value"),
            ));
        }
        let selected = |k: &String| outputs.iter().any(|(_, o)| matches!(o, Output::Expr(s) if s.column.as_ref() == Some(k)));
        if shape == Shape::Stateless && !key.iter().all(selected) {
            return Err(at(
                select.span(),
                format!("select the table's key ({}) as it is: each row of cdc() is updated and deleted in place by it", key.join(", ")),
            ));
        }
    }
    let mut seen: Vec<&str> = vec![];
    for (name, _) in &outputs {
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(job.at(1, 1, format!("two output columns are named '{name}': give one an alias")));
        }
        seen.push(name);
    }
    if let Some(t) = &topic.event_time {
        used.push(t.clone());
    }
    if every_column {
        used.extend(topic.columns.iter().map(|(c, _)| c.clone()));
    }
    let stream_join = match (joined_stream, &other) {
        (Some(j), Some((other, left, right))) => {
            if window.is_some() || shape != Shape::Stateless {
                return Err(at(
                    select.span(),
                    "a join of two streams gives pairs of events, not groups: write them to a topic (`sink='topic'`) and window \
                     that topic in a second job"
                        .into(),
                ));
            }
            let sides = Sides { left: (topic, left), right: (other, right) };
            let mut sj = stream_join(&sides, j, on_clause, &at)?;
            used.extend(topic.event_time.clone());
            used_other.push(sj.time_column.clone());
            sj.columns = other.columns.iter().filter(|(c, _)| used_other.contains(c)).cloned().collect();
            Some(sj)
        }
        _ => None,
    };
    let columns = topic.columns.iter().filter(|(c, _)| used.contains(c)).cloned().collect();
    Ok(Plan {
        topic: topic.name.clone(),
        shape,
        window: window.unwrap_or(WindowSpec::Global),
        time_column: topic.event_time.clone(),
        filter,
        keys,
        aggs,
        outputs,
        columns,
        join,
        stream_join,
        changelog,
    })
}

/// The topic `relation` reads, when it is a plain `{{ stream('...') }}`.
fn stream_of(job: &StreamJob, relation: &TableFactor) -> Option<String> {
    let TableFactor::Table { name, args: None, .. } = relation else { return None };
    let plain = object_name(name);
    job.streams.contains(&plain).then_some(plain)
}

/// The two streams of a join: each topic with the name the SQL gives it (lower case).
struct Sides<'t> {
    left: (&'t Topic, &'t str),
    right: (&'t Topic, &'t str),
}

impl Sides<'_> {
    /// The stream a column reference is of, and the column's own spelling.
    fn column(&self, e: &Expr) -> Option<(Side, String)> {
        let (qualifier, name) = match e {
            Expr::Identifier(i) => (None, &i.value),
            Expr::CompoundIdentifier(parts) => (parts.iter().rev().nth(1).map(|q| q.value.to_ascii_lowercase()), &parts.last()?.value),
            Expr::Nested(inner) => return self.column(inner),
            _ => return None,
        };
        let has = |t: &Topic| t.columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(name));
        let side = match qualifier.as_deref() {
            Some(q) if q == self.right.1 => Side::Right,
            Some(q) if q == self.left.1 => Side::Left,
            Some(_) => return None,
            None if has(self.left.0) => Side::Left,
            None => Side::Right,
        };
        let topic = if side == Side::Left { self.left.0 } else { self.right.0 };
        has(topic).then(|| (side, canonical(topic, name)))
    }

    /// A stream's event time, moved by an interval or not (`o.ordered_at + interval '1
    /// hour'`): the stream and the milliseconds added.
    fn time(&self, e: &Expr) -> Option<(Side, i64)> {
        use sqlparser::ast::BinaryOperator::{Minus, Plus};
        match e {
            Expr::Nested(inner) => self.time(inner),
            Expr::BinaryOp { left, op: op @ (Plus | Minus), right } => {
                let (side, at) = self.time(left)?;
                let ms = interval_literal(right)?;
                Some((side, if *op == Plus { at.checked_add(ms)? } else { at.checked_sub(ms)? }))
            }
            _ => {
                let (side, column) = self.column(e)?;
                let topic = if side == Side::Left { self.left.0 } else { self.right.0 };
                topic.event_time.as_ref().is_some_and(|t| t.eq_ignore_ascii_case(&column)).then_some((side, 0))
            }
        }
    }
}

/// The interval join's keys and time bound, read from its `on`.
fn stream_join(
    sides: &Sides,
    j: &sqlparser::ast::Join,
    on: Option<&Expr>,
    at: &dyn Fn(sqlparser::tokenizer::Span, String) -> GraphError,
) -> Result<StreamJoin, GraphError> {
    use sqlparser::ast::{BinaryOperator as Op, JoinConstraint, JoinOperator};
    let (Some(on), JoinOperator::Join(JoinConstraint::On(_)) | JoinOperator::Inner(JoinConstraint::On(_))) = (on, &j.join_operator) else {
        return Err(at(
            j.relation.span(),
            "two streams are joined with `join ... on` and a time bound (outer joins of streams are not supported)".into(),
        ));
    };
    let ((left, left_alias), (right, right_alias)) = (sides.left, sides.right);
    for (t, span) in [(left, j.relation.span()), (right, j.relation.span())] {
        if t.event_time.is_none() {
            return Err(at(span, format!("topic '{}' has no event_time: an interval join pairs events by their event times", t.name)));
        }
    }
    let mut conjuncts = vec![];
    and_terms(on, &mut conjuncts);
    let (mut keys, mut lower, mut upper) = (vec![], None::<i64>, None::<i64>);
    // `a op b`, each side a stream's time moved or not: a bound on right's time less left's.
    let mut bound = |a: &Expr, op: &Op, b: &Expr| {
        let (Some((sa, ca)), Some((sb, cb))) = (sides.time(a), sides.time(b)) else { return };
        if sa == sb {
            return;
        }
        // sa.t + ca op sb.t + cb, as right.t - left.t op k.
        let (op, k) = match sa {
            Side::Right => (op.clone(), cb - ca),
            Side::Left => (
                match op {
                    Op::Gt => Op::Lt,
                    Op::GtEq => Op::LtEq,
                    Op::Lt => Op::Gt,
                    Op::LtEq => Op::GtEq,
                    other => other.clone(),
                },
                ca - cb,
            ),
        };
        match op {
            Op::Gt | Op::GtEq => lower = Some(lower.map_or(k, |l| l.max(k))),
            Op::Lt | Op::LtEq => upper = Some(upper.map_or(k, |u| u.min(k))),
            _ => {}
        }
    };
    for c in conjuncts {
        match c {
            Expr::Between { expr, negated: false, low, high } => {
                bound(expr, &Op::GtEq, low);
                bound(expr, &Op::LtEq, high);
            }
            Expr::BinaryOp { left: a, op: op @ (Op::Gt | Op::GtEq | Op::Lt | Op::LtEq), right: b } => {
                bound(a, op, b);
            }
            Expr::BinaryOp { left: a, op: Op::Eq, right: b } => match (sides.column(a), sides.column(b)) {
                (Some((Side::Left, l)), Some((Side::Right, r))) | (Some((Side::Right, r)), Some((Side::Left, l))) => keys.push((l, r)),
                _ => {}
            },
            _ => {}
        }
    }
    let (lt, rt) = (left.event_time.clone().unwrap_or_default(), right.event_time.clone().unwrap_or_default());
    let (Some(lower), Some(upper)) = (lower, upper) else {
        let missing = if lower.is_none() && upper.is_none() {
            "a time bound"
        } else if lower.is_none() {
            "a lower time bound"
        } else {
            "an upper time bound"
        };
        return Err(at(
            on.span(),
            format!(
                "a join of two streams needs {missing} in its `on`, over the topics' event times: \
                 `{right_alias}.{rt} between {left_alias}.{lt} and {left_alias}.{lt} + interval '1 hour'` \
                 (without one, every event would be held for ever)"
            ),
        ));
    };
    if lower > upper {
        return Err(at(
            on.span(),
            format!("the time bound admits no pair: {right_alias}.{rt} less {left_alias}.{lt} from {lower} ms to {upper} ms"),
        ));
    }
    Ok(StreamJoin {
        topic: right.name.clone(),
        columns: vec![],
        time_column: rt,
        alias: right_alias.to_string(),
        stream_alias: left_alias.to_string(),
        keys,
        lower,
        upper,
        on: on.to_string(),
    })
}

/// The terms of a conjunction (`a and (b and c)`: a, b, c).
fn and_terms<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp { left, op: sqlparser::ast::BinaryOperator::And, right } => {
            and_terms(left, out);
            and_terms(right, out);
        }
        Expr::Nested(inner) => and_terms(inner, out),
        other => out.push(other),
    }
}

/// An interval literal's length (`interval '1 hour'`, `interval '30' second`).
fn interval_literal(e: &Expr) -> Option<i64> {
    let text = e.to_string();
    let body = text.trim();
    let body = body.strip_prefix("INTERVAL").or_else(|| body.strip_prefix("interval")).unwrap_or(body);
    let words: String = body.replace('\'', " ");
    interval_ms(&words.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The one join of a job: a table (`ref()` or `source()`) joined to the stream with `on`.
fn table_join(
    job: &StreamJob,
    topic: &str,
    stream: &TableFactor,
    j: &sqlparser::ast::Join,
    at: &dyn Fn(sqlparser::tokenizer::Span, String) -> GraphError,
) -> Result<TableJoin, GraphError> {
    use sqlparser::ast::{JoinConstraint, JoinOperator};
    let (left, on) = match &j.join_operator {
        JoinOperator::Join(JoinConstraint::On(on)) | JoinOperator::Inner(JoinConstraint::On(on)) => (false, on),
        JoinOperator::Left(JoinConstraint::On(on)) | JoinOperator::LeftOuter(JoinConstraint::On(on)) => (true, on),
        _ => {
            return Err(at(
                j.relation.span(),
                "a table is joined to the stream with `join ... on` or `left join ... on` (a lookup of each event's row)".into(),
            ));
        }
    };
    let TableFactor::Table { name, alias, args: None, .. } = &j.relation else {
        return Err(at(j.relation.span(), "join a table to the stream: join {{ ref('customers') }} c on ...".into()));
    };
    let plain = object_name(name);
    let Some(table) = (0..job.tables.len()).find(|i| weir_graph::stream_jobs::table_placeholder(*i) == plain) else {
        return Err(at(
            j.relation.span(),
            format!("'{plain}' is not a table of the project: join {{{{ ref('model') }}}} or {{{{ source('src', 'table') }}}}"),
        ));
    };
    let stream_alias = match stream {
        TableFactor::Table { alias: Some(a), .. } => a.name.value.clone(),
        _ => topic.to_string(),
    };
    let alias = alias.as_ref().map_or_else(|| plain.clone(), |a| a.name.value.clone());
    Ok(TableJoin { table, alias, stream_alias, left, on: on.to_string() })
}

/// The topic's own spelling of a column named in any case.
fn canonical(topic: &Topic, name: &str) -> String {
    topic.columns.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)).map_or_else(|| name.to_string(), |(c, _)| c.clone())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `FROM` as a window over a topic, or a topic: its name, window and the window's column.
#[allow(clippy::type_complexity)]
fn from_clause(
    job: &StreamJob,
    relation: &TableFactor,
    at: &dyn Fn(sqlparser::tokenizer::Span, String) -> GraphError,
) -> Result<(String, Option<WindowSpec>, Option<(String, sqlparser::tokenizer::Span)>), GraphError> {
    let TableFactor::Table { name, args, .. } = relation else {
        return Err(at(relation.span(), "a stream job reads from {{ stream('topic') }} or a window over it: tumble({{ stream('topic') }}, <time column>, interval '1 minute')".into()));
    };
    let plain = object_name(name);
    let Some(args) = args else {
        return match job.streams.iter().find(|s| **s == plain) {
            Some(s) => Ok((s.clone(), None, None)),
            None => Err(at(relation.span(), format!("'{plain}' is not a stream: read topics with {{{{ stream('{plain}') }}}}"))),
        };
    };
    let function = plain.to_ascii_lowercase();
    let exprs: Vec<&Expr> = args
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(at(other.span(), format!("{function}() takes its arguments in order: the stream, the time column, intervals"))),
        })
        .collect::<Result<_, _>>()?;
    let usage = match function.as_str() {
        "tumble" => "tumble({{ stream('topic') }}, <time column>, <size>[, <offset>])",
        "hop" => "hop({{ stream('topic') }}, <time column>, <slide>, <size>[, <offset>])",
        "session" => "session({{ stream('topic') }}, <time column>, <gap>)",
        _ => {
            return Err(at(
                relation.span(),
                format!("'{plain}' is not a window function: tumble(), hop() or session() over {{{{ stream('topic') }}}}"),
            ));
        }
    };
    let (want_min, want_max) = match function.as_str() {
        "tumble" => (3, 4),
        "hop" => (4, 5),
        _ => (3, 3),
    };
    if exprs.len() < want_min || exprs.len() > want_max {
        return Err(at(relation.span(), format!("{function}() takes {want_min} to {want_max} arguments: {usage}")));
    }
    let stream = match exprs[0] {
        Expr::Identifier(i) if job.streams.contains(&i.value) => i.value.clone(),
        other => return Err(at(other.span(), format!("the first argument of {function}() is a stream: {usage}"))),
    };
    let col = match exprs[1] {
        Expr::Identifier(i) => (i.value.clone(), i.span),
        other => return Err(at(other.span(), format!("the second argument of {function}() is the event-time column: {usage}"))),
    };
    let interval = |e: &Expr| -> Result<i64, GraphError> {
        interval_literal(e).ok_or_else(|| at(e.span(), format!("'{e}' is not an interval (interval '1 minute'): {usage}")))
    };
    let spec = match function.as_str() {
        "tumble" => WindowSpec::Tumble { size: interval(exprs[2])?, offset: exprs.get(3).map(|e| interval(e)).transpose()?.unwrap_or(0) },
        "hop" => WindowSpec::Hop {
            slide: interval(exprs[2])?,
            size: interval(exprs[3])?,
            offset: exprs.get(4).map(|e| interval(e)).transpose()?.unwrap_or(0),
        },
        _ => WindowSpec::Session { gap: interval(exprs[2])? },
    };
    spec.check().map_err(|m| at(relation.span(), m))?;
    Ok((stream, Some(spec), Some(col)))
}

fn object_name(name: &ObjectName) -> String {
    name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.clone()).collect::<Vec<_>>().join(".")
}

/// The aggregate `expr` is, if it is one, with its argument.
fn aggregate<'e>(
    expr: &'e Expr,
    at: &dyn Fn(sqlparser::tokenizer::Span, String) -> GraphError,
) -> Result<Option<(AggCall, Option<&'e Expr>)>, GraphError> {
    let Expr::Function(f) = expr else { return Ok(None) };
    let name = object_name(&f.name).to_ascii_lowercase();
    if !matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg" | "mean" | "approx_quantile") {
        return Ok(None);
    }
    if f.over.is_some() {
        return Err(at(expr.span(), "window functions (`over (...)`) are not supported in stream jobs; group by a window instead".into()));
    }
    if f.filter.is_some() {
        return Err(at(expr.span(), "an aggregate's `filter (where ...)` is not supported in stream jobs yet".into()));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(at(expr.span(), format!("{name}() needs an argument")));
    };
    let distinct = matches!(list.duplicate_treatment, Some(sqlparser::ast::DuplicateTreatment::Distinct));
    let args: Vec<&FunctionArgExpr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(x) => Ok(x),
            other => Err(at(other.span(), format!("{name}() takes its arguments in order"))),
        })
        .collect::<Result<_, _>>()?;
    let column = |e: &Expr| match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    };
    let one = |e: &Expr| Scalar { sql: e.to_string(), column: column(e) };
    let call = match (name.as_str(), args.as_slice(), distinct) {
        ("count", [FunctionArgExpr::Wildcard], false) => AggCall { agg: Agg::Count, arg: None },
        ("count", [FunctionArgExpr::Expr(e)], false) => AggCall { agg: Agg::CountValues, arg: Some(one(e)) },
        ("count", [FunctionArgExpr::Expr(e)], true) => AggCall { agg: Agg::CountDistinct, arg: Some(one(e)) },
        (_, _, true) => return Err(at(expr.span(), format!("`distinct` is supported in count() only, not {name}()"))),
        ("sum", [FunctionArgExpr::Expr(e)], _) => AggCall { agg: Agg::Sum, arg: Some(one(e)) },
        ("min", [FunctionArgExpr::Expr(e)], _) => AggCall { agg: Agg::Min, arg: Some(one(e)) },
        ("max", [FunctionArgExpr::Expr(e)], _) => AggCall { agg: Agg::Max, arg: Some(one(e)) },
        ("avg" | "mean", [FunctionArgExpr::Expr(e)], _) => AggCall { agg: Agg::Avg, arg: Some(one(e)) },
        ("approx_quantile", [FunctionArgExpr::Expr(e), FunctionArgExpr::Expr(q)], _) => {
            let q: f64 = q
                .to_string()
                .parse()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| at(q.span(), format!("approx_quantile() takes a fraction from 0 to 1 (0.99), not {q}")))?;
            AggCall { agg: Agg::Percentile { basis_points: (q * 10_000.0).round() as u16 }, arg: Some(one(e)) }
        }
        _ => return Err(at(expr.span(), format!("{name}() takes one argument here (approx_quantile(x, 0.99) two)"))),
    };
    let arg = match args.first() {
        Some(FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    };
    Ok(Some((call, arg)))
}

/// Where the first aggregate call inside `expr` is.
fn first_aggregate(expr: &Expr) -> Option<sqlparser::tokenizer::Span> {
    struct Find(Option<sqlparser::tokenizer::Span>);
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Function(f) = e
                && matches!(
                    object_name(&f.name).to_ascii_lowercase().as_str(),
                    "count" | "sum" | "min" | "max" | "avg" | "mean" | "approx_quantile"
                )
                && f.over.is_none()
            {
                self.0 = Some(e.span());
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut f = Find(None);
    let _ = expr.visit(&mut f);
    f.0
}

/// The column names an expression mentions.
/// The columns an expression names, each with what qualifies it (`o` of `o.amount`).
#[derive(Default)]
struct Columns {
    found: Vec<(Option<Ident>, Ident)>,
}

impl Visitor for Columns {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
        match e {
            Expr::Identifier(i) => self.found.push((None, i.clone())),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    self.found.push((parts.iter().rev().nth(1).cloned(), last.clone()));
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// sqlparser's "... at Line: 3, Column: 7" as a place in the file.
fn parse_error(job: &StreamJob, message: &str) -> GraphError {
    let place = message.rsplit_once("Line: ").and_then(|(_, rest)| {
        let (line, rest) = rest.split_once(", Column: ")?;
        let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((line.trim().parse().ok()?, col.parse().ok()?))
    });
    let (line, col) = place.unwrap_or((1, 1));
    let text = message.strip_prefix("sql parser error: ").unwrap_or(message);
    let text = text.split(" at Line: ").next().unwrap_or(text);
    job.at(line, col, format!("not SQL Weir can read: {text}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use weir_graph::stream_jobs::parse_job;
    use weir_graph::streams::parse_file;

    fn topics() -> Vec<Topic> {
        parse_file(
            Path::new("streams/shop.yml"),
            "topics:\n  - name: orders\n    columns: {order_id: bigint, country: varchar, amount: 'decimal(10,2)', user_id: varchar, ordered_at: timestamp}\n    \
             watermark: ordered_at - interval '5 seconds'\n  - name: payments\n    \
             columns: {order_id: bigint, method: varchar, amount: double, paid_at: timestamp}\n    watermark: paid_at - interval '1 second'\n",
        )
        .unwrap()
    }

    fn planned(sql: &str) -> Result<Plan, String> {
        let job = parse_job(Path::new("streams/j.sql"), sql).map_err(|e| e.to_string())?;
        plan(&job, &topics()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_tumbling_count_per_key() {
        let p = planned(
            "select country, window_start, window_end, count(*) as orders, sum(amount) as revenue,\n  count(distinct user_id) as buyers, \
             approx_quantile(amount, 0.99) as p99\nfrom tumble({{ stream('orders') }}, ordered_at, interval '1 minute')\ngroup by country, window_start, window_end",
        )
        .unwrap();
        assert_eq!((p.shape, p.window), (Shape::Windowed, WindowSpec::Tumble { size: 60_000, offset: 0 }));
        assert_eq!(p.keys, vec![Scalar { sql: "country".into(), column: Some("country".into()) }]);
        let aggs: Vec<Agg> = p.aggs.iter().map(|a| a.agg).collect();
        assert_eq!(aggs, vec![Agg::Count, Agg::Sum, Agg::CountDistinct, Agg::Percentile { basis_points: 9900 }]);
        let names: Vec<&str> = p.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["country", "window_start", "window_end", "orders", "revenue", "buyers", "p99"]);
        assert!(p.is_direct());
        let cols: Vec<&str> = p.columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cols, ["country", "amount", "user_id", "ordered_at"], "only the columns read, in the topic's order");
    }

    #[test]
    fn hops_sessions_running_and_stateless() {
        let p = planned("select window_start, window_end, count(*) n from hop({{ stream('orders') }}, ordered_at, interval '1 minute', interval '5 minutes') group by window_start, window_end").unwrap();
        assert_eq!(p.window, WindowSpec::Hop { size: 300_000, slide: 60_000, offset: 0 });
        let p = planned(
            "select user_id, window_start, window_end, count(*) n from session({{ stream('orders') }}, ordered_at, interval '30' second) group by 1 = 1, user_id, window_start, window_end",
        );
        assert!(p.is_ok(), "{p:?}");
        let p = planned(
            "select upper(country) as c, sum(amount) as total from {{ stream('orders') }} where amount > 10 group by upper(country)",
        )
        .unwrap();
        assert_eq!((p.shape, p.window, p.filter.as_deref()), (Shape::Running, WindowSpec::Global, Some("amount > 10")));
        assert!(!p.is_direct());
        let p = planned("select order_id, amount * 2 as doubled from {{ stream('orders') }} where country = 'DE'").unwrap();
        assert_eq!(p.shape, Shape::Stateless);
        assert_eq!(p.outputs[1], ("doubled".to_string(), Output::Expr(Scalar { sql: "amount * 2".into(), column: None })));
    }

    #[test]
    fn mistakes_name_their_place() {
        let e = planned("select countr, count(*) n\nfrom {{ stream('orders') }}\ngroup by countr").unwrap_err();
        assert!(e.starts_with("streams/j.sql:3:10") && e.contains("did you mean 'country'"), "{e}");
        let e = planned(
            "select count(*) n\nfrom tumble({{ stream('orders') }}, order_id, interval '1 minute')\ngroup by window_start, window_end",
        )
        .unwrap_err();
        assert!(e.starts_with("streams/j.sql:2:37") && e.contains("windows are over event time"), "{e}");
        let e = planned("select count(*) n from tumble({{ stream('orders') }}, ordered_at, interval '1 minute')").unwrap_err();
        assert!(e.contains("group by window_start, window_end"), "{e}");
        let e = planned("select count(*) n from {{ stream('ordrs') }}").unwrap_err();
        assert!(e.contains("did you mean 'orders'"), "{e}");
        let e = planned("select country, sum(amount) / count(*) as avg from {{ stream('orders') }} group by country").unwrap_err();
        assert!(e.contains("whole select item"), "{e}");
        let e = planned("select country, order_id, count(*) n from {{ stream('orders') }} group by country").unwrap_err();
        assert!(e.contains("'order_id' is neither grouped by nor an aggregate"), "{e}");
        let e = planned("select country, sum(country) s from {{ stream('orders') }} group by country").unwrap_err();
        assert!(e.contains("a varchar"), "{e}");
        let e = planned("select country, count(*) from {{ stream('orders') }} group by country").unwrap_err();
        assert!(e.contains("name this aggregate"), "{e}");
        let e = planned("select from where").unwrap_err();
        assert!(e.starts_with("streams/j.sql:1:") && e.contains("not SQL Weir can read"), "{e}");
        let e = planned("select * from {{ stream('orders') }} order by amount").unwrap_err();
        assert!(e.contains("no end to sort by"), "{e}");
    }

    #[test]
    fn a_table_joined_to_the_stream() {
        let p = planned(
            "select c.segment, count(*) n\nfrom {{ stream('orders') }} o\nleft join {{ ref('customers') }} c on o.country = c.code\ngroup by c.segment",
        )
        .unwrap();
        let j = p.join.as_ref().unwrap();
        assert_eq!((j.table, j.alias.as_str(), j.stream_alias.as_str(), j.left), (0, "c", "o", true));
        assert_eq!(p.keys[0].column, None, "a key from the table is no column of the topic");
        assert!(!p.is_direct());
        assert_eq!(p.outputs[0].0, "segment");
        let e =
            planned("select x.code, count(*) n from {{ stream('orders') }} o join {{ ref('c') }} c on o.country = c.code group by x.code")
                .unwrap_err();
        assert!(e.contains("'x' names neither the stream ('o') nor the table joined to it"), "{e}");
        let e = planned("select count(*) n from {{ stream('orders') }} o cross join {{ ref('c') }} c").unwrap_err();
        assert!(e.contains("`join ... on` or `left join ... on`"), "{e}");
        let e = planned("select count(*) n from {{ stream('orders') }} o join {{ ref('c') }} c on o.cuntry = c.code").unwrap_err();
        assert!(e.contains("did you mean 'country'"), "{e}");
    }

    #[test]
    fn two_streams_joined_within_a_time_bound() {
        let p = planned(
            "select o.order_id, o.amount, p.method, p.paid_at\nfrom {{ stream('orders') }} o\njoin {{ stream('payments') }} p\n  \
             on o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at + interval '1 hour'\nwhere method <> 'cash'",
        )
        .unwrap();
        assert_eq!(p.shape, Shape::Stateless);
        let j = p.stream_join.as_ref().unwrap();
        assert_eq!((j.topic.as_str(), j.alias.as_str(), j.stream_alias.as_str()), ("payments", "p", "o"));
        assert_eq!((j.keys.clone(), j.lower, j.upper), (vec![("order_id".to_string(), "order_id".to_string())], 0, 3_600_000));
        let cols = |c: &[(String, String)]| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(cols(&p.columns), ["order_id", "amount", "ordered_at"]);
        assert_eq!(cols(&j.columns), ["order_id", "method", "paid_at"], "the joined stream's columns read, its event time too");
        assert!(p.fingerprint().contains("stream_join=payments"));
        assert_eq!(p.window_text(), "joined with payments from 0s to 3600s");
        // The bound written the other way round, strict or not, the stream of `from` on the left.
        let p = planned(
            "select o.order_id, p.method from {{ stream('orders') }} o join {{ stream('payments') }} p on o.order_id = p.order_id \
             and o.ordered_at >= p.paid_at - interval '10 minutes' and o.ordered_at < p.paid_at + interval '5' minute",
        )
        .unwrap();
        let j = p.stream_join.unwrap();
        assert_eq!((j.lower, j.upper), (-300_000, 600_000));
    }

    #[test]
    fn a_join_of_two_streams_needs_a_time_bound_and_names_its_columns() {
        let from = "from {{ stream('orders') }} o\njoin {{ stream('payments') }} p\n  on ";
        let e = planned(&format!("select o.order_id, p.method\n{from}o.order_id = p.order_id")).unwrap_err();
        assert!(
            e.starts_with("streams/j.sql:4:6") && e.contains("needs a time bound") && e.contains("p.paid_at between o.ordered_at"),
            "{e}"
        );
        let e = planned(&format!("select o.order_id\n{from}o.order_id = p.order_id and p.paid_at >= o.ordered_at")).unwrap_err();
        assert!(e.contains("needs an upper time bound"), "{e}");
        let e = planned(&format!("select order_id\n{from}o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at"))
            .unwrap_err();
        assert!(e.starts_with("streams/j.sql:1:8") && e.contains("a column of both streams"), "{e}");
        let e = planned(&format!("select o.method\n{from}o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at"))
            .unwrap_err();
        assert!(e.contains("'method' is not a column of topic 'orders'"), "{e}");
        let e =
            planned(&format!("select *\n{from}o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at")).unwrap_err();
        assert!(e.contains("`*` is not supported"), "{e}");
        let e = planned(&format!(
            "select o.country, count(*) n\n{from}o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at\ngroup by o.country"
        ))
        .unwrap_err();
        assert!(e.contains("write them to a topic"), "{e}");
        let e = planned(
            "select o.order_id from {{ stream('orders') }} o left join {{ stream('payments') }} p on o.order_id = p.order_id \
             and p.paid_at between o.ordered_at and o.ordered_at",
        )
        .unwrap_err();
        assert!(e.contains("outer joins of streams are not supported"), "{e}");
        let e = planned("select o.order_id from {{ stream('orders') }} o join {{ stream('orders') }} p on o.order_id = p.order_id")
            .unwrap_err();
        assert!(e.contains("joining 'orders' to itself is not supported"), "{e}");
        let e = planned("select o.order_id from {{ stream('orders') }} payments join {{ stream('payments') }} on 1 = 1").unwrap_err();
        assert!(e.contains("give each an alias"), "{e}");
        let e =
            planned(&format!("select o.order_id\n{from}p.paid_at between o.ordered_at + interval '1 hour' and o.ordered_at")).unwrap_err();
        assert!(e.contains("admits no pair"), "{e}");
    }
}
