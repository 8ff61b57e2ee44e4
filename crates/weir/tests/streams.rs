//! `weir stream` on temporary projects: a job run to the end of its topic, its status, its
//! mistakes named with their place, and `kill -9` at random moments followed by restarts
//! ending with the same table as one uninterrupted run.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{minimal, query, text, weir, weir_command};

const TOPICS: &str = "topics:\n  - name: orders\n    partitions: 3\n    key: country\n    \
    columns: {order_id: bigint, country: varchar, amount: double, ordered_at: timestamp}\n    \
    watermark: ordered_at - interval '1 second'\n";

const JOB: &str = "{{ config(checkpoint_interval='200ms', allowed_lateness='2 seconds') }}\n\
    select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
    from tumble({{ stream('orders') }}, ordered_at, interval '2 seconds')\n\
    group by country, window_start, window_end\n";

fn project() -> tempfile::TempDir {
    minimal(&[("streams/shop.yml", TOPICS), ("streams/revenue.sql", JOB)])
}

/// `n` orders from `from` on, 25 ms of event time apart, every 50th a little out of order
/// and, from the 2,000th on, every 500th two minutes late.
fn orders(from: usize, n: usize) -> String {
    let countries = ["DE", "FR", "NL", "IT", "ES"];
    let mut out = String::new();
    for i in from..from + n {
        let mut ms = 1_796_205_600_000i64 + i as i64 * 25;
        if i % 50 == 7 {
            ms -= 700;
        }
        if i % 500 == 499 && i >= 2_000 {
            ms -= 120_000;
        }
        let at = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        out.push_str(&format!(
            "{{\"order_id\": {i}, \"country\": \"{}\", \"amount\": {}.5, \"ordered_at\": \"{at}\"}}\n",
            countries[i % 5],
            i % 17
        ));
    }
    out
}

fn produce(dir: &Path, from: usize, n: usize) {
    std::fs::write(dir.join("batch.jsonl"), orders(from, n)).unwrap();
    let o = weir(dir, &["log", "produce", "orders", "-f", "batch.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn table(dir: &Path) -> Vec<Vec<String>> {
    query(&dir.join("t.duckdb"), "select country, window_start, orders, revenue from revenue order by 1, 2")
}

#[test]
fn a_job_runs_to_the_end_of_its_topic_and_reports_every_event() {
    let dir = project();
    produce(dir.path(), 0, 3_000);
    let o = weir(dir.path(), &["stream", "list"]);
    assert!(text(&o).contains("revenue") && text(&o).contains("tumble 2s") && text(&o).contains("never run"), "{}", text(&o));
    let o = weir(dir.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3000 read = "), "{}", text(&o));
    let rows = table(dir.path());
    assert!(rows.len() > 100, "{rows:?}");
    let late = query(&dir.path().join("t.duckdb"), "select count(*) from _weir_late_events where job = 'revenue'");
    assert_eq!(late, [["2"]], "the orders two minutes behind");
    let o = weir(dir.path(), &["--log-format", "json", "stream", "status", "revenue"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["state"].as_str(), s["events"]["read"].as_u64(), s["events"]["late"].as_u64()), (Some("stopped"), Some(3_000), Some(2)));
    let lag: u64 = s["positions"].as_array().unwrap().iter().map(|p| p["lag"].as_u64().unwrap()).sum();
    assert_eq!(lag, 0);
}

#[test]
fn mistakes_in_a_job_name_their_place() {
    let dir = minimal(&[
        ("streams/shop.yml", TOPICS),
        (
            "streams/bad.sql",
            "select country, count(*) as n\nfrom tumble({{ stream('orders') }}, amount, interval '1 minute')\ngroup by country, window_start, window_end\n",
        ),
    ]);
    let o = weir(dir.path(), &["stream", "run", "bad"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("streams/bad.sql:2:37") && text(&o).contains("windows are over event time"), "{}", text(&o));
    // A job and a model of one name: `ref()` could not tell them apart.
    std::fs::write(dir.path().join("streams/bad.sql"), "select * from {{ stream('orders') }}\n").unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/bad.sql"), "select 1 as x\n").unwrap();
    let o = weir(dir.path(), &["ls"]);
    assert!(!o.status.success() && text(&o).contains("stream job 'bad' has the name of model models/bad.sql"), "{}", text(&o));
}

/// `rounds` times: 1,500 more orders, then `weir stream run revenue` killed with -9 after a
/// random moment. Returns the seed of the moments, for the failure messages.
fn killed_at_random(dir: &Path, rounds: usize) -> u64 {
    killed_at_random_with(dir, rounds, "revenue", &|dir, from, n| produce(dir, from, n))
}

/// `rounds` times: `produce` 1,500 more orders, then `weir stream run <job>` killed with -9.
fn killed_at_random_with(dir: &Path, rounds: usize, job: &str, produce: &dyn Fn(&Path, usize, usize)) -> u64 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = seed | 1;
    for round in 0..rounds {
        produce(dir, round * 1_500, 1_500);
        let mut child = weir_command(dir)
            .args(["stream", "run", job])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 600));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    seed
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    let once = project();
    produce(once.path(), 0, 12_000);
    let o = weir(once.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    let expected = table(once.path());

    let killed = project();
    let seed = killed_at_random(killed.path(), 8);
    let o = weir(killed.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success(), "seed {seed}: {}", text(&o));
    assert!(text(&o).contains("12000 read = "), "seed {seed}: {}", text(&o));
    assert_eq!(table(killed.path()), expected, "seed {seed}");
    let late = query(
        &killed.path().join("t.duckdb"),
        "select count(*), count(distinct \"partition\" || '/' || \"offset\") from _weir_late_events",
    );
    assert_eq!(late[0][0], late[0][1], "seed {seed}: a late event kept twice");
}

#[test]
fn the_example_shop_runs_its_real_time_path_beside_the_nightly_one() {
    let dir = common::shop();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    let db = dir.path().join("shop.duckdb");
    assert_eq!(query(&db, "select count(*) from live_vs_daily"), [["0"]], "no live day before the jobs run");

    let events = std::process::Command::new("python3").arg("scripts/generate_events.py").current_dir(dir.path()).output().unwrap();
    assert!(events.status.success(), "{}", text(&events));
    std::fs::write(dir.path().join("events.jsonl"), &events.stdout).unwrap();
    let o = weir(dir.path(), &["log", "produce", "order_events", "-f", "events.jsonl"]);
    assert!(o.status.success() && text(&o).contains("Produced 6000 events"), "{}", text(&o));
    let payments =
        std::process::Command::new("python3").args(["scripts/generate_events.py", "--payments"]).current_dir(dir.path()).output().unwrap();
    assert!(payments.status.success(), "{}", text(&payments));
    std::fs::write(dir.path().join("payments.jsonl"), &payments.stdout).unwrap();
    let o = weir(dir.path(), &["log", "produce", "payment_events", "-f", "payments.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
    // The stream jobs are nodes of the graph: one build reads the new events into their tables
    // and then builds the model that refs them.
    let o = weir(dir.path(), &["build", "--select", "resource_type:stream", "path:models/realtime"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("OK caught up").count(), 3, "{}", text(&o));
    assert!(text(&o).contains("EVENTS 6000"), "{}", text(&o));
    let o = weir(dir.path(), &["stream", "status", "customer_sessions"]);
    assert!(o.status.success() && text(&o).contains("6000 read = "), "{}", text(&o));
    let rejected = query(&db, "select count(*), min(reason) from _weir_rejected_events where job = 'live_revenue'");
    assert_eq!(rejected[0][0], "1");
    assert!(rejected[0][1].contains("total_amount: expected decimal(12,2), got \"n/a\""), "{rejected:?}");
    let minutes = query(&db, "select count(distinct window_start), min(window_end - window_start) from live_revenue");
    assert!(minutes[0][0].parse::<u32>().unwrap() > 100, "{minutes:?}");
    assert_eq!(minutes[0][1], "1 mins", "one-minute windows");
    // Orders paired with their payments: within the half hour, most orders, each once.
    let paid = query(
        &db,
        "select count(*), count(distinct order_id), min(seconds_to_pay), max(seconds_to_pay), \
         (select count(*) filter (where (event::json->>'order_id')::bigint % 1500 = 1499) || '/' || count(*) \
          from _weir_late_events where job = 'paid_orders') from paid_orders",
    );
    let pairs: u32 = paid[0][0].parse().unwrap();
    assert!(pairs > 4_000 && paid[0][0] == paid[0][1], "{paid:?}");
    assert!(paid[0][2].parse::<i64>().unwrap() >= 0 && paid[0][3].parse::<i64>().unwrap() <= 1800, "{paid:?}");
    // Late for the join are orders twenty minutes behind (whether each is depends on how far the
    // payments have got when it comes), kept, not joined.
    let (behind, late) = paid[0][4].split_once('/').unwrap();
    assert!(behind == late && late != "0", "{paid:?}");

    let live = query(&db, "select count(*), sum(orders)::bigint, min(day)::varchar from live_vs_daily");
    assert!(live[0][0].parse::<u32>().unwrap() >= 5, "{live:?}");
    assert_eq!(live[0][2], "2026-12-02");
    let counted = query(&db, "select sum(orders)::bigint from live_revenue");
    assert_eq!(live[0][1], counted[0][0], "the mart holds every order the job counted");
    // A second build reads nothing new and changes nothing.
    let o = weir(dir.path(), &["build", "--select", "resource_type:stream", "path:models/realtime"]);
    assert!(o.status.success() && text(&o).matches("EVENTS 0").count() == 3, "{}", text(&o));
    assert_eq!(query(&db, "select sum(orders)::bigint from live_revenue"), counted);
    let o = weir(dir.path(), &["show", "--select", "live_vs_daily", "--limit", "3"]);
    assert!(o.status.success() && text(&o).contains("2026-12-02"), "{}", text(&o));
}

#[test]
fn events_piped_in_live_are_appended_as_they_come() {
    use std::io::Write;
    let dir = project();
    let mut child = weir_command(dir.path())
        .args(["log", "produce", "orders"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(orders(0, 1).as_bytes()).unwrap();
    stdin.flush().unwrap();
    // The pipe stays open: the event must not wait for a batch to fill or the input to end.
    let mut seen = String::new();
    for _ in 0..50 {
        seen = String::from_utf8_lossy(&weir(dir.path(), &["log", "consume", "orders"]).stdout).to_string();
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let done = child.wait_with_output().unwrap();
    assert!(seen.contains("\"order_id\":0"), "{seen}: {}", text(&done));
    assert!(done.status.success());
}

/// The windows of `orders` (a job writing a topic, or a table to check it against), the
/// declared columns of the topic it writes, and a job totalling that topic by country.
const WINDOWS: &str = "select country, window_start, window_end, count(*) as orders, sum(amount) as revenue\n\
    from tumble({{ stream('orders') }}, ordered_at, interval '2 seconds')\n\
    group by country, window_start, window_end\n";
const PER_WINDOW_COLUMNS: &str = "    columns: {country: varchar, window_start: timestamp, window_end: timestamp, orders: bigint, revenue: double}\n    \
    watermark: window_end - interval '0 seconds'\n";
const TOTALS: &str =
    "select country, sum(orders) as orders, sum(revenue) as revenue\nfrom {{ stream('revenue_per_window') }}\ngroup by country\n";

#[test]
fn a_job_reads_the_topic_another_job_writes_and_build_runs_them_in_order() {
    let topics = format!("{TOPICS}  - name: revenue_per_window\n    partitions: 2\n    key: country\n{PER_WINDOW_COLUMNS}");
    let dir = minimal(&[
        ("streams/shop.yml", topics.as_str()),
        (
            "streams/per_window.sql",
            &format!("{{{{ config(sink='topic', topic='revenue_per_window', checkpoint_interval='100ms') }}}}\n{WINDOWS}"),
        ),
        ("streams/as_table.sql", WINDOWS),
        ("streams/totals.sql", TOTALS),
        (
            "models/checked.sql",
            "select t.country, t.orders, w.orders as windowed\nfrom {{ ref('totals') }} t\njoin (select country, sum(orders) as orders from {{ ref('as_table') }} group by country) w using (country)\n",
        ),
    ]);
    produce(dir.path(), 0, 3_000);
    let o = weir(dir.path(), &["ls", "--select", "+totals", "--output", "name"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().collect::<Vec<_>>(), ["per_window", "totals"], "{}", text(&o));
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = query(&dir.path().join("t.duckdb"), "select country, orders, windowed from checked order by 1");
    assert_eq!(rows.len(), 5, "{rows:?}");
    for r in &rows {
        assert_eq!(r[1], r[2], "the totals read from the topic are the windows' sums: {rows:?}");
    }
    let o = weir(dir.path(), &["log", "describe", "revenue_per_window"]);
    assert!(o.status.success(), "{}", text(&o));
    // A model cannot ref a job that writes a topic.
    std::fs::write(dir.path().join("models/wrong.sql"), "select * from {{ ref('per_window') }}\n").unwrap();
    let o = weir(dir.path(), &["ls"]);
    assert!(text(&o).contains("refers to stream job 'per_window', which writes topic 'revenue_per_window', not a table"), "{}", text(&o));
}

/// The same chain with the middle topic in Avro (`format: avro`): the first job registers
/// its output's schema in the project's registry and writes records in Confluent's wire
/// format; the second reads them back by the id each carries. `weir build` runs both.
#[test]
fn jobs_read_the_topics_other_jobs_write_in_each_registry_format() {
    for format in ["avro", "json_schema", "protobuf"] {
        // The orders too are in the format: `weir log produce` writes each JSON line as a
        // message of the schema of the topic's columns.
        let topics = format!(
            "{}  - name: revenue_per_window\n    partitions: 2\n    format: {format}\n{PER_WINDOW_COLUMNS}",
            TOPICS.replace("    key: country\n", &format!("    key: country\n    format: {format}\n"))
        );
        let dir = minimal(&[
            ("streams/shop.yml", topics.as_str()),
            ("streams/per_window.sql", &format!("{{{{ config(sink='topic', topic='revenue_per_window') }}}}\n{WINDOWS}")),
            ("streams/as_table.sql", WINDOWS),
            ("streams/totals.sql", TOTALS),
        ]);
        produce(dir.path(), 0, 3_000);
        let o = weir(dir.path(), &["build"]);
        assert!(o.status.success(), "{format}: {}", text(&o));
        let rows = query(
            &dir.path().join("t.duckdb"),
            "select t.country, t.orders, w.orders, round(t.revenue - w.revenue, 6) from totals t \
             join (select country, sum(orders) as orders, sum(revenue) as revenue from as_table group by country) w using (country) order by 1",
        );
        assert_eq!(rows.len(), 5, "{format}: {rows:?}");
        for r in &rows {
            assert_eq!((&r[1], r[3].as_str()), (&r[2], "0"), "{format}: the windows read back add up: {rows:?}");
        }
        let o = weir(dir.path(), &["registry", "subjects"]);
        for subject in ["orders-value", "revenue_per_window-value", "revenue_per_window-key"] {
            assert!(text(&o).contains(subject), "{format}: {subject}: {}", text(&o));
        }
        let o = weir(dir.path(), &["log", "consume", "revenue_per_window", "-n", "1"]);
        let line: serde_json::Value = serde_json::from_str(text(&o).lines().next().unwrap_or("")).unwrap_or_default();
        assert!(line["value"]["orders"].is_i64() && line["value"]["window_start"].is_string(), "{format}: {}", text(&o));
        // A value that does not fit its column stops the produce at its line, naming it.
        std::fs::write(dir.path().join("bad.jsonl"), "{\"order_id\": 1, \"country\": \"DE\", \"amount\": \"lots\"}\n").unwrap();
        let o = weir(dir.path(), &["log", "produce", "orders", "-f", "bad.jsonl"]);
        assert!(!o.status.success() && text(&o).contains("bad.jsonl:1: amount: expected double, got \"lots\""), "{format}: {}", text(&o));
    }
}

/// CSV topics: a file with a header (columns in another order than declared) produced into
/// one, lines read by the declared order, a field that does not fit its column rejected
/// with the reason, and a job's results written as lines another job reads back.
#[test]
fn csv_topics_are_read_by_their_columns_order_and_written_as_lines() {
    let topics = format!(
        "{}  - name: revenue_per_window\n    partitions: 2\n    format: csv\n{PER_WINDOW_COLUMNS}",
        TOPICS.replace("    key: country\n", "    key: country\n    format: csv\n")
    );
    let dir = minimal(&[
        ("streams/shop.yml", topics.as_str()),
        ("streams/per_window.sql", &format!("{{{{ config(sink='topic', topic='revenue_per_window') }}}}\n{WINDOWS}")),
        ("streams/as_table.sql", WINDOWS),
        ("streams/totals.sql", TOTALS),
    ]);
    let mut file = String::from("amount,order_id,ordered_at,country\n");
    for line in orders(0, 3_000).lines() {
        let o: serde_json::Value = serde_json::from_str(line).unwrap();
        file.push_str(&format!(
            "{},{},{},{}\n",
            o["amount"],
            o["order_id"],
            o["ordered_at"].as_str().unwrap(),
            o["country"].as_str().unwrap()
        ));
    }
    std::fs::write(dir.path().join("orders.csv"), file).unwrap();
    let o = weir(dir.path(), &["log", "produce", "orders", "-f", "orders.csv"]);
    assert!(o.status.success() && text(&o).contains("Produced 3000 events"), "{}", text(&o));
    std::fs::write(dir.path().join("bad.csv"), "9999,DE,lots,2026-12-01T10:00:00Z\n").unwrap();
    let o = weir(dir.path(), &["log", "produce", "orders", "--format", "raw", "-f", "bad.csv"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = weir(dir.path(), &["log", "consume", "orders", "-n", "1"]);
    let line: serde_json::Value = serde_json::from_str(text(&o).lines().next().unwrap_or("")).unwrap_or_default();
    let fields: Vec<&str> = line["value"].as_str().unwrap_or("").split(',').collect();
    assert!(fields.len() == 4 && fields[1].len() == 2 && fields[3].starts_with("2026-"), "lines in the declared order: {}", text(&o));

    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    let db = dir.path().join("t.duckdb");
    let rows = query(
        &db,
        "select t.country, t.orders, w.orders, round(t.revenue - w.revenue, 6) from totals t \
         join (select country, sum(orders) as orders, sum(revenue) as revenue from as_table group by country) w using (country) order by 1",
    );
    assert_eq!(rows.len(), 5, "{rows:?}");
    for r in &rows {
        assert_eq!((&r[1], r[3].as_str()), (&r[2], "0"), "the windows read back from CSV add up: {rows:?}");
    }
    let rejected = query(&db, "select count(*), min(reason) from _weir_rejected_events where job = 'as_table'");
    assert_eq!(rejected[0][0], "1", "{rejected:?}");
    assert!(rejected[0][1].contains("amount: expected double, got 'lots'"), "{rejected:?}");
}

/// A load publishes a folder of CSV files to a topic (`to: topic`) in the topic's format and
/// a job reads it; `weir build` runs the load first. A file already loaded is not published
/// again, and a row that does not fit the topic's columns is rejected with the reason.
#[test]
fn loads_publish_files_to_a_topic_a_job_reads() {
    const RUNNING: &str = "select country, count(*) as orders, sum(amount) as revenue\nfrom {{ stream('orders') }}\ngroup by country\n";
    let csv = |from: usize, n: usize| {
        let mut file = String::from("order_id,country,amount,ordered_at,note\n");
        for line in orders(from, n).lines() {
            let o: serde_json::Value = serde_json::from_str(line).unwrap();
            file.push_str(&format!(
                "{},{},{},{},-\n",
                o["order_id"],
                o["country"].as_str().unwrap(),
                o["amount"],
                o["ordered_at"].as_str().unwrap()
            ));
        }
        file
    };
    for format in ["json", "avro", "csv", "protobuf"] {
        let topics = TOPICS.replace("    key: country\n", &format!("    key: country\n    format: {format}\n"));
        let dir = minimal(&[
            ("streams/shop.yml", topics.as_str()),
            ("streams/totals.sql", RUNNING),
            (
                "loads/shop.yml",
                "loads:\n  - name: orders_in\n    source: {kind: csv, path: 'drop/*.csv'}\n    to: topic\n    topic: orders\n",
            ),
            ("drop/a.csv", &format!("{}9999,DE,lots,2026-12-01T10:00:00Z,-\n", csv(0, 1_000))),
        ]);
        let o = weir(dir.path(), &["build"]);
        assert!(o.status.success(), "{format}: {}", text(&o));
        assert!(text(&o).contains("1000 events into topic 'orders'") && text(&o).contains("1 rejected"), "{format}: {}", text(&o));
        let db = dir.path().join("t.duckdb");
        let sums = "select sum(orders), cast(round(sum(revenue), 1) as varchar) from totals";
        let expected: f64 = (0..1_000).map(|i| (i % 17) as f64 + 0.5).sum();
        assert_eq!(query(&db, sums), [["1000".to_string(), format!("{expected:.1}")]], "{format}");
        let rejected = query(&db, "select reason from raw._weir_rejected");
        assert_eq!(rejected, [["column amount: 'lots' is not a double"]], "{format}");

        // Built again, nothing is published twice; a new file is published alone.
        assert!(weir(dir.path(), &["build"]).status.success());
        assert_eq!(query(&db, "select sum(orders) from totals"), [["1000"]], "{format}");
        std::fs::write(dir.path().join("drop/b.csv"), csv(1_000, 500)).unwrap();
        let o = weir(dir.path(), &["build"]);
        assert!(o.status.success() && text(&o).contains("500 events into topic 'orders'"), "{format}: {}", text(&o));
        assert_eq!(query(&db, "select sum(orders) from totals"), [["1500"]], "{format}");
        let o = weir(dir.path(), &["log", "consume", "orders", "-n", "1"]);
        let line: serde_json::Value = serde_json::from_str(text(&o).lines().next().unwrap_or("")).unwrap_or_default();
        assert!(["DE", "FR", "NL", "IT", "ES"].contains(&line["key"].as_str().unwrap_or("")), "{format}: keyed by country: {}", text(&o));
    }
}

/// On a target named `prod`, jobs do not register their sink topics' schemas: one whose
/// schema is not registered stops, saying which subject lacks it; a topic's
/// `auto_register: true` (or the target's `auto_register_schemas`) lets it register.
#[test]
fn production_targets_write_only_schemas_registered_before() {
    let topics = format!("{TOPICS}  - name: revenue_per_window\n    partitions: 2\n    format: protobuf\n");
    let dir = minimal(&[
        ("streams/shop.yml", topics.as_str()),
        ("streams/per_window.sql", &format!("{{{{ config(sink='topic', topic='revenue_per_window') }}}}\n{WINDOWS}")),
        ("profiles.yml", "t:\n  target: prod\n  outputs:\n    prod:\n      type: duckdb\n      path: t.duckdb\n"),
    ]);
    produce(dir.path(), 0, 300);
    let o = weir(dir.path(), &["stream", "run", "per_window", "--drain"]);
    let said = text(&o);
    assert!(
        !o.status.success() && said.contains("subject 'revenue_per_window-value'") && said.contains("auto-registration is off"),
        "{said}"
    );
    assert!(!text(&weir(dir.path(), &["registry", "subjects"])).contains("revenue_per_window"), "nothing was registered");
    std::fs::write(dir.path().join("streams/shop.yml"), format!("{topics}    auto_register: true\n")).unwrap();
    let o = weir(dir.path(), &["stream", "run", "per_window", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    // Registered now, the schema is found with registration off again.
    std::fs::write(dir.path().join("streams/shop.yml"), &topics).unwrap();
    let o = weir(dir.path(), &["stream", "run", "per_window", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
}

const PAYMENTS: &str = "  - name: payments\n    partitions: 2\n    key: order_id\n    \
    columns: {payment_id: bigint, order_id: bigint, paid_at: timestamp}\n    \
    watermark: paid_at - interval '3 seconds'\n";

const PAID: &str = "{{ config(checkpoint_interval='200ms') }}\n\
    select o.order_id, o.country, p.payment_id, p.paid_at\n\
    from {{ stream('orders') }} o join {{ stream('payments') }} p\n\
    on o.order_id = p.order_id and p.paid_at between o.ordered_at and o.ordered_at + interval '2 seconds'\n";

/// `n` orders from `from` on, and their payments: three in four orders paid, up to 2.4 s
/// after (those after 2 s meet nothing), a few paid twice.
fn orders_and_payments(dir: &Path, from: usize, n: usize) {
    produce(dir, from, n);
    let mut out = String::new();
    for i in (from..from + n).filter(|i| i % 4 != 0) {
        let mut ms = 1_796_205_600_000i64 + i as i64 * 25 + (i as i64 % 9) * 300;
        if i % 500 == 499 && i >= 2_000 {
            ms -= 120_000;
        }
        let at = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        out.push_str(&format!("{{\"payment_id\": {i}, \"order_id\": {i}, \"paid_at\": \"{at}\"}}\n"));
        if i % 7 == 0 {
            out.push_str(&format!("{{\"payment_id\": {}, \"order_id\": {i}, \"paid_at\": \"{at}\"}}\n", 100_000 + i));
        }
    }
    std::fs::write(dir.join("payments.jsonl"), out).unwrap();
    let o = weir(dir, &["log", "produce", "payments", "-f", "payments.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn kill_9_at_random_moments_pairs_two_streams_once() {
    let topics = format!("{TOPICS}{PAYMENTS}");
    let join_project = || minimal(&[("streams/shop.yml", topics.as_str()), ("streams/paid.sql", PAID)]);
    let pairs = |dir: &Path| query(&dir.join("t.duckdb"), "select order_id, country, payment_id, paid_at from paid order by 1, 3");
    let once = join_project();
    orders_and_payments(once.path(), 0, 9_000);
    let o = weir(once.path(), &["stream", "run", "paid", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    let expected = pairs(once.path());
    assert!(expected.len() > 5_000, "{} pairs", expected.len());
    let o = weir(once.path(), &["stream", "list"]);
    assert!(text(&o).contains("orders + payments") && text(&o).contains("joined with payments from 0s to 2s"), "{}", text(&o));

    let killed = join_project();
    let seed = killed_at_random_with(killed.path(), 6, "paid", &orders_and_payments);
    let o = weir(killed.path(), &["stream", "run", "paid", "--drain"]);
    assert!(o.status.success(), "seed {seed}: {}", text(&o));
    assert_eq!(pairs(killed.path()), expected, "seed {seed}: each pair once");
    let o = weir(killed.path(), &["stream", "status", "paid"]);
    assert!(text(&o).contains("payments partition 1: offset") && text(&o).contains(" events held, "), "{}", text(&o));
}

/// Every record of a topic as (key, value) text, by partition and offset.
fn records(dir: &Path, topic: &str) -> Vec<(String, String)> {
    let o = weir(dir, &["log", "consume", topic]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (r["key"].to_string(), r["value"].to_string())
        })
        .collect()
}

#[test]
fn kill_9_at_random_moments_writes_a_topic_sinks_records_once() {
    let job = JOB.replace("{{ config(", "{{ config(sink='topic', topic='revenue_out', ");
    let topic_project = || minimal(&[("streams/shop.yml", TOPICS), ("streams/revenue.sql", job.as_str())]);
    let once = topic_project();
    produce(once.path(), 0, 9_000);
    let o = weir(once.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success(), "{}", text(&o));
    // The last record per key (country and window) is the window's result.
    let last = |records: Vec<(String, String)>| -> std::collections::BTreeMap<String, String> { records.into_iter().collect() };
    let expected = last(records(once.path(), "revenue_out"));
    assert!(expected.len() > 100, "{} windows", expected.len());

    let killed = topic_project();
    let seed = killed_at_random(killed.path(), 6);
    let o = weir(killed.path(), &["stream", "run", "revenue", "--drain"]);
    assert!(o.status.success() && text(&o).contains("9000 read = "), "seed {seed}: {}", text(&o));
    let got = records(killed.path(), "revenue_out");
    // Written once: no record twice (an update of a window changes its figures).
    let mut seen = std::collections::BTreeSet::new();
    for r in &got {
        assert!(seen.insert(r.clone()), "seed {seed}: written twice: {r:?}");
    }
    assert_eq!(last(got), expected, "seed {seed}");
}

#[test]
fn a_job_joining_a_model_runs_after_it_and_names_a_missing_one() {
    let job = "select r.region, window_start, window_end, count(*) as orders\n\
        from tumble({{ stream('orders') }}, ordered_at, interval '2 seconds') o\n\
        join {{ ref('regions') }} r on o.country = r.code\n\
        group by r.region, window_start, window_end\n";
    let dir = minimal(&[
        ("streams/shop.yml", TOPICS),
        ("streams/by_region.sql", job),
        ("models/regions.sql", "select * from (values ('DE', 'core'), ('FR', 'core'), ('NL', 'benelux')) as t(code, region)\n"),
    ]);
    produce(dir.path(), 0, 2_000);
    let o = weir(dir.path(), &["ls", "--select", "+by_region", "--output", "name"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().collect::<Vec<_>>(), ["regions", "by_region"], "{}", text(&o));
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = query(&dir.path().join("t.duckdb"), "select region, sum(orders)::bigint from by_region group by 1 order by 1");
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["benelux", "core"], "{rows:?}");
    let o = weir(dir.path(), &["stream", "status", "by_region"]);
    assert!(text(&o).contains("2000 read = "), "{}", text(&o));

    std::fs::write(dir.path().join("streams/by_region.sql"), job.replace("ref('regions')", "ref('region')")).unwrap();
    let o = weir(dir.path(), &["stream", "list"]);
    assert!(
        !o.status.success() && text(&o).contains("streams/by_region.sql:3:") && text(&o).contains("did you mean 'regions'"),
        "{}",
        text(&o)
    );
}
