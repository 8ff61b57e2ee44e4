//! `weir pipeline` and `weir sql` on temporary projects: the example's nightly pipeline,
//! backfills that run each interval once, failures and their exit codes, and errors that
//! name the place.

mod common;

use common::*;

#[test]
fn the_example_pipeline_runs_every_task_and_keeps_its_record() {
    let dir = shop();
    let o = weir(dir.path(), &["pipeline", "run", "daily", "--run-id", "manual__test"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for line in ["START orders_exported", "OK    load [success", "OK    marts [success", "OK    report [success", "Done. SUCCESS=6"] {
        assert!(out.contains(line), "missing '{line}' in:\n{out}");
    }
    let days = query(&dir.path().join("shop.duckdb"), "select count(*) from main.daily_revenue");
    assert!(days[0][0].parse::<u64>().unwrap() > 1000, "{days:?}");
    // The report's line is on the foreground run's output.
    let report = out.lines().find(|l| l.contains("OK    report")).unwrap_or_default();
    let distinct = query(&dir.path().join("shop.duckdb"), "select count(distinct sale_date) from main.daily_revenue");
    assert!(report.contains(&format!("{} days of revenue", distinct[0][0])) && report.contains(" in all"), "{out}");
    let loaded = query(&dir.path().join("shop.duckdb"), "select count(*), count(distinct _weir_source_file) from raw.orders");
    assert_eq!(loaded, [["20000", "1095"]]);
    // The report read the sql task's published row.
    let log = text(&weir(dir.path(), &["pipeline", "logs", "daily", "manual__test", "report"]));
    assert!(log.contains("days of revenue") && !log.contains("{{"), "{log}");
    let runs = text(&weir(dir.path(), &["pipeline", "runs", "daily"]));
    assert!(runs.contains("manual__test: success") && runs.contains("revenue success (attempts: 1)"), "{runs}");
    // Running the same run id again does nothing.
    let again = text(&weir(dir.path(), &["pipeline", "run", "daily", "--run-id", "manual__test"]));
    assert!(again.contains("already succeeded"), "{again}");
    let list = text(&weir(dir.path(), &["pipeline", "list"]));
    assert!(list.contains("daily: 6 tasks, 0 2 * * * (UTC), next") && list.contains("last run manual__test success"), "{list}");
    // A new run loads no file twice and changes no row.
    let before = query(&dir.path().join("shop.duckdb"), "select * from main.daily_revenue order by all");
    let rerun = weir(dir.path(), &["pipeline", "run", "daily", "--run-id", "manual__rerun"]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert_eq!(query(&dir.path().join("shop.duckdb"), "select count(*) from raw.orders"), [["20000"]]);
    assert_eq!(query(&dir.path().join("shop.duckdb"), "select * from main.daily_revenue order by all"), before);
}

fn daily_project() -> tempfile::TempDir {
    minimal(&[(
        "pipelines/days.yml",
        "schedule: '@daily'\ntimezone: Europe/Amsterdam\ntasks:\n\
         \x20 note: {shell: 'echo {{ ds }} >> days.txt'}\n\
         \x20 record:\n    sql: create table if not exists days (ds varchar); insert into days values ('{{ ds }}')\n    after: note\n",
    )])
}

#[test]
fn a_backfill_runs_each_interval_once() {
    let dir = daily_project();
    let o = weir(dir.path(), &["pipeline", "backfill", "days", "--start", "2024-03-30", "--end", "2024-04-02", "--parallel", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut lines: Vec<String> = std::fs::read_to_string(dir.path().join("days.txt")).unwrap().lines().map(String::from).collect();
    lines.sort();
    // 31 March is the day Amsterdam moves its clocks; it is one interval like the others.
    assert_eq!(lines, vec!["2024-03-30", "2024-03-31", "2024-04-01"]);
    let rows = query(&dir.path().join("t.duckdb"), "select ds from days order by ds");
    assert_eq!(rows, vec![vec!["2024-03-30"], vec!["2024-03-31"], vec!["2024-04-01"]]);
    // The same range again: every interval is done, nothing runs.
    let again = weir(dir.path(), &["pipeline", "backfill", "days", "--start", "2024-03-30", "--end", "2024-04-02"]);
    assert!(text(&again).contains("3 already done, 0 to run"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(dir.path().join("days.txt")).unwrap().lines().count(), 3);
}

#[test]
fn a_failing_task_fails_the_run_with_its_reason() {
    let dir =
        minimal(&[("pipelines/bad.yml", "tasks:\n  boom: {shell: 'echo about to fail; exit 3'}\n  after: {shell: 'true', after: boom}\n")]);
    let o = weir(dir.path(), &["pipeline", "run", "bad"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  boom [failed in") && out.contains("exited with code 3 (last output: about to fail)"), "{out}");
    assert!(out.contains("SKIP  after [upstream_failed"), "{out}");
}

#[test]
fn pipeline_mistakes_name_the_file_and_line() {
    let dir = minimal(&[("pipelines/bad.yml", "schedule: '@daily'\ntasks:\n  a:\n    bash: echo hi\n")]);
    let o = weir(dir.path(), &["pipeline", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("pipelines/bad.yml:4:5: 'bash' is not a task kind"), "{}", text(&o));
    let p = minimal(&[("pipelines/p.yml", "params: {n: 1}\ntasks:\n  a: {shell: 'true'}\n")]);
    let o = weir(p.path(), &["pipeline", "run", "p", "-p", "m=2"]);
    assert!(text(&o).contains("pipeline 'p' has no param 'm' (declared: n)"), "{}", text(&o));
    let o = weir(p.path(), &["pipeline", "run", "q"]);
    assert!(text(&o).contains("no pipeline named 'q' (pipelines: p)"), "{}", text(&o));
}

#[test]
fn weir_sql_prints_rows_and_writes_them_as_json() {
    let dir = minimal(&[]);
    let o = weir(dir.path(), &["sql", "select 1 as n, 'a' as s", "--json-out", "rows.json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains('n') && text(&o).contains('a'));
    assert_eq!(std::fs::read_to_string(dir.path().join("rows.json")).unwrap(), r#"[{"n":1,"s":"a"}]"#);
}

#[test]
fn models_built_by_a_pipeline_wake_asset_sensors_of_another() {
    let dir = minimal(&[
        ("models/m.sql", "select 1 as x"),
        ("pipelines/producer.yml", "tasks:\n  build_m: {build: m}\n"),
        (
            "pipelines/consumer.yml",
            "schedule: '@daily'\ntasks:\n  wait:\n    sensor: {asset: main.m}\n    poke_interval: 1s\n    timeout: 2s\n  \
             seen: {shell: 'echo seen > seen.txt', after: wait}\n",
        ),
    ]);
    let before = weir(dir.path(), &["pipeline", "run", "consumer", "--date", "2020-01-01", "--run-id", "c1"]);
    assert!(!before.status.success() && text(&before).contains("main.m has never been updated"), "{}", text(&before));
    let built = weir(dir.path(), &["pipeline", "run", "producer"]);
    assert!(built.status.success(), "{}", text(&built));
    let after = weir(dir.path(), &["pipeline", "run", "consumer", "--date", "2020-01-01", "--run-id", "c2"]);
    assert!(after.status.success(), "{}", text(&after));
    assert!(dir.path().join("seen.txt").exists());
}
