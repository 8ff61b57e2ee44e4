//! Sources beyond files: MySQL/MariaDB (the shared server, in a database of the test's own),
//! HTTP JSON APIs (a server the test starts: pagination, auth, 429s, dropped connections),
//! databases that go away mid-load, and schema-on-read.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{PG, Project, cutting_proxy, pg_client};
use mysql::prelude::Queryable;

const MARIADB: &str = "mysql://root@127.0.0.1:3306/test";

fn mysql_db(name: &str) -> (mysql::Conn, String) {
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(MARIADB).unwrap())
        .unwrap_or_else(|e| panic!("MariaDB at {MARIADB} is required for this test: {e}"));
    let db = format!("weir_{name}_{}", std::process::id());
    conn.query_drop(format!("drop database if exists {db}")).unwrap();
    conn.query_drop(format!("create database {db}")).unwrap();
    conn.query_drop(format!("use {db}")).unwrap();
    (conn, format!("mysql://root@127.0.0.1:3306/{db}"))
}

#[test]
fn mysql_table_into_duckdb_with_types_zero_dates_rejected_and_incremental_merge() {
    let (mut my, url) = mysql_db("src");
    my.query_drop("set session sql_mode = ''").unwrap();
    my.query_drop(
        "create table customers (id int primary key, name varchar(50), score decimal(8,2), big bigint unsigned, active tinyint(1),
         born date, updated_at datetime(3), alarm time, doc json, raw varbinary(4), flags bit(8))",
    )
    .unwrap();
    my.query_drop(
        r#"insert into customers values
           (1, 'ann "the" first', 1.50, 18446744073709551615, 1, '1990-01-02', '2024-01-01 10:00:00.250', '07:30:00', '{"a": [1, 2]}', x'00ff', b'101'),
           (2, '', null, 0, 0, null, '2024-01-02 10:00:00', null, null, null, null),
           (3, 'zero', 3.25, 1, 1, '0000-00-00', '2024-01-03 10:00:00', '838:59:59', null, null, null)"#,
    )
    .unwrap();
    let p = Project::duckdb();
    let load = p.load(&format!(
        "loads:\n  - name: customers\n    source: {{kind: mysql, url: '{url}', table: customers}}\n    write_disposition: merge\n    primary_key: id\n    incremental: {{cursor: updated_at, lookback: 1 hour}}\n"
    ));
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (3, 2, 1), "{r:?}");
    assert_eq!(r.cursor.as_deref(), Some("2024-01-02 10:00:00"));
    assert_eq!(
        p.rows("select id, name, score, big, active, born, updated_at, alarm, doc, raw, flags from raw.customers order by id"),
        vec![
            vec![
                "1",
                "ann \"the\" first",
                "1.50",
                "18446744073709551615",
                "true",
                "1990-01-02",
                "2024-01-01T10:00:00.250",
                "07:30:00",
                "{\"a\": [1, 2]}",
                "00ff",
                "5"
            ],
            vec!["2", "", "NULL", "0", "false", "NULL", "2024-01-02T10:00:00", "NULL", "NULL", "NULL", "NULL"],
        ]
    );
    let types: Vec<Vec<String>> = p.rows(
        "select column_name, data_type from information_schema.columns where table_schema = 'raw' and table_name = 'customers' and column_name in ('score', 'big', 'updated_at') order by column_name",
    );
    assert_eq!(types, vec![vec!["big", "DECIMAL(20,0)"], vec!["score", "DECIMAL(8,2)"], vec!["updated_at", "TIMESTAMP"]]);
    let rejected = p.rows("select position, reason, raw from raw._weir_rejected");
    assert_eq!(rejected[0][0], "row 3 (id=3)");
    assert!(rejected[0][1].contains("value of born '0000-00-00' is not a valid date"), "{rejected:?}");
    assert!(rejected[0][2].contains("\"name\":\"zero\""), "{rejected:?}");

    // A late row inside the lookback and an update: merged, not duplicated.
    my.query_drop("update customers set name = 'bee', updated_at = '2024-01-05 00:00:00' where id = 2").unwrap();
    my.query_drop("insert into customers (id, name, updated_at) values (4, 'late', '2024-01-02 09:30:00')").unwrap();
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (2, Some("2024-01-05 00:00:00")), "{r:?}");
    assert_eq!(p.scalar("select string_agg(name, ',' order by id) from raw.customers"), "ann \"the\" first,bee,late");

    let bad =
        p.load(&format!("loads:\n  - name: nope\n    source: {{kind: mariadb, url: '{url}', query: 'select * from missing_table'}}\n"));
    let e = p.run(&bad, false).unwrap_err().to_string();
    assert!(e.contains("load 'nope'") && e.contains("missing_table") && e.contains("doesn't exist"), "{e}");
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    my.query_drop(format!("drop database {db}")).unwrap();
}

/// `tinyint(1)` is MySQL's `boolean` and arrives as one, in DuckDB and PostgreSQL alike; a
/// value other than 0 or 1 rejects its row. Other small integers arrive as `integer`.
#[test]
fn mysql_booleans_arrive_as_booleans() {
    let (mut my, url) = mysql_db("bool");
    my.query_drop("create table flags (id int primary key, on_off tinyint(1), b boolean, small tinyint, mid smallint)").unwrap();
    my.query_drop("insert into flags values (1, 1, 0, -5, 300), (2, 0, 1, 7, 0), (3, 2, 1, 1, 1), (4, null, null, null, null)").unwrap();
    let schema = format!("weir_my_bool_{}", std::process::id());
    for p in [Project::duckdb(), Project::postgres()] {
        let load = p.load(&format!(
            "loads:\n  - name: flags\n    source: {{kind: mysql, url: '{url}', table: flags}}\n    destination: {schema}.flags\n"
        ));
        let r = p.run(&load, false).unwrap();
        assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (4, 3, 1), "{r:?}");
        let rows = p.rows(&format!("select on_off, b, small, mid from {schema}.flags order by id"));
        assert_eq!(rows[0], ["true", "false", "-5", "300"]);
        assert_eq!(rows[1], ["false", "true", "7", "0"]);
        assert_eq!(rows[2], ["NULL"; 4]);
        let reason = p.scalar(&format!("select reason from {schema}._weir_rejected"));
        assert!(reason.contains("value of on_off '2' is not 0 or 1"), "{reason}");
        let types = p.rows(&format!(
            "select lower(data_type) from information_schema.columns where table_schema = '{schema}' and table_name = 'flags'
             and column_name in ('on_off', 'b', 'small', 'mid') order by column_name"
        ));
        assert_eq!(types.concat(), ["boolean", "integer", "boolean", "integer"]);
        p.execute(&format!("drop schema {schema} cascade"));
    }
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    my.query_drop(format!("drop database {db}")).unwrap();
}

/// MySQL rows reach PostgreSQL over its binary `COPY` too: every type keeps its value
/// (MariaDB's `json` is a text column on the wire, and arrives as text).
#[test]
fn mysql_table_into_postgres() {
    let (mut my, url) = mysql_db("topg");
    my.query_drop(
        "create table t (id int primary key, name varchar(20), score decimal(8,2), big bigint unsigned, born date,
         at datetime(6), alarm time(3), doc json, raw varbinary(4), flags bit(8), ratio double)",
    )
    .unwrap();
    my.query_drop(
        r#"insert into t values (1, 'été', -1.25, 18446744073709551615, '1990-01-02', '2024-01-01 10:00:00.123456', '07:30:00.5',
           '{"a": 1}', x'00ff', b'101', 0.1), (2, null, null, null, null, null, null, null, null, null, null)"#,
    )
    .unwrap();
    let schema = format!("weir_my_dst_{}", std::process::id());
    let p = Project::postgres();
    let load = p.load(&format!("loads:\n  - name: t\n    source: {{kind: mysql, url: '{url}', table: t}}\n    destination: {schema}.t\n"));
    assert_eq!(p.run(&load, false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows(&format!("select name, score, big, born, at, alarm, doc, raw, flags, ratio from {schema}.t order by id")),
        vec![
            vec![
                "été",
                "-1.25",
                "18446744073709551615",
                "1990-01-02",
                "2024-01-01 10:00:00.123456",
                "07:30:00.5",
                r#"{"a": 1}"#,
                "00ff",
                "5",
                "0.1"
            ],
            vec!["NULL"; 10],
        ]
    );
    pg_client().batch_execute(&format!("drop schema {schema} cascade")).unwrap();
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    my.query_drop(format!("drop database {db}")).unwrap();
}

#[test]
fn a_database_that_goes_away_mid_load_leaves_the_destination_as_it_was() {
    let schema = format!("weir_gone_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!(
        "drop schema if exists {schema} cascade; create schema {schema};
         create table {schema}.big as select g as id, repeat('x', 50) as pad from generate_series(1, 100000) g;"
    ))
    .unwrap();
    let (mut my, url) = mysql_db("gone");
    my.query_drop("create table big (id int primary key, pad varchar(60))").unwrap();
    my.query_drop("insert into big select seq, repeat('x', 50) from seq_1_to_100000").unwrap();
    let p = Project::duckdb();

    let pg_port = cutting_proxy("127.0.0.1:5432", 256 * 1024);
    let pg_load = p.load(&format!(
        "loads:\n  - name: big\n    source: {{kind: postgres, url: 'postgresql://postgres@127.0.0.1:{pg_port}/test', table: {schema}.big}}\n"
    ));
    let e = p.run(&pg_load, false).unwrap_err().to_string();
    assert!(e.contains("load 'big'") && e.contains("lost the source") && e.contains(&format!("127.0.0.1:{pg_port}")), "{e}");
    let my_port = cutting_proxy("127.0.0.1:3306", 256 * 1024);
    let my_url = url.replace(":3306/", &format!(":{my_port}/"));
    let my_load = p.load(&format!("loads:\n  - name: big2\n    source: {{kind: mysql, url: '{my_url}', table: big}}\n"));
    let e = p.run(&my_load, false).unwrap_err().to_string();
    assert!(e.contains("load 'big2'") && e.contains("lost the source") && e.contains("rows"), "{e}");

    assert_eq!(p.scalar("select count(*) from information_schema.tables where table_schema = 'raw' and table_name like 'big%'"), "0");
    let runs = p.store.load_runs("big", 5).unwrap();
    assert_eq!(runs[0].status, "failed");
    // Through the real ports, the same loads complete.
    let direct = p.load(&format!("loads:\n  - name: big\n    source: {{kind: postgres, url: '{PG}', table: {schema}.big}}\n"));
    assert_eq!(p.run(&direct, false).unwrap().rows_loaded, 100_000);
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    my.query_drop(format!("drop database {db}")).unwrap();
}

/// A JSON API on a free loopback port: each request is answered by `handler`, given the
/// request and how many times this exact URL was asked for before.
struct Api {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

struct Request {
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
}

enum Reply {
    Json(u16, String, Vec<(&'static str, String)>),
    /// Headers promising a body, half of it, and a closed connection.
    Drop,
}

fn api(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let mut lines = text.lines();
            let target = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").to_string();
            let headers =
                lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
            let (path, q) = target.split_once('?').unwrap_or((&target, ""));
            let query = q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect();
            let attempt = {
                let mut log = seen.lock().unwrap();
                let n = log.iter().filter(|t| **t == target).count();
                log.push(target.clone());
                n
            };
            let req = Request { path: path.to_string(), query, headers };
            match handler(&req, attempt) {
                Reply::Json(status, body, extra) => {
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in extra {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    let _ = stream.write_all(format!("{head}\r\n{body}").as_bytes());
                }
                Reply::Drop => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"data\": [{\"id\"");
                }
            }
            let _ = stream.flush();
        }
    });
    Api { port, log }
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Api {
    fn asked(&self, target: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|t| t.as_str() == target).count()
    }
}

fn json(body: serde_json::Value) -> Reply {
    Reply::Json(200, body.to_string(), vec![])
}

#[test]
fn http_pages_with_bearer_auth_retrying_429s_and_dropped_connections() {
    let server = api(|req, attempt| {
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0k3n-s3cret") {
            return Reply::Json(401, r#"{"error": "bad token"}"#.into(), vec![]);
        }
        let page: u64 = req.query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        match (page, attempt) {
            (2, 0) => Reply::Json(429, r#"{"error": "slow down"}"#.into(), vec![("Retry-After", "1".into())]),
            (3, 0) => Reply::Drop,
            (1..=3, _) => json(serde_json::json!({"data": [
                {"id": page * 10 + 1, "amount": 1.5, "status": "paid"},
                {"id": page * 10 + 2, "amount": 2, "status": null}
            ]})),
            _ => json(serde_json::json!({"data": []})),
        }
    });
    let p = Project::duckdb();
    let yaml = |token: &str| {
        format!(
            "loads:\n  - name: orders\n    source:\n      kind: http\n      url: http://127.0.0.1:{}/orders\n      auth: {{bearer: {token}}}\n      records: data\n      paginate: {{kind: page_number}}\n      retry_delay: 10ms\n    write_disposition: merge\n    primary_key: id\n",
            server.port
        )
    };
    let started = Instant::now();
    let r = p.run(&p.load(&yaml("t0k3n-s3cret")), false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded), (6, 6), "{r:?}");
    assert!(started.elapsed().as_secs_f64() >= 1.0, "Retry-After: 1 was honoured");
    assert_eq!((server.asked("/orders?page=2"), server.asked("/orders?page=3"), server.asked("/orders?page=4")), (2, 2, 1));
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from raw.orders"), "11,12,21,22,31,32");
    assert_eq!(p.scalar("select sum(amount) from raw.orders"), "10.5");

    let e = p.run(&p.load(&yaml("wrong-s3cret")), false).unwrap_err().to_string();
    assert!(e.contains("HTTP 401") && e.contains("bad token"), "{e}");
    assert!(!e.contains("wrong-s3cret"), "the secret never shows: {e}");
    assert_eq!(p.scalar("select count(*) from raw.orders"), "6", "a failed load leaves the table as it was");
}

#[test]
fn http_cursor_link_offset_and_incremental_pagination() {
    let changes = Arc::new(Mutex::new(vec![(1, "2024-01-01 00:00:00"), (2, "2024-01-02 00:00:00")]));
    let shared = changes.clone();
    let server = api(move |req, _| match req.path.as_str() {
        "/events" => match req.query.get("cursor").map(String::as_str) {
            None => json(serde_json::json!({"items": [{"id": 1, "meta": {"x": 1}}, {"id": 2, "meta": {"x": 2}}], "next": "c2"})),
            Some("c2") => json(serde_json::json!({"items": [{"id": 3, "meta": {"x": 3}}], "next": null})),
            Some(_) => Reply::Json(400, "{}".into(), vec![]),
        },
        "/users" => match req.query.get("page").map(String::as_str) {
            None => Reply::Json(200, r#"[{"login": "a"}, {"login": "b"}]"#.into(), vec![("Link", r#"</users?page=2>; rel="next""#.into())]),
            _ => json(serde_json::json!([{"login": "c"}])),
        },
        "/items" => {
            let offset: usize = req.query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            let all = ["p", "q", "r"];
            let page: Vec<serde_json::Value> = all.iter().skip(offset).take(2).map(|s| serde_json::json!({"sku": s})).collect();
            json(serde_json::json!({"results": page, "total": 3}))
        }
        "/changes" => {
            let since = req.query.get("since").cloned().unwrap_or_default().replace('T', " ");
            let rows: Vec<serde_json::Value> = shared
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, at)| *at > since.as_str())
                .map(|(id, at)| serde_json::json!({"id": id, "updated_at": at}))
                .collect();
            json(serde_json::json!({"data": rows}))
        }
        _ => Reply::Json(404, "{}".into(), vec![]),
    });
    let port = server.port;
    let p = Project::duckdb();
    let run = |yaml: String| p.run(&p.load(&yaml), false).unwrap();
    let r = run(format!(
        "loads:\n  - name: events\n    source: {{kind: http, url: 'http://127.0.0.1:{port}/events', records: items, paginate: {{kind: cursor, cursor_path: next}}}}\n"
    ));
    assert_eq!(r.rows_loaded, 3);
    assert_eq!(p.scalar("select sum(meta.x) from raw.events"), "6", "nested objects stay structured");
    let r = run(format!(
        "loads:\n  - name: users\n    source: {{kind: http, url: 'http://127.0.0.1:{port}/users', paginate: {{kind: link_header}}}}\n"
    ));
    assert_eq!(r.rows_loaded, 3);
    let r = run(format!(
        "loads:\n  - name: items\n    source: {{kind: http, url: 'http://127.0.0.1:{port}/items', paginate: {{kind: offset, limit: 2, total_path: total}}}}\n"
    ));
    assert_eq!(r.rows_loaded, 3);
    assert_eq!(server.asked("/items?offset=2&limit=2"), 1);
    assert_eq!(server.asked("/items?offset=4&limit=2"), 0, "the total says there is no third page");

    let inc = format!(
        "loads:\n  - name: changes\n    source: {{kind: http, url: 'http://127.0.0.1:{port}/changes'}}\n    write_disposition: merge\n    primary_key: id\n    incremental: {{cursor: updated_at, param: since, initial_value: '2024-01-01 12:00:00'}}\n"
    );
    let r = run(inc.clone());
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (1, Some("2024-01-02 00:00:00")), "{r:?}");
    assert!(run(inc.clone()).up_to_date, "nothing newer than the mark");
    changes.lock().unwrap().push((3, "2024-01-03 00:00:00"));
    let r = run(inc.clone());
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (1, Some("2024-01-03 00:00:00")), "{r:?}");
    assert_eq!(p.scalar("select count(*) from raw.changes"), "2");

    // A row that arrived late, below the mark: a lookback of a day asks from a day before the
    // mark, and merges what it extracts again rather than duplicating it.
    changes.lock().unwrap().push((4, "2024-01-02 12:00:00"));
    let r = run(inc.replace("initial_value:", "lookback: 1 day, initial_value:"));
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (2, Some("2024-01-03 00:00:00")), "{r:?}");
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from raw.changes"), "2,3,4");

    // Under replace, an API that answers no records leaves the table empty (its columns kept);
    // the run is recorded like any other.
    let all = format!(
        "loads:\n  - name: snapshot\n    source: {{kind: http, url: 'http://127.0.0.1:{port}/changes'}}\n    write_disposition: replace\n"
    );
    assert_eq!(run(all.clone()).rows_loaded, 4);
    changes.lock().unwrap().clear();
    let r = run(all);
    assert!(!r.up_to_date && r.rows_loaded == 0, "{r:?}");
    assert_eq!(p.scalar("select count(*) from raw.snapshot"), "0");
    assert_eq!(p.scalar("select count(*) from raw._weir_loads where load_name = 'snapshot' and rows_loaded = 0"), "1");
}

#[test]
fn schema_on_read_keeps_records_whole_under_a_typed_view() {
    let p = Project::duckdb();
    p.write("ev/1.jsonl", "{\"id\": 1, \"name\": \"a\", \"n\": 5}\n{\"id\": 2, \"name\": \"b\", \"n\": 7}\n");
    let load = p.load("loads:\n  - name: ev\n    source: {kind: jsonl, path: 'ev/*.jsonl'}\n    schema_on_read: true\n");
    let r = p.run(&load, false).unwrap();
    assert_eq!(r.rows_loaded, 2);
    assert_eq!(
        p.rows(
            "select column_name from information_schema.columns where table_schema = 'raw' and table_name = 'ev' order by ordinal_position"
        ),
        vec![vec!["_weir_record"], vec!["_weir_source_file"], vec!["_weir_load_id"], vec!["_weir_loaded_at"]]
    );
    assert_eq!(p.scalar("select sum(n) from raw.ev_typed"), "12");
    p.write("ev/2.jsonl", "{\"id\": 3, \"name\": \"c\", \"n\": \"many\", \"extra\": true}\n");
    let r = p.run(&load, false).unwrap();
    assert_eq!(r.rows_loaded, 1, "a record of another shape loads as it is");
    assert!(r.schema_changes.iter().any(|c| c.contains("widened raw.ev_typed.n from bigint to varchar")), "{r:?}");
    assert!(r.schema_changes.iter().any(|c| c.contains("added raw.ev_typed.extra boolean")), "{r:?}");
    assert_eq!(
        p.rows("select id, n, extra from raw.ev_typed order by id"),
        vec![vec!["1", "5", "NULL"], vec!["2", "7", "NULL"], vec!["3", "many", "true"]]
    );
    assert_eq!(
        p.scalar("select _weir_record from raw.ev where _weir_source_file = 'ev/2.jsonl'"),
        r#"{"id":3,"name":"c","n":"many","extra":true}"#
    );
}
