//! Values dbt's Jinja code expects to hold: relations, columns, agate-like tables,
//! `modules.datetime` and `modules.re`. Each is a minijinja [`Object`] with the attributes and
//! methods dbt macros actually use.

use std::fmt;
use std::sync::Arc;

use super::{kwargs_of, map_value};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};
use weir_core::{Column, Datum, QueryResult, Relation, RelationKind};

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The adapter's relation class, as dbt names it in a relation's `metadata.type`.
static RELATION_CLASS: std::sync::RwLock<&'static str> = std::sync::RwLock::new("BaseRelation");

/// Sets the relation class name for the adapter in use (`DuckDBRelation`, `PostgresRelation`).
pub fn set_relation_class(adapter_type: &str) {
    let name = match adapter_type {
        "duckdb" => "DuckDBRelation",
        "postgres" => "PostgresRelation",
        _ => "BaseRelation",
    };
    if let Ok(mut current) = RELATION_CLASS.write() {
        *current = name;
    }
}

fn relation_class_name() -> &'static str {
    RELATION_CLASS.read().map(|n| *n).unwrap_or("BaseRelation")
}

/// `ref()`, `source()`, `this`, `api.Relation.create()`: renders as `"db"."schema"."name"`.
#[derive(Debug, Clone)]
pub struct RelationValue {
    pub relation: Relation,
    pub kind: Option<RelationKind>,
    /// Which parts are printed (`include(database=false)` turns one off).
    pub include: [bool; 3],
    /// Which parts are quoted (dbt's quote policy).
    pub quote: [bool; 3],
    /// Inside a microbatch: the condition that keeps the batch's rows; the relation then
    /// renders as a filtered subquery.
    pub event_time_filter: Option<String>,
}

impl RelationValue {
    pub fn new(relation: Relation, kind: Option<RelationKind>) -> Self {
        RelationValue { relation, kind, include: [true; 3], quote: [true; 3], event_time_filter: None }
    }

    /// An ephemeral model's relation renders as the name of its CTE.
    pub fn cte(name: &str) -> Self {
        let mut r = RelationValue::new(Relation::new("", "", format!("__dbt__cte__{name}")), Some(RelationKind::Cte));
        r.include = [false, false, true];
        r.quote = [false, false, false];
        r
    }

    pub fn rendered(&self) -> String {
        let parts = [&self.relation.database, &self.relation.schema, &self.relation.identifier];
        let mut out = vec![];
        for (i, p) in parts.iter().enumerate() {
            if self.include[i] && !p.is_empty() {
                out.push(if self.quote[i] { quote_ident(p) } else { p.to_string() });
            }
        }
        out.join(".")
    }

    pub fn into_value(self) -> Value {
        Value::from_object(self)
    }

    fn policy(flags: [bool; 3]) -> Value {
        map_value([("database", Value::from(flags[0])), ("schema", Value::from(flags[1])), ("identifier", Value::from(flags[2]))])
    }

    fn flags(kwargs: &Kwargs, current: [bool; 3]) -> Result<[bool; 3], Error> {
        let mut out = current;
        for (i, key) in ["database", "schema", "identifier"].iter().enumerate() {
            if let Some(v) = kwargs.get::<Option<bool>>(key)? {
                out[i] = v;
            }
        }
        kwargs.assert_all_used()?;
        Ok(out)
    }
}

impl fmt::Display for RelationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered())
    }
}

impl Object for RelationValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let r = &self.relation;
        Some(match key.as_str()? {
            "database" => Value::from(r.database.clone()),
            "schema" => Value::from(r.schema.clone()),
            "identifier" | "name" | "table" => Value::from(r.identifier.clone()),
            "type" => self.kind.map(|k| Value::from(k.as_str())).unwrap_or(Value::from(())),
            "is_table" => Value::from(self.kind == Some(RelationKind::Table)),
            "is_view" => Value::from(self.kind == Some(RelationKind::View)),
            "is_cte" => Value::from(self.kind == Some(RelationKind::Cte)),
            "is_materialized_view" => Value::from(false),
            "path" => map_value([
                ("database", Value::from(r.database.clone())),
                ("schema", Value::from(r.schema.clone())),
                ("identifier", Value::from(r.identifier.clone())),
            ]),
            // Macros tell relations from other values by this (dbt_utils' `_is_relation`:
            // `obj.get('metadata', {}).get('type', '').endswith('Relation')`).
            "metadata" => map_value([("type", Value::from(relation_class_name()))]),
            "quote_policy" => Self::policy(self.quote),
            "include_policy" => Self::policy(self.include),
            "quote_character" => Value::from("\""),
            "limit" | "event_time_filter" | "renamed_relation" => Value::from(()),
            "can_be_renamed" | "can_be_replaced" => Value::from(matches!(self.kind, Some(RelationKind::Table | RelationKind::View))),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["database", "schema", "identifier", "type", "path", "metadata", "quote_policy", "include_policy"])
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        let kwargs = kwargs_of(args);
        match method {
            "render" | "render_limited" => Ok(Value::from(self.rendered())),
            "get_ddl_prefix_for_create" | "get_ddl_prefix_for_alter" => Ok(Value::from("")),
            "matches" => {
                let r = &self.relation;
                let mut same = true;
                for (key, have) in [("database", &r.database), ("schema", &r.schema), ("identifier", &r.identifier)] {
                    if let Some(want) = kwargs.get::<Option<String>>(key)? {
                        same &= want.eq_ignore_ascii_case(have);
                    }
                }
                Ok(Value::from(same))
            }
            "include" => {
                let mut r = (**self).clone();
                r.include = Self::flags(&kwargs, self.include)?;
                Ok(r.into_value())
            }
            "quote" => {
                let mut r = (**self).clone();
                r.quote = Self::flags(&kwargs, self.quote)?;
                Ok(r.into_value())
            }
            "incorporate" => {
                let mut r = (**self).clone();
                if let Some(t) = kwargs.get::<Option<String>>("type")? {
                    r.kind = match t.as_str() {
                        "table" => Some(RelationKind::Table),
                        "view" => Some(RelationKind::View),
                        "cte" => Some(RelationKind::Cte),
                        _ => None,
                    };
                }
                if let Some(path) = kwargs.get::<Option<Value>>("path")? {
                    for (i, key) in ["database", "schema", "identifier"].iter().enumerate() {
                        if let Ok(v) = path.get_attr(key)
                            && let Some(s) = v.as_str()
                        {
                            match i {
                                0 => r.relation.database = s.to_string(),
                                1 => r.relation.schema = s.to_string(),
                                _ => r.relation.identifier = s.to_string(),
                            }
                        }
                    }
                }
                Ok(r.into_value())
            }
            "replace_path" => {
                let mut r = (**self).clone();
                if let Some(v) = kwargs.get::<Option<String>>("database")? {
                    r.relation.database = v;
                }
                if let Some(v) = kwargs.get::<Option<String>>("schema")? {
                    r.relation.schema = v;
                }
                if let Some(v) = kwargs.get::<Option<String>>("identifier")? {
                    r.relation.identifier = v;
                }
                Ok(r.into_value())
            }
            "without_identifier" => {
                let mut r = (**self).clone();
                r.include[2] = false;
                Ok(r.into_value())
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.event_time_filter {
            Some(filter) => {
                write!(f, "(select * from {} where {filter}) _dbt_et_filter_subq_{}", self.rendered(), self.relation.identifier)
            }
            None => f.write_str(&self.rendered()),
        }
    }
}

/// A column as `adapter.get_columns_in_relation` returns it.
#[derive(Debug, Clone)]
pub struct ColumnValue(pub Column);

impl Object for ColumnValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let c = &self.0;
        Some(match key.as_str()? {
            "name" | "column" => Value::from(c.name.clone()),
            "quoted" => Value::from(quote_ident(&c.name)),
            "data_type" | "dtype" => Value::from(c.data_type.clone()),
            _ => return None,
        })
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        let t = self.0.data_type.to_lowercase();
        let is = |words: &[&str]| words.iter().any(|w| t.contains(w));
        Ok(Value::from(match method {
            "is_string" => is(&["char", "text", "string", "varchar"]),
            "is_number" | "is_numeric" => is(&["int", "numeric", "decimal", "double", "float", "real"]),
            "is_integer" => is(&["int"]),
            "is_float" => is(&["double", "float", "real"]),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }))
    }
}

/// A query result shaped like the agate table that `run_query` returns in dbt.
#[derive(Debug)]
pub struct TableValue(pub QueryResult);

pub fn datum_value(d: &Datum) -> Value {
    match d {
        Datum::Null => Value::from(()),
        Datum::Bool(b) => Value::from(*b),
        Datum::Int(i) => Value::from(*i),
        Datum::Float(f) => Value::from(*f),
        Datum::Text(t) => Value::from(t.clone()),
    }
}

impl TableValue {
    fn row(self: &Arc<Self>, idx: usize) -> Option<Value> {
        self.0.rows.get(idx)?;
        Some(Value::from_object(RowValue { table: self.clone(), idx }))
    }

    fn column_names(&self) -> Value {
        Value::from_iter(self.0.columns.iter().map(|c| Value::from(c.name.clone())))
    }
}

impl Object for TableValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_i64() {
            return self.row(usize::try_from(i).ok()?);
        }
        match key.as_str()? {
            "rows" => Some(Value::from_iter((0..self.0.rows.len()).filter_map(|i| self.row(i)))),
            "column_names" => Some(self.column_names()),
            "column_types" => Some(Value::from_iter(self.0.columns.iter().map(|c| Value::from(c.data_type.clone())))),
            "columns" => Some(Value::from_object(TableColumns(self.clone()))),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let rows: Vec<Value> = (0..self.0.rows.len()).filter_map(|i| self.row(i)).collect();
        Enumerator::Values(rows)
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        match method {
            "print_table" => {
                eprintln!("{}", self.0.to_grid());
                Ok(Value::from(()))
            }
            "column_names" => Ok(self.column_names()),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `table.columns`: agate's mapped sequence of columns, iterated in order, indexed by
/// position or name, with `keys()`, `values()` and `items()`.
#[derive(Debug)]
struct TableColumns(Arc<TableValue>);

impl TableColumns {
    fn column(&self, i: usize) -> Value {
        Value::from_object(TableColumn { table: self.0.clone(), idx: i })
    }
}

impl Object for TableColumns {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let cols = &self.0.0.columns;
        let i = match key.as_i64() {
            Some(i) if i < 0 => usize::try_from(cols.len() as i64 + i).ok()?,
            Some(i) => usize::try_from(i).ok()?,
            None => cols.iter().position(|c| Some(c.name.as_str()) == key.as_str())?,
        };
        (i < cols.len()).then(|| self.column(i))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values((0..self.0.0.columns.len()).map(|i| self.column(i)).collect())
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        let cols = &self.0.0.columns;
        match method {
            "keys" => Ok(Value::from_iter(cols.iter().map(|c| Value::from(c.name.clone())))),
            "values" => Ok(Value::from_iter((0..cols.len()).map(|i| self.column(i)))),
            "items" => {
                Ok(Value::from_iter(cols.iter().enumerate().map(|(i, c)| Value::from(vec![Value::from(c.name.clone()), self.column(i)]))))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// One row: indexable by position or by column name, as agate rows are.
#[derive(Debug)]
struct RowValue {
    table: Arc<TableValue>,
    idx: usize,
}

impl Object for RowValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let row = self.table.0.rows.get(self.idx)?;
        if let Some(i) = key.as_i64() {
            let i = if i < 0 { row.len() as i64 + i } else { i };
            return row.get(usize::try_from(i).ok()?).map(datum_value);
        }
        let name = key.as_str()?;
        let pos = self.table.0.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))?;
        row.get(pos).map(datum_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let row = self.table.0.rows.get(self.idx).cloned().unwrap_or_default();
        Enumerator::Values(row.iter().map(datum_value).collect())
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        let row = self.table.0.rows.get(self.idx).cloned().unwrap_or_default();
        match method {
            "values" => Ok(Value::from_iter(row.iter().map(datum_value))),
            "keys" => Ok(self.table.column_names()),
            "items" => Ok(Value::from_iter(
                self.table.0.columns.iter().zip(&row).map(|(c, d)| Value::from_iter([Value::from(c.name.clone()), datum_value(d)])),
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `table.columns[i]`: a name and `values()`.
#[derive(Debug)]
struct TableColumn {
    table: Arc<TableValue>,
    idx: usize,
}

impl Object for TableColumn {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "name" => self.table.0.columns.get(self.idx).map(|c| Value::from(c.name.clone())),
            _ => None,
        }
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        match method {
            "values" => Ok(Value::from_iter(self.table.0.rows.iter().map(|r| r.get(self.idx).map(datum_value).unwrap_or_default()))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules.datetime`: the parts of Python's datetime module dbt projects use.
#[derive(Debug)]
pub struct DatetimeModule;

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "datetime" => Value::from_object(DatetimeClass),
            "date" => Value::from_object(DateClass),
            "timedelta" => Value::from_function(|kwargs: Kwargs| -> Result<Value, Error> {
                let mut secs = 0.0f64;
                for (key, mult) in [("weeks", 604800.0), ("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0), ("seconds", 1.0)] {
                    if let Some(v) = kwargs.get::<Option<f64>>(key)? {
                        secs += v * mult;
                    }
                }
                kwargs.assert_all_used()?;
                Ok(Value::from_object(TimedeltaValue(Duration::milliseconds((secs * 1000.0) as i64))))
            }),
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct DatetimeClass;

impl Object for DatetimeClass {
    fn call(self: &Arc<Self>, _: &mut State, args: &[Value]) -> Result<Value, Error> {
        let n: Vec<i64> = args.iter().filter_map(Value::as_i64).collect();
        let get = |i: usize, d: i64| n.get(i).copied().unwrap_or(d);
        let dt = NaiveDate::from_ymd_opt(get(0, 1970) as i32, get(1, 1) as u32, get(2, 1) as u32)
            .and_then(|d| d.and_hms_opt(get(3, 0) as u32, get(4, 0) as u32, get(5, 0) as u32))
            .ok_or_else(|| err("datetime(): invalid date"))?;
        Ok(DateTimeValue::value(dt))
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "now" => Ok(match zone_arg(args) {
                Some(tz) => DateTimeValue::aware(DateTimeValue { dt: Utc::now().naive_utc(), date_only: false, tz: None }.in_zone(tz), tz),
                None => DateTimeValue::value(chrono::Local::now().naive_local()),
            }),
            "utcnow" => Ok(DateTimeValue::value(Utc::now().naive_utc())),
            "today" => Ok(DateTimeValue::value(chrono::Local::now().naive_local())),
            "strptime" => {
                let (s, fmt) = (arg_str(args, 0)?, arg_str(args, 1)?);
                let dt = NaiveDateTime::parse_from_str(&s, &fmt)
                    .or_else(|_| NaiveDate::parse_from_str(&s, &fmt).map(|d| d.and_time(Default::default())))
                    .map_err(|e| err(format!("strptime('{s}', '{fmt}'): {e}")))?;
                Ok(DateTimeValue::value(dt))
            }
            "fromisoformat" => {
                let s = arg_str(args, 0)?;
                parse_iso(&s).map(DateTimeValue::value).ok_or_else(|| err(format!("fromisoformat: invalid '{s}'")))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct DateClass;

impl Object for DateClass {
    fn call(self: &Arc<Self>, _: &mut State, args: &[Value]) -> Result<Value, Error> {
        let n: Vec<i64> = args.iter().filter_map(Value::as_i64).collect();
        let d = NaiveDate::from_ymd_opt(
            n.first().copied().unwrap_or(1970) as i32,
            n.get(1).copied().unwrap_or(1) as u32,
            n.get(2).copied().unwrap_or(1) as u32,
        )
        .ok_or_else(|| err("date(): invalid date"))?;
        Ok(DateTimeValue::date_value(d))
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "today" => Ok(DateTimeValue::date_value(Utc::now().date_naive())),
            "fromisoformat" => {
                let s = arg_str(args, 0)?;
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map(DateTimeValue::date_value)
                    .map_err(|e| err(format!("fromisoformat('{s}'): {e}")))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn arg_str(args: &[Value], i: usize) -> Result<String, Error> {
    args.get(i).and_then(|v| v.as_str().map(str::to_string)).ok_or_else(|| Error::from(ErrorKind::MissingArgument))
}

fn parse_iso(s: &str) -> Option<NaiveDateTime> {
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| d.and_time(Default::default()))
}

/// A datetime or a date, with Python's attributes and `strftime`/`isoformat`. An aware
/// datetime (from `modules.pytz`) keeps its wall time in `dt` and its zone in `tz`.
#[derive(Debug, Clone)]
pub struct DateTimeValue {
    pub dt: NaiveDateTime,
    pub date_only: bool,
    pub tz: Option<chrono_tz::Tz>,
}

impl DateTimeValue {
    pub fn value(dt: NaiveDateTime) -> Value {
        Value::from_object(DateTimeValue { dt, date_only: false, tz: None })
    }

    fn date_value(d: NaiveDate) -> Value {
        Value::from_object(DateTimeValue { dt: d.and_time(Default::default()), date_only: true, tz: None })
    }

    fn aware(dt: NaiveDateTime, tz: chrono_tz::Tz) -> Value {
        Value::from_object(DateTimeValue { dt, date_only: false, tz: Some(tz) })
    }

    /// The same instant as wall time in `tz` (a naive datetime is read as UTC, the zone
    /// Weir's clock values are in).
    fn in_zone(&self, tz: chrono_tz::Tz) -> NaiveDateTime {
        use chrono::TimeZone;
        let utc = match self.tz {
            Some(from) => from.from_local_datetime(&self.dt).earliest().map(|d| d.naive_utc()).unwrap_or(self.dt),
            None => self.dt,
        };
        tz.from_utc_datetime(&utc).naive_local()
    }

    /// `+HH:MM` for an aware datetime.
    fn offset(&self) -> String {
        use chrono::{Offset, TimeZone};
        let Some(tz) = self.tz else { return String::new() };
        let Some(local) = tz.from_local_datetime(&self.dt).earliest() else { return String::new() };
        let secs = local.offset().fix().local_minus_utc();
        let sign = if secs < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", secs.abs() / 3600, secs.abs() % 3600 / 60)
    }

    fn format(&self, fmt: &str) -> String {
        use chrono::TimeZone;
        match self.tz.and_then(|tz| tz.from_local_datetime(&self.dt).earliest()) {
            Some(aware) => aware.format(fmt).to_string(),
            None => self.dt.format(&fmt.replace("%z", "").replace("%Z", "")).to_string(),
        }
    }

    fn iso(&self) -> String {
        if self.date_only {
            self.dt.format("%Y-%m-%d").to_string()
        } else if self.dt.nanosecond() == 0 {
            format!("{}{}", self.dt.format("%Y-%m-%dT%H:%M:%S"), self.offset())
        } else {
            format!("{}{}", self.dt.format("%Y-%m-%dT%H:%M:%S%.6f"), self.offset())
        }
    }
}

/// `modules.pytz`: `timezone(name)`, `utc`, and what a zone does (`localize`, `zone`).
#[derive(Debug)]
pub struct PytzModule;

impl Object for PytzModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "utc" | "UTC" => Some(Value::from_object(TzValue(chrono_tz::UTC))),
            _ => None,
        }
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "timezone" => {
                let name = arg_str(args, 0)?;
                let tz: chrono_tz::Tz = name.parse().map_err(|_| err(format!("pytz.timezone: unknown time zone '{name}'")))?;
                Ok(Value::from_object(TzValue(tz)))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// A time zone from `modules.pytz`.
#[derive(Debug)]
pub struct TzValue(chrono_tz::Tz);

impl Object for TzValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "zone" => Some(Value::from(self.0.name())),
            _ => None,
        }
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            // The same wall time, now in this zone.
            "localize" => {
                let dt = args
                    .first()
                    .and_then(|v| v.downcast_object_ref::<DateTimeValue>())
                    .ok_or_else(|| err("localize() needs a datetime"))?;
                Ok(DateTimeValue::aware(dt.dt, self.0))
            }
            "normalize" => Ok(args.first().cloned().unwrap_or_default()),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

fn zone_arg(args: &[Value]) -> Option<chrono_tz::Tz> {
    let kw = args.last().filter(|a| a.is_kwargs()).and_then(|a| Kwargs::try_from(a.clone()).ok());
    let v = args.iter().find(|a| !a.is_kwargs()).cloned().or_else(|| kw.and_then(|k| k.get::<Option<Value>>("tz").ok().flatten()))?;
    v.downcast_object_ref::<TzValue>().map(|t| t.0)
}

impl Object for DateTimeValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let d = &self.dt;
        Some(Value::from(match key.as_str()? {
            "year" => d.year() as i64,
            "month" => d.month() as i64,
            "day" => d.day() as i64,
            "hour" => d.hour() as i64,
            "minute" => d.minute() as i64,
            "second" => d.second() as i64,
            "microsecond" => (d.nanosecond() / 1000) as i64,
            "tzinfo" => return Some(self.tz.map(|tz| Value::from_object(TzValue(tz))).unwrap_or_default()),
            _ => return None,
        }))
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "strftime" => Ok(Value::from(self.format(&arg_str(args, 0)?))),
            "isoformat" => Ok(Value::from(self.iso())),
            "date" => Ok(DateTimeValue::date_value(self.dt.date())),
            "timestamp" => Ok(Value::from(self.in_zone(chrono_tz::UTC).and_utc().timestamp() as f64)),
            "astimezone" if zone_arg(args).is_some() => {
                let tz = zone_arg(args).unwrap_or(chrono_tz::UTC);
                Ok(DateTimeValue::aware(self.in_zone(tz), tz))
            }
            "weekday" => Ok(Value::from(self.dt.weekday().num_days_from_monday() as i64)),
            "isoweekday" => Ok(Value::from(self.dt.weekday().number_from_monday() as i64)),
            "astimezone" | "replace" if args.iter().all(Value::is_kwargs) || method == "astimezone" => {
                let mut dt = self.dt;
                if let Some(kw) = args.last().filter(|a| a.is_kwargs()).and_then(|a| Kwargs::try_from(a.clone()).ok()) {
                    let get = |k: &str| kw.get::<Option<i64>>(k);
                    let date = NaiveDate::from_ymd_opt(
                        get("year")?.unwrap_or(dt.year() as i64) as i32,
                        get("month")?.unwrap_or(dt.month() as i64) as u32,
                        get("day")?.unwrap_or(dt.day() as i64) as u32,
                    )
                    .ok_or_else(|| err("replace(): invalid date"))?;
                    let time = chrono::NaiveTime::from_hms_opt(
                        get("hour")?.unwrap_or(dt.hour() as i64) as u32,
                        get("minute")?.unwrap_or(dt.minute() as i64) as u32,
                        get("second")?.unwrap_or(dt.second() as i64) as u32,
                    )
                    .ok_or_else(|| err("replace(): invalid time"))?;
                    let mut tz = self.tz;
                    if let Some(zone) = kw.get::<Option<Value>>("tzinfo")? {
                        tz = zone.downcast_object_ref::<TzValue>().map(|t| t.0);
                    }
                    let _ = kw.get::<Option<Value>>("microsecond");
                    dt = date.and_time(time);
                    return Ok(Value::from_object(DateTimeValue { dt, date_only: self.date_only, tz }));
                }
                Ok(Value::from_object(DateTimeValue { dt, date_only: self.date_only, tz: self.tz }))
            }
            "add" | "plus" | "sub" | "minus" => {
                let delta = args
                    .first()
                    .and_then(|v| v.downcast_object_ref::<TimedeltaValue>())
                    .map(|t| t.0)
                    .ok_or_else(|| err(format!("{method}() needs a timedelta")))?;
                let dt = if method.starts_with('s') || method == "minus" { self.dt - delta } else { self.dt + delta };
                Ok(Value::from_object(DateTimeValue { dt, date_only: self.date_only, tz: self.tz }))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.date_only {
            write!(f, "{}", self.dt.format("%Y-%m-%d"))
        } else {
            write!(f, "{}{}", self.dt.format("%Y-%m-%d %H:%M:%S%.f"), self.offset())
        }
    }
}

#[derive(Debug)]
struct TimedeltaValue(Duration);

impl Object for TimedeltaValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "days" => self.0.num_days(),
            "seconds" => self.0.num_seconds() % 86400,
            _ => return None,
        }))
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, _args: &[Value]) -> Result<Value, Error> {
        match method {
            "total_seconds" => Ok(Value::from(self.0.num_milliseconds() as f64 / 1000.0)),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules.re`: `search`, `match`, `fullmatch`, `sub`, `findall`, `split`.
#[derive(Debug)]
pub struct ReModule;

impl Object for ReModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "IGNORECASE" | "I" => Some(Value::from(2)),
            "MULTILINE" | "M" => Some(Value::from(8)),
            "DOTALL" | "S" => Some(Value::from(16)),
            _ => None,
        }
    }

    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        let pattern = arg_str(args, 0)?;
        let flags = args.iter().skip(2).find_map(|a| {
            if let Ok(kw) = Kwargs::try_from(a.clone()) { kw.get::<Option<i64>>("flags").ok().flatten() } else { a.as_i64() }
        });
        let mut prefix = String::new();
        if let Some(f) = flags {
            if f & 2 != 0 {
                prefix.push('i');
            }
            if f & 8 != 0 {
                prefix.push('m');
            }
            if f & 16 != 0 {
                prefix.push('s');
            }
        }
        let full = if prefix.is_empty() { pattern.clone() } else { format!("(?{prefix}){pattern}") };
        let re = regex::Regex::new(&full).map_err(|e| err(format!("invalid regular expression '{pattern}': {e}")))?;
        let text = || arg_str(args, 1);
        let groups = |c: regex::Captures| -> Value {
            let all: Vec<Value> = (0..c.len()).map(|i| c.get(i).map(|m| Value::from(m.as_str())).unwrap_or_default()).collect();
            Value::from_object(MatchValue(all))
        };
        match method {
            "search" => Ok(re.captures(&text()?).map(groups).unwrap_or_default()),
            "match" => {
                let t = text()?;
                Ok(re.captures(&t).filter(|c| c.get(0).is_some_and(|m| m.start() == 0)).map(groups).unwrap_or_default())
            }
            "fullmatch" => {
                let t = text()?;
                Ok(re
                    .captures(&t)
                    .filter(|c| c.get(0).is_some_and(|m| m.start() == 0 && m.end() == t.len()))
                    .map(groups)
                    .unwrap_or_default())
            }
            "findall" => Ok(Value::from_iter(re.find_iter(&text()?).map(|m| Value::from(m.as_str().to_string())))),
            "split" => Ok(Value::from_iter(re.split(&text()?).map(|s| Value::from(s.to_string())))),
            "sub" => {
                let repl = text()?.replace("\\g<", "${").replace('>', "}");
                let target = arg_str(args, 2)?;
                Ok(Value::from(re.replace_all(&target, repl.as_str()).into_owned()))
            }
            "compile" => Ok(Value::from(pattern)),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct MatchValue(Vec<Value>);

impl Object for MatchValue {
    fn call_method(self: &Arc<Self>, _: &mut State, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "group" => {
                let i = args.first().and_then(Value::as_i64).unwrap_or(0) as usize;
                Ok(self.0.get(i).cloned().unwrap_or_default())
            }
            "groups" => Ok(Value::from_iter(self.0.iter().skip(1).cloned())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_render_quoted_and_honour_include() {
        let mut env = minijinja::Environment::new();
        env.add_global("r", RelationValue::new(Relation::new("dev", "main", "orders"), Some(RelationKind::Table)).into_value());
        let out = env.render_str("{{ r }}|{{ r.include(database=false) }}|{{ r.identifier }}|{{ r.is_table }}", ()).unwrap();
        assert_eq!(out, "\"dev\".\"main\".\"orders\"|\"main\".\"orders\"|orders|True");
    }

    /// dbt_utils' `_is_relation` check, and the attributes dbt's relations carry.
    #[test]
    fn relations_pass_for_dbt_relations() {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        set_relation_class("duckdb");
        env.add_global("r", RelationValue::new(Relation::new("dev", "main", "orders"), Some(RelationKind::View)).into_value());
        let check = "{{ r is mapping and r.get('metadata', {}).get('type', '').endswith('Relation') }}";
        assert_eq!(env.render_str(check, ()).unwrap(), "True");
        let out = env
            .render_str(
                "{{ r.metadata.type }}|{{ r.quote_policy.identifier }}|{{ r.include(schema=false).include_policy.schema }}|{{ r.matches(identifier='ORDERS') }}|{{ r.can_be_renamed }}",
                (),
            )
            .unwrap();
        assert_eq!(out, "DuckDBRelation|True|False|True|True");
        env.add_global("s", Value::from("main.orders"));
        assert_eq!(env.render_str(&check.replace("r ", "s ").replace("r.", "s."), ()).unwrap(), "False");
    }

    #[test]
    fn tables_index_like_agate() {
        let mut env = minijinja::Environment::new();
        let t = QueryResult {
            columns: vec![Column::new("n", "INTEGER"), Column::new("s", "VARCHAR")],
            rows: vec![vec![Datum::Int(3), Datum::Text("x".into())]],
        };
        env.add_global("t", Value::from_object(TableValue(t)));
        let out = env
            .render_str(
                "{{ t[0][0] }}{{ t.rows[0]['s'] }}{{ t.columns[1].values() | join }}{{ t | length }}{% for r in t %}{{ r.n }}{% endfor %}",
                (),
            )
            .unwrap();
        assert_eq!(out, "3xx13");
    }

    #[test]
    fn pytz_zones_localize_and_convert() {
        let mut env = minijinja::Environment::new();
        env.add_global("datetime", Value::from_object(DatetimeModule));
        env.add_global("pytz", Value::from_object(PytzModule));
        let out = env
            .render_str(
                "{% set d = pytz.timezone('Europe/Amsterdam').localize(datetime.datetime(2024, 7, 1, 12)) %}{{ d }}|{{ d.astimezone(pytz.utc) }}|{{ d.tzinfo.zone }}|{{ d.strftime('%H:%M %Z') }}|{{ d.isoformat() }}",
                (),
            )
            .unwrap();
        assert_eq!(out, "2024-07-01 12:00:00+02:00|2024-07-01 10:00:00+00:00|Europe/Amsterdam|12:00 CEST|2024-07-01T12:00:00+02:00");
        assert!(env.render_str("{{ pytz.timezone('Mars/Base') }}", ()).unwrap_err().to_string().contains("unknown time zone"));
        let today = env.render_str("{{ datetime.datetime.today().year }}", ()).unwrap();
        assert_eq!(today, chrono::Local::now().year().to_string());
    }

    #[test]
    fn datetime_formats_like_python() {
        let mut env = minijinja::Environment::new();
        env.add_global("datetime", Value::from_object(DatetimeModule));
        let out = env.render_str("{{ datetime.datetime(2024, 2, 29, 13).strftime('%Y%m%d %H') }}", ()).unwrap();
        assert_eq!(out, "20240229 13");
    }
}
