//! Column-level lineage of one query: for each column it outputs, the columns of the tables it
//! reads that feed it, and the expression that computes it. Read from the compiled SQL with
//! sqlparser, through CTEs, subqueries, joins, unions and window functions; `select *` is
//! expanded with the columns a catalog knows (the warehouse's, for tables already built).
//! What cannot be traced (a table whose columns no one knows, a subquery inside an
//! expression) is said in the column's `opaque` note rather than guessed.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, ObjectName, ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableAlias, TableFactor, visit_expressions,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

/// A column of a table the query reads: the table as the SQL names it (`main.orders`, its
/// parts joined by `.`, unquoted) and the column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceColumn {
    pub relation: String,
    pub column: String,
}

/// Where one output column of a query comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnLineage {
    pub name: String,
    /// The expression that computes it, as written in the outermost select (its name alone
    /// for a column passed through).
    pub expression: String,
    /// The columns of the tables read that feed it, through every CTE and subquery.
    pub sources: BTreeSet<SourceColumn>,
    /// Why it can be traced only in part or not at all, when so.
    pub opaque: Option<String>,
}

/// Why a query's lineage could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineageError {
    #[error("the SQL does not parse: {0}")]
    Parse(String),
    #[error("the SQL is not one query (select, with, union, values)")]
    NotAQuery,
}

/// The lineage of each output column of `sql` (one query), in order; `catalog` gives the
/// columns of a table the query reads, by its name as written, when known.
pub fn lineage(sql: &str, catalog: &dyn Fn(&str) -> Option<Vec<String>>) -> Result<Vec<ColumnLineage>, LineageError> {
    let statements = Parser::parse_sql(&DuckDbDialect {}, sql).map_err(|e| LineageError::Parse(e.to_string()))?;
    let [Statement::Query(q)] = statements.as_slice() else { return Err(LineageError::NotAQuery) };
    let mut reader = Reader { catalog, ctes: vec![] };
    Ok(reader.query(q).columns)
}

/// A relation in a query's scope: its columns and what feeds each.
#[derive(Debug, Clone)]
struct Relation {
    columns: Vec<ColumnLineage>,
    /// A table the catalog does not know: its columns are taken as they are named.
    unknown: Option<String>,
}

struct Reader<'c> {
    catalog: &'c dyn Fn(&str) -> Option<Vec<String>>,
    /// The CTEs in scope, innermost last, by lower-case name.
    ctes: Vec<(String, Relation)>,
}

impl Reader<'_> {
    fn query(&mut self, q: &Query) -> Relation {
        let before = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let rel = renamed(self.query(&cte.query), &cte.alias);
                self.ctes.push((cte.alias.name.value.to_lowercase(), rel));
            }
        }
        let out = self.set_expr(&q.body);
        self.ctes.truncate(before);
        out
    }

    fn set_expr(&mut self, e: &SetExpr) -> Relation {
        match e {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            // By position: each column of a union is fed by the columns at its place on both sides.
            SetExpr::SetOperation { left, right, .. } => {
                let (mut l, r) = (self.set_expr(left), self.set_expr(right));
                for (a, b) in l.columns.iter_mut().zip(r.columns) {
                    a.sources.extend(b.sources);
                    a.opaque = a.opaque.take().or(b.opaque);
                }
                l
            }
            SetExpr::Values(v) => Relation {
                columns: (1..=v.rows.first().map_or(0, |r| r.content.len()))
                    .map(|i| ColumnLineage {
                        name: format!("column{i}"),
                        expression: "values".into(),
                        sources: BTreeSet::new(),
                        opaque: None,
                    })
                    .collect(),
                unknown: None,
            },
            other => Relation { columns: vec![opaque_column("?", &other.to_string(), "a statement that is not a query")], unknown: None },
        }
    }

    fn select(&mut self, s: &Select) -> Relation {
        let mut scope: Vec<(String, Relation)> = vec![];
        for t in &s.from {
            self.factor(&t.relation, &mut scope);
            for j in &t.joins {
                self.factor(&j.relation, &mut scope);
            }
        }
        let mut columns = vec![];
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) => columns.push(self.column(e, &name_of(e), &scope)),
                SelectItem::ExprWithAlias { expr, alias } => columns.push(self.column(expr, &alias.value, &scope)),
                SelectItem::ExprWithAliases { expr, aliases } => {
                    columns.extend(aliases.iter().map(|a| self.column(expr, &a.value, &scope)));
                }
                SelectItem::Wildcard(_) => {
                    for (_, rel) in &scope {
                        columns.extend(star(rel));
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                    let alias = last_part(n);
                    match scope.iter().find(|(a, _)| *a == alias) {
                        Some((_, rel)) => columns.extend(star(rel)),
                        None => columns.push(opaque_column("*", &item.to_string(), &format!("'{alias}' is no relation of the query"))),
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(_), _) => {
                    columns.push(opaque_column("*", &item.to_string(), "a star over an expression"));
                }
            }
        }
        Relation { columns, unknown: None }
    }

    /// Puts the relation `f` reads in `scope`, under its alias (else its name's last part).
    fn factor(&mut self, f: &TableFactor, scope: &mut Vec<(String, Relation)>) {
        match f {
            TableFactor::Table { name, alias, args: Some(args), .. } if window_function(name) => {
                let mut rel = self.windowed(name, &args.args);
                if let Some(a) = alias {
                    rel = renamed(rel, a);
                }
                scope.push((alias.as_ref().map_or_else(|| last_part(name), |a| a.name.value.to_lowercase()), rel));
            }
            TableFactor::Table { name, alias, .. } => {
                let rel = self.named(name);
                match alias {
                    Some(a) => scope.push((a.name.value.to_lowercase(), renamed(rel, a))),
                    None => scope.push((last_part(name), rel)),
                }
            }
            TableFactor::Derived { subquery, alias, .. } => {
                let rel = self.query(subquery);
                match alias {
                    Some(a) => scope.push((a.name.value.to_lowercase(), renamed(rel, a))),
                    None => scope.push((String::new(), rel)),
                }
            }
            TableFactor::NestedJoin { table_with_joins, .. } => {
                self.factor(&table_with_joins.relation, scope);
                for j in &table_with_joins.joins {
                    self.factor(&j.relation, scope);
                }
            }
            other => {
                let name = other.to_string();
                scope.push((name.to_lowercase(), Relation { columns: vec![], unknown: Some(name) }));
            }
        }
    }

    /// The table or CTE a name reads: a CTE in scope, else the catalog's columns of the table.
    fn named(&self, name: &ObjectName) -> Relation {
        let full = parts(name).join(".");
        let cte = (name.0.len() == 1).then(|| self.ctes.iter().rev().find(|(n, _)| *n == full.to_lowercase())).flatten();
        match cte {
            Some((_, rel)) => rel.clone(),
            None => match (self.catalog)(&full) {
                Some(cols) => Relation {
                    columns: cols
                        .into_iter()
                        .map(|c| ColumnLineage {
                            name: c.clone(),
                            expression: c.clone(),
                            sources: BTreeSet::from([SourceColumn { relation: full.clone(), column: c }]),
                            opaque: None,
                        })
                        .collect(),
                    unknown: None,
                },
                None => Relation { columns: vec![], unknown: Some(full.clone()) },
            },
        }
    }

    /// A stream job's window table function (`tumble(orders, ordered_at, interval '1 minute')`,
    /// as in Flink): the table's columns as they are, and the window's bounds, fed by its
    /// time column.
    fn windowed(&mut self, name: &ObjectName, args: &[FunctionArg]) -> Relation {
        let arg = |i: usize| match args.get(i) {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => Some(e),
            _ => None,
        };
        let table = match arg(0) {
            Some(Expr::Identifier(id)) => ObjectName(vec![ObjectNamePart::Identifier(id.clone())]),
            Some(Expr::CompoundIdentifier(ids)) => ObjectName(ids.iter().cloned().map(ObjectNamePart::Identifier).collect()),
            _ => return Relation { columns: vec![], unknown: Some(name.to_string()) },
        };
        let mut rel = self.named(&table);
        let time = arg(1).map(|e| self.column(e, "window_start", &[(String::new(), rel.clone())]));
        for bound in ["window_start", "window_end", "window_time"] {
            let mut c = time.clone().unwrap_or_else(|| opaque_column(bound, bound, "the window's time column is not named"));
            c.name = bound.into();
            c.expression = format!("{}({})", last_part(name), args.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
            rel.columns.push(c);
        }
        rel
    }

    /// The output column `name` computed by `e` over `scope`.
    fn column(&self, e: &Expr, name: &str, scope: &[(String, Relation)]) -> ColumnLineage {
        let mut out = ColumnLineage { name: name.to_string(), expression: e.to_string(), sources: BTreeSet::new(), opaque: None };
        let _ = visit_expressions(e, |x| {
            match x {
                Expr::Identifier(id) => resolve(None, &id.value, scope, &mut out),
                Expr::CompoundIdentifier(ids) if ids.len() >= 2 => {
                    let qualifier = ids[ids.len() - 2].value.to_lowercase();
                    resolve(Some(&qualifier), &ids[ids.len() - 1].value, scope, &mut out);
                }
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::In { target: sqlparser::ast::InTarget::Subquery(_), .. } => {
                    out.opaque.get_or_insert_with(|| "a subquery inside the expression is not traced".into());
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        out
    }
}

/// Feeds `out` with what the column `column` (of the relation aliased `qualifier`, else of
/// whichever relation in scope has it) is fed by.
fn resolve(qualifier: Option<&str>, column: &str, scope: &[(String, Relation)], out: &mut ColumnLineage) {
    let lower = column.to_lowercase();
    let has = |rel: &Relation| rel.columns.iter().find(|c| c.name.to_lowercase() == lower).cloned();
    let candidates: Vec<&Relation> = match qualifier {
        Some(q) => scope.iter().filter(|(a, _)| a == q).map(|(_, r)| r).collect(),
        None => scope.iter().map(|(_, r)| r).collect(),
    };
    if let Some(c) = candidates.iter().find_map(|r| has(r)) {
        out.sources.extend(c.sources);
        if out.opaque.is_none() {
            out.opaque = c.opaque;
        }
        return;
    }
    // A table whose columns are not known: the column is taken as its, when it is the only
    // such table the column could be of.
    let unknown: Vec<&String> = candidates.iter().filter_map(|r| r.unknown.as_ref()).collect();
    match unknown.as_slice() {
        [one] => {
            out.sources.insert(SourceColumn { relation: (*one).clone(), column: column.to_string() });
        }
        [] => {}
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            out.opaque
                .get_or_insert_with(|| format!("'{column}' may be a column of any of {}, whose columns are not known", names.join(", ")));
        }
    }
}

/// The columns `select *` gives of `rel`: each as it is, or a note when they are not known.
fn star(rel: &Relation) -> Vec<ColumnLineage> {
    match &rel.unknown {
        Some(name) => vec![opaque_column("*", "*", &format!("the columns of {name} are not known (it is not built yet?)"))],
        None => rel.columns.iter().map(|c| ColumnLineage { expression: c.name.clone(), ..c.clone() }).collect(),
    }
}

/// `rel` with the column names an alias's column list gives (`as t(a, b)`).
fn renamed(mut rel: Relation, alias: &TableAlias) -> Relation {
    for (c, a) in rel.columns.iter_mut().zip(&alias.columns) {
        c.name = a.name.value.clone();
    }
    rel
}

fn opaque_column(name: &str, expression: &str, why: &str) -> ColumnLineage {
    ColumnLineage { name: name.to_string(), expression: expression.to_string(), sources: BTreeSet::new(), opaque: Some(why.to_string()) }
}

/// The name DuckDB gives an unnamed select item: a column's own name, else its text.
fn name_of(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => id.value.clone(),
        Expr::CompoundIdentifier(ids) => ids.last().map_or_else(|| e.to_string(), |i| i.value.clone()),
        other => other.to_string(),
    }
}

fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Whether a table function in `from` is a stream job's window (Flink's window table
/// functions, which DuckDB does not have).
fn window_function(name: &ObjectName) -> bool {
    matches!(last_part(name).as_str(), "tumble" | "hop" | "session" | "cumulate")
}

fn last_part(name: &ObjectName) -> String {
    parts(name).pop().unwrap_or_default().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog of `orders(id, customer_id, amount, ordered_at)` and `customers(id, name,
    /// country)`, under `main.` too.
    fn catalog(name: &str) -> Option<Vec<String>> {
        let cols: &[&str] = match name.trim_start_matches("main.") {
            "orders" => &["id", "customer_id", "amount", "ordered_at"],
            "customers" => &["id", "name", "country"],
            _ => return None,
        };
        Some(cols.iter().map(|c| c.to_string()).collect())
    }

    /// Each output column as `name <- relation.column, ...` (and `! note` when opaque).
    fn read(sql: &str) -> Vec<String> {
        lineage(sql, &catalog)
            .unwrap()
            .into_iter()
            .map(|c| {
                let from: Vec<String> = c.sources.iter().map(|s| format!("{}.{}", s.relation, s.column)).collect();
                let note = c.opaque.map(|o| format!(" ! {o}")).unwrap_or_default();
                format!("{} <- {}{note}", c.name, from.join(", "))
            })
            .collect()
    }

    #[test]
    fn joins_follow_each_alias_to_its_table() {
        let got = read(
            "select o.id, c.name as customer, o.amount * 2 as doubled, upper(country) as country \
             from main.orders o join main.customers c on o.customer_id = c.id",
        );
        assert_eq!(
            got,
            [
                "id <- main.orders.id",
                "customer <- main.customers.name",
                "doubled <- main.orders.amount",
                "country <- main.customers.country"
            ]
        );
    }

    #[test]
    fn ctes_and_subqueries_are_seen_through() {
        let got = read(
            "with paid as (select customer_id as who, amount from orders where amount > 0), \
             totals as (select who, sum(amount) as total from paid group by who) \
             select t.who, t.total, x.n from totals t join (select customer_id, count(*) as n from orders group by 1) as x(c, n) \
             on t.who = x.c",
        );
        assert_eq!(got, ["who <- orders.customer_id", "total <- orders.amount", "n <- "]);
    }

    #[test]
    fn select_star_is_expanded_where_the_columns_are_known() {
        let got = read("with c as (select * from customers) select * from c");
        assert_eq!(got, ["id <- customers.id", "name <- customers.name", "country <- customers.country"]);
        let got = read("select c.*, o.amount from customers c join orders o on o.customer_id = c.id");
        assert_eq!(got.len(), 4, "{got:?}");
        let got = read("select * from raw.events");
        assert_eq!(got, ["* <-  ! the columns of raw.events are not known (it is not built yet?)"]);
        // A table not known alone in the query: its columns are taken as they are named.
        assert_eq!(
            read("select user_id, max(ts) as last from raw.events group by 1"),
            ["user_id <- raw.events.user_id", "last <- raw.events.ts"]
        );
    }

    #[test]
    fn unions_take_both_sides_by_position_and_windows_their_partitions() {
        let got = read("select id, amount as value from orders union all select id, country from customers");
        assert_eq!(got, ["id <- customers.id, orders.id", "value <- customers.country, orders.amount"]);
        let got = read("select id, sum(amount) over (partition by customer_id order by ordered_at) as running from orders");
        assert_eq!(got, ["id <- orders.id", "running <- orders.amount, orders.customer_id, orders.ordered_at"]);
    }

    #[test]
    fn what_cannot_be_traced_says_so() {
        let got = read("select id, (select max(amount) from orders) as top from customers");
        assert_eq!(got[1], "top <-  ! a subquery inside the expression is not traced");
        let got = read("select user_id from raw.a join raw.b on true");
        assert_eq!(got, ["user_id <-  ! 'user_id' may be a column of any of raw.a, raw.b, whose columns are not known"]);
        assert!(lineage("select from where", &catalog).unwrap_err().to_string().starts_with("the SQL does not parse"));
        assert_eq!(lineage("create table t (a int)", &catalog).unwrap_err(), LineageError::NotAQuery);
    }

    #[test]
    fn a_stream_jobs_window_passes_its_table_through_and_bounds_it_by_its_time_column() {
        let got = read(
            "select customer_id, window_start as minute, sum(amount) as spent \
             from tumble(\"orders\", ordered_at, interval '1 minute') group by customer_id, window_start",
        );
        assert_eq!(got, ["customer_id <- orders.customer_id", "minute <- orders.ordered_at", "spent <- orders.amount"]);
        let got = read("select w.window_end, w.id from session(main.orders, ordered_at, interval '10 minutes') as w");
        assert_eq!(got, ["window_end <- main.orders.ordered_at", "id <- main.orders.id"]);
    }
}
