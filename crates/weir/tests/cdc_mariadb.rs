//! Change data capture from MariaDB's binlog on the command line, against a private server
//! with the row binlog: a `mode: cdc` load on a `mariadb` source is a node of the graph like
//! PostgreSQL's, `weir cdc status` reports the binlog, and a follower killed with -9 at random
//! moments ends with its mirror equal to the source; `weir serve` shows the source following,
//! and a mart column is traced through the mirror to the source table.

mod common;
#[path = "../../weir-cdc/tests/support/mariadb.rs"]
mod mariadb;

use common::{Rng, Serve, minimal, query, text, wait, weir};
use mariadb::PrivateMariadb;
use mysql::prelude::Queryable;

fn loads(port: u16, tables: &str, extra: &str) -> String {
    format!(
        "loads:\n  - name: shop\n    source:\n      kind: mariadb\n      url: mysql://root@127.0.0.1:{port}/shop\n      \
         mode: cdc\n      tables: [{tables}]\n    destination: raw_shop\n{extra}"
    )
}

const SOURCES: &str = "version: 2\nsources:\n  - name: raw_shop\n    tables:\n      - name: orders\n      - name: crm_customers\n";

const MODEL: &str = "select c.name, count(*) as orders, sum(o.amount) as revenue\n\
    from {{ source('raw_shop', 'orders') }} o join {{ source('raw_shop', 'crm_customers') }} c on c.id = o.customer_id\n\
    where not coalesce(o._weir_deleted, false)\n\
    group by c.name\n";

/// The shop's tables on the source (customers in a schema of their own, and orders), and a
/// project following them into mirrors with a model over both.
fn shop(c: &mut mysql::Conn, port: u16) -> tempfile::TempDir {
    for sql in [
        "create database crm",
        "create table crm.customers (id int primary key, name varchar(20))",
        "create table orders (id int primary key, customer_id int, amount decimal(10,2), note text)",
        "insert into crm.customers values (1, 'Ada'), (2, 'Grace')",
        "insert into orders select seq, 1 + seq % 2, seq, 'first' from seq_1_to_10",
    ] {
        c.query_drop(sql).unwrap();
    }
    minimal(&[
        ("loads/shop.yml", &loads(port, "orders, crm.customers", "    deletes: soft\n")),
        ("models/sources.yml", SOURCES),
        ("models/revenue.sql", MODEL),
    ])
}

#[test]
fn build_snapshots_a_mariadb_source_catches_it_up_and_status_reports_the_binlog() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    let dir = shop(&mut c, db.port);
    let revenue = || query(&dir.path().join("t.duckdb"), "select name, orders, revenue from revenue order by name");
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success() && text(&o).contains("snapshot of 12 row(s)"), "{}", text(&o));
    assert_eq!(revenue(), vec![vec!["Ada", "5", "30.00"], vec!["Grace", "5", "25.00"]]);

    for sql in [
        "update orders set amount = amount * 10 where id = 2",
        "delete from orders where id = 3",
        "update orders set id = 100 where id = 4",
        "alter table crm.customers add column tier varchar(10)",
        "insert into crm.customers values (3, 'Edsger', 'gold')",
        "insert into orders values (11, 3, 7.5, 'new')",
    ] {
        c.query_drop(sql).unwrap();
    }
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success() && !text(&o).contains("snapshot of"), "{}", text(&o));
    assert_eq!(revenue(), vec![vec!["Ada", "5", "48.00"], vec!["Edsger", "1", "7.50"], vec!["Grace", "4", "22.00"]]);
    let mirror = |sql: &str| query(&dir.path().join("t.duckdb"), sql);
    assert_eq!(
        mirror("select id, _weir_deleted from raw_shop.orders where id in (3, 4, 100) order by id"),
        vec![vec!["3", "true"], vec!["4", "true"], vec!["100", "false"]]
    );
    assert_eq!(mirror("select tier from raw_shop.crm_customers where id = 3"), vec![vec!["gold"]]);

    let o = weir(dir.path(), &["cdc", "status", "shop"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("shop (stopped)") && out.contains("binlog of mysql://root@127.0.0.1"), "{out}");
    let o = weir(dir.path(), &["--log-format", "json", "cdc", "status"]);
    let status: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
    assert_eq!((status["lag_bytes"].as_i64(), status["binlog_file_kept"].as_bool()), (Some(0), Some(true)), "{status}");
    assert!(status["mirror_position"].as_str().is_some_and(|p| p.contains(" gtid 0-1-")), "{status}");

    let o = weir(dir.path(), &["cdc", "drop", "shop"]);
    assert!(o.status.success() && text(&o).contains("Dropped the mirrors' position"), "{}", text(&o));
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success() && text(&o).contains("snapshot of 13 row(s)"), "{}", text(&o));
    assert_eq!(mirror("select count(*) from raw_shop.orders where not _weir_deleted"), vec![vec!["10"]]);
}

/// One random transaction of inserts, updates (some moving a key), deletes and a large
/// insert; some roll back. Returns the rows it changed, once committed.
#[test]
fn weir_serve_shows_the_source_following_and_lineage_reaches_the_source_table() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    let dir = shop(&mut c, db.port);
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));

    // Each mirror's column is the column of the table it mirrors, the other schema's too.
    let o = weir(dir.path(), &["ls", "--lineage", "revenue.revenue"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "revenue.revenue = sum(o.amount)\n  <- t.raw_shop.orders.amount  (load)\n    <- mysql shop.orders: amount\n",
        "{}",
        text(&o)
    );
    let o = weir(dir.path(), &["ls", "--lineage", "revenue.name"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "revenue.name = c.name\n  <- t.raw_shop.crm_customers.name  (load)\n    <- mysql crm.customers: name\n"
    );

    let serve = Serve::start(dir.path(), &[]);
    let cdc = || serve.call("GET", "/api/v1/cdc", None).unwrap_or_default();
    wait(std::time::Duration::from_secs(60), "the source to be followed", || cdc()[0]["state"] == "following");
    let before = cdc()[0]["mirror_position"].clone();
    c.query_drop("insert into orders values (11, 1, 5.0, 'new')").unwrap();
    wait(std::time::Duration::from_secs(60), "the mirror to catch up", || {
        let s = cdc();
        s[0]["mirror_position"] != before && s[0]["lag_bytes"] == 0
    });
    let s = cdc();
    assert_eq!((s[0]["name"].as_str(), s[0]["kind"].as_str()), (Some("shop"), Some("mariadb")), "{s}");
    assert_eq!(s[0]["tables"], serde_json::json!(["orders", "crm.customers"]));
    let (server, mirror) = (s[0]["server_position"].as_str().unwrap(), s[0]["mirror_position"].as_str().unwrap());
    assert!(mirror.starts_with(&format!("{server} gtid ")), "the mirrors are where the binlog ends: {s}");
    let graph = serve.call("GET", "/api/v1/assets", None).unwrap();
    let load = graph["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "load.t.shop").cloned().unwrap_or_default();
    assert_eq!(load["kind"], "cdc", "{graph}");
    serve.terminate();
}

fn random_transaction(c: &mut mysql::Conn, rng: &mut Rng, next_id: &mut u64) -> u64 {
    c.query_drop("start transaction").unwrap();
    let mut changed = 0;
    for _ in 0..1 + rng.below(6) {
        let id = rng.below(400);
        let sql = match rng.below(20) {
            0..=5 => {
                *next_id += 1;
                format!("insert ignore into items values ({}, {}, repeat('p', {}))", *next_id, rng.below(1000), 10 + rng.below(3000))
            }
            6..=10 => format!("update items set n = n + 1 where id between {id} and {}", id + 20),
            11 => format!("update items set payload = repeat('q', 3000 + {id}) where id = {id}"),
            12 => format!("update items set id = id + 100000 where id = {id}"),
            13..=16 => format!("delete from items where id between {id} and {}", id + 3),
            17 => {
                let from = *next_id + 1;
                *next_id += 2001;
                format!("insert into items select seq, seq % 7, repeat('b', 200) from seq_{from}_to_{}", *next_id)
            }
            _ => format!("update items set n = -n where id = {id}"),
        };
        // A row moved to another key is a delete and an insert in the history.
        let moves = if sql.contains("id = id + 100000") { 2 } else { 1 };
        c.query_drop(sql).unwrap();
        changed += c.affected_rows() * moves;
    }
    if rng.below(8) == 0 {
        c.query_drop("rollback").unwrap();
        return 0;
    }
    c.query_drop("commit").unwrap();
    changed
}

#[test]
fn a_mariadb_follower_killed_at_random_moments_ends_with_the_mirror_equal_to_the_source() {
    let db = PrivateMariadb::start();
    let mut c = db.connect();
    c.query_drop("create table items (id bigint primary key, n int, payload text)").unwrap();
    c.query_drop("insert into items select seq, seq, repeat('s', 3000) from seq_1_to_300").unwrap();
    let dir = minimal(&[("loads/shop.yml", &loads(db.port, "items", "    history: true\n    events: true\n"))]);
    // The snapshot first: every change after it is in the history once.
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut changes = 0;
    let seed = std::env::var("WEIR_CDC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cdc0_u64);
    let mut rng = Rng(seed);
    let mut next_id = 1_000_000u64;
    common::follow_and_kill(dir.path(), &mut rng, 8, &mut |rng| changes += random_transaction(&mut c, rng, &mut next_id));
    let o = weir(dir.path(), &["load", "shop"]);
    assert!(o.status.success(), "{}", text(&o));
    let source: Vec<Vec<String>> = c
        .query_map("select id, n, md5(payload) from items order by id", |(id, n, md5): (u64, i64, String)| {
            vec![id.to_string(), n.to_string(), md5]
        })
        .unwrap();
    let mirror = query(&dir.path().join("t.duckdb"), "select id, n, md5(payload) from raw_shop.items order by id");
    common::assert_same_rows(seed, &source, &mirror);
    let history =
        query(&dir.path().join("t.duckdb"), "select count(*), count(distinct (_weir_position, _weir_seq)) from raw_shop.items_history");
    assert_eq!(history, vec![vec![changes.to_string(), changes.to_string()]], "seed {seed}: every change in the history, once");
    // And on the log: the events replayed by key give the source again.
    let lengths: Vec<Vec<String>> = c
        .query_map("select id, n, length(payload) from items order by id", |(id, n, len): (u64, i64, u64)| {
            vec![id.to_string(), n.to_string(), len.to_string()]
        })
        .unwrap();
    let mut replayed: Vec<Vec<String>> = common::replay(dir.path(), "shop.shop.items")
        .values()
        .map(|a| vec![a["id"].to_string(), a["n"].to_string(), a["payload"].as_str().map_or(0, str::len).to_string()])
        .collect();
    replayed.sort_by_key(|r| r[0].parse::<u64>().unwrap_or(0));
    common::assert_same_rows(seed, &lengths, &replayed);
}
