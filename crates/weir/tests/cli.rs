//! The `weir` binary on temporary copies of projects: what users see, exit codes, errors
//! that name the place, idempotent reruns, and the example on PostgreSQL.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

#[test]
fn example_builds_and_a_rerun_changes_no_row() {
    let dir = shop();
    let first = weir(dir.path(), &["build"]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("Completed successfully"));
    let sql = "select * from main.daily_revenue order by all";
    let before = query(&dir.path().join("shop.duckdb"), sql);
    assert!(before.len() > 1000, "daily_revenue has {} rows", before.len());
    let second = weir(dir.path(), &["build"]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(query(&dir.path().join("shop.duckdb"), sql), before);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let statuses: Vec<&str> = results["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 21, "16 nodes, 3 stream jobs and 2 check suites");
    assert!(statuses.iter().all(|s| *s == "success" || *s == "pass"), "{statuses:?}");
}

#[test]
fn selection_follows_dbt_syntax() {
    let dir = shop();
    let ls = |sel: &[&str]| {
        let mut args = vec!["ls", "--resource-type", "model", "load", "--select"];
        args.extend_from_slice(sel);
        let o = weir(dir.path(), &args);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    // The load that writes the source stg_orders reads is upstream of it.
    assert_eq!(ls(&["+daily_revenue"]), ["load:shop.orders", "shop.marts.daily_revenue", "shop.staging.stg_orders"]);
    assert_eq!(ls(&["stg_orders+"]), ["shop.marts.daily_revenue", "shop.realtime.live_vs_daily", "shop.staging.stg_orders"]);
    assert_eq!(ls(&["tag:marts"]), ["shop.marts.daily_revenue"]);
    assert_eq!(ls(&["path:models/staging", "resource_type:load"]), ["load:shop.orders", "shop.staging.stg_orders"]);
    assert_eq!(ls(&["+daily_revenue,config.materialized:view"]), ["shop.staging.stg_orders"]);
}

#[test]
fn compiled_sql_is_stable() {
    let dir = shop();
    let o = weir(dir.path(), &["compile", "--select", "stg_orders"]);
    assert!(o.status.success(), "{}", text(&o));
    let sql = std::fs::read_to_string(dir.path().join("target/compiled/shop/models/staging/stg_orders.sql")).unwrap();
    insta::assert_snapshot!("stg_orders_compiled", sql);
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let dir = minimal(&[("models/schema.yml", "version: 2\nmodels:\n  - name: a\n    columns: [unclosed\n")]);
    let o = weir(dir.path(), &["build"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("models/schema.yml:5:1") || t.contains("models/schema.yml:4:"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn an_undefined_ref_points_at_the_call() {
    let dir = minimal(&[("models/orders.sql", "select 1 as x\n"), ("models/b.sql", "select *\nfrom {{ ref('ordrs') }}\n")]);
    let t = text(&weir(dir.path(), &["build"]));
    assert!(t.contains("models/b.sql:2:9") && t.contains("'ordrs'") && t.contains("did you mean 'orders'"), "{t}");
}

#[test]
fn jinja_syntax_errors_show_the_line() {
    let dir = minimal(&[("models/a.sql", "select 1\n{% if %}\n")]);
    let o = weir(dir.path(), &["compile"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("models/a.sql:2") && t.contains("Jinja syntax error") && t.contains("{% if %}"), "{t}");
}

#[test]
fn cycles_are_printed() {
    let dir = minimal(&[("models/a.sql", "select * from {{ ref('b') }}"), ("models/b.sql", "select * from {{ ref('a') }}")]);
    let t = text(&weir(dir.path(), &["run"]));
    assert!(t.contains("dependency cycle: model.t.") && t.contains(" -> "), "{t}");
}

#[test]
fn a_missing_profile_says_where_it_looked() {
    let dir = minimal(&[]);
    std::fs::write(dir.path().join("dbt_project.yml"), "name: t\nprofile: nowhere\n").unwrap();
    let t = text(&weir(dir.path(), &["run", "--profiles-dir", "."]));
    assert!(t.contains("profile 'nowhere' not found") && t.contains("profiles there: t"), "{t}");
}

#[test]
fn a_failing_model_skips_its_children_and_the_run_goes_on() {
    let dir = minimal(&[
        ("models/bad.sql", "select nonsense from nowhere"),
        ("models/child.sql", "select * from {{ ref('bad') }}"),
        ("models/ok.sql", "select 1 as x"),
    ]);
    let o = weir(dir.path(), &["run"]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("ERROR=1") && t.contains("SKIP=1") && t.contains("PASS=1"), "{t}");
    assert!(t.contains("nowhere"), "{t}");
}

#[test]
fn misspelled_configs_warn_with_their_place() {
    let dir = minimal(&[("models/a.sql", "select 1 as x")]);
    std::fs::write(dir.path().join("dbt_project.yml"), "name: t\nprofile: t\nmodels:\n  t:\n    +materialised: table\n").unwrap();
    let o = weir(dir.path(), &["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dbt_project.yml:5:5: unknown config key '+materialised' (did you mean '+materialized'?)"), "{}", text(&o));
}

/// The example on PostgreSQL, with its customer database: both loads land in a raw schema of
/// the test's own, the models build beside them, and a rerun loads nothing twice.
#[test]
fn example_builds_on_postgres_in_its_own_schema_with_its_customer_database() {
    let dir = shop();
    let schema = format!("weir_test_{}", std::process::id());
    let source_db = format!("weir_shop_source_{}", std::process::id());
    let made = Command::new("bash").args(["scripts/create_source_db.sh", &source_db]).current_dir(dir.path()).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let url = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert_eq!(url, format!("postgresql://postgres@127.0.0.1:5432/{source_db}"));
    let build = || {
        weir_command(dir.path())
            .args(["build", "--target", "pg"])
            .env("WEIR_SHOP_SCHEMA", &schema)
            .env("WEIR_SHOP_RAW_SCHEMA", format!("{schema}_raw"))
            .env("SHOP_SOURCE_URL", &url)
            .env("PGDATABASE", "test")
            .output()
            .unwrap()
    };
    let (first, second) = (build(), build());
    let mut pg = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls).unwrap();
    let mut count = |sql: String| pg.query_one(&sql, &[]).map(|r| r.get::<_, i64>(0));
    let days = count(format!("select count(*) from {schema}.daily_revenue"));
    let raw = count(format!("select count(*) from {schema}_raw.orders"));
    let customers = count(format!("select count(*) from {schema}.customer_orders where order_count > 0"));
    let loads = count(format!("select count(*) from {schema}_raw._weir_loads where rows_loaded > 0"));
    pg.batch_execute(&format!("drop schema if exists {schema} cascade; drop schema if exists {schema}_raw cascade")).unwrap();
    let mut admin = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=postgres", postgres::NoTls).unwrap();
    admin.batch_execute(&format!("drop database if exists {source_db}")).unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(raw.unwrap(), 20000);
    assert!(days.unwrap() > 1000);
    assert!(customers.unwrap() > 4000);
    // The first build loaded the files and the customers; the second found nothing new.
    assert_eq!(loads.unwrap(), 2, "{}", text(&second));
}

#[test]
fn snapshots_record_history_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("crates/weir/tests/fixtures/parity/snapshots"), dir.path());
    let schema = format!("weir_snap_{}", std::process::id());
    let project = std::fs::read_to_string(dir.path().join("dbt_project.yml")).unwrap();
    std::fs::write(
        dir.path().join("dbt_project.yml"),
        project.replace("+target_schema: history", &format!("+target_schema: {schema}_history")),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles.yml"),
        format!(
            "parity:\n  target: pg\n  outputs:\n    pg:\n      type: postgres\n      host: 127.0.0.1\n      user: postgres\n      dbname: test\n      schema: {schema}\n      threads: 2\n"
        ),
    )
    .unwrap();
    let steps = ["{day: 1}", "{day: 2}", "{day: 2}", "{day: 3}", "{day: 4}"];
    let outputs: Vec<Output> = steps.iter().map(|vars| weir(dir.path(), &["build", "--vars", vars])).collect();
    let mut pg = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls).unwrap();
    let count = |pg: &mut postgres::Client, sql: &str| pg.query_one(sql, &[]).map(|r| r.get::<_, i64>(0));
    let h = format!("{schema}_history");
    let ts = count(&mut pg, &format!("select count(*) from {h}.customers_ts"));
    let ts_current = count(&mut pg, &format!("select count(*) from {h}.customers_ts where dbt_valid_to = '9999-12-31'"));
    let check = count(&mut pg, &format!("select count(*) from {h}.customers_check"));
    let check_current = count(&mut pg, &format!("select count(*) from {h}.customers_check where dbt_valid_to is null"));
    let deleted = count(&mut pg, &format!("select count(*) from {h}.customers_yaml where dbt_is_deleted = 'True'"));
    pg.batch_execute(&format!("drop schema if exists {schema} cascade; drop schema if exists {h} cascade")).unwrap();
    for o in &outputs {
        assert!(o.status.success(), "{}", text(o));
    }
    // Timestamp strategy: Ada, Cy, Di and Flo gain versions; deletes are ignored.
    assert_eq!((ts.unwrap(), ts_current.unwrap()), (9, 6));
    // Check strategy on tier, deletes invalidated: Bob and the first Di are closed.
    assert_eq!((check.unwrap(), check_current.unwrap()), (10, 5));
    // new_record: one deletion record each for Di (day 2) and Bob (day 3).
    assert_eq!(deleted.unwrap(), 2);
}

#[test]
fn duplicate_merge_keys_fail_with_the_keys_and_leave_the_table() {
    let model = "{{ config(materialized='incremental', unique_key=['k1', 'k2'], incremental_strategy='merge') }}\n\
                 select * from (values (1, 'a', {{ var('v', 1) }}), (2, 'b', {{ var('v', 1) }})\n\
                 {% if is_incremental() %}, (2, 'b', 99), (2, 'b', 98){% endif %}) t(k1, k2, v)\n";
    let dir = minimal(&[("models/m.sql", model)]);
    let first = weir(dir.path(), &["run"]);
    assert!(first.status.success(), "{}", text(&first));
    let before = query(&dir.path().join("t.duckdb"), "select * from main.m order by all");
    let second = weir(dir.path(), &["run", "--vars", "{v: 2}"]);
    let t = text(&second);
    assert_eq!(second.status.code(), Some(1), "{t}");
    assert!(t.contains("unique_key (k1, k2) is not unique in the new rows") && t.contains("| 2  | b  | 3      |"), "{t}");
    assert_eq!(query(&dir.path().join("t.duckdb"), "select * from main.m order by all"), before);
}

#[test]
fn on_schema_change_fail_names_the_columns_and_writes_nothing() {
    let model = "{{ config(materialized='incremental', on_schema_change='fail') }}\n\
                 select 1 as id{% if var('v', 1) > 1 %}, 'x' as extra{% endif %}\n";
    let dir = minimal(&[("models/m.sql", model)]);
    assert!(weir(dir.path(), &["run"]).status.success());
    let o = weir(dir.path(), &["run", "--vars", "{v: 2}"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("models/m.sql") && t.contains("on_schema_change: fail") && t.contains("new in the model: extra VARCHAR"), "{t}");
    assert_eq!(query(&dir.path().join("t.duckdb"), "select count(*) from main.m"), [["1"]]);
}

#[test]
fn insert_overwrite_replaces_the_partitions_the_new_rows_touch() {
    // Day 1 and 2 first; then day 2 (one row fewer) and day 3: day 1 stays, day 2 is replaced.
    let model = "{{ config(materialized='incremental', incremental_strategy='insert_overwrite', partition_by='day') }}\n\
                 {% if is_incremental() %}\n\
                 select * from (values (2, 'b2'), (3, 'c')) t(day, v)\n\
                 {% else %}\n\
                 select * from (values (1, 'a'), (2, 'b'), (2, 'bb')) t(day, v)\n\
                 {% endif %}\n";
    let dir = minimal(&[("models/m.sql", model)]);
    for _ in 0..2 {
        let o = weir(dir.path(), &["run"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(query(&dir.path().join("t.duckdb"), "select day, v from main.m order by all"), [["1", "a"], ["2", "b2"], ["3", "c"]]);
    // Without partition_by it is a clear error naming the model.
    let dir =
        minimal(&[("models/m.sql", "{{ config(materialized='incremental', incremental_strategy='insert_overwrite') }}\nselect 1 as x\n")]);
    assert!(weir(dir.path(), &["run"]).status.success());
    let o = weir(dir.path(), &["run"]);
    assert!(text(&o).contains("model 'm': incremental_strategy 'insert_overwrite' needs partition_by"), "{}", text(&o));
}

#[test]
fn state_selection_finds_what_changed_since_an_earlier_manifest() {
    let dir = shop();
    let o = weir(dir.path(), &["parse"]);
    assert!(o.status.success(), "{}", text(&o));
    let state = dir.path().join("prod-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(dir.path().join("target/manifest.json"), state.join("manifest.json")).unwrap();
    let ls = |sel: &str| -> Vec<String> {
        let o = weir(dir.path(), &["ls", "-s", sel, "--resource-type", "model", "--state", "prod-state"]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("shop.")).map(str::to_string).collect()
    };
    assert!(ls("state:modified").is_empty());
    let stg = dir.path().join("models/staging/stg_orders.sql");
    std::fs::write(&stg, format!("{}\n-- reviewed\n", std::fs::read_to_string(&stg).unwrap())).unwrap();
    std::fs::write(dir.path().join("models/marts/new_mart.sql"), "select 1 as x\n").unwrap();
    assert_eq!(ls("state:new"), ["shop.marts.new_mart"]);
    assert_eq!(ls("state:modified"), ["shop.marts.new_mart", "shop.staging.stg_orders"]);
    assert_eq!(
        ls("state:modified.body+"),
        ["shop.marts.daily_revenue", "shop.realtime.live_vs_daily", "shop.marts.new_mart", "shop.staging.stg_orders"]
    );
    let o = weir(dir.path(), &["ls", "-s", "state:modified"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("pass --state DIR"), "{}", text(&o));
}

#[test]
fn defer_reads_unselected_parents_from_the_state_run() {
    let profiles = "t:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: t.duckdb\n      schema: dev\n    prod:\n      type: duckdb\n      path: t.duckdb\n      schema: prod\n";
    let dir = minimal(&[
        ("profiles.yml", profiles),
        ("models/orders.sql", "{{ config(materialized='table') }}\nselect range as id from range(5)\n"),
        ("models/order_count.sql", "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('orders') }}\n"),
    ]);
    let prod = weir(dir.path(), &["run", "--target", "prod"]);
    assert!(prod.status.success(), "{}", text(&prod));
    std::fs::rename(dir.path().join("target"), dir.path().join("prod-state")).unwrap();
    // Without --defer, dev has no orders table to read.
    let alone = weir(dir.path(), &["run", "-s", "order_count"]);
    assert_eq!(alone.status.code(), Some(1), "{}", text(&alone));
    let o = weir(dir.path(), &["run", "-s", "order_count", "--defer", "--state", "prod-state"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Deferring orders to \"t\".\"prod\".\"orders\""), "{}", text(&o));
    assert_eq!(query(&dir.path().join("t.duckdb"), "select n from dev.order_count"), [["5"]]);
    assert_eq!(query(&dir.path().join("t.duckdb"), "select count(*) from information_schema.tables where table_schema = 'dev'"), [["1"]]);
}

#[test]
fn microbatch_builds_batches_with_refs_filtered_to_each() {
    let mut csv = String::from("id,ts,amount\n");
    for i in 0..60 {
        csv.push_str(&format!("{i},2024-01-{:02} {:02}:00:00,{}\n", 1 + i % 6, i % 24, i));
    }
    let events = "{{ config(materialized='table', event_time='ts') }}\nselect * from {{ ref('raw_events') }}\n";
    let daily = "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='day', batch_size='day', begin='2024-01-01') }}\n\
                 select cast(ts as date) as day, count(*) as n, sum(amount) as amount\n\
                 from {{ ref('events') }}\ngroup by 1\n";
    let dir = minimal(&[("seeds/raw_events.csv", &csv), ("models/events.sql", events), ("models/daily.sql", daily)]);
    let db = dir.path().join("t.duckdb");
    let o = weir(dir.path(), &["build", "--event-time-start", "2024-01-01", "--event-time-end", "2024-01-04"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("daily: batch 3/3"), "{}", text(&o));
    let expected = "select cast(ts as date) as day, count(*), sum(amount) from main.events group by 1 order by 1";
    assert_eq!(
        query(&db, "select * from main.daily order by 1"),
        query(&db, &format!("select * from ({expected}) where day < '2024-01-04'"))
    );
    // A later range adds its days; rerunning an earlier range changes nothing.
    for range in [["2024-01-04", "2024-01-07"], ["2024-01-02", "2024-01-03"]] {
        let o = weir(dir.path(), &["run", "-s", "daily", "--event-time-start", range[0], "--event-time-end", range[1]]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(query(&db, "select * from main.daily order by 1"), query(&db, expected));
    // Without event_time the model fails and names the setting.
    std::fs::write(dir.path().join("models/daily.sql"), daily.replace("event_time='day', ", "")).unwrap();
    let o = weir(dir.path(), &["run", "-s", "daily"]);
    assert!(text(&o).contains("model 'daily': microbatch needs 'event_time'"), "{}", text(&o));
}

/// Ten days of events (hourly timestamps) and a daily microbatch model over them, with a
/// table and a plain incremental model downstream.
fn backfill_project() -> tempfile::TempDir {
    let mut csv = String::from("id,ts,amount\n");
    for i in 0..240 {
        csv.push_str(&format!("{i},2024-01-{:02} {:02}:00:00,{}\n", 1 + i / 24, i % 24, i % 7));
    }
    let events = "{{ config(materialized='table', event_time='ts') }}\nselect * from {{ ref('raw_events') }}\n";
    let daily = "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='day', batch_size='day', begin='2024-01-01') }}\n\
                 select cast(date_trunc('day', ts) as timestamp) as day, count(*) as n, sum(amount) as amount\n\
                 from {{ ref('events') }}\ngroup by 1\n";
    let total = "select sum(amount) as amount from {{ ref('daily') }}\n";
    let seen = "{{ config(materialized='incremental', unique_key='day') }}\nselect day, amount from {{ ref('daily') }}\n\
                {% if is_incremental() %}where day > (select max(day) from {{ this }}){% endif %}\n";
    let dir = minimal(&[
        ("seeds/raw_events.csv", &csv),
        ("models/events.sql", events),
        ("models/daily.sql", daily),
        ("models/total.sql", total),
        ("models/seen.sql", seen),
    ]);
    let o = weir(dir.path(), &["build", "-s", "raw_events", "events"]);
    assert!(o.status.success(), "{}", text(&o));
    dir
}

const DAILY_EXPECTED: &str = "select cast(date_trunc('day', ts) as timestamp) as day, count(*), sum(amount) from main.events group by 1";

#[test]
fn backfill_processes_only_missing_batches_and_records_them() {
    let dir = backfill_project();
    let db = dir.path().join("t.duckdb");
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-04"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("daily: batch 3/3"), "{}", text(&o));
    assert!(dir.path().join(".weir/weir.db").exists());

    let o = weir(dir.path(), &["ls", "--intervals", "-s", "daily"]);
    let listing = text(&o);
    assert!(listing.contains("processed  2024-01-01 00:00:00 .. 2024-01-04 00:00:00  (3 batches)"), "{listing}");
    assert!(listing.contains("missing    2024-01-04 00:00:00 .. "), "{listing}");

    // A wider range on two threads does only the four days not yet done.
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-08", "--threads", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 of 7 batches already processed; backfilling the other 4"), "{}", text(&o));
    assert!(text(&o).contains("daily: batch 4/4"), "{}", text(&o));
    let upto = |d: &str| format!("select * from ({DAILY_EXPECTED}) where day < '{d}' order by 1");
    assert_eq!(query(&db, "select * from main.daily order by 1"), query(&db, &upto("2024-01-08")));

    // The same range again has nothing to do and changes nothing.
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-08"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already processed; nothing to backfill"), "{}", text(&o));
    assert_eq!(query(&db, "select * from main.daily order by 1"), query(&db, &upto("2024-01-08")));

    let o = weir(dir.path(), &["ls", "--intervals", "-s", "daily", "-o", "json"]);
    let line: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(line["processed"][0]["batches"], 7);
    assert_eq!(line["processed"][0]["end"], "2024-01-08 00:00:00");
}

#[test]
fn restate_reprocesses_the_range_and_rebuilds_downstream() {
    let dir = backfill_project();
    let db = dir.path().join("t.duckdb");
    for args in [&["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-06"][..], &["run", "-s", "total", "seen"][..]] {
        let o = weir(dir.path(), args);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Day 2's events are corrected upstream.
    query(&db, "update main.events set amount = amount + 100 where ts >= '2024-01-02' and ts < '2024-01-03'");
    // A plain backfill sees nothing missing; a restatement redoes the day and what is downstream.
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-02", "--end", "2024-01-03"]);
    assert!(text(&o).contains("already processed; nothing to backfill"), "{}", text(&o));
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-02", "--end", "2024-01-03", "--restate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seen is downstream of the restated range: rebuilding it whole"), "{}", text(&o));
    let expected = format!("select * from ({DAILY_EXPECTED}) where day < '2024-01-06' order by 1");
    assert_eq!(query(&db, "select * from main.daily order by 1"), query(&db, &expected));
    assert_eq!(query(&db, "select amount from main.total"), query(&db, "select sum(amount) from main.daily"));
    assert_eq!(query(&db, "select day, amount from main.seen order by 1"), query(&db, "select day, amount from main.daily order by 1"));
}

#[test]
fn a_failed_batch_leaves_the_others_and_a_rerun_does_only_it() {
    let dir = backfill_project();
    let db = dir.path().join("t.duckdb");
    let model = dir.path().join("models/daily.sql");
    let good = std::fs::read_to_string(&model).unwrap();
    // Day 3 fails (a cast error at run time); the other days are written and recorded.
    let bad = good.replace(
        "count(*) as n",
        "count(*) + cast(case when min(ts) >= '2024-01-03' and min(ts) < '2024-01-04' then 'x' else '0' end as int) as n",
    );
    std::fs::write(&model, &bad).unwrap();
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-06", "--threads", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("1 of 5 batches failed"), "{}", text(&o));
    assert!(text(&o).contains("[2024-01-03 00:00:00, 2024-01-04 00:00:00)"), "{}", text(&o));
    assert_eq!(query(&db, "select count(*) from main.daily where day = '2024-01-03'"), [["0"]]);
    std::fs::write(&model, &good).unwrap();
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-06"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 of 5 batches already processed; backfilling the other 1"), "{}", text(&o));
    let expected = format!("select * from ({DAILY_EXPECTED}) where day < '2024-01-06' order by 1");
    assert_eq!(query(&db, "select * from main.daily order by 1"), query(&db, &expected));
}

#[test]
fn backfill_refuses_bad_ranges_and_columns_before_writing() {
    let dir = backfill_project();
    let db = dir.path().join("t.duckdb");
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2023-12-01", "--end", "2024-01-03"]);
    assert!(
        text(&o).contains(
            "model 'daily': the backfill range starts at 2023-12-01 00:00:00, which is before the model's begin 2024-01-01 00:00:00"
        ),
        "{}",
        text(&o)
    );
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-03", "--end", "2024-01-03"]);
    assert!(text(&o).contains("the range is empty"), "{}", text(&o));
    let o = weir(dir.path(), &["backfill", "total", "--start", "2024-01-01", "--end", "2024-01-03"]);
    assert!(text(&o).contains("none of the selected models (total) is a microbatch model"), "{}", text(&o));
    let o = weir(dir.path(), &["backfill", "daily", "--start", "yesterday", "--end", "2024-01-03"]);
    assert!(text(&o).contains("--start 'yesterday' is not a date"), "{}", text(&o));

    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-03"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = query(&db, "select * from main.daily order by 1");
    // event_time as text, then missing: errors that name the model and the column; no write.
    let model = dir.path().join("models/daily.sql");
    let good = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, good.replace("cast(date_trunc('day', ts) as timestamp) as day", "strftime(ts, '%Y-%m-%d') as day")).unwrap();
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-05", "--restate"]);
    assert!(text(&o).contains("model 'daily': event_time column 'day' is VARCHAR, not a date or timestamp"), "{}", text(&o));
    std::fs::write(&model, good.replace("as day,", "as the_day,")).unwrap();
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-05", "--restate"]);
    assert!(text(&o).contains("event_time column 'day' is not among the model's columns (the_day, n, amount)"), "{}", text(&o));
    assert_eq!(query(&db, "select * from main.daily order by 1"), before);
}

/// The metadata store on the shared PostgreSQL (`metadata_store:` in weir.yml), in a schema of
/// the test's own; the warehouse stays DuckDB.
#[test]
fn intervals_can_live_in_postgres() {
    let dir = backfill_project();
    // The build that made the project kept its history in the default store; from here on the
    // store is PostgreSQL's, and nothing more is written beside the project.
    std::fs::remove_dir_all(dir.path().join(".weir")).unwrap();
    let schema = format!("weir_meta_{}", std::process::id());
    std::fs::write(
        dir.path().join("weir.yml"),
        format!("metadata_store:\n  url: postgresql://postgres@127.0.0.1:5432/test\n  schema: {schema}\n"),
    )
    .unwrap();
    let o = weir(dir.path(), &["backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-03"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!dir.path().join(".weir").exists());
    let mut pg = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls).unwrap();
    let rows = pg.query(&format!("select interval_start, row_count from {schema}.weir_intervals order by 1"), &[]).unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
    assert_eq!(got, [("2024-01-01 00:00:00".to_string(), 1), ("2024-01-02 00:00:00".to_string(), 1)]);
}

fn checks_project(checks: &str) -> tempfile::TempDir {
    minimal(&[
        ("models/orders.sql", "select * from (values (1, 10, 20.0), (2, 11, -5.0), (3, 99, 7.5)) t(id, customer_id, amount)"),
        ("models/customers.sql", "select * from (values (10, 'ann'), (11, 'bob')) t(id, name)"),
        ("models/order_totals.sql", "select sum(amount) as total from {{ ref('orders') }}"),
        ("models/customer_list.sql", "select * from {{ ref('customers') }}"),
        ("checks/orders.yml", checks),
    ])
}

fn run_results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap()
}

#[test]
fn a_failing_check_stops_what_is_downstream_and_the_build_goes_on() {
    let checks = "checks for orders:\n  - row_count = 3\n  - min(amount) >= 0\nchecks for customers:\n  - duplicate_count(id) = 0\n";
    let dir = checks_project(checks);
    let o = weir(dir.path(), &["build"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  min(amount) >= 0") && out.contains("-5 (expected >= 0)  [") && out.contains("checks/orders.yml:3:5"),
        "{out}"
    );
    assert!(out.contains("skipped: upstream check.t.orders did not succeed") || out.contains("SKIP"), "{out}");
    let status = |id: &str| {
        run_results(dir.path())["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == id).map(|r| r["status"].clone())
    };
    assert_eq!(status("check.t.orders"), Some("fail".into()));
    assert_eq!(status("model.t.order_totals"), Some("skipped".into()), "the circuit breaker holds the mart back");
    assert_eq!(status("model.t.customer_list"), Some("success".into()), "the rest of the build goes on");
    let checks =
        run_results(dir.path())["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == "check.t.orders").unwrap()["checks"]
            .clone();
    assert!(checks[1]["samples"][0]["amount"].to_string().contains("-5"), "the negative row is kept: {checks}");

    // As a warning it does not block.
    std::fs::write(dir.path().join("checks/orders.yml"), "checks for orders:\n  - min(amount) >= 0:\n      severity: warn\n").unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(status("check.t.orders"), Some("warn".into()));
    assert_eq!(status("model.t.order_totals"), Some("success".into()));
}

#[test]
fn a_failing_check_holds_back_its_dataset_children_whatever_else_its_suite_reads() {
    // The suite for orders also reads customers (a reference check): orders' children are
    // still held back, and customers' own children are not.
    let checks = "checks for orders:\n  - min(amount) >= 0\n  - values in (customer_id) must exist in customers (id)\n";
    for threads in ["1", "4"] {
        let dir = checks_project(checks);
        let o = weir(dir.path(), &["build", "--threads", threads]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let status = |id: &str| {
            run_results(dir.path())["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == id).map(|r| r["status"].clone())
        };
        assert_eq!(status("check.t.orders"), Some("fail".into()));
        assert_eq!(status("model.t.order_totals"), Some("skipped".into()), "--threads {threads}: {}", text(&o));
        assert_eq!(status("model.t.customer_list"), Some("success".into()), "--threads {threads}");
    }
}

#[test]
fn weir_check_reports_every_check_and_keeps_their_history() {
    let checks = "checks for orders:\n  - row_count between 1 and 10\n  - values in (customer_id) must exist in customers (id)\n  - drift percent last 5 for row_count < 10%\n  - orphans = 1:\n      orphans query: select count(*) from {{ this }} where customer_id not in (select id from {{ ref('customers') }})\n";
    let dir = checks_project(checks);
    assert!(weir(dir.path(), &["run"]).status.success());
    let o = weir(dir.path(), &["check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let checks = &doc["results"][0]["checks"];
    let got: Vec<(&str, &str)> =
        checks.as_array().unwrap().iter().map(|c| (c["check"].as_str().unwrap(), c["status"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("row_count between 1 and 10", "pass"),
            ("values in (customer_id) must exist in customers (id)", "fail"),
            ("drift percent last 5 for row_count < 10%", "pass"),
            ("orphans = 1", "pass")
        ]
    );
    assert_eq!(checks[1]["samples"], serde_json::json!([{"customer_id": 99}]));
    assert_eq!(doc["summary"]["fail"], 1);

    // The text report; then a second run, and the history of both.
    let o = weir(dir.path(), &["check", "-s", "orders"]);
    let out = text(&o);
    assert!(out.contains("orders (\"t\".\"main\".\"orders\"): 4 checks, 6 queries") && out.contains("| customer_id |"), "{out}");
    assert!(out.contains("Done in") && out.contains("PASS=3 WARN=0 FAIL=1 ERROR=0 TOTAL=4"), "{out}");
    let o = weir(dir.path(), &["check", "--history", "row_count between"]);
    let out = text(&o);
    assert_eq!(out.matches("pass ").count(), 2, "{out}");
    assert!(out.contains("orders\": row_count between 1 and 10") || out.contains("row_count between 1 and 10"), "{out}");

    // A source is checked by `source_name.table_name`.
    std::fs::write(dir.path().join("models/sources.yml"), "sources:\n  - name: crm\n    schema: main\n    tables: [{name: customers}]\n")
        .unwrap();
    std::fs::write(dir.path().join("checks/crm.yml"), "checks for crm.customers:\n  - row_count = 2\n  - missing_count(name) = 0\n")
        .unwrap();
    let o = weir(dir.path(), &["check", "-s", "source:crm", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["results"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["results"][0]["unique_id"], "check.t.crm.customers");
    assert_eq!(doc["summary"]["pass"], 2, "{doc}");
}

#[test]
fn bad_checks_are_refused_with_their_place_before_anything_runs() {
    let dir = checks_project("checks for orders:\n  - missing_count(amont) = 0\n  - row_count > 0\n");
    assert!(weir(dir.path(), &["run"]).status.success());
    let o = weir(dir.path(), &["check"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("checks/orders.yml:2:5: 'missing_count(amont) = 0': orders has no column 'amont'"), "{out}");
    assert!(out.contains("nothing was checked"), "{out}");
    let history = weir(dir.path(), &["check", "--history", "orders", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&history.stdout).unwrap()["history"], serde_json::json!([]));

    for (yaml, place, what) in [
        ("checks for ordres:\n  - row_count > 0\n", "checks/orders.yml:1:1", "did you mean 'orders'?"),
        ("checks for orders:\n  - row_count > ten\n", "checks/orders.yml:2:17", "expected a number, found 'ten'"),
        ("checks for orders:\n  - invalid_count(id) = 0:\n      valid regex: '(['\n", "checks/orders.yml:3:20", "does not compile"),
        ("checks for orders:\n  - values in (id) must exist in nowhere (id)\n", "checks/orders.yml:2:5", "'nowhere'"),
    ] {
        std::fs::write(dir.path().join("checks/orders.yml"), yaml).unwrap();
        let o = weir(dir.path(), &["check"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(out.contains(place) && out.contains(what), "{yaml}: {out}");
    }
}

#[test]
fn a_check_whose_query_fails_is_an_error_never_a_pass() {
    let dir = checks_project("checks for orders:\n  - bad > 0:\n      bad expression: sum(no_such_column)\n  - row_count > 0\n");
    assert!(weir(dir.path(), &["run"]).status.success());
    let o = weir(dir.path(), &["check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &doc["results"][0]["checks"];
    assert_eq!((c[0]["status"].as_str(), c[1]["status"].as_str()), (Some("error"), Some("pass")), "the bad one is singled out: {c}");
    assert!(c[0]["message"].as_str().unwrap_or_default().contains("no_such_column"), "{c}");
}

#[test]
fn build_loads_raw_tables_before_the_models_that_read_them() {
    let dir = minimal(&[
        ("data/orders_1.csv", "id,amount\n1,10\n2,oops\n3,5\n"),
        ("loads/shop.yml", "loads:\n  - name: orders\n    source: {kind: csv, path: 'data/*.csv', columns: {amount: integer}}\n"),
        ("models/sources.yml", "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: orders\n"),
        ("models/stg_orders.sql", "select id, amount from {{ source('raw', 'orders') }}"),
        ("models/unrelated.sql", "select 1 as x"),
    ]);
    let ls = weir(dir.path(), &["ls", "-s", "+stg_orders"]);
    assert!(text(&ls).contains("load:t.orders") && text(&ls).contains("source:t.raw.orders"), "{}", text(&ls));
    let o = weir(dir.path(), &["build", "-s", "+stg_orders"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let load_line = out.find("OK loaded load orders -> raw.orders").unwrap_or_else(|| panic!("{out}"));
    let model_line = out.find("stg_orders").unwrap_or_else(|| panic!("{out}"));
    assert!(load_line < model_line, "the load runs first:\n{out}");
    assert!(out.contains("2 rows into raw.orders from 1 file; 1 rejected"), "{out}");
    assert!(out.contains("rejected data/orders_1.csv:3"), "{out}");
    assert!(!out.contains("unrelated"), "{out}");
    assert_eq!(query(&dir.path().join("t.duckdb"), "select sum(amount) from main.stg_orders"), vec![vec!["15".to_string()]]);

    let again = weir(dir.path(), &["load"]);
    assert!(text(&again).contains("raw.orders is up to date"), "{}", text(&again));
    let history = weir(dir.path(), &["load", "--history", "orders"]);
    assert!(text(&history).contains("committed"), "{}", text(&history));
    let unknown = weir(dir.path(), &["load", "ordrs"]);
    assert!(!unknown.status.success() && text(&unknown).contains("did you mean 'orders'"), "{}", text(&unknown));
    let run_results = std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap();
    assert!(run_results.contains("load.t.orders"), "{run_results}");
}

#[test]
fn parallel_loads_into_a_fresh_file_share_the_bookkeeping_tables() {
    let mut files: Vec<(String, String)> = vec![];
    let mut loads = "loads:\n".to_string();
    for i in 0..8 {
        files.push((format!("data/t{i}.csv"), format!("id,v\n1,{i}\n2,x\n")));
        loads += &format!("  - name: t{i}\n    source: {{kind: csv, path: data/t{i}.csv, columns: {{v: integer}}}}\n");
    }
    files.push(("loads/all.yml".into(), loads));
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // Each run starts from a fresh warehouse file, so every load creates what it writes.
    for _ in 0..3 {
        let dir = minimal(&refs);
        let o = weir(dir.path(), &["load", "--threads", "4"]);
        assert!(o.status.success(), "{}", text(&o));
        let db = dir.path().join("t.duckdb");
        assert_eq!(query(&db, "select count(*) from raw._weir_loads"), vec![vec!["8".to_string()]]);
        assert_eq!(query(&db, "select count(*) from raw._weir_rejected"), vec![vec!["8".to_string()]]);
    }
}

#[test]
fn a_mistake_in_a_load_file_names_its_place() {
    let dir = minimal(&[("loads/x.yml", "loads:\n  - name: a\n    source: {kind: csv, path: x.csv}\n    write_disposition: upsert\n")]);
    let o = weir(dir.path(), &["load"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("loads/x.yml:4:24") && text(&o).contains("'upsert' is not one of append, replace, merge"), "{}", text(&o));
}

#[test]
fn source_freshness_passes_warns_and_errors_as_dbt_does() {
    let dir = minimal(&[
        ("data/orders.csv", "id\n1\n"),
        ("loads/shop.yml", "loads:\n  - name: orders\n    source: {kind: csv, path: 'data/*.csv'}\n"),
        ("seeds/events.csv", "id,seen_at\n1,2020-01-01 00:00:00\n"),
        (
            "models/sources.yml",
            "version: 2\nsources:\n  - name: raw\n    freshness: {warn_after: {count: 1, period: hour}}\n    tables:\n      - name: orders\n      - name: nothing\n        freshness: null\n  - name: main\n    tables:\n      - name: events\n        loaded_at_field: seen_at\n        freshness: {warn_after: {count: 1, period: day}, error_after: {count: 2, period: day}}\n      - name: ghosts\n        loaded_at_field: seen_at\n        freshness: {error_after: {count: 1, period: day}}\n",
        ),
    ]);
    assert!(weir(dir.path(), &["load"]).status.success());
    assert!(weir(dir.path(), &["seed"]).status.success());
    let o = weir(dir.path(), &["source", "freshness"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "a stale source and a missing table fail the command:\n{out}");
    assert!(out.contains("PASS freshness of raw.orders") && out.contains("warn after 1 hour"), "loads' _weir_loaded_at is used:\n{out}");
    assert!(out.contains("ERROR STALE freshness of main.events: newest 2020-01-01 00:00:00"), "{out}");
    assert!(out.contains("ERROR freshness of main.ghosts: could not be measured"), "{out}");
    assert!(!out.contains("raw.nothing"), "freshness: null turns it off:\n{out}");
    assert!(out.contains("PASS=1 WARN=0 ERROR=1 RUNTIME_ERROR=1"), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/sources.json")).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let by = |id: &str| results.iter().find(|r| r["unique_id"] == id).cloned().unwrap_or_default();
    assert_eq!(by("source.t.main.events")["status"], "error");
    assert_eq!(by("source.t.main.events")["criteria"]["error_after"]["count"], 2);
    assert_eq!(by("source.t.raw.orders")["status"], "pass");
    assert_eq!(by("source.t.main.ghosts")["status"], "runtime error");
    let only = weir(dir.path(), &["source", "freshness", "-s", "source:raw.orders"]);
    assert!(only.status.success() && text(&only).contains("PASS=1 WARN=0 ERROR=0"), "{}", text(&only));
}

/// A config path that reaches only disabled nodes is not "unused" (dbt does not warn about
/// it); one that reaches nothing is.
#[test]
fn config_paths_reaching_disabled_nodes_are_not_warned_about() {
    let dir = minimal(&[
        (
            "dbt_project.yml",
            "name: t\nprofile: t\nmodels:\n  t:\n    old:\n      +enabled: \"{{ var('turn_on', false) }}\"\n    nowhere:\n      +materialized: table\n",
        ),
        ("models/old/a.sql", "select 1 as a"),
        ("models/b.sql", "select 2 as b"),
    ]);
    let o = weir(dir.path(), &["ls"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(!out.contains("'t.old'"), "{out}");
    assert!(out.contains("config path 't.nowhere' matches no model"), "{out}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("t.old.a"), "a is disabled: {out}");
    let on = weir(dir.path(), &["ls", "--vars", "{turn_on: true}"]);
    assert!(String::from_utf8_lossy(&on.stdout).contains("t.old.a"), "{}", text(&on));
}

/// `weir deps --add-package` writes the entry, then installs as `weir deps` does.
#[test]
fn deps_adds_a_package_and_installs_it() {
    let dir = minimal(&[
        ("vendor/helpers/dbt_project.yml", "name: helpers\n"),
        ("vendor/helpers/macros/twice.sql", "{% macro twice(x) %}{{ x }} * 2{% endmacro %}"),
        ("models/m.sql", "select {{ helpers.twice(21) }} as answer"),
    ]);
    let o = weir(dir.path(), &["deps", "--add-package", "vendor/helpers", "--source", "local"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Added vendor/helpers to packages.yml"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("packages.yml")).unwrap(), "packages:\n  - local: vendor/helpers\n");
    assert!(std::fs::read_to_string(dir.path().join("package-lock.yml")).unwrap().contains("name: helpers"));
    assert!(dir.path().join("dbt_packages/helpers/dbt_project.yml").exists());
    let b = weir(dir.path(), &["build"]);
    assert!(b.status.success(), "{}", text(&b));
    assert_eq!(query(&dir.path().join("t.duckdb"), "select answer from m"), [["42"]]);
}

#[test]
fn weir_log_produces_keyed_events_consumes_them_and_stops_at_a_bad_line() {
    let dir = minimal(&[
        (
            "streams/shop.yml",
            "topics:\n  - name: orders\n    partitions: 3\n    key: customer_id\n    columns: {order_id: bigint, customer_id: varchar}\n",
        ),
        (
            "orders.jsonl",
            "{\"order_id\": 1, \"customer_id\": \"c1\"}\n{\"order_id\": 2, \"customer_id\": \"c2\"}\n\n{\"order_id\": 3, \"customer_id\": \"c1\"}\n",
        ),
        ("bad.jsonl", "{\"order_id\": 4, \"customer_id\": \"c3\"}\n{\"order_id\": 5,\n{\"order_id\": 6}\n"),
        ("clicks.csv", "user,page\nu1,/a\nu2,/b\n"),
    ]);
    let o = weir(dir.path(), &["log", "produce", "orders", "-f", "orders.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Produced 3 events to 'orders'"), "{}", text(&o));

    let o = weir(dir.path(), &["log", "consume", "orders"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    let c1: Vec<&serde_json::Value> = lines.iter().filter(|l| l["key"] == "c1").collect();
    assert_eq!(c1.len(), 2);
    assert_eq!(c1[0]["partition"], c1[1]["partition"], "one key, one partition");
    assert_eq!((c1[0]["value"]["order_id"].as_i64(), c1[1]["value"]["order_id"].as_i64()), (Some(1), Some(3)));

    // A line that is not JSON stops the produce there, saying where and what was kept.
    let o = weir(dir.path(), &["log", "produce", "orders", "-f", "bad.jsonl"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("bad.jsonl:2: not JSON") && text(&o).contains("the 1 event(s) before it were produced"), "{}", text(&o));
    let o = weir(dir.path(), &["--log-format", "json", "log", "describe", "orders"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let events: u64 = doc["partitions"].as_array().unwrap().iter().map(|p| p["end"].as_u64().unwrap()).sum();
    assert_eq!(events, 4);

    // An undeclared topic needs --partitions; CSV rows become JSON objects.
    let o = weir(dir.path(), &["log", "produce", "clicks", "-f", "clicks.csv", "--format", "csv"]);
    assert!(!o.status.success() && text(&o).contains("declare it in streams/*.yml"), "{}", text(&o));
    let o = weir(dir.path(), &["log", "produce", "clicks", "-f", "clicks.csv", "--format", "csv", "--key", "user", "--partitions", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = String::from_utf8_lossy(&weir(dir.path(), &["log", "consume", "clicks"]).stdout).to_string();
    assert!(all.contains(r#""value":{"user":"u1","page":"/a"}"#) && all.contains(r#""page":"/b""#), "{all}");
    let p = c1[0]["partition"].as_u64().unwrap().to_string();
    let one = weir(dir.path(), &["log", "consume", "orders", "--partition", &p, "--offset", "1", "-n", "1"]);
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!((one["offset"].as_u64(), one["value"]["order_id"].as_i64()), (Some(1), Some(3)));
    let o = weir(dir.path(), &["log", "topics"]);
    assert!(text(&o).contains("streams/shop.yml:2") && text(&o).contains("(not declared)"), "{}", text(&o));

    // Raw lines stay as they are: not JSON, not keyed; record headers go with every line.
    let o = weir(
        dir.path(),
        &[
            "log",
            "produce",
            "lines",
            "-f",
            "bad.jsonl",
            "--format",
            "raw",
            "--partitions",
            "1",
            "--header",
            "source=bad",
            "--header",
            "hop=1",
        ],
    );
    assert!(o.status.success() && text(&o).contains("Produced 3 events"), "{}", text(&o));
    let o = weir(dir.path(), &["log", "consume", "lines", "--offset", "1", "-n", "1"]);
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((line["value"].as_str(), line["key"].is_null()), (Some("{\"order_id\": 5,"), true));
    assert_eq!(line["headers"], serde_json::json!([["source", "bad"], ["hop", "1"]]));
    assert!(one.get("headers").is_none(), "no headers, none shown: {one}");
    let o = weir(dir.path(), &["log", "produce", "lines", "-f", "bad.jsonl", "--format", "raw", "--header", "nameless"]);
    assert!(!o.status.success() && text(&o).contains("--header nameless: expected NAME=VALUE"), "{}", text(&o));

    // A mistake in streams/*.yml stops every log command, named as the user names the file.
    std::fs::write(dir.path().join("streams/zz.yml"), "topics:\n  - name: views\n    partitons: 2\n").unwrap();
    let o = weir(dir.path(), &["log", "topics"]);
    assert!(!o.status.success() && text(&o).contains("error: streams/zz.yml:3:5: unknown key 'partitons'"), "{}", text(&o));

    // Outside a project there is no log to read, and none is made.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = weir(elsewhere.path(), &["log", "topics"]);
    assert!(!o.status.success() && text(&o).contains("no dbt_project.yml in"), "{}", text(&o));
    assert!(!elsewhere.path().join(".weir").exists());
}
