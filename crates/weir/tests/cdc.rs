//! Change data capture from the command line, against a private PostgreSQL with
//! `wal_level=logical`: a `mode: cdc` load is a node of the graph (`weir build` snapshots,
//! then catches its mirrors up before the models on them), `weir cdc status` reports the
//! slot, `weir cdc drop` removes what Weir made, and setup mistakes say what to change.

#[allow(dead_code)]
#[path = "../../weir-log/tests/support/kafka.rs"]
mod broker;
mod common;
#[path = "../../weir-cdc/tests/support/mod.rs"]
mod support;

use std::path::Path;

use common::{Rng, minimal, query, text, weir};
use support::PrivatePostgres;

fn loads(port: u16, extra: &str) -> String {
    format!(
        "loads:\n  - name: shop\n    source:\n      kind: postgres\n      url: postgresql://postgres@127.0.0.1:{port}/postgres\n      \
         mode: cdc\n      tables: [public.orders, crm.customers]\n    destination: raw_shop\n{extra}"
    )
}

const SOURCES: &str = "version: 2\nsources:\n  - name: raw_shop\n    tables:\n      - name: orders\n      - name: crm_customers\n";

const MODEL: &str = "select c.name, count(*) as orders, sum(o.amount) as revenue\n\
    from {{ source('raw_shop', 'orders') }} o join {{ source('raw_shop', 'crm_customers') }} c on c.id = o.customer_id\n\
    where not coalesce(o._weir_deleted, false)\n\
    group by c.name\n";

fn project(port: u16) -> tempfile::TempDir {
    minimal(&[("loads/shop.yml", &loads(port, "    deletes: soft\n")), ("models/sources.yml", SOURCES), ("models/revenue.sql", MODEL)])
}

fn source_db(pg: &PrivatePostgres) -> postgres::Client {
    let mut db = pg.connect();
    db.batch_execute(
        "create schema crm;
         create table crm.customers (id int primary key, name text);
         create table orders (id int primary key, customer_id int, amount numeric(10,2), note text);
         insert into crm.customers values (1, 'Ada'), (2, 'Grace');
         insert into orders select g, 1 + g % 2, g, 'first' from generate_series(1, 10) g;",
    )
    .unwrap();
    db
}

fn revenue(dir: &Path) -> Vec<Vec<String>> {
    query(&dir.join("t.duckdb"), "select name, orders, revenue from revenue order by name")
}

#[test]
fn build_snapshots_the_source_then_catches_its_mirrors_up_before_the_models_on_them() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let dir = project(pg.port);

    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("snapshot of 12 row(s)"), "{out}");
    assert_eq!(revenue(dir.path()), vec![vec!["Ada", "5", "30.00"], vec!["Grace", "5", "25.00"]]);
    let made: i64 = db.query_one("select count(*) from pg_publication where pubname = 'weir_shop'", &[]).unwrap().get(0);
    assert_eq!(made, 1, "Weir made the publication");

    // Changes while nothing follows: an update, a delete (soft: the row stays, marked), a
    // key moved, and a column added at the source.
    db.batch_execute(
        "update orders set amount = amount * 10 where id = 2;
         delete from orders where id = 3;
         update orders set id = 100 where id = 4;
         alter table crm.customers add column tier text;
         insert into crm.customers values (3, 'Edsger', 'gold');
         insert into orders values (11, 3, 7.5, 'new');",
    )
    .unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("snapshot of"), "{}", text(&o));
    assert_eq!(revenue(dir.path()), vec![vec!["Ada", "5", "48.00"], vec!["Edsger", "1", "7.50"], vec!["Grace", "4", "22.00"]]);
    let mirror = |sql: &str| query(&dir.path().join("t.duckdb"), sql);
    // A moved key leaves its old row behind, deleted (Debezium too sends a delete for it).
    assert_eq!(
        mirror("select id, _weir_deleted from raw_shop.orders where id in (3, 4, 100) order by id"),
        vec![vec!["3", "true"], vec!["4", "true"], vec!["100", "false"]]
    );
    assert_eq!(mirror("select tier from raw_shop.crm_customers where id = 3"), vec![vec!["gold"]]);
    assert_eq!(mirror("select count(*) from raw_shop.orders where _weir_loaded_at is null"), vec![vec!["0"]]);

    // Nothing new: the catch-up finds the mirrors where the server is and stops.
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success() && text(&o).contains("0 upserted, 0 deleted"), "{}", text(&o));

    let o = weir(dir.path(), &["cdc", "status", "shop"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("shop (stopped)") && out.contains("retained WAL"), "{out}");
    let o = weir(dir.path(), &["--log-format", "json", "cdc", "status"]);
    let status: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
    assert_eq!((status["slot"].as_str(), status["lag_bytes"].as_i64()), (Some("weir_shop"), Some(0)), "{status}");
    assert_eq!(status["mirror_position"], status["confirmed"], "{status}");

    let o = weir(dir.path(), &["cdc", "drop", "shop"]);
    assert!(o.status.success() && text(&o).contains("Dropped slot 'weir_shop', publication 'weir_shop'"), "{}", text(&o));
    let left: i64 =
        db.query_one("select (select count(*) from pg_replication_slots) + (select count(*) from pg_publication)", &[]).unwrap().get(0);
    assert_eq!(left, 0, "the slot and the publication are gone");

    // Dropped, the next build starts over with a new snapshot, over the mirrors as they are.
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success() && text(&o).contains("snapshot of 13 row(s)"), "{}", text(&o));
    assert_eq!(mirror("select count(*) from raw_shop.orders where not _weir_deleted"), vec![vec!["10"]]);
    assert_eq!(mirror("select count(*) from raw_shop.orders where _weir_deleted"), vec![vec!["2"]]);
}

#[test]
fn cdc_snapshot_reads_a_table_again_and_a_table_added_to_the_load_is_filled_by_the_next_load() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let dir = minimal(&[("loads/shop.yml", &loads(pg.port, ""))]);
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success() && text(&o).contains("snapshot of 12 row(s)"), "{}", text(&o));
    let mirror = |sql: &str| query(&dir.path().join("t.duckdb"), sql);

    // The mirror drifts; `weir cdc snapshot` (no follower running) follows the source until
    // the table is read again, changes and all.
    mirror("delete from raw_shop.orders where id > 5");
    mirror("update raw_shop.orders set note = 'stale'");
    db.batch_execute("update orders set note = 'changed' where id = 9").unwrap();
    let o = weir(dir.path(), &["cdc", "snapshot", "shop", "orders"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("Read 10 row(s) of public.orders again"), "{out}");
    let notes = mirror("select note, count(*) from raw_shop.orders group by note order by note");
    assert_eq!(notes, vec![vec!["changed", "1"], vec!["first", "9"]]);
    let requests = dir.path().join(".weir/cdc/requests/shop");
    assert_eq!(std::fs::read_dir(&requests).unwrap().count(), 0, "the request was taken");

    let o = weir(dir.path(), &["cdc", "snapshot", "shop", "public.items"]);
    assert!(
        !o.status.success() && text(&o).contains("'shop' does not capture public.items: its tables are public.orders, crm.customers"),
        "{}",
        text(&o)
    );

    // A request left while nothing follows waits in `weir cdc status`, and the next follower
    // takes it.
    std::fs::write(requests.join("1-1.json"), r#"{"tables": ["crm.customers"]}"#).unwrap();
    let o = weir(dir.path(), &["cdc", "status", "shop"]);
    assert!(text(&o).contains("incremental snapshot asked for, not yet taken by a follower: crm.customers"), "{}", text(&o));

    // A table joins the load's tables: the next load fills its mirror with the rows it had,
    // without a new snapshot of the others.
    db.batch_execute(
        "create table items (sku text primary key, qty int); insert into items select 'sku-' || g, g from generate_series(1, 25) g",
    )
    .unwrap();
    std::fs::write(dir.path().join("loads/shop.yml"), loads(pg.port, "").replace("crm.customers]", "crm.customers, items]")).unwrap();
    let o = weir(dir.path(), &["load", "shop"]);
    let out = text(&o);
    assert!(o.status.success() && !out.contains("snapshot of") && out.contains("incremental snapshot done, 27 row(s) read"), "{out}");
    assert_eq!(mirror("select count(*), sum(qty) from raw_shop.items"), vec![vec!["25", "325"]]);
    assert_eq!(std::fs::read_dir(&requests).unwrap().count(), 0);
}

#[test]
fn cdc_snapshot_leaves_the_request_to_a_running_follower() {
    let pg = PrivatePostgres::start(&[]);
    let _db = source_db(&pg);
    let dir = minimal(&[("loads/shop.yml", &loads(pg.port, ""))]);
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    query(&dir.path().join("t.duckdb"), "delete from raw_shop.orders where id > 3");
    let mut follower = common::weir_command(dir.path())
        .args(["cdc", "run", "shop", "--batch-wait-ms", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        let o = weir(dir.path(), &["--log-format", "json", "cdc", "status", "shop"]);
        serde_json::from_str(text(&o).trim()).unwrap_or_default()
    };
    let started = std::time::Instant::now();
    while status()["active_pid"].is_null() {
        assert!(started.elapsed().as_secs() < 30, "the follower did not start");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let o = weir(dir.path(), &["cdc", "snapshot", "shop", "public.orders"]);
    assert!(
        o.status.success() && text(&o).contains("The follower of 'shop' (running elsewhere) reads public.orders again"),
        "{}",
        text(&o)
    );
    // The follower reads the table while it runs: the mirror has every row again.
    let started = std::time::Instant::now();
    loop {
        let s = status();
        let snapshots = &s["incremental_snapshots"];
        let idle =
            snapshots["under_way"].as_array().is_some_and(|u| u.is_empty()) && snapshots["asked"].as_array().is_some_and(|a| a.is_empty());
        if idle {
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "the snapshot did not end: {s}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(query(&dir.path().join("t.duckdb"), "select count(*) from raw_shop.orders"), vec![vec!["10"]]);
}

/// A stream job over the change events follows the source table: `weir build` catches the
/// mirrors and the events up, then the job, and the job's table is the query over the mirror.
#[test]
fn a_stream_job_over_the_change_events_follows_the_source_table() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let job = "select customer_id, count(*) as orders, sum(amount) as revenue\n\
               from {{ cdc('shop', 'public.orders') }}\nwhere note <> 'test'\ngroup by customer_id\n";
    let dir = minimal(&[("loads/shop.yml", &loads(pg.port, "    events: true\n")), ("streams/by_customer.sql", job)]);
    let o = weir(dir.path(), &["cdc", "list"]);
    assert!(o.status.success() && text(&o).contains("topic shop.public.orders"), "{}", text(&o));
    let by_customer = || query(&dir.path().join("t.duckdb"), "select customer_id, orders, revenue from by_customer order by 1");
    let mirror = || {
        query(
            &dir.path().join("t.duckdb"),
            "select customer_id, count(*), cast(sum(amount) as double) from raw_shop.orders where note <> 'test' group by 1 order by 1",
        )
    };
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(by_customer(), vec![vec!["1", "5", "30"], vec!["2", "5", "25"]]);

    // An update moving an order to another customer, one leaving the job's `where`, a delete
    // that empties a customer, a new one.
    db.batch_execute(
        "update orders set customer_id = 2 where id = 2;
         update orders set note = 'test' where id = 3;
         delete from orders where customer_id = 1;
         insert into orders values (11, 3, 7.5, 'new');",
    )
    .unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(by_customer(), mirror());
    assert_eq!(by_customer(), vec![vec!["2", "5", "24"], vec!["3", "1", "7.5"]]);

    // The events themselves, in Debezium's envelope.
    let o = weir(dir.path(), &["log", "consume", "shop.public.orders"]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].clone())
        .collect();
    let ops: String = events.iter().map(|e| e["op"].as_str().unwrap_or("?")).collect();
    assert_eq!(ops, "rrrrrrrrrruuddddc", "{events:?}");
    assert_eq!(events[10]["after"]["customer_id"], 2);
    assert_eq!((events[16]["after"]["amount"].as_str(), events[16]["source"]["table"].as_str()), (Some("7.50"), Some("orders")));

    // A job over a load that publishes nothing is named with its place.
    std::fs::write(dir.path().join("streams/by_customer.sql"), job.replace("'shop'", "'shop2'")).unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(
        !o.status.success() && text(&o).contains("streams/by_customer.sql:2:13: cdc('shop2', ...): no load named 'shop2'"),
        "{}",
        text(&o)
    );
}

/// A changelog topic declared `format: avro` holds Avro messages under schemas made from the
/// table (Debezium's envelope under `<topic>-value`, the key record under `<topic>-key`),
/// which a stream job and `weir log consume` read back as the same envelope. With
/// registration off the follower stops naming the subject; a column added at the source is
/// the subject's next version.
#[test]
fn change_events_in_avro_follow_the_table_through_the_registry() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let job = "select customer_id, count(*) as orders, sum(amount) as revenue\n\
               from {{ cdc('shop', 'public.orders') }}\ngroup by customer_id\n";
    let topics = "topics:\n  - name: shop.public.orders\n    format: avro\n";
    let dir = minimal(&[
        ("loads/shop.yml", &loads(pg.port, "    events: true\n")),
        ("streams/shop.yml", &format!("{topics}    auto_register: false\n")),
        ("streams/by_customer.sql", job),
    ]);
    let o = weir(dir.path(), &["build"]);
    assert!(!o.status.success() && text(&o).contains("'shop.public.orders-value'"), "registration off: {}", text(&o));
    std::fs::write(dir.path().join("streams/shop.yml"), topics).unwrap();
    let o = weir(dir.path(), &["build", "--full-refresh"]);
    assert!(o.status.success(), "{}", text(&o));
    let by_customer = || query(&dir.path().join("t.duckdb"), "select customer_id, orders, revenue from by_customer order by 1");
    assert_eq!(by_customer(), vec![vec!["1", "5", "30"], vec!["2", "5", "25"]]);
    let o = weir(dir.path(), &["log", "consume", "shop.public.orders", "-n", "1"]);
    let first: serde_json::Value = serde_json::from_str(text(&o).lines().next().unwrap_or("")).unwrap_or_default();
    assert!(first.get("error").is_none(), "read as Avro messages: {}", text(&o));
    assert_eq!(first["key"], serde_json::json!({"id": 1}), "{}", text(&o));
    assert_eq!((first["value"]["op"].as_str(), first["value"]["after"]["amount"].as_str()), (Some("r"), Some("1.00")), "{}", text(&o));
    assert_eq!(first["value"]["source"]["connector"], "postgresql");
    let o = weir(dir.path(), &["registry", "show", "shop.public.orders-value"]);
    assert!(text(&o).contains("Envelope") && text(&o).contains("io.debezium.connector.postgresql"), "{}", text(&o));

    // A new column: the subject's next version, events read on.
    db.batch_execute("alter table orders add column region text; insert into orders values (11, 1, 5, 'x', 'EU');").unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(by_customer(), vec![vec!["1", "6", "35"], vec!["2", "5", "25"]]);
    let o = weir(dir.path(), &["log", "consume", "shop.public.orders"]);
    let ops: String = text(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["value"]["op"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ops, "rrrrrrrrrrc", "a follower starting again reads where the Avro events stand: {}", text(&o));
    let o = weir(dir.path(), &["--log-format", "json", "registry", "show", "shop.public.orders-value"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(shown["version"], 2, "{}", text(&o));
}

#[test]
fn change_events_go_to_kafka_and_a_job_reads_them_there() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let kafka = broker::Broker::start();
    let job = "select customer_id, count(*) as orders, sum(amount) as revenue\n\
               from {{ cdc('shop', 'public.orders') }}\ngroup by customer_id\n";
    // One line per topic moves the change events to the cluster.
    let topics = "topics:\n  - name: shop.public.orders\n    log: kafka\n  - name: shop.crm.customers\n    log: kafka\n";
    let weir_yml = format!("kafka:\n  bootstrap_servers: {}\n  timeout: 20s\n", kafka.servers());
    let dir = minimal(&[
        ("loads/shop.yml", &loads(pg.port, "    events: true\n")),
        ("streams/by_customer.sql", job),
        ("streams/topics.yml", topics),
        ("weir.yml", &weir_yml),
    ]);
    let by_customer = || query(&dir.path().join("t.duckdb"), "select customer_id, orders, revenue from by_customer order by 1");
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(by_customer(), vec![vec!["1", "5", "30"], vec!["2", "5", "25"]]);
    db.batch_execute(
        "update orders set customer_id = 2 where id = 2; delete from orders where id = 1; insert into orders values (11, 3, 7.5, 'new');",
    )
    .unwrap();
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(by_customer(), vec![vec!["1", "4", "28"], vec!["2", "5", "26"], vec!["3", "1", "7.5"]]);
    // On the broker, in Debezium's envelope, for any read_committed consumer; nothing on the
    // embedded log.
    let seen = kafka.python(&format!("{}\nread('shop.public.orders')\n", broker::READ_COMMITTED));
    let ops: String = seen
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l.splitn(4, ' ').nth(3).unwrap()).unwrap()["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, "rrrrrrrrrrudc", "{seen}");
    assert!(!dir.path().join(".weir/log/topics/shop.public.orders").exists());
}

/// What a job over change events needs of its load is named with the place in the job,
/// before anything connects.
#[test]
fn a_job_over_change_events_names_what_its_load_lacks() {
    let job = "select status, count(*) as n\nfrom {{ cdc('shop', 'public.orders') }}\ngroup by status\n";
    let ls = |load: &str| {
        let dir = minimal(&[("loads/shop.yml", load), ("streams/j.sql", job)]);
        text(&weir(dir.path(), &["ls"]))
    };
    let out = ls(&loads(5432, ""));
    assert!(out.contains("streams/j.sql:2:13: cdc('shop', ...): load 'shop' publishes no change events: add `events: true`"), "{out}");
    let out = ls(&loads(5432, "    events: true\n").replace("tables: [public.orders, crm.customers]", "tables: [crm.customers]"));
    assert!(out.contains("'shop' captures crm.customers, so no topic 'shop.public.orders'"), "{out}");
    let out = ls("loads:\n  - name: shop\n    source: {kind: csv, path: x.csv}\n");
    assert!(out.contains("load 'shop' is not a cdc source"), "{out}");
    let out = ls(&loads(5432, "    events: true\n"));
    assert!(out.contains("stream:t.j"), "{out}");
}

#[test]
fn setup_mistakes_say_what_to_change() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    db.batch_execute("alter table orders drop constraint orders_pkey").unwrap();
    let dir = minimal(&[("loads/shop.yml", &loads(pg.port, ""))]);
    let o = weir(dir.path(), &["load", "shop"]);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("public.orders has no primary key") && out.contains("REPLICA IDENTITY FULL"), "{out}");

    // REPLICA IDENTITY FULL: every column is the key.
    db.batch_execute("alter table orders replica identity full; delete from orders where id > 2").unwrap();
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    db.batch_execute("update orders set note = 'changed' where id = 1").unwrap();
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        query(&dir.path().join("t.duckdb"), "select id, note from raw_shop.orders order by id"),
        vec![vec!["1", "changed"], vec!["2", "first"]]
    );

    // A publication of the user's that lacks a table is not changed: the error says how.
    let user = minimal(&[("loads/shop.yml", &loads(pg.port, "").replace("mode: cdc", "mode: cdc\n      publication: mine"))]);
    db.batch_execute("create publication mine for table orders").unwrap();
    let o = weir(user.path(), &["load", "shop"]);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("ALTER PUBLICATION \"mine\" ADD TABLE crm.customers"), "{out}");

    let o = weir(dir.path(), &["cdc", "run", "nope"]);
    assert!(!o.status.success() && text(&o).contains("no cdc source named 'nope' in loads/*.yml (cdc sources: shop)"), "{}", text(&o));
}

/// A small deterministic generator (xorshift), so a failing run can be replayed by its seed.
/// One random transaction: inserts, updates (some moving a key, some leaving the large
/// value unchanged), deletes; some roll back, some are large enough to be streamed before
/// their commit. (No truncate: one would hide every change lost before it.)
fn random_transaction(db: &mut postgres::Client, rng: &mut Rng, next_id: &mut i64) {
    let mut sql = String::from("begin;");
    let statements = 1 + rng.below(6);
    for _ in 0..statements {
        let id = rng.below(400) as i64;
        match rng.below(20) {
            0..=5 => {
                sql.push_str(&format!(
                    "insert into items values ({next}, {n}, repeat('p{n}', 1500)) on conflict (id) do nothing;",
                    next = *next_id,
                    n = rng.below(1000)
                ));
                *next_id += 1;
            }
            6..=10 => sql.push_str(&format!("update items set n = n + 1 where id between {id} and {};", id + 20)),
            11 => sql.push_str(&format!("update items set payload = repeat('q', 3000 + {id}) where id = {id};")),
            12 => sql.push_str(&format!("update items set id = id + 100000 where id = {id};")),
            13..=16 => sql.push_str(&format!("delete from items where id between {id} and {};", id + 3)),
            17 => {
                sql.push_str(&format!(
                    "insert into items select g, g % 7, repeat('b', 200) from generate_series({next}, {}) g;",
                    *next_id + 2000,
                    next = *next_id
                ));
                *next_id += 2001;
            }
            18 => sql.push_str("savepoint s; delete from items where n % 2 = 0; rollback to savepoint s;"),
            _ => sql.push_str(&format!("update items set n = -n where id = {id};")),
        }
    }
    sql.push_str(if rng.below(8) == 0 { "rollback;" } else { "commit;" });
    db.batch_execute(&sql).unwrap();
}

#[test]
fn a_follower_killed_at_random_moments_ends_with_the_mirror_equal_to_the_source() {
    // A small decoding memory streams large transactions while they are in progress.
    let pg = PrivatePostgres::start(&["logical_decoding_work_mem=64kB"]);
    let mut db = pg.connect();
    db.batch_execute(
        "create table items (id bigint primary key, n int, payload text);
         alter table items alter column payload set storage external;
         insert into items select g, g, repeat('s', 3000) from generate_series(1, 300) g;",
    )
    .unwrap();
    let file = format!(
        "loads:\n  - name: shop\n    source:\n      kind: postgres\n      url: postgresql://postgres@127.0.0.1:{}/postgres\n      \
         mode: cdc\n      tables: [items]\n      snapshot_chunk: 150\n    events: true\n",
        pg.port
    );
    let dir = minimal(&[("loads/shop.yml", &file)]);
    let seed = std::env::var("WEIR_CDC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cdc0_u64);
    let mut rng = Rng(seed);
    let mut next_id = 1_000_000i64;
    // Now and then the table is asked to be read again (an incremental snapshot, 150 rows a
    // chunk), so that kills land in the middle of those too.
    let requests = dir.path().join(".weir/cdc/requests/shop");
    common::follow_and_kill(dir.path(), &mut rng, 8, &mut |rng| {
        if rng.below(12) == 0 {
            weir_cdc::incremental::request(&requests, &["public.items".into()]).unwrap();
        }
        random_transaction(&mut db, rng, &mut next_id)
    });
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    let source: Vec<Vec<String>> = db
        .query("select id::text, n::text, md5(payload) from items order by items.id", &[])
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1), r.get(2)])
        .collect();
    let mirror = query(&dir.path().join("t.duckdb"), "select id, n, md5(payload) from raw.items order by id");
    common::assert_same_rows(seed, &source, &mirror);
    // Every change published once: the events replayed by key give the source again.
    let lengths: Vec<Vec<String>> = db
        .query("select id::text, n::text, length(payload)::text from items order by items.id", &[])
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1), r.get(2)])
        .collect();
    let mut replayed: Vec<Vec<String>> = common::replay(dir.path(), "shop.public.items")
        .values()
        .map(|a| vec![a["id"].to_string(), a["n"].to_string(), a["payload"].as_str().map_or(0, str::len).to_string()])
        .collect();
    replayed.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(0));
    common::assert_same_rows(seed, &lengths, &replayed);
    let events = weir(dir.path(), &["log", "consume", "shop.public.items"]);
    assert!(text(&events).contains(r#""snapshot":"incremental""#), "the table was read again along the way");
}

#[test]
fn weir_serve_follows_the_source_and_takes_turns_with_builds() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = source_db(&pg);
    let dir = minimal(&[
        ("loads/shop.yml", &loads(pg.port, "")),
        ("models/sources.yml", SOURCES),
        ("models/revenue.sql", &MODEL.replace("where not coalesce(o._weir_deleted, false)\n", "")),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = common::weir_command(dir.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("WEIR_API_TOKEN", "cdc-test-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let db_file = dir.path().join("t.duckdb");
    let mirrored = |sql: &str| -> Option<String> {
        if !db_file.exists() {
            return None;
        }
        query(&db_file, sql).first().and_then(|r| r.first().cloned())
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ok() {
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            assert!(std::time::Instant::now() < until, "waited a minute for {what}; the server said:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // The tables exist once the snapshot is in.
    wait("the snapshot", &|| {
        mirrored("select count(*) from information_schema.tables where table_name = '_weir_cdc_positions'").as_deref() == Some("1")
            && mirrored("select count(*) from raw_shop._weir_cdc_positions").as_deref() == Some("1")
    });
    db.batch_execute("insert into orders values (50, 2, 100, 'live'); delete from orders where id = 1;").unwrap();
    wait("the live changes", &|| {
        mirrored("select string_agg(cast(id as varchar), ',') from raw_shop.orders where id in (1, 50)").as_deref() == Some("50")
    });

    // A build in another process leaves the source to the server's follower and builds on
    // what the mirrors hold.
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK left to its running") && text(&o).contains("[RUNNING"), "{}", text(&o));
    assert_eq!(revenue(dir.path()), vec![vec!["Ada", "5", "30.00"], vec!["Grace", "5", "124.00"]]);

    let _ = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while serve.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < until, "weir serve did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
