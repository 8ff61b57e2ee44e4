//! What a run knows about itself (its data interval, params, id), as Jinja variables for
//! task fields and as environment variables for the processes tasks start.
//!
//! Dates are shown in the pipeline's time zone: `ds` of a daily Amsterdam pipeline is the
//! Amsterdam date its interval starts on (Airflow shows UTC dates, which for zones east of
//! UTC is the day before).

use std::sync::Arc;

use chrono::SecondsFormat;
use chrono_tz::Tz;
use minijinja::value::{Kwargs, Rest};
use minijinja::{Error, ErrorKind, Value};
use serde_json::{Map, Value as J};
use weir_store::Store;

use crate::schedule::DataInterval;

/// The identity and interval of one pipeline run.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub pipeline: String,
    pub run_id: String,
    pub run_type: String,
    pub interval: DataInterval,
    pub tz: Tz,
    pub params: Map<String, J>,
}

impl RunContext {
    /// The variables templates see, and that `build` tasks pass to models as `var()`s.
    pub fn vars(&self) -> Map<String, J> {
        let start = self.interval.start.with_timezone(&self.tz);
        let end = self.interval.end.with_timezone(&self.tz);
        let iso = |t: chrono::DateTime<Tz>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut m = Map::new();
        m.insert("ds".into(), J::from(start.format("%Y-%m-%d").to_string()));
        m.insert("ds_nodash".into(), J::from(start.format("%Y%m%d").to_string()));
        m.insert("ts".into(), J::from(iso(start)));
        m.insert("logical_date".into(), J::from(iso(start)));
        m.insert("data_interval_start".into(), J::from(iso(start)));
        m.insert("data_interval_end".into(), J::from(iso(end)));
        m.insert("run_id".into(), J::from(self.run_id.clone()));
        m.insert("run_type".into(), J::from(self.run_type.clone()));
        m.insert("pipeline".into(), J::from(self.pipeline.clone()));
        m.insert("params".into(), J::Object(self.params.clone()));
        m
    }

    /// The same facts as `WEIR_*` environment variables (params as JSON in `WEIR_PARAMS`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.vars()
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    J::String(s) => s,
                    other => other.to_string(),
                };
                (format!("WEIR_{}", k.to_uppercase()), text)
            })
            .collect()
    }
}

/// Renders task fields with the run's variables, `env_var()`, and `xcom(task, name)` for
/// values earlier tasks of the same run published.
pub struct Renderer {
    pub ctx: RunContext,
    pub store: Arc<Store>,
}

impl Renderer {
    pub fn render(&self, text: &str, task: &str) -> Result<String, String> {
        self.render_with(text, task, false)
    }

    /// Renders SQL that the project's own Jinja renders next (`weir sql`): the run's
    /// variables are filled in, and calls of dbt's `ref`, `source`, `var` and `env_var` are
    /// written back as they were, for the project to resolve.
    pub fn render_sql(&self, text: &str, task: &str) -> Result<String, String> {
        self.render_with(text, task, true)
    }

    fn render_with(&self, text: &str, task: &str, dbt_calls: bool) -> Result<String, String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        let mut env = minijinja::Environment::new();
        if dbt_calls {
            for name in ["ref", "source", "var", "env_var"] {
                env.add_function(name, move |args: Rest<Value>, kwargs: Kwargs| -> Result<Value, Error> {
                    Ok(Value::from_safe_string(call_text(name, &args, &kwargs)))
                });
            }
        }
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        if !dbt_calls {
            env.add_function("env_var", weir_project::jinja::env_var);
        }
        let (store, pipeline, run_id) = (self.store.clone(), self.ctx.pipeline.clone(), self.ctx.run_id.clone());
        env.add_function("xcom", move |from: String, name: Option<String>| -> Result<Value, Error> {
            let name = name.unwrap_or_else(|| "return_value".into());
            let published = store.xcoms(&pipeline, &run_id, &from).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            match published.iter().find(|(n, _)| *n == name) {
                Some((_, json)) => {
                    let value: J = serde_json::from_str(json).unwrap_or(J::String(json.clone()));
                    Ok(weir_project::jinja::json_value(value))
                }
                None => {
                    let names: Vec<&str> = published.iter().map(|(n, _)| n.as_str()).collect();
                    let has =
                        if names.is_empty() { "it published none".to_string() } else { format!("it published: {}", names.join(", ")) };
                    Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("xcom('{from}', '{name}'): task '{from}' published no value '{name}' in this run ({has})"),
                    ))
                }
            }
        });
        let mut vars = self.ctx.vars();
        vars.insert("task".into(), J::from(task));
        env.render_str(text, weir_project::jinja::json_value(&vars)).map_err(|e| {
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
            match e.line() {
                Some(l) if text.lines().count() > 1 => format!("template line {l}: {detail}"),
                _ => detail,
            }
        })
    }
}

/// `{{ ref("a", "b", version=2) }}`: a call written back as Jinja for a later renderer.
fn call_text(name: &str, args: &[Value], kwargs: &Kwargs) -> String {
    let literal = |v: &Value| serde_json::to_string(v).unwrap_or_else(|_| "none".into());
    let mut parts: Vec<String> = args.iter().map(literal).collect();
    for k in kwargs.args() {
        let v: Value = kwargs.get(k).unwrap_or_default();
        parts.push(format!("{k}={}", literal(&v)));
    }
    format!("{{{{ {name}({}) }}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn ctx() -> RunContext {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut params = Map::new();
        params.insert("region".into(), J::from("eu"));
        RunContext {
            pipeline: "daily".into(),
            run_id: "scheduled__2024-03-01".into(),
            run_type: "scheduled".into(),
            interval: DataInterval { start: t("2024-02-29T23:00:00Z"), end: t("2024-03-01T23:00:00Z") },
            tz: Tz::Europe__Amsterdam,
            params,
        }
    }

    #[test]
    fn dates_are_local_and_xcoms_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::sqlite(&dir.path().join("w.db")).unwrap());
        store.push_xcom("daily", "scheduled__2024-03-01", "count", "n", "42").unwrap();
        let r = Renderer { ctx: ctx(), store };
        let out = r
            .render("{{ ds }} {{ ds_nodash }} {{ data_interval_end }} {{ params.region }} {{ xcom('count', 'n') + 1 }} {{ task }}", "t")
            .unwrap();
        assert_eq!(out, "2024-03-01 20240301 2024-03-02T00:00:00+01:00 eu 43 t");
        let e = r.render("{{ xcom('count', 'rows') }}", "t").unwrap_err();
        assert!(e.contains("published no value 'rows'") && e.contains("it published: n"), "{e}");
        assert!(r.render("{{ dss }}", "t").unwrap_err().contains("undefined"));
        let sql = r
            .render_sql("select * from {{ ref('daily_revenue') }} where d = '{{ ds }}' and r = {{ var('region', default='eu') }}", "t")
            .unwrap();
        assert_eq!(sql, "select * from {{ ref(\"daily_revenue\") }} where d = '2024-03-01' and r = {{ var(\"region\", default=\"eu\") }}");
        let env = r.ctx.env();
        assert!(env.contains(&("WEIR_DS".into(), "2024-03-01".into())));
        assert!(env.contains(&("WEIR_PARAMS".into(), "{\"region\":\"eu\"}".into())));
    }
}
