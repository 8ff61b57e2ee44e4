//! Suites measured on the real engines: a DuckDB file and the shared PostgreSQL (in a schema
//! of the test's own). The same checks must give the same values on both.

use std::path::Path;

use weir_quality::{Bound, Verdict, measure, parse_file, validate};
use weir_store::Store;
use weir_warehouse::{Connection, Warehouse};

const SETUP: &str = "
create table orders (id integer, customer_id integer, status varchar, amount decimal(10, 2), email varchar, ordered_at timestamp);
insert into orders values
  (1, 10, 'completed', 20.00, 'a@x.com', timestamp '2024-01-01 10:00:00'),
  (2, 10, 'completed', 35.50, 'b@x.com', timestamp '2024-01-02 10:00:00'),
  (3, 11, 'returned',  -5.00, null,      timestamp '2024-01-03 10:00:00'),
  (3, 12, 'weird',     12.00, 'not-an-email', timestamp '2024-01-04 10:00:00'),
  (5, 99, 'completed', 80.00, 'e@x.com', timestamp '2024-01-05 10:00:00');
create table customers (id integer, name varchar);
insert into customers values (10, 'ann'), (11, 'bob'), (12, 'cy');
";

const CHECKS: &str = "checks for orders:
  - row_count between 1 and 10
  - missing_count(email) = 0
  - missing_percent(email) < 50%
  - duplicate_count(id) = 0
  - duplicate_count(id, customer_id) = 0
  - invalid_count(status) = 0:
      valid values: [completed, returned]
  - invalid_count(email) = 0:
      valid regex: '[^@]+@[^@]+'
  - invalid_count(customer_id) = 0:
      valid values: [10, 11, 12]
  - missing_count(status) = 0:
      missing values: [weird, unknown]
  - min(amount) >= 0
  - max(amount) < 100
  - avg(amount) between 28 and 29
  - percentile(amount, 0.5) = 20
  - completed_share > 0.5:
      completed_share expression: avg(case when status = 'completed' then 1.0 else 0 end)
  - row_count = 3:
      filter: status = 'completed'
      name: completed rows
  - values in (customer_id) must exist in customers (id)
  - freshness(ordered_at) < 1d
  - schema:
      required columns: {id: integer, amount: 'decimal(10,2)'}
      forbidden columns: [ssn]
  - change for row_count = 0
";

fn run(
    conn: &mut dyn Connection,
    wh: &dyn Warehouse,
    orders: &str,
    customers: &str,
    store: &Store,
    run_id: &str,
) -> Vec<(String, Verdict, Option<f64>)> {
    let suites = parse_file(Path::new("checks/orders.yml"), CHECKS).unwrap();
    let mut bound = Bound { relation: orders.into(), run_id: run_id.into(), ..Default::default() };
    bound.others.insert("customers".into(), customers.into());
    validate(conn, &suites[0], &bound).unwrap();
    let outcome = measure(conn, wh, &suites[0], &bound, Some(store)).unwrap();
    // Two column lookups (orders, customers), one scan for the aggregates and one for the
    // exact distinct counts, one for the reference, and samples for what did not pass.
    let sampled = outcome.outcomes.iter().filter(|o| o.samples.is_some()).count();
    assert_eq!(outcome.queries, 2 + 2 + 1 + sampled, "{outcome:#?}");
    outcome.outcomes.iter().map(|o| (o.check.clone(), o.verdict, o.value.map(|v| (v * 1000.0).round() / 1000.0))).collect()
}

fn expected() -> Vec<(String, Verdict, Option<f64>)> {
    let v = |c: &str, verdict, value: f64| (c.to_string(), verdict, Some(value));
    vec![
        v("row_count between 1 and 10", Verdict::Pass, 5.0),
        v("missing_count(email) = 0", Verdict::Fail, 1.0),
        v("missing_percent(email) < 50%", Verdict::Pass, 20.0),
        v("duplicate_count(id) = 0", Verdict::Fail, 1.0),
        v("duplicate_count(id, customer_id) = 0", Verdict::Pass, 0.0),
        v("invalid_count(status) = 0", Verdict::Fail, 1.0),
        v("invalid_count(email) = 0", Verdict::Fail, 1.0),
        // Numbers on a number column compare as numbers; a text list on a text column may take
        // the engine's faster form (DuckDB's `list_position`): both must count the same rows.
        v("invalid_count(customer_id) = 0", Verdict::Fail, 1.0),
        v("missing_count(status) = 0", Verdict::Fail, 1.0),
        v("min(amount) >= 0", Verdict::Fail, -5.0),
        v("max(amount) < 100", Verdict::Pass, 80.0),
        v("avg(amount) between 28 and 29", Verdict::Pass, 28.5),
        v("percentile(amount, 0.5) = 20", Verdict::Pass, 20.0),
        v("completed_share > 0.5", Verdict::Pass, 0.6),
        v("completed rows", Verdict::Pass, 3.0),
        v("values in (customer_id) must exist in customers (id)", Verdict::Fail, 1.0),
        // The newest order is from 2024: far older than a day.
        ("freshness(ordered_at) < 1d".into(), Verdict::Fail, None),
        v("schema", Verdict::Pass, 0.0),
        v("change for row_count = 0", Verdict::Pass, 5.0),
    ]
}

fn compare(got: Vec<(String, Verdict, Option<f64>)>) {
    let want = expected();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.0, g.1), (&w.0, w.1), "{g:?}");
        if w.2.is_some() {
            assert_eq!(g.2, w.2, "{}", g.0);
        }
    }
}

/// A DuckDB file in a temporary folder.
fn duckdb() -> (tempfile::TempDir, weir_warehouse::duckdb::DuckDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut fields = serde_json::Map::new();
    fields.insert("path".into(), dir.path().join("q.duckdb").display().to_string().into());
    let wh = weir_warehouse::duckdb::DuckDb::open(&fields, dir.path()).unwrap();
    (dir, wh)
}

/// The shared PostgreSQL, with `schema` as the target's schema (the test creates and drops it).
fn postgres(schema: &str) -> weir_warehouse::postgres::Postgres {
    let mut fields = serde_json::Map::new();
    for (k, v) in [("host", "127.0.0.1"), ("user", "postgres"), ("dbname", "test"), ("schema", schema)] {
        fields.insert(k.into(), v.into());
    }
    fields.insert("port".into(), 5432.into());
    weir_warehouse::postgres::Postgres::from_fields(&fields).unwrap()
}

#[test]
fn duckdb_measures_every_metric_in_one_scan() {
    let (dir, wh) = duckdb();
    let mut conn = wh.connect().unwrap();
    conn.execute(SETUP).unwrap();
    let store = Store::sqlite(&dir.path().join("weir.db")).unwrap();
    compare(run(conn.as_mut(), &wh, "main.orders", "main.customers", &store, "r1"));

    // The second run compares with the first; a grown table fails the change check.
    conn.execute("insert into orders values (6, 10, 'completed', 1.00, 'f@x.com', timestamp '2024-01-06 10:00:00')").unwrap();
    let again = run(conn.as_mut(), &wh, "main.orders", "main.customers", &store, "r2");
    assert_eq!(again.last().map(|c| c.1), Some(Verdict::Fail), "{again:?}");
    let history = store.check_history("change for row_count", 10).unwrap();
    assert_eq!(history.iter().map(|r| r.value).collect::<Vec<_>>(), vec![Some(5.0), Some(6.0)]);
}

#[test]
fn failing_rows_are_sampled_and_bad_columns_are_refused() {
    let (_dir, wh) = duckdb();
    let mut conn = wh.connect().unwrap();
    conn.execute(SETUP).unwrap();
    let suites = parse_file(
        Path::new("checks/orders.yml"),
        "checks for orders:\n  - min(amount) >= 0\n  - duplicate_count(id) = 0:\n      samples limit: 1\n  - values in (customer_id) must exist in customers (id)\n  - invalid_count(status) = 0:\n      valid values: [completed, returned]\n",
    )
    .unwrap();
    let mut bound = Bound { relation: "main.orders".into(), run_id: "r".into(), ..Default::default() };
    bound.others.insert("customers".into(), "main.customers".into());
    let out = measure(conn.as_mut(), &wh, &suites[0], &bound, None).unwrap();
    let rows = |i: usize| out.outcomes[i].samples.as_ref().map(|s| s.to_grid()).unwrap_or_default();
    assert!(rows(0).contains("-5.00"), "{}", rows(0));
    assert!(rows(1).contains("duplicate_rows") && rows(1).lines().count() == 3, "{}", rows(1));
    assert!(rows(2).contains("99"), "{}", rows(2));
    assert!(rows(3).contains("weird") && rows(3).lines().count() == 3, "{}", rows(3));

    let typo =
        parse_file(Path::new("checks/orders.yml"), "checks for orders:\n  - missing_count(emial) = 0\n  - avg(status) > 0\n").unwrap();
    let e = validate(conn.as_mut(), &typo[0], &bound).unwrap_err().to_string();
    assert!(e.starts_with("checks/orders.yml:2:5") && e.contains("no column 'emial'") && e.contains("email"), "{e}");
    // At run time the same problems are errors, never passes; the others still run.
    let out = measure(conn.as_mut(), &wh, &typo[0], &bound, None).unwrap();
    assert_eq!(out.outcomes.iter().map(|o| o.verdict).collect::<Vec<_>>(), vec![Verdict::Error, Verdict::Error]);
    assert!(out.outcomes[1].message.as_deref().unwrap_or_default().contains("needs a numeric column"));

    let broken =
        parse_file(Path::new("c.yml"), "checks for orders:\n  - x > 0:\n      x expression: sum(no_such_column)\n  - row_count > 0\n")
            .unwrap();
    let out = measure(conn.as_mut(), &wh, &broken[0], &bound, None).unwrap();
    assert_eq!(out.outcomes[0].verdict, Verdict::Error);
    assert!(out.outcomes[0].message.as_deref().unwrap_or_default().contains("no_such_column"));
}

#[test]
fn postgres_gives_the_same_values() {
    let schema = format!("weir_quality_test_{}", std::process::id());
    let wh = postgres(&schema);
    let mut conn = wh.connect().unwrap();
    conn.execute(&format!("create schema {schema}; set search_path to {schema}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join("weir.db")).unwrap();
    let setup = SETUP.replace("varchar", "text");
    let result =
        conn.execute(&setup).map(|_| run(conn.as_mut(), &wh, &format!("{schema}.orders"), &format!("{schema}.customers"), &store, "r1"));
    conn.execute(&format!("drop schema {schema} cascade")).unwrap();
    compare(result.unwrap());
}

/// Standard deviations come from the scan's sums, except where the mean dwarfs the spread
/// and the sums would cancel: those are measured by the engine's `stddev_samp`. Both must
/// agree with `stddev_samp` itself.
fn stddev_agrees_with_the_engine(conn: &mut dyn Connection, wh: &dyn Warehouse, table: &str) {
    conn.execute(&format!(
        "create table {table} as select i as spread, 1000000000 + i % 3 as narrow, 7 as flat, \
         case when i = 1 then 5 end as single, i % 2 as odd from generate_series(1, 1000) as t(i)"
    ))
    .unwrap();
    let checks = "checks for t:\n  - stddev(spread) > 0\n  - stddev(narrow) > 0\n  - stddev(flat) = 0\n  - stddev(single) > 0\n  - stddev(spread) > 0:\n      name: odd rows\n      filter: odd = 1\n";
    let suites = parse_file(Path::new("checks/t.yml"), checks).unwrap();
    let bound = Bound { relation: table.into(), run_id: "r".into(), ..Default::default() };
    let out = measure(conn, wh, &suites[0], &bound, None).unwrap();
    let mut exact = |expr: &str| {
        conn.query(&format!("select cast(stddev_samp({expr}) as double precision) from {table}")).unwrap().scalar().and_then(|d| match d {
            weir_core::Datum::Float(f) => Some(*f),
            weir_core::Datum::Int(i) => Some(*i as f64),
            _ => None,
        })
    };
    let want = [exact("spread"), exact("narrow"), exact("flat"), exact("single"), exact("case when odd = 1 then spread end")];
    for (o, w) in out.outcomes.iter().zip(want) {
        match (o.value, w) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{}: {g} vs {w}", o.check),
            (g, w) => assert_eq!(g, w, "{}", o.check),
        }
    }
    let verdicts: Vec<Verdict> = out.outcomes.iter().map(|o| o.verdict).collect();
    assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Fail, Verdict::Pass], "{out:#?}");
    // The columns lookup, the scan, and one exact query each for `narrow` and `flat`.
    assert_eq!(out.queries, 4, "{out:#?}");
}

#[test]
fn duckdb_stddev_agrees_with_stddev_samp() {
    let (_dir, wh) = duckdb();
    let mut conn = wh.connect().unwrap();
    stddev_agrees_with_the_engine(conn.as_mut(), &wh, "main.t");
}

#[test]
fn postgres_stddev_agrees_with_stddev_samp() {
    let schema = format!("weir_quality_stddev_{}", std::process::id());
    let wh = postgres(&schema);
    let mut conn = wh.connect().unwrap();
    conn.execute(&format!("create schema {schema}")).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stddev_agrees_with_the_engine(conn.as_mut(), &wh, &format!("{schema}.t"))
    }));
    conn.execute(&format!("drop schema {schema} cascade")).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
