//! Stream jobs run end to end on the embedded log and a DuckDB file: the sink equals the same
//! SQL run as a batch query by DuckDB over the events that were neither late nor rejected,
//! every event is accounted for, and a job stopped and restarted (or killed and restarted
//! from an older checkpoint) ends with the same table as one uninterrupted run.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value as J, json};
use weir_core::{Datum, Relation};
use weir_graph::stream_jobs::parse_job;
use weir_graph::streams::parse_file;
use weir_log::{EmbeddedLog, Log, Record};
use weir_stream::job::{self, Control, JobRun, Status};
use weir_warehouse::Warehouse;

const TOPICS: &str = "topics:\n  - name: orders\n    partitions: 2\n    key: country\n    \
    columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
    watermark: ordered_at - interval '2 seconds'\n  - name: payments\n    partitions: 2\n    key: order_id\n    \
    columns: {payment_id: bigint, order_id: bigint, method: varchar, paid: double, paid_at: timestamp}\n    \
    watermark: paid_at - interval '1 second'\n";

const T0: i64 = 1_796_205_600_000; // 2026-12-02 10:00:00 UTC

struct Fixture {
    dir: tempfile::TempDir,
    log: EmbeddedLog,
    wh: Arc<dyn Warehouse>,
    /// Where the sink tables go: DuckDB's `wh.main`, or a PostgreSQL schema of the test's own.
    database: String,
    schema: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join(".weir/log")).unwrap();
        let mut fields = Map::new();
        fields.insert("path".into(), J::String(dir.path().join("wh.duckdb").display().to_string()));
        let wh: Arc<dyn Warehouse> = Arc::from(weir_warehouse::open("duckdb", &fields, dir.path()).unwrap());
        Fixture { dir, log, wh, database: "wh".into(), schema: "main".into() }
    }

    /// The local PostgreSQL's `test` database, in a schema dropped when the fixture goes.
    fn postgres() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join(".weir/log")).unwrap();
        let mut fields = Map::new();
        for (k, v) in [("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"), ("dbname", "test")] {
            fields.insert(k.into(), v.into());
        }
        let wh: Arc<dyn Warehouse> = Arc::from(weir_warehouse::open("postgres", &fields, dir.path()).unwrap());
        let schema = format!("weir_stream_test_{}", std::process::id());
        Fixture { dir, log, wh, database: "test".into(), schema }
    }

    fn job(&self, name: &str, sql: &str) -> JobRun {
        let topics = parse_file(Path::new("streams/shop.yml"), TOPICS).unwrap();
        let job = parse_job(Path::new(&format!("streams/{name}.sql")), sql).unwrap();
        JobRun::new(self.dir.path(), job, &topics, Relation::new(&self.database, &self.schema, name), vec![]).unwrap()
    }

    fn produce(&self, events: &[J]) {
        let topics = parse_file(Path::new("streams/shop.yml"), TOPICS).unwrap();
        self.log.create_topic(&topics[0].spec()).unwrap();
        let records: Vec<Record> = events.iter().map(|e| weir_graph::streams::event_record(e, Some("country"), 0)).collect();
        self.log.append("orders", None, &records).unwrap();
    }

    fn drain(&self, run: &JobRun) -> Status {
        job::run(run, &self.log, self.wh.clone(), &Control { drain: true, ..Control::default() }, &mut |_| {}).unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Vec<Datum>> {
        self.wh.connect().unwrap().query(sql).unwrap().rows
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.database == "test"
            && let Ok(mut c) = self.wh.connect()
        {
            let _ = c.execute(&format!("drop schema if exists {} cascade", self.schema));
        }
    }
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Orders over a minute of event time, a few out of order, a few late past any lateness,
/// a few broken. (Only a column the job reads can hold a wrong type: the others are skipped.)
fn events() -> Vec<J> {
    let countries = ["DE", "FR", "NL", "IT"];
    let mut out = vec![];
    for i in 0..2_000i64 {
        let mut at = T0 + i * 30;
        if i % 97 == 0 {
            at -= 1_500; // out of order, within the watermark's delay
        }
        if i % 401 == 400 && i >= 1_000 {
            at -= 60_000; // a minute behind the watermark: late however the events arrive
        }
        out.push(json!({"order_id": i, "country": countries[(i % 4) as usize], "amount": (i % 13) as f64 + 0.25, "ordered_at": ts(at)}));
    }
    out.insert(500, json!({"order_id": 500, "country": "DE", "amount": "lots", "ordered_at": ts(T0 + 15_000)}));
    out.insert(900, json!({"order_id": 9000, "country": "DE", "amount": 1.0}));
    out
}

const TUMBLE: &str = "select country, window_start, window_end, count(*) as orders, sum(amount) as revenue, max(amount) as top\n\
    from tumble({{ stream('orders') }}, ordered_at, interval '5 seconds')\ngroup by country, window_start, window_end";

/// The same windows computed by DuckDB as a batch over the events counted.
fn batch(f: &Fixture, table: &str, filter: &str) -> Vec<Vec<Datum>> {
    let mut conn = f.wh.connect().unwrap();
    let values: Vec<String> = events()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let id = e.get("order_id")?.as_i64()?;
            let at = e.get("ordered_at")?.as_str()?;
            let at = at.trim_end_matches('Z').replace('T', " ");
            Some(format!("({i}, {id}, '{}', {}, cast('{at}' as timestamp))", e["country"].as_str()?, e["amount"].as_f64()?))
        })
        .collect();
    conn.execute("create or replace table events (seq bigint, order_id bigint, country varchar, amount double, ordered_at timestamp)")
        .unwrap();
    conn.execute(&format!("insert into events values {}", values.join(", "))).unwrap();
    conn.query(&format!(
        "select country, time_bucket(interval '5 seconds', ordered_at) as ws, count(*), sum(amount), max(amount)
         from events e
         where not exists (select 1 from _weir_late_events l where l.job = '{table}' and l.event like '%\"order_id\":' || e.order_id || ',%')
           and time_bucket(interval '5 seconds', ordered_at) + interval '5 seconds' <= (select max(window_end) from {table}) {filter}
         group by all order by 1, 2"
    ))
    .unwrap()
    .rows
}

fn same(a: &[Vec<Datum>], b: &[Vec<Datum>]) {
    let only_a: Vec<&Vec<Datum>> = a.iter().filter(|r| !b.contains(r)).collect();
    let only_b: Vec<&Vec<Datum>> = b.iter().filter(|r| !a.contains(r)).collect();
    assert!(only_a.is_empty() && only_b.is_empty() && a.len() == b.len(), "only in the first: {only_a:?}\nonly in the second: {only_b:?}");
}

fn sink(f: &Fixture, table: &str) -> Vec<Vec<Datum>> {
    f.rows(&format!("select country, window_start, orders, revenue, top from {table} order by 1, 2"))
}

#[test]
fn a_tumbling_job_equals_the_batch_query_and_accounts_for_every_event() {
    let f = Fixture::new();
    f.produce(&events());
    let run = f.job("revenue", TUMBLE);
    let s = f.drain(&run);
    let c = s.counts;
    assert_eq!(c.read, 2_002);
    assert_eq!(c.read, c.counted + c.late + c.rejected + c.filtered, "{c:?}");
    assert_eq!((c.rejected, c.filtered), (2, 0));
    assert_eq!(c.late, 2, "the events a minute behind: {c:?}");
    let got = sink(&f, "revenue");
    assert!(got.len() > 40, "{} windows", got.len());
    same(&got, &batch(&f, "revenue", ""));
    // Late and rejected events are kept whole, with the reason.
    let late = f.rows("select count(*), min(reason), min(watermark) > min(event_time) from _weir_late_events where job = 'revenue'");
    assert_eq!(late[0][0], Datum::Int(c.late as i64));
    assert!(matches!(&late[0][1], Datum::Text(r) if r.contains("later than the allowed lateness")));
    let rejected = f.rows("select reason from _weir_rejected_events where job = 'revenue' order by \"offset\"");
    let reasons: Vec<String> = rejected.iter().map(|r| format!("{:?}", r[0])).collect();
    assert!(reasons.iter().any(|r| r.contains("amount: expected double, got \\\"lots\\\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("no event time")), "{reasons:?}");
    // Positions and counts are committed with the rows.
    let pos = f.rows("select sum(\"offset\")::bigint, sum(events_read)::bigint from _weir_stream_positions where job = 'revenue'");
    assert_eq!(pos[0], vec![Datum::Int(2_002), Datum::Int(2_002)]);
}

#[test]
fn stopping_and_resuming_gives_what_one_run_gives() {
    let once = Fixture::new();
    once.produce(&events());
    once.drain(&once.job("revenue", TUMBLE));

    let twice = Fixture::new();
    let all = events();
    twice.produce(&all[..1_100]);
    let run = twice.job("revenue", TUMBLE);
    twice.drain(&run);
    twice.produce(&all[1_100..]);
    let s = twice.drain(&run);
    assert_eq!(s.counts.read, 2_002);
    assert_eq!(
        twice.rows("select country, window_start, count(*) from revenue group by all having count(*) > 1"),
        Vec::<Vec<Datum>>::new()
    );
    same(&sink(&twice, "revenue"), &sink(&once, "revenue"));

    // A crash after the sink moved on but before the next checkpoint: the old checkpoint is
    // restored and the events after it read again; the table ends the same, nothing twice.
    let crashed = Fixture::new();
    crashed.produce(&all[..1_100]);
    crashed.drain(&run_in(&crashed, "revenue"));
    let saved = std::fs::read(crashed.dir.path().join(".weir/streams/revenue/checkpoint.json")).unwrap();
    crashed.produce(&all[1_100..]);
    crashed.drain(&run_in(&crashed, "revenue"));
    std::fs::write(crashed.dir.path().join(".weir/streams/revenue/checkpoint.json"), saved).unwrap();
    let s = crashed.drain(&run_in(&crashed, "revenue"));
    assert_eq!(s.counts.read, 2_002, "counts come back with the state");
    same(&sink(&crashed, "revenue"), &sink(&once, "revenue"));
    let late = crashed.rows("select count(*), count(distinct \"offset\" || '/' || \"partition\") from _weir_late_events");
    assert_eq!(late[0][0], late[0][1], "no late event kept twice");
}

fn run_in(f: &Fixture, name: &str) -> JobRun {
    f.job(name, TUMBLE)
}

#[test]
fn sessions_running_totals_and_projections() {
    let f = Fixture::new();
    f.produce(&events());
    let s = f.drain(&f.job(
        "sessions",
        "select country, window_start, window_end, count(*) as orders\nfrom session({{ stream('orders') }}, ordered_at, interval '100 ms')\n\
         group by country, window_start, window_end",
    ));
    assert_eq!(s.counts.read, s.counts.counted + s.counts.late + s.counts.rejected + s.counts.filtered);
    // Each country orders every 120 ms: one session per order but where the out-of-order
    // events bring two within the gap. No two sessions of a country overlap.
    let overlaps = f.rows(
        "select count(*) from sessions a join sessions b on a.country = b.country and a.window_start < b.window_start and b.window_start <= a.window_end",
    );
    assert_eq!(
        overlaps[0][0],
        Datum::Int(0),
        "{:?}",
        f.rows("select a.*, b.* from sessions a join sessions b on a.country = b.country and a.window_start < b.window_start and b.window_start <= a.window_end limit 3")
    );
    let counted = f.rows("select sum(orders)::bigint from sessions");
    assert!(matches!(counted[0][0], Datum::Int(n) if n > 1_800), "{counted:?}");

    let s = f.drain(&f.job("totals", "select upper(country) as country, count(*) as orders, sum(amount) as revenue\nfrom {{ stream('orders') }}\nwhere amount > 3\ngroup by upper(country)"));
    let totals = f.rows("select sum(orders)::bigint from totals");
    assert_eq!(totals[0][0], Datum::Int(s.counts.counted as i64));
    assert!(s.counts.filtered > 0);
    let expect = f.rows("select count(*) from totals");
    assert_eq!(expect[0][0], Datum::Int(4), "one row per key, upserted");

    let s = f.drain(&f.job("big", "select order_id, amount * 2 as doubled, ordered_at\nfrom {{ stream('orders') }}\nwhere amount >= 12"));
    let n = f.rows("select count(*), count(distinct order_id), min(doubled) from big");
    assert_eq!(n[0][0], Datum::Int(s.counts.counted as i64));
    assert_eq!(n[0][0], n[0][1]);
    assert_eq!(n[0][2], Datum::Float(24.5));
    // Again: nothing is written twice, the positions are in the sink.
    f.drain(&f.job("big", "select order_id, amount * 2 as doubled, ordered_at\nfrom {{ stream('orders') }}\nwhere amount >= 12"));
    assert_eq!(f.rows("select count(*) from big"), vec![vec![n[0][0].clone()]]);
}

#[test]
fn a_changed_job_refuses_its_old_state() {
    let f = Fixture::new();
    f.produce(&events()[..100]);
    f.drain(&f.job("revenue", TUMBLE));
    let changed = f.job("revenue", &TUMBLE.replace("5 seconds", "10 seconds"));
    let e = job::run(&changed, &f.log, f.wh.clone(), &Control { drain: true, ..Control::default() }, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("--reset"), "{e}");
    job::reset(&changed, f.wh.as_ref()).unwrap();
    let s = f.drain(&changed);
    assert_eq!(s.counts.read, 100);
}

#[test]
fn a_postgresql_sink_holds_what_a_duckdb_sink_holds() {
    let duck = Fixture::new();
    duck.produce(&events());
    duck.drain(&duck.job("revenue", TUMBLE));
    let pg = Fixture::postgres();
    pg.produce(&events());
    let run = pg.job("revenue", TUMBLE);
    let s = pg.drain(&run);
    assert_eq!(s.counts.read, 2_002);
    let sql =
        |schema: &str| format!("select country, cast(window_start as varchar), orders, revenue, top from {schema}.revenue order by 1, 2");
    let (a, b) = (duck.rows(&sql("main")), pg.rows(&sql(&pg.schema)));
    let text =
        |rows: Vec<Vec<Datum>>| -> Vec<Vec<String>> { rows.into_iter().map(|r| r.iter().map(|d| d.to_string()).collect()).collect() };
    assert_eq!(text(b), text(a));
    // Resumed on PostgreSQL too: more events, the same positions table, no row twice.
    pg.produce(&events()[..10]);
    let s = pg.drain(&run);
    assert_eq!(s.counts.read, 2_012);
    let late = pg.rows(&format!("select count(*) from {}._weir_late_events", pg.schema));
    assert_eq!(late[0][0], Datum::Int(s.counts.late as i64));
}

#[test]
fn early_results_are_upserted_and_the_close_writes_the_final_one() {
    let on_close = Fixture::new();
    on_close.produce(&events());
    on_close.drain(&on_close.job("revenue", TUMBLE));
    let early = Fixture::new();
    early.produce(&events());
    early.drain(&early.job("revenue", &format!("{{{{ config(emit='every 1ms') }}}}\n{TUMBLE}")));
    let closed = sink(&on_close, "revenue");
    let all = sink(&early, "revenue");
    // Every closed window holds its final result, once; the windows still open hold their
    // running result.
    assert!(closed.iter().all(|r| all.contains(r)), "a closed window's final result is missing");
    assert!(all.len() > closed.len(), "no early result of an open window");
    let twice = early.rows("select country, window_start from revenue group by all having count(*) > 1");
    assert!(twice.is_empty(), "{twice:?}");
}

/// Every hash under `prefix` as (key, fields), sorted; and the keys deleted after.
fn redis_hashes(prefix: &str) -> Vec<(String, Vec<(String, String)>)> {
    use redis::Commands;
    let mut conn = redis::Client::open("redis://127.0.0.1:6379").unwrap().get_connection().unwrap();
    let mut keys: Vec<String> = conn.scan_match::<_, String>(format!("{prefix}*")).unwrap().collect::<Result<_, _>>().unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let mut fields: Vec<(String, String)> = conn.hgetall(&k).unwrap();
            fields.sort();
            (k, fields)
        })
        .collect()
}

#[test]
fn a_redis_sink_holds_each_keys_latest_window_through_late_updates_and_a_crash() {
    let prefix = format!("weir-test-{}:revenue:", std::process::id());
    let sql = format!("{{{{ config(sink='redis', key_prefix='{prefix}', ttl='1 hour', allowed_lateness='2 minutes') }}}}\n{TUMBLE}");
    let table = Fixture::new();
    table.produce(&events());
    let with_lateness = TUMBLE.replace("select", "{{ config(allowed_lateness='2 minutes') }}\nselect");
    table.drain(&table.job("revenue", &with_lateness));
    // Each country's latest window, as the table has it.
    let latest = table.rows(
        "select country, strftime(window_start, '%Y-%m-%d %H:%M:%S.%f'), orders, revenue from revenue \
         qualify row_number() over (partition by country order by window_end desc) = 1 order by 1",
    );

    let f = Fixture::new();
    let all = events();
    f.produce(&all[..1_100]);
    let run = f.job("revenue", &sql);
    assert_eq!(run.sink_text(), format!("redis 127.0.0.1:6379 {prefix}*"));
    f.drain(&run);
    let saved = std::fs::read(f.dir.path().join(".weir/streams/revenue/checkpoint.json")).unwrap();
    f.produce(&all[1_100..]);
    f.drain(&run);
    // A crash after Redis and the positions moved on: the old checkpoint replays its events,
    // and every window written again is the same (or older, and refused by the script).
    std::fs::write(f.dir.path().join(".weir/streams/revenue/checkpoint.json"), saved).unwrap();
    let s = f.drain(&run);
    assert_eq!(s.counts.read, 2_002);
    assert_eq!(s.counts.late, 0, "within the lateness, the late events update their windows");
    let hashes = redis_hashes(&prefix);
    assert_eq!(hashes.len(), 4, "one hash per country: {hashes:?}");
    for ((key, fields), row) in hashes.iter().zip(&latest) {
        let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(key, &format!("{prefix}{}", field("country")));
        assert_eq!(Datum::Text(field("country")), row[0]);
        assert_eq!(Datum::Text(field("window_start")), row[1], "{key}: the latest window");
        assert_eq!(Datum::Int(field("orders").parse().unwrap()), row[2]);
        assert_eq!(Datum::Float(field("revenue").parse().unwrap()), row[3]);
    }
    // No table for the rows; the bookkeeping is in the warehouse.
    assert!(f.wh.connect().unwrap().columns(&Relation::new("wh", "main", "revenue")).unwrap_or_default().is_empty());
    let pos = f.rows("select sum(events_read)::bigint from _weir_stream_positions where job = 'revenue'");
    assert_eq!(pos[0][0], Datum::Int(2_002));
    // A late event within the lateness updates an older window of DE after its latest was
    // written: the hash keeps the latest.
    f.produce(&[json!({"order_id": 99_999, "country": "DE", "amount": 1.0, "ordered_at": ts(T0 + 30_000)})]);
    let s = f.drain(&run);
    assert_eq!((s.read_this_run, s.counts.late), (1, 0), "counted, not late: {s:?}");
    assert_eq!(redis_hashes(&prefix), hashes);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&hashes[0].0)
        .query(&mut redis::Client::open("redis://127.0.0.1:6379").unwrap().get_connection().unwrap())
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
    job::reset(&run, f.wh.as_ref()).unwrap();
    assert!(redis_hashes(&prefix).is_empty(), "reset deletes the job's keys");
}

/// Every record of a topic, as (key, value) JSON, sorted.
fn topic_records(log: &EmbeddedLog, topic: &str) -> Vec<(J, J)> {
    let mut out: Vec<(J, J)> = vec![];
    for p in log.describe(topic).unwrap().partitions {
        for r in log.read(topic, p.partition, 0, usize::MAX).unwrap() {
            out.push((serde_json::from_slice(r.key.as_deref().unwrap()).unwrap(), serde_json::from_slice(&r.value).unwrap()));
        }
    }
    out.sort_by_key(|(k, _)| k.to_string());
    out
}

#[test]
fn a_topic_sink_commits_its_records_with_the_positions_once_through_crashes() {
    let table = Fixture::new();
    table.produce(&events());
    table.drain(&table.job("revenue", TUMBLE));
    let as_json = |d: &Datum| match d {
        Datum::Text(t) => J::from(t.clone()),
        Datum::Int(i) => J::from(*i),
        Datum::Float(x) => J::from(*x),
        other => panic!("{other:?}"),
    };
    let expected: Vec<String> = table
        .rows("select country, strftime(window_start, '%Y-%m-%dT%H:%M:%S.%fZ'), orders, revenue, top from revenue order by 1, 2")
        .iter()
        .map(|r| r.iter().map(as_json).map(|j| j.to_string()).collect::<Vec<_>>().join(" "))
        .collect();

    let f = Fixture::new();
    let all = events();
    let sql = format!("{{{{ config(sink='topic', topic='revenue_out', checkpoint_interval='100ms') }}}}\n{TUMBLE}");
    let run = f.job("revenue", &sql);
    assert_eq!(run.sink_text(), "topic revenue_out");
    f.produce(&all[..1_100]);
    f.drain(&run);
    let dir = f.dir.path().join(".weir/streams/revenue");
    let first = std::fs::read(dir.join("checkpoint.json")).unwrap();
    f.produce(&all[1_100..]);
    let s = f.drain(&run);
    assert_eq!(s.counts.read, 2_002);
    // A crash after the log took the last commit but before its checkpoint was renamed: the
    // next checkpoint stands, as the log says, and nothing is written twice.
    std::fs::rename(dir.join("checkpoint.json"), dir.join("checkpoint.next.json")).unwrap();
    std::fs::write(dir.join("checkpoint.json"), &first).unwrap();
    assert_eq!(f.drain(&run).read_this_run, 0);
    assert!(!dir.join("checkpoint.next.json").exists());
    // A crash before the log took a commit: that next checkpoint is dropped.
    let mut stale: J = serde_json::from_slice(&first).unwrap();
    stale["seq"] = json!(1);
    std::fs::write(dir.join("checkpoint.next.json"), stale.to_string()).unwrap();
    assert_eq!(f.drain(&run).counts.read, 2_002);
    assert!(!dir.join("checkpoint.next.json").exists());

    let got: Vec<String> = topic_records(&f.log, "revenue_out")
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, json!({"country": v["country"], "window_start": v["window_start"]}));
            ["country", "window_start", "orders", "revenue", "top"].iter().map(|c| v[c].to_string()).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "each window once, as the table sink has it");
    // The late and rejected events are in the warehouse, once.
    let late = f.rows("select count(*), count(distinct \"offset\" || '/' || \"partition\") from _weir_late_events where job = 'revenue'");
    assert_eq!(late[0][0], Datum::Int(2));
    assert_eq!(late[0][0], late[0][1]);
}

#[test]
fn jobs_started_at_once_share_the_bookkeeping_tables() {
    let f = Fixture::new();
    f.produce(&events()[..200]);
    let runs: Vec<JobRun> = (0..6).map(|i| f.job(&format!("j{i}"), TUMBLE)).collect();
    std::thread::scope(|s| {
        for run in &runs {
            let f = &f;
            s.spawn(move || f.drain(run));
        }
    });
    let read = f.rows("select count(distinct job), sum(events_read)::bigint from _weir_stream_positions");
    assert_eq!(read[0], vec![Datum::Int(6), Datum::Int(6 * 200)]);
}

/// `n` orders of `country` from `from_ms` of event time on, 100 ms apart.
fn orders_of(country: &str, from_ms: i64, n: i64) -> Vec<J> {
    (0..n).map(|i| json!({"order_id": 50_000 + i, "country": country, "amount": 2.0, "ordered_at": ts(from_ms + i * 100)})).collect()
}

#[test]
fn events_are_enriched_from_a_table_and_see_it_change() {
    let f = Fixture::new();
    f.wh.connect()
        .unwrap()
        .execute("create table regions (code varchar, region varchar); insert into regions values ('DE', 'core'), ('FR', 'core'), ('NL', 'benelux')")
        .unwrap();
    let sql = "{{ config(table_refresh='100ms', idle_timeout='200ms') }}\n\
        select r.region, window_start, window_end, count(*) as orders, sum(o.amount) as revenue\n\
        from tumble({{ stream('orders') }}, ordered_at, interval '5 seconds') o\n\
        join {{ ref('regions') }} r on o.country = r.code\n\
        group by r.region, window_start, window_end";
    let topics = parse_file(Path::new("streams/shop.yml"), TOPICS).unwrap();
    let job = parse_job(Path::new("streams/by_region.sql"), sql).unwrap();
    let table = Relation::new(&f.database, &f.schema, "by_region");
    let run = JobRun::new(f.dir.path(), job, &topics, table, vec![Relation::new(&f.database, &f.schema, "regions")]).unwrap();
    assert!(run.plan.fingerprint().contains("join=0:o.country = r.code"), "{}", run.plan.fingerprint());
    f.produce(&events());
    f.drain(&f.job("revenue", TUMBLE));

    // Enriched while it runs; the table changes and the next events see the change.
    let control = Control::default();
    let stop = control.stop.clone();
    std::thread::scope(|s| {
        let running = s.spawn(|| job::run(&run, &f.log, f.wh.clone(), &control, &mut |_| {}).unwrap());
        let wait_for = |read: u64| {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while Status::read(&run.dir).is_none_or(|s| s.counts.read < read) {
                assert!(std::time::Instant::now() < until, "the job did not read {read} events");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        wait_for(2_002);
        f.wh.connect().unwrap().execute("update regions set region = 'west' where code = 'FR'").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        f.produce(&orders_of("FR", T0 + 120_000, 100));
        wait_for(2_102);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let s = running.join().unwrap();
        let c = s.counts;
        assert_eq!(c.read, c.counted + c.late + c.rejected + c.filtered, "{c:?}");
        assert_eq!(c.filtered, 500, "Italy's orders have no region: {c:?}");
    });
    // The windows the plain job closed: its country totals, summed by the regions of then.
    let expected = f.rows(
        "select case country when 'NL' then 'benelux' else 'core' end, window_start, sum(orders)::bigint, sum(revenue) \
         from revenue where country <> 'IT' group by all order by 1, 2",
    );
    let got = f.rows(
        "select region, window_start, orders, revenue from by_region where window_start <= (select max(window_start) from revenue) order by 1, 2",
    );
    same(&got, &expected);
    // After the change, France's orders are in the west.
    let later =
        f.rows("select region, sum(orders)::bigint from by_region where window_start >= timestamp '2026-12-02 10:02:00' group by 1");
    assert_eq!(later, vec![vec![Datum::Text("west".into()), Datum::Int(50)]], "the second window of the 100 is still open");
}

/// Payments of the orders of [`events`]: most within five seconds of their order, some
/// before it or too long after (they meet nothing), some orders paid twice, some not at all.
fn payments() -> Vec<J> {
    let mut out = vec![];
    for i in 0..2_000i64 {
        if i % 3 == 0 {
            continue;
        }
        let at = T0
            + i * 30
            + match i % 7 {
                0 => -500,
                1 => 5_000,
                2 => 5_001,
                k => k * 700,
            };
        let method = if i % 11 == 0 { "voucher" } else { "card" };
        out.push(json!({"payment_id": i, "order_id": i, "method": method, "paid": (i % 13) as f64 + 0.25, "paid_at": ts(at)}));
        if i % 5 == 0 {
            out.push(json!({"payment_id": 10_000 + i, "order_id": i, "method": "card", "paid": 1.0, "paid_at": ts(at + 200)}));
        }
    }
    out.sort_by_key(|p| p["paid_at"].as_str().unwrap_or_default().to_string());
    out
}

const PAID: &str = "select o.order_id, o.country, o.amount, p.payment_id, p.paid_at\n\
    from {{ stream('orders') }} o\njoin {{ stream('payments') }} p\n  \
    on o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at + interval '5 seconds'\n\
    where p.method <> 'voucher'";

fn pay(f: &Fixture, payments: &[J]) {
    let topics = parse_file(Path::new("streams/shop.yml"), TOPICS).unwrap();
    f.log.create_topic(&topics[1].spec()).unwrap();
    let records: Vec<Record> = payments.iter().map(|e| weir_graph::streams::event_record(e, Some("order_id"), 0)).collect();
    f.log.append("payments", None, &records).unwrap();
}

fn paid(f: &Fixture) -> Vec<Vec<Datum>> {
    f.rows("select order_id, country, amount, payment_id, paid_at from paid order by 1, 4")
}

#[test]
fn two_streams_are_joined_as_a_batch_join_pairs_their_events_on_time() {
    let f = Fixture::new();
    f.produce(&events());
    pay(&f, &payments());
    let s = f.drain(&f.job("paid", PAID));
    let c = s.counts;
    assert_eq!(c.read, 2_002 + payments().len() as u64);
    assert_eq!(c.read, c.counted + c.late + c.rejected + c.filtered, "{c:?}");
    assert_eq!((c.rejected, c.late), (2, 2), "{c:?}");
    let got = paid(&f);
    assert!(got.len() > 900, "{} pairs", got.len());
    // The same join by DuckDB over the events that were not late.
    let mut conn = f.wh.connect().unwrap();
    let rows = |events: &[J], cols: &[&str]| -> String {
        let values: Vec<String> = events
            .iter()
            .filter(|e| cols.iter().all(|c| e.get(*c).is_some_and(|v| !v.is_string() || !c.ends_with("amount"))))
            .map(|e| {
                let v: Vec<String> = cols
                    .iter()
                    .map(|c| match &e[*c] {
                        J::String(t) if c.ends_with("_at") => format!("cast('{}' as timestamp)", t.trim_end_matches('Z').replace('T', " ")),
                        J::String(t) => format!("'{t}'"),
                        other => other.to_string(),
                    })
                    .collect();
                format!("({}, '{}')", v.join(", "), e)
            })
            .collect();
        values.join(", ")
    };
    let order_cols = ["order_id", "country", "amount", "ordered_at"];
    conn.execute(&format!(
        "create table o as select * from (values {}) v(order_id, country, amount, ordered_at, event)",
        rows(&events(), &order_cols)
    ))
    .unwrap();
    let pay_cols = ["payment_id", "order_id", "method", "paid_at"];
    conn.execute(&format!(
        "create table p as select * from (values {}) v(payment_id, order_id, method, paid_at, event)",
        rows(&payments(), &pay_cols)
    ))
    .unwrap();
    let batch = f.rows(
        "select o.order_id::bigint, o.country, o.amount::double, p.payment_id::bigint, p.paid_at from o join p on o.order_id = p.order_id \
         and p.paid_at between o.ordered_at and o.ordered_at + interval '5 seconds' \
         where p.method <> 'voucher' \
           and o.event not in (select event from _weir_late_events where job = 'paid') \
           and p.event not in (select event from _weir_late_events where job = 'paid') \
         order by 1, 4",
    );
    assert_eq!(got.len(), batch.len());
    same(&got, &batch);
    // Nothing is held past what can still meet an event: the last events' partners only.
    assert!(s.windows_held < 1_000, "{} events held", s.windows_held);

    // Stopped and resumed, then crashed after the sink moved on and restarted from the older
    // checkpoint: the same pairs, none twice.
    let crashed = Fixture::new();
    let (all, money) = (events(), payments());
    crashed.produce(&all[..1_100]);
    pay(&crashed, &money[..600]);
    crashed.drain(&crashed.job("paid", PAID));
    let saved = std::fs::read(crashed.dir.path().join(".weir/streams/paid/checkpoint.json")).unwrap();
    crashed.produce(&all[1_100..]);
    pay(&crashed, &money[600..]);
    crashed.drain(&crashed.job("paid", PAID));
    std::fs::write(crashed.dir.path().join(".weir/streams/paid/checkpoint.json"), saved).unwrap();
    let again = crashed.drain(&crashed.job("paid", PAID));
    assert_eq!(again.counts, s.counts, "counts come back with the state");
    same(&paid(&crashed), &got);
    let positions =
        crashed.rows("select topic, sum(events_read)::bigint from _weir_stream_positions where job = 'paid' group by 1 order by 1");
    assert_eq!(
        positions,
        vec![vec![Datum::Text("orders".into()), Datum::Int(2_002)], vec![Datum::Text("payments".into()), Datum::Int(money.len() as i64)]]
    );
}

/// Checkpoints kept in memory: a store other than the job's folder.
#[derive(Debug, Default)]
struct Memory(std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>);

impl job::store::CheckpointStore for Memory {
    fn location(&self, name: &str) -> String {
        format!("memory:{name}")
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, weir_stream::StreamError> {
        Ok(self.0.lock().unwrap().get(name).cloned())
    }
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), weir_stream::StreamError> {
        self.0.lock().unwrap().insert(name.to_string(), bytes.to_vec());
        Ok(())
    }
    fn promote(&self, from: &str, to: &str) -> Result<(), weir_stream::StreamError> {
        let mut docs = self.0.lock().unwrap();
        if let Some(doc) = docs.remove(from) {
            docs.insert(to.to_string(), doc);
        }
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<(), weir_stream::StreamError> {
        self.0.lock().unwrap().remove(name);
        Ok(())
    }
    fn clear(&self) -> Result<(), weir_stream::StreamError> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

#[test]
fn checkpoints_are_kept_by_the_store_the_job_is_given() {
    use job::store::CheckpointStore;
    let once = Fixture::new();
    once.produce(&events());
    once.drain(&once.job("revenue", TUMBLE));

    let f = Fixture::new();
    let store = Arc::new(Memory::default());
    let run = || {
        let mut run = f.job("revenue", TUMBLE);
        run.checkpoints = store.clone();
        run
    };
    let all = events();
    f.produce(&all[..1_100]);
    f.drain(&run());
    assert!(!f.dir.path().join(".weir/streams/revenue/checkpoint.json").exists(), "nothing on the local disk");
    let saved = store.get("checkpoint.json").unwrap().expect("the store holds the checkpoint");
    f.produce(&all[1_100..]);
    f.drain(&run());
    // A crash after the sink moved on: the store's older checkpoint is restored.
    store.put("checkpoint.json", &saved).unwrap();
    let s = f.drain(&run());
    assert_eq!(s.counts.read, 2_002);
    same(&sink(&f, "revenue"), &sink(&once, "revenue"));
    job::reset(&run(), f.wh.as_ref()).unwrap();
    assert_eq!(store.get("checkpoint.json").unwrap(), None, "reset forgets the store's checkpoint");
}

#[test]
fn a_new_job_starts_where_start_from_says() {
    let f = Fixture::new();
    let topics = parse_file(Path::new("streams/shop.yml"), TOPICS).unwrap();
    f.log.create_topic(&topics[0].spec()).unwrap();
    // Appended at 1,000 ms + 10 ms per order.
    let append = |ids: std::ops::Range<i64>| {
        let records: Vec<Record> = ids
            .map(|i| {
                let country = ["DE", "FR", "NL"][(i % 3) as usize];
                let e = json!({"order_id": i, "country": country, "amount": 1.0, "ordered_at": ts(T0)});
                weir_graph::streams::event_record(&e, Some("country"), 1_000 + i * 10)
            })
            .collect();
        f.log.append("orders", None, &records).unwrap();
    };
    append(0..100);
    let ids = |table: &str| -> Vec<i64> {
        f.rows(&format!("select order_id from wh.main.{table} order by 1"))
            .into_iter()
            .map(|r| match &r[0] {
                Datum::Int(i) => *i,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let job = |name: &str, from: &str| {
        f.job(name, &format!("{{{{ config(start_from='{from}') }}}}\nselect order_id from {{{{ stream('orders') }}}}"))
    };
    // The offsets the job's group committed: 10 of partition 0, none of partition 1.
    let mut positions = weir_log::Positions::new();
    positions.insert(("orders".to_string(), 0), 10);
    f.log.commit("weir-stream.committed", &weir_log::Commit { outputs: vec![], positions }).unwrap();
    let (earliest, latest, timed, committed) =
        (job("earliest", "earliest"), job("latest", "latest"), job("timed", "1970-01-01 00:00:01.5"), job("committed", "committed"));
    for run in [&earliest, &latest, &timed, &committed] {
        f.drain(run);
    }
    append(100..110);
    for run in [&earliest, &latest, &timed, &committed] {
        f.drain(run);
    }
    assert_eq!(ids("earliest"), (0..110).collect::<Vec<_>>());
    assert_eq!(ids("latest"), (100..110).collect::<Vec<_>>(), "only what came after it started");
    assert_eq!(ids("timed"), (50..110).collect::<Vec<_>>(), "from the first appended at 1.5 s");
    let in_p0: Vec<i64> = f
        .log
        .read("orders", 0, 0, 1000)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<J>(&r.value).unwrap()["order_id"].as_i64().unwrap())
        .collect();
    let mut expected: Vec<i64> = (0..110).filter(|i| !in_p0[..10].contains(i)).collect();
    expected.sort();
    assert_eq!(ids("committed"), expected, "partition 0 from its committed offset, partition 1 from its first");
}

/// A worker that missed a rebalance (paused, cut off) still holds a partition's task when the
/// partition's next owner claims it: from then on the old task's commits are refused, in the
/// warehouse's transaction (DuckDB and PostgreSQL) and by Redis's script, and the new owner's
/// rows and positions stand.
#[test]
fn a_partition_claimed_by_another_worker_refuses_the_old_owners_commits() {
    use weir_stream::StreamError;
    use weir_stream::job::sink::{Batch, Counts, Layout, Positions, Sink};
    let job = format!("claims_{}", std::process::id());
    let prefix = format!("weir-test-{job}:");
    let sinks = [
        weir_graph::stream_jobs::Sink::Table,
        weir_graph::stream_jobs::Sink::Redis { url: "redis://127.0.0.1:6379".into(), key_prefix: prefix.clone(), ttl_ms: None },
    ];
    for (f, results) in [(Fixture::new(), &sinks[0]), (Fixture::postgres(), &sinks[0]), (Fixture::new(), &sinks[1])] {
        let table = Relation::new(&f.database, &f.schema, &job);
        let layout = Layout {
            columns: vec![("country".into(), "VARCHAR".into()), ("orders".into(), "BIGINT".into())],
            keys: vec![0],
            window: None,
            session: false,
            append: false,
        };
        let open = || Sink::open(f.wh.clone(), table.clone(), layout.clone(), results, &job, &["orders".to_string()]).unwrap();
        let batch = |n: &str| Batch { rows: vec![(vec![Some("DE".into()), Some(n.into())], true)], ..Batch::default() };
        let at = |p: u32, o: u64| Positions::from([(("orders".to_string(), p), (o, Counts::default()))]);
        let (mut old, mut new, mut other) = (open(), open(), open());
        let now = chrono::Utc::now().timestamp_millis();
        old.claim("orders", 1, "host-0", now).unwrap();
        old.commit(&batch("1"), &at(1, 10), None, T0).unwrap();
        other.claim("orders", 0, "host-0", now).unwrap();
        new.claim("orders", 1, "host-1", now).unwrap();
        for n in ["2", "3"] {
            let refused = old.commit(&batch(n), &at(1, 20), None, T0).unwrap_err();
            assert!(matches!(refused, StreamError::Moved { partition: 1, .. }), "{results:?}: {refused}");
        }
        new.commit(&batch("4"), &at(1, 40), None, T0).unwrap();
        // Another partition's claim is its own.
        other.commit(&Batch::default(), &at(0, 5), None, T0).unwrap();
        let (positions, _) = new.committed().unwrap();
        assert_eq!(positions.get(&("orders".to_string(), 1)).map(|(o, _)| *o), Some(40), "{results:?}");
        let owners =
            f.rows(&format!("select \"partition\", member, epoch from {}._weir_stream_owners where job = '{job}' order by 1", f.schema));
        assert_eq!(owners.len(), 2, "{owners:?}");
        assert_eq!((&owners[1][0], &owners[1][1]), (&Datum::Int(1), &Datum::Text("host-1".into())));
        assert!(matches!(owners[1][2], Datum::Int(e) if e > now), "a claim's number is past the time: {owners:?}");
        let orders: Vec<String> = match results {
            weir_graph::stream_jobs::Sink::Table => {
                f.rows(&format!("select orders from {}.{job}", f.schema)).into_iter().map(|r| r[0].to_string()).collect()
            }
            _ => redis_hashes(&prefix).into_iter().flat_map(|(_, fields)| fields).filter(|(k, _)| k == "orders").map(|(_, v)| v).collect(),
        };
        assert_eq!(orders, vec!["4".to_string()], "{results:?}: the new owner's row stands");
        if let weir_graph::stream_jobs::Sink::Redis { url, key_prefix, .. } = results {
            weir_stream::job::redis::RedisSink::reset(url, key_prefix, &job).unwrap();
        }
    }
}

/// Header columns (`headers:` in streams/*.yml) are read from each record's headers: a job
/// groups by one and sums another; a record without them is in the null group, and one whose
/// header is not of its column's type is kept with the reason.
#[test]
fn header_columns_are_read_from_each_records_headers() {
    let f = Fixture::new();
    let topics = parse_file(
        Path::new("streams/clicks.yml"),
        "topics:\n  - name: clicks\n    columns: {page: varchar, at: timestamp}\n    headers: {tenant: varchar, hop: integer}\n    \
         watermark: at\n",
    )
    .unwrap();
    let sql = "select tenant, count(*) as n, sum(hop) as hops from {{ stream('clicks') }} group by tenant";
    let job = parse_job(Path::new("streams/per_tenant.sql"), sql).unwrap();
    let run = JobRun::new(f.dir.path(), job, &topics, Relation::new("wh", "main", "per_tenant"), vec![]).unwrap();
    f.log.create_topic(&topics[0].spec()).unwrap();
    let click = |headers: &[(&str, &str)]| Record {
        key: None,
        value: json!({"page": "/a", "at": ts(T0)}).to_string().into_bytes(),
        timestamp: T0,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
    };
    let clicks = [
        click(&[("tenant", "acme"), ("hop", "1")]),
        click(&[("hop", "9"), ("tenant", "acme"), ("hop", "2")]),
        click(&[("tenant", "globex"), ("hop", "3"), ("trace", "x")]),
        click(&[]),
        click(&[("tenant", "acme"), ("hop", "two")]),
    ];
    f.log.append("clicks", None, &clicks).unwrap();
    let s = f.drain(&run);
    assert_eq!((s.counts.read, s.counts.rejected), (5, 1), "{s:?}");
    let rows = f.rows("select tenant, n, hops from per_tenant order by tenant nulls last");
    let t = |s: &str| Datum::Text(s.into());
    assert_eq!(
        rows,
        vec![
            vec![t("acme"), Datum::Int(2), Datum::Int(3)],
            vec![t("globex"), Datum::Int(1), Datum::Int(3)],
            vec![Datum::Null, Datum::Int(1), Datum::Null]
        ],
        "the last of a repeated header counts"
    );
    let rejected = f.rows("select reason from _weir_rejected_events where job = 'per_tenant'");
    assert_eq!(rejected, vec![vec![t("header hop: expected integer, got \"two\"")]]);
    // A sink topic's header columns are written as headers, the rest as the value.
    let topics = parse_file(
        Path::new("streams/clicks.yml"),
        "topics:\n  - name: clicks\n    columns: {page: varchar, at: timestamp}\n    headers: {tenant: varchar, hop: integer}\n    \
         watermark: at\n  - name: tenant_clicks\n    columns: {page: varchar}\n    headers: {tenant: varchar}\n",
    )
    .unwrap();
    let sql = "{{ config(sink='topic', topic='tenant_clicks') }}\nselect tenant, page from {{ stream('clicks') }} where hop < 3";
    let job = parse_job(Path::new("streams/forward.sql"), sql).unwrap();
    let run = JobRun::new(f.dir.path(), job, &topics, Relation::new("wh", "main", "forward"), vec![]).unwrap();
    let s = f.drain(&run);
    assert_eq!(s.counts.counted, 2, "{s:?}");
    let out: Vec<(String, J)> = f
        .log
        .read("tenant_clicks", 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| (format!("{:?}", r.headers), serde_json::from_slice(&r.value).unwrap()))
        .collect();
    let acme = (format!("{:?}", vec![("tenant".to_string(), b"acme".to_vec())]), json!({"page": "/a"}));
    assert_eq!(out, vec![acme.clone(), acme]);
    // A header column cannot share a name with a column of the value.
    let e = parse_file(
        Path::new("streams/clicks.yml"),
        "topics:\n  - name: clicks\n    columns: {page: varchar}\n    headers: {page: varchar}\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("streams/clicks.yml:4:15") && e.to_string().contains("needs a name of its own"), "{e}");
}
