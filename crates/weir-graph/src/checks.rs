//! `checks/*.yml`: the checks users write, read into typed [`Check`]s that remember where
//! each was written, so every mistake is reported as `file:line:col` before anything runs.
//!
//! The language follows SodaCL, in plain YAML: under `checks for DATASET:` each list item is
//! one line (`missing_count(email) = 0`), optionally with a map of settings under it.
//! Parsing knows nothing of the warehouse: whether a column exists is checked later, against
//! the relation itself.

use std::path::Path;

use weir_core::Location;
use weir_project::yaml::{self, Node, Value};

use crate::GraphError;

/// Every check on one dataset (a model, seed, snapshot or source), measured together.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// The dataset as written after `checks for`: a model, seed or snapshot name, or
    /// `source_name.table_name`.
    pub dataset: String,
    pub location: Location,
    pub checks: Vec<Check>,
}

/// One check: a metric of the dataset and what it must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The check as written, which names it in reports and history.
    pub text: String,
    pub location: Location,
    pub metric: Metric,
    /// Whether the rule applies to the metric itself or to its change over the history.
    pub over: Over,
    /// Breaking it fails the check (and, under `weir build`, blocks what is downstream).
    pub fail: Option<Rule>,
    /// Breaking it only warns.
    pub warn: Option<Rule>,
    /// A SQL condition restricting the rows the metric is measured on.
    pub filter: Option<String>,
    /// At most this many failing rows are kept for diagnosis.
    pub samples_limit: usize,
}

/// How many failing rows a check keeps unless it says otherwise (`samples limit:`).
pub const DEFAULT_SAMPLES: usize = 5;

/// What a check measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    RowCount,
    /// Rows where the column is null (or one of `missing values`).
    Missing {
        column: String,
        percent: bool,
        values: Vec<Literal>,
    },
    /// Rows beyond the first for each value of the columns (nulls left out).
    Duplicate {
        columns: Vec<String>,
        percent: bool,
    },
    /// Non-null values outside what `valid ...` allows.
    Invalid {
        column: String,
        percent: bool,
        valid: Valid,
    },
    Stat {
        stat: Stat,
        column: String,
    },
    /// Seconds since the newest value of a timestamp or date column.
    Freshness {
        column: String,
    },
    /// A user-named aggregate expression, measured in the same scan as the others.
    Expression {
        name: String,
        sql: String,
    },
    /// A user-named query returning one number; `{{ this }}`, `ref()` and `source()` work.
    Query {
        name: String,
        sql: String,
    },
    /// Rows whose key has no match in another dataset.
    Reference {
        columns: Vec<String>,
        other: String,
        other_columns: Vec<String>,
    },
    Schema(SchemaRule),
}

/// Aggregates of one numeric column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Min,
    Max,
    Avg,
    Sum,
    Stddev,
    Percentile(f64),
}

/// What makes a value valid, for `invalid_count`/`invalid_percent`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Valid {
    pub values: Option<Vec<Literal>>,
    pub regex: Option<String>,
    pub min: Option<Literal>,
    pub max: Option<Literal>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
}

/// A constant from the YAML, rendered as a SQL literal when measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(String),
    Text(String),
}

/// Columns a dataset must or must not have.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchemaRule {
    /// Required columns, with the type each must have when one is given.
    pub required: Vec<(String, Option<String>)>,
    pub forbidden: Vec<String>,
    /// What a column not listed in `required` is: `None` ignores it.
    pub unexpected: Option<Severity>,
    /// What a missing, mistyped or forbidden column is.
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Severity {
    Warn,
    #[default]
    Fail,
}

/// The value a rule is held against: the metric now, or its change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Over {
    Value,
    /// `change for M` / `change percent for M`: against the previous run's value.
    Change {
        percent: bool,
    },
    /// `drift zscore last N for M` / `drift percent last N for M`: against the mean of the
    /// last N runs' values.
    Drift {
        zscore: bool,
        last: usize,
    },
}

/// A condition on a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Cmp(Op, f64),
    Between(f64, f64),
    NotBetween(f64, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A rule: the condition a good value meets, or (`warn: when ...`) the one a bad value meets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    PassIf(Condition),
    FailWhen(Condition),
}

impl Condition {
    pub fn holds(&self, v: f64) -> bool {
        const EPS: f64 = 1e-9;
        match *self {
            Condition::Cmp(op, t) => match op {
                Op::Eq => (v - t).abs() <= EPS * t.abs().max(1.0),
                Op::Ne => (v - t).abs() > EPS * t.abs().max(1.0),
                Op::Lt => v < t,
                Op::Le => v <= t,
                Op::Gt => v > t,
                Op::Ge => v >= t,
            },
            Condition::Between(lo, hi) => v >= lo && v <= hi,
            Condition::NotBetween(lo, hi) => v < lo || v > hi,
        }
    }
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl Rule {
    /// Whether `v` breaks the rule.
    pub fn broken_by(&self, v: f64) -> bool {
        match self {
            Rule::PassIf(c) => !c.holds(v),
            Rule::FailWhen(c) => c.holds(v),
        }
    }
}

impl Metric {
    /// The metric's name in history: the same metric measured by two checks (a threshold
    /// and a drift check) shares one history.
    pub fn key(&self) -> String {
        let cols = |c: &[String]| c.join(", ");
        match self {
            Metric::RowCount => "row_count".into(),
            Metric::Missing { column, percent, .. } => format!("missing_{}({column})", pct(*percent)),
            Metric::Duplicate { columns, percent } => format!("duplicate_{}({})", pct(*percent), cols(columns)),
            Metric::Invalid { column, percent, .. } => format!("invalid_{}({column})", pct(*percent)),
            Metric::Stat { stat, column } => match stat {
                Stat::Percentile(p) => format!("percentile({column}, {p})"),
                other => format!("{}({column})", other.name()),
            },
            Metric::Freshness { column } => format!("freshness({column})"),
            Metric::Expression { name, .. } | Metric::Query { name, .. } => name.clone(),
            Metric::Reference { columns, other, other_columns } => {
                format!("values in ({}) must exist in {other} ({})", cols(columns), cols(other_columns))
            }
            Metric::Schema(_) => "schema".into(),
        }
    }

    /// Whether the metric is a duration in seconds (shown as `1d 2h`).
    pub fn is_duration(&self) -> bool {
        matches!(self, Metric::Freshness { .. })
    }
}

fn pct(percent: bool) -> &'static str {
    if percent { "percent" } else { "count" }
}

impl Stat {
    pub fn name(&self) -> &'static str {
        match self {
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Avg => "avg",
            Stat::Sum => "sum",
            Stat::Stddev => "stddev",
            Stat::Percentile(_) => "percentile",
        }
    }
}

/// Reads one `checks/*.yml` file.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Suite>, GraphError> {
    let Some(root) = yaml::parse(file, text)? else { return Ok(vec![]) };
    let p = Parser { file, text };
    let Some(entries) = root.as_map() else {
        return Err(p.err(&root, "a checks file is a mapping of `checks for DATASET:` to a list of checks"));
    };
    let mut suites = vec![];
    for (key, value) in entries {
        let k = key.key_text().unwrap_or_default();
        let Some(dataset) = k.strip_prefix("checks for ").map(str::trim).filter(|d| !d.is_empty()) else {
            return Err(p.err(key, format!("unknown key '{k}': expected `checks for DATASET:`")));
        };
        let Some(items) = value.as_seq() else {
            return Err(p.err(value, format!("`checks for {dataset}` must be a list of checks")));
        };
        let checks = items.iter().map(|item| p.check(item)).collect::<Result<Vec<_>, _>>()?;
        suites.push(Suite { dataset: dataset.to_string(), location: key.location(file), checks });
    }
    Ok(suites)
}

struct Parser<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self, node: &Node, message: impl Into<String>) -> GraphError {
        self.err_at(node.location(self.file), message)
    }

    fn err_at(&self, location: Location, message: impl Into<String>) -> GraphError {
        let snippet = location.snippet(self.text).map(|s| s.to_string());
        GraphError::At { location, message: message.into(), snippet }
    }

    /// A place `offset` bytes into a check line that starts at `node`.
    fn at(&self, node: &Node, offset: usize) -> Location {
        let mut l = node.location(self.file);
        // Only a plain scalar on its own line maps offsets to columns reliably.
        let line = self.text.lines().nth(l.line.saturating_sub(1)).unwrap_or_default();
        if line.get(l.col.saturating_sub(1)..).is_some_and(|rest| rest.starts_with(node.key_text().unwrap_or_default().as_str())) {
            l.col += offset;
        }
        l
    }

    fn check(&self, item: &Node) -> Result<Check, GraphError> {
        let (line_node, settings): (&Node, Option<&Node>) = match &item.value {
            Value::Str(_) => (item, None),
            Value::Map(entries) if entries.len() == 1 => (&entries[0].0, Some(&entries[0].1).filter(|v| !v.is_null())),
            _ => return Err(self.err(item, "a check is a line (`row_count > 0`), or a line with a map of settings under it")),
        };
        let text = line_node.key_text().unwrap_or_default().trim().to_string();
        let settings = match settings {
            None => Settings::default(),
            Some(s) => self.settings(s)?,
        };
        let location = line_node.location(self.file);
        if text == "schema" {
            return self.schema_check(line_node, settings);
        }
        let tokens = tokenize(&text).map_err(|(off, m)| self.err_at(self.at(line_node, off), m))?;
        let mut cur = Cursor { tokens: &tokens, pos: 0, text: &text };
        let fail_at = |off: usize, m: String| self.err_at(self.at(line_node, off), m);

        // `values in (a, b) must exist in other (x, y)`
        if cur.peek_word("values") {
            let metric = self.reference(&mut cur).map_err(|(off, m)| fail_at(off, m))?;
            if let Some(t) = cur.next() {
                return Err(fail_at(t.at, format!("unexpected '{}' after the reference check", t.text)));
            }
            let fail = Some(Rule::PassIf(Condition::Cmp(Op::Eq, 0.0)));
            return self.finish(text, location, metric, Over::Value, fail, settings, line_node);
        }
        let over = parse_over(&mut cur).map_err(|(off, m)| fail_at(off, m))?;
        let (name, name_at) = cur.ident().map_err(|(off, m)| fail_at(off, m))?;
        let args = if cur.peek_punct("(") { cur.args().map_err(|(off, m)| fail_at(off, m))? } else { vec![] };
        let metric = self.metric(&name, name_at, &args, &settings).map_err(|(off, m)| fail_at(off, m))?;
        let condition = if cur.done() { None } else { Some(cur.condition(metric.is_duration()).map_err(|(off, m)| fail_at(off, m))?) };
        if let Some(t) = cur.next() {
            return Err(fail_at(t.at, format!("unexpected '{}' after the condition", t.text)));
        }
        let fail = condition.map(Rule::PassIf);
        self.finish(text, location, metric, over, fail, settings, line_node)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        text: String,
        location: Location,
        metric: Metric,
        over: Over,
        line_rule: Option<Rule>,
        s: Settings,
        line_node: &Node,
    ) -> Result<Check, GraphError> {
        let (mut fail, mut warn) = (s.fail, s.warn);
        if let Some(rule) = line_rule {
            if fail.is_some() || warn.is_some() {
                return Err(self.err(line_node, "give the condition on the line or in `warn:`/`fail:`, not both"));
            }
            match s.severity {
                Some(Severity::Warn) => warn = Some(rule),
                _ => fail = Some(rule),
            }
        }
        if fail.is_none() && warn.is_none() {
            return Err(self.err(
                line_node,
                format!("'{text}' has no condition: add one (`{text} > 0`) or `fail: when ...` / `warn: when ...` under it"),
            ));
        }
        if s.expression.is_some() || s.query.is_some() {
            let custom = matches!(metric, Metric::Expression { .. } | Metric::Query { .. });
            if !custom {
                return Err(self.err(line_node, format!("'{}' is a built-in metric: it takes no expression or query", metric.key())));
            }
        }
        if s.filter.is_some() && matches!(metric, Metric::Expression { .. } | Metric::Query { .. }) {
            return Err(self.err(line_node, "`filter` does not apply to a metric of your own: put the condition in its SQL"));
        }
        let needs_valid = matches!(metric, Metric::Invalid { .. });
        if !needs_valid && s.valid != Valid::default() {
            return Err(self.err(line_node, "`valid ...` settings belong to invalid_count / invalid_percent checks"));
        }
        if !matches!(metric, Metric::Missing { .. }) && !s.missing_values.is_empty() {
            return Err(self.err(line_node, "`missing values` belongs to missing_count / missing_percent checks"));
        }
        Ok(Check {
            text: s.name.unwrap_or(text),
            location,
            metric,
            over,
            fail,
            warn,
            filter: s.filter,
            samples_limit: s.samples_limit.unwrap_or(DEFAULT_SAMPLES),
        })
    }

    fn metric(&self, name: &str, at: usize, args: &[(String, usize)], s: &Settings) -> Result<Metric, (usize, String)> {
        let one_column = |what: &str| -> Result<String, (usize, String)> {
            match args {
                [(c, _)] => Ok(c.clone()),
                _ => Err((at, format!("{what} takes one column: {what}(column)"))),
            }
        };
        let percent = name.ends_with("_percent");
        Ok(match name {
            "row_count" => {
                if let Some((_, a)) = args.first() {
                    return Err((*a, "row_count takes no arguments".into()));
                }
                Metric::RowCount
            }
            "missing_count" | "missing_percent" => Metric::Missing { column: one_column(name)?, percent, values: s.missing_values.clone() },
            "duplicate_count" | "duplicate_percent" => {
                if args.is_empty() {
                    return Err((at, format!("{name} takes one or more columns: {name}(a, b)")));
                }
                Metric::Duplicate { columns: args.iter().map(|(c, _)| c.clone()).collect(), percent }
            }
            "invalid_count" | "invalid_percent" => {
                if s.valid == Valid::default() {
                    return Err((
                        at,
                        format!(
                            "{name} needs what is valid under it: `valid values`, `valid regex`, `valid min`, `valid max`, `valid min length` or `valid max length`"
                        ),
                    ));
                }
                Metric::Invalid { column: one_column(name)?, percent, valid: s.valid.clone() }
            }
            "min" | "max" | "avg" | "sum" | "stddev" => {
                let stat = match name {
                    "min" => Stat::Min,
                    "max" => Stat::Max,
                    "avg" => Stat::Avg,
                    "sum" => Stat::Sum,
                    _ => Stat::Stddev,
                };
                Metric::Stat { stat, column: one_column(name)? }
            }
            "percentile" => match args {
                [(c, _), (p, p_at)] => {
                    let p: f64 = p
                        .parse()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or((*p_at, format!("'{p}' is not a fraction between 0 and 1")))?;
                    Metric::Stat { stat: Stat::Percentile(p), column: c.clone() }
                }
                _ => return Err((at, "percentile takes a column and a fraction: percentile(amount, 0.95)".into())),
            },
            "freshness" => Metric::Freshness { column: one_column(name)? },
            custom => {
                let hint = weir_project::error::closest(custom, BUILT_IN.iter().copied()).map(|c| format!(" (did you mean '{c}'?)"));
                if !args.is_empty() {
                    return Err((at, format!("unknown metric '{custom}'{}", hint.unwrap_or_default())));
                }
                match (&s.expression, &s.query) {
                    (Some((n, sql)), _) if n == custom => Metric::Expression { name: custom.into(), sql: sql.clone() },
                    (_, Some((n, sql))) if n == custom => Metric::Query { name: custom.into(), sql: sql.clone() },
                    _ => {
                        return Err((
                            at,
                            format!(
                                "unknown metric '{custom}'{}; a metric of your own needs `{custom} expression: SQL` or `{custom} query: SQL` under it",
                                hint.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        })
    }

    fn reference(&self, cur: &mut Cursor) -> Result<Metric, (usize, String)> {
        cur.expect_word("values")?;
        cur.expect_word("in")?;
        let columns: Vec<String> = cur.args()?.into_iter().map(|(c, _)| c).collect();
        cur.expect_word("must")?;
        cur.expect_word("exist")?;
        cur.expect_word("in")?;
        let (other, _) = cur.ident()?;
        let at = cur.here();
        let other_columns: Vec<String> = cur.args()?.into_iter().map(|(c, _)| c).collect();
        if columns.len() != other_columns.len() {
            return Err((at, format!("{} column(s) must match {} column(s)", columns.len(), other_columns.len())));
        }
        Ok(Metric::Reference { columns, other, other_columns })
    }

    fn schema_check(&self, line_node: &Node, s: Settings) -> Result<Check, GraphError> {
        let Some(rule) = s.schema else {
            return Err(
                self.err(line_node, "a schema check needs `required columns`, `forbidden columns` or `unexpected columns` under it")
            );
        };
        Ok(Check {
            text: s.name.unwrap_or_else(|| "schema".into()),
            location: line_node.location(self.file),
            metric: Metric::Schema(SchemaRule { severity: s.severity.unwrap_or(Severity::Fail), ..rule }),
            over: Over::Value,
            fail: None,
            warn: None,
            filter: None,
            samples_limit: 0,
        })
    }

    fn settings(&self, node: &Node) -> Result<Settings, GraphError> {
        let Some(entries) = node.as_map() else {
            return Err(self.err(node, "a check's settings are a mapping (`severity: warn`, `filter: ...`)"));
        };
        let mut s = Settings::default();
        for (k, v) in entries {
            let key = k.key_text().unwrap_or_default();
            let text = || v.scalar_text().ok_or_else(|| self.err(v, format!("`{key}` takes a single value")));
            match key.as_str() {
                "name" => s.name = Some(text()?),
                "filter" => s.filter = Some(text()?),
                "severity" => {
                    s.severity = Some(match text()?.as_str() {
                        "warn" => Severity::Warn,
                        "fail" | "error" => Severity::Fail,
                        other => return Err(self.err(v, format!("severity '{other}' is not one of warn, error"))),
                    })
                }
                "samples limit" => {
                    s.samples_limit = Some(match v.value {
                        Value::Int(n) if n >= 0 => n as usize,
                        _ => return Err(self.err(v, "`samples limit` is a whole number of rows")),
                    })
                }
                "warn" | "fail" => {
                    let t = text()?;
                    let Some(cond) = t.trim().strip_prefix("when ") else {
                        return Err(self.err(v, format!("`{key}:` takes `when CONDITION` (`{key}: when > 5`)")));
                    };
                    let off = t.len() - cond.len();
                    let rule = parse_condition(cond, false).map_err(|(o, m)| self.err_at(self.at(v, off + o), m))?;
                    let rule = Some(Rule::FailWhen(rule));
                    if key == "warn" { s.warn = rule } else { s.fail = rule }
                }
                "missing values" => s.missing_values = self.literals(v)?,
                "valid values" => s.valid.values = Some(self.literals(v)?),
                "valid regex" => {
                    let re = text()?;
                    if let Err(e) = regex::Regex::new(&re) {
                        let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                        return Err(self.err(v, format!("`valid regex` '{re}' does not compile: {first}")));
                    }
                    s.valid.regex = Some(re);
                }
                "valid min" => s.valid.min = Some(self.literal(v)?),
                "valid max" => s.valid.max = Some(self.literal(v)?),
                "valid min length" | "valid max length" => {
                    let n = match v.value {
                        Value::Int(n) if n >= 0 => n as u64,
                        _ => return Err(self.err(v, format!("`{key}` is a whole number of characters"))),
                    };
                    if key == "valid min length" { s.valid.min_length = Some(n) } else { s.valid.max_length = Some(n) }
                }
                "required columns" => {
                    let rule = s.schema.get_or_insert_with(SchemaRule::default);
                    match &v.value {
                        Value::Seq(items) => {
                            for i in items {
                                rule.required.push((i.scalar_text().ok_or_else(|| self.err(i, "a column name"))?, None));
                            }
                        }
                        Value::Map(m) => {
                            for (c, t) in m {
                                let ty = t.scalar_text().ok_or_else(|| {
                                    let col = c.key_text().unwrap_or_default();
                                    self.err(c, format!("column '{col}' needs a type name (`integer`, `varchar`); inside `{{...}}`, quote types with commas: 'decimal(10,2)'"))
                                })?;
                                rule.required.push((c.key_text().unwrap_or_default(), Some(ty)));
                            }
                        }
                        _ => return Err(self.err(v, "`required columns` is a list of names, or a map of names to types")),
                    }
                }
                "forbidden columns" => {
                    let items = v.as_seq().ok_or_else(|| self.err(v, "`forbidden columns` is a list of names"))?;
                    let rule = s.schema.get_or_insert_with(SchemaRule::default);
                    for i in items {
                        rule.forbidden.push(i.scalar_text().ok_or_else(|| self.err(i, "a column name"))?);
                    }
                }
                "unexpected columns" => {
                    let rule = s.schema.get_or_insert_with(SchemaRule::default);
                    rule.unexpected = match text()?.as_str() {
                        "warn" => Some(Severity::Warn),
                        "fail" | "error" => Some(Severity::Fail),
                        "ignore" => None,
                        other => return Err(self.err(v, format!("`unexpected columns: {other}` is not one of warn, fail, ignore"))),
                    };
                }
                other if other.ends_with(" expression") || other.ends_with(" query") => {
                    let (name, is_query) = match other.strip_suffix(" expression") {
                        Some(n) => (n, false),
                        None => (other.trim_end_matches(" query"), true),
                    };
                    let sql = text()?;
                    if is_query { s.query = Some((name.to_string(), sql)) } else { s.expression = Some((name.to_string(), sql)) }
                }
                other => {
                    return Err(self.err(
                        k,
                        format!(
                            "unknown setting '{other}' (known: name, severity, filter, samples limit, warn, fail, missing values, valid values, valid regex, valid min, valid max, valid min length, valid max length, required columns, forbidden columns, unexpected columns, NAME expression, NAME query)"
                        ),
                    ));
                }
            }
        }
        Ok(s)
    }

    fn literals(&self, node: &Node) -> Result<Vec<Literal>, GraphError> {
        let items = node.as_seq().ok_or_else(|| self.err(node, "a list of values"))?;
        items.iter().map(|i| self.literal(i)).collect()
    }

    fn literal(&self, node: &Node) -> Result<Literal, GraphError> {
        Ok(match &node.value {
            Value::Int(i) => Literal::Number(i.to_string()),
            Value::Float(f) => Literal::Number(f.to_string()),
            Value::Str(s) => Literal::Text(s.clone()),
            Value::Bool(b) => Literal::Text(b.to_string()),
            _ => return Err(self.err(node, "a single value (a number or text)")),
        })
    }
}

#[derive(Default)]
struct Settings {
    name: Option<String>,
    severity: Option<Severity>,
    filter: Option<String>,
    samples_limit: Option<usize>,
    warn: Option<Rule>,
    fail: Option<Rule>,
    missing_values: Vec<Literal>,
    valid: Valid,
    expression: Option<(String, String)>,
    query: Option<(String, String)>,
    schema: Option<SchemaRule>,
}

const BUILT_IN: &[&str] = &[
    "row_count",
    "missing_count",
    "missing_percent",
    "duplicate_count",
    "duplicate_percent",
    "invalid_count",
    "invalid_percent",
    "min",
    "max",
    "avg",
    "sum",
    "stddev",
    "percentile",
    "freshness",
];

fn parse_over(cur: &mut Cursor) -> Result<Over, (usize, String)> {
    if cur.peek_word("change") {
        cur.next();
        let percent = cur.peek_word("percent");
        if percent {
            cur.next();
        }
        cur.expect_word("for")?;
        return Ok(Over::Change { percent });
    }
    if cur.peek_word("drift") {
        cur.next();
        let zscore = match cur.next() {
            Some(t) if t.text == "zscore" => true,
            Some(t) if t.text == "percent" => false,
            Some(t) => return Err((t.at, format!("expected `zscore` or `percent` after `drift`, found '{}'", t.text))),
            None => return Err((cur.here(), "expected `zscore` or `percent` after `drift`".into())),
        };
        cur.expect_word("last")?;
        let at = cur.here();
        let last = match cur.next() {
            Some(t) => t.text.parse::<usize>().ok().filter(|n| *n >= 2),
            None => None,
        }
        .ok_or((at, "`last` takes a number of runs, 2 or more (`drift zscore last 30 for ...`)".to_string()))?;
        cur.expect_word("for")?;
        return Ok(Over::Drift { zscore, last });
    }
    Ok(Over::Value)
}

/// A condition written alone, as after `when` in `warn: when > 5`.
fn parse_condition(text: &str, duration: bool) -> Result<Condition, (usize, String)> {
    let tokens = tokenize(text)?;
    let mut cur = Cursor { tokens: &tokens, pos: 0, text };
    let c = cur.condition(duration)?;
    if let Some(t) = cur.next() {
        return Err((t.at, format!("unexpected '{}' after the condition", t.text)));
    }
    Ok(c)
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    at: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Word,
    Punct,
}

fn tokenize(text: &str) -> Result<Vec<Token>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let end = text[i + 1..].find('"').ok_or((i, "unclosed quoted name".to_string()))?;
            out.push(Token { text: text[i + 1..i + 1 + end].to_string(), at: i, kind: Kind::Word });
            i += end + 2;
        } else if "(),".contains(c) {
            out.push(Token { text: c.to_string(), at: i, kind: Kind::Punct });
            i += 1;
        } else if "<>=!".contains(c) {
            let two = text.get(i..i + 2).unwrap_or_default();
            let op = if matches!(two, "<=" | ">=" | "!=" | "<>") { two } else { &text[i..i + 1] };
            out.push(Token { text: op.to_string(), at: i, kind: Kind::Punct });
            i += op.len();
        } else {
            let start = i;
            while i < bytes.len() && !(bytes[i] as char).is_whitespace() && !"(),<>=!\"".contains(bytes[i] as char) {
                i += 1;
            }
            out.push(Token { text: text[start..i].to_string(), at: start, kind: Kind::Word });
        }
    }
    Ok(out)
}

struct Cursor<'a> {
    tokens: &'a [Token],
    pos: usize,
    text: &'a str,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn done(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.text.len(), |t| t.at)
    }

    fn peek_word(&self, w: &str) -> bool {
        self.tokens.get(self.pos).is_some_and(|t| t.kind == Kind::Word && t.text.eq_ignore_ascii_case(w))
    }

    fn peek_punct(&self, p: &str) -> bool {
        self.tokens.get(self.pos).is_some_and(|t| t.kind == Kind::Punct && t.text == p)
    }

    fn expect_word(&mut self, w: &str) -> Result<(), (usize, String)> {
        if self.peek_word(w) {
            self.pos += 1;
            return Ok(());
        }
        let found = self.tokens.get(self.pos).map_or("the end".to_string(), |t| format!("'{}'", t.text));
        Err((self.here(), format!("expected `{w}`, found {found}")))
    }

    fn ident(&mut self) -> Result<(String, usize), (usize, String)> {
        match self.tokens.get(self.pos) {
            Some(t) if t.kind == Kind::Word => {
                self.pos += 1;
                Ok((t.text.clone(), t.at))
            }
            Some(t) => Err((t.at, format!("expected a name, found '{}'", t.text))),
            None => Err((self.here(), "expected a name".into())),
        }
    }

    /// `(a, b, c)`: names or numbers, with their offsets.
    fn args(&mut self) -> Result<Vec<(String, usize)>, (usize, String)> {
        if !self.peek_punct("(") {
            return Err((self.here(), "expected '('".into()));
        }
        self.pos += 1;
        let mut out = vec![];
        loop {
            let (a, at) = self.ident()?;
            out.push((a, at));
            match self.next() {
                Some(t) if t.text == "," => continue,
                Some(t) if t.text == ")" => return Ok(out),
                Some(t) => return Err((t.at, format!("expected ',' or ')', found '{}'", t.text))),
                None => return Err((self.text.len(), "missing ')'".into())),
            }
        }
    }

    fn number(&mut self, duration: bool) -> Result<f64, (usize, String)> {
        let at = self.here();
        let Some(t) = self.next() else { return Err((at, "expected a number".into())) };
        let raw = t.text.clone();
        // `-` may be its own token only if written apart; numbers carry their sign.
        if duration {
            return parse_duration(&raw).ok_or((at, format!("'{raw}' is not a duration: write 1d, 6h, 30m, 90s or 1d12h")));
        }
        let n = raw.strip_suffix('%').unwrap_or(&raw);
        // `warn: when > 1d` is read before the metric is known: a duration is a number too.
        n.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .or_else(|| parse_duration(&raw))
            .ok_or((at, format!("expected a number, found '{raw}'")))
    }

    fn condition(&mut self, duration: bool) -> Result<Condition, (usize, String)> {
        let at = self.here();
        let negate = self.peek_word("not");
        if negate {
            self.pos += 1;
        }
        if self.peek_word("between") {
            self.pos += 1;
            let lo = self.number(duration)?;
            self.expect_word("and")?;
            let hi = self.number(duration)?;
            if lo > hi {
                return Err((at, format!("the range is empty: {lo} is above {hi}")));
            }
            return Ok(if negate { Condition::NotBetween(lo, hi) } else { Condition::Between(lo, hi) });
        }
        if negate {
            return Err((self.here(), "expected `between` after `not`".into()));
        }
        let op = match self.next() {
            Some(t) => match t.text.as_str() {
                "=" => Op::Eq,
                "!=" | "<>" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => return Err((t.at, format!("expected a comparison (=, !=, <, <=, >, >=, between), found '{other}'"))),
            },
            None => return Err((at, "expected a comparison".into())),
        };
        Ok(Condition::Cmp(op, self.number(duration)?))
    }
}

pub use weir_core::duration::{parse_duration, show_duration};

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Cmp(op, v) => write!(f, "{} {}", op.symbol(), num(*v)),
            Condition::Between(a, b) => write!(f, "between {} and {}", num(*a), num(*b)),
            Condition::NotBetween(a, b) => write!(f, "not between {} and {}", num(*a), num(*b)),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::PassIf(c) => write!(f, "{c}"),
            Rule::FailWhen(c) => write!(f, "not {c}"),
        }
    }
}

/// A number as people write it: no trailing `.0`, at most 4 decimals.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Suite>, String> {
        parse_file(Path::new("checks/orders.yml"), text).map_err(|e| e.to_string())
    }

    fn one(line: &str) -> Check {
        let suites = parse(&format!("checks for orders:\n  - {line}\n")).unwrap();
        suites[0].checks[0].clone()
    }

    #[test]
    fn the_reference_texts_four_checks_are_one_line_each() {
        let text = "checks for fct_orders:\n  - row_count between 1000 and 1000000\n  - missing_percent(customer_id) = 0\n  - min(revenue) >= 0\n  - values in (customer_id) must exist in dim_customers (customer_id)\n";
        let s = &parse(text).unwrap()[0];
        assert_eq!(s.dataset, "fct_orders");
        assert_eq!(s.checks[0].metric, Metric::RowCount);
        assert_eq!(s.checks[0].fail, Some(Rule::PassIf(Condition::Between(1000.0, 1_000_000.0))));
        assert_eq!(s.checks[1].metric, Metric::Missing { column: "customer_id".into(), percent: true, values: vec![] });
        assert_eq!(s.checks[2].metric, Metric::Stat { stat: Stat::Min, column: "revenue".into() });
        assert_eq!(
            s.checks[3].metric,
            Metric::Reference {
                columns: vec!["customer_id".into()],
                other: "dim_customers".into(),
                other_columns: vec!["customer_id".into()]
            }
        );
        assert_eq!(s.checks[3].location.line, 5);
    }

    #[test]
    fn settings_warn_fail_and_history_forms() {
        let c = one("missing_percent(email):\n      warn: when > 1%\n      fail: when > 5%");
        assert_eq!(c.warn, Some(Rule::FailWhen(Condition::Cmp(Op::Gt, 1.0))));
        assert!(c.fail.is_some_and(|r| r.broken_by(6.0) && !r.broken_by(5.0)));
        let c = one("change percent for row_count between -10% and 10%");
        assert_eq!((c.over, c.metric), (Over::Change { percent: true }, Metric::RowCount));
        let c = one("drift zscore last 30 for avg(amount) < 3");
        assert_eq!(c.over, Over::Drift { zscore: true, last: 30 });
        assert_eq!(c.metric.key(), "avg(amount)");
        let c = one("freshness(ordered_at) < 1d12h");
        assert_eq!(c.fail, Some(Rule::PassIf(Condition::Cmp(Op::Lt, 129_600.0))));
        let c = one("duplicate_count(order_id, line) = 0:\n      severity: warn\n      samples limit: 3");
        assert!(c.fail.is_none() && c.warn.is_some());
        assert_eq!(c.samples_limit, 3);
        let c = one("refund_share < 0.1:\n      refund_share expression: avg(case when status = 'returned' then 1 else 0 end)");
        assert!(matches!(c.metric, Metric::Expression { ref name, .. } if name == "refund_share"));
        let c = one("schema:\n      required columns: {id: integer, amount: double}\n      unexpected columns: warn");
        let e = parse("checks for orders:\n  - schema:\n      required columns: {id: integer, amount: decimal(10,2)}\n").unwrap_err();
        assert!(e.contains("quote types with commas"), "{e}");
        assert!(matches!(c.metric, Metric::Schema(ref s) if s.required.len() == 2 && s.unexpected == Some(Severity::Warn)));
    }

    #[test]
    fn mistakes_name_the_place() {
        let e = parse("checks for orders:\n  - row_count between a and 10\n").unwrap_err();
        assert!(e.starts_with("checks/orders.yml:2:") && e.contains("expected a number, found 'a'"), "{e}");
        let e = parse("checks for orders:\n  - missing_cont(email) = 0\n").unwrap_err();
        assert!(e.contains("2:5") && e.contains("did you mean 'missing_count'"), "{e}");
        let e = parse("checks for orders:\n  - invalid_count(code) = 0:\n      valid regex: '[a-z'\n").unwrap_err();
        assert!(e.contains("3:20") && e.contains("does not compile"), "{e}");
        let e = parse("checks for orders:\n  - row_count\n").unwrap_err();
        assert!(e.contains("has no condition"), "{e}");
        let e = parse("checks for orders:\n  - row_count > 0:\n      sevrity: warn\n").unwrap_err();
        assert!(e.contains("3:7") && e.contains("unknown setting 'sevrity'"), "{e}");
        let e = parse("chekcs for orders:\n  - row_count > 0\n").unwrap_err();
        assert!(e.contains("1:1") && e.contains("checks for DATASET"), "{e}");
        let e = parse("checks for orders:\n  - freshness(at) < 5\n").unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse("checks for orders:\n  - row_count between 10 and 1\n").unwrap_err();
        assert!(e.contains("range is empty"), "{e}");
    }

    proptest::proptest! {
        /// A condition printed in a report reads back as the same condition, and judges
        /// values the same way.
        #[test]
        fn conditions_print_as_they_parse(a in -100_000i64..100_000, b in 0i64..100_000, op in 0usize..8, v in -200_000i64..200_000) {
            let (a, hi) = (a as f64 / 100.0, (a + b) as f64 / 100.0);
            let ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];
            let c = match op {
                6 => Condition::Between(a, hi),
                7 => Condition::NotBetween(a, hi),
                i => Condition::Cmp(ops[i], a),
            };
            let back = parse_condition(&c.to_string(), false).unwrap();
            proptest::prop_assert_eq!(back, c);
            let v = v as f64 / 100.0;
            proptest::prop_assert_eq!(back.holds(v), c.holds(v));
            proptest::prop_assert_ne!(Rule::PassIf(c).broken_by(v), Rule::FailWhen(c).broken_by(v));
        }
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(3.0), "3");
    }
}
