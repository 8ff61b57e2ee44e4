//! Incremental snapshots against a private PostgreSQL: a mirror brought back in step while
//! writers change its table, a table added to a source filled without a new snapshot, and a
//! follower stopped part way through going on from the last chunk merged.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value as J};
use support::PrivatePostgres;
use weir_cdc::follow::{Follow, Progress, follow};
use weir_cdc::incremental::{self, TableSnapshot};
use weir_cdc::mirror::{Mirror, MirrorOptions};
use weir_cdc::{Config, Lsn};
use weir_warehouse::Warehouse;

fn config(pg: &PrivatePostgres) -> Config {
    Config { host: "127.0.0.1".into(), port: pg.port, user: "postgres".into(), password: None, database: "postgres".into() }
}

fn duckdb(dir: &std::path::Path) -> Arc<dyn Warehouse> {
    let mut fields = Map::new();
    fields.insert("path".into(), J::String(dir.join("wh.duckdb").display().to_string()));
    Arc::from(weir_warehouse::open("duckdb", &fields, dir).unwrap())
}

/// Follows `weir_slot` of `weir_pub` capturing `tables` (of `public`), with requests in
/// `requests` and chunks of `chunk_rows`.
fn settings(tables: &[&str], requests: &std::path::Path, chunk_rows: usize) -> Follow {
    Follow {
        slot: "weir_slot".into(),
        publication: "weir_pub".into(),
        batch_messages: 500,
        batch_wait: Duration::from_millis(100),
        tables: tables.iter().map(|t| ("public".to_string(), t.to_string())).collect(),
        requests: Some(requests.to_path_buf()),
        chunk_rows,
    }
}

fn flushed(db: &mut postgres::Client) -> Lsn {
    db.query_one("select pg_current_wal_flush_lsn()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap()
}

/// Follows until the mirror holds the WAL as it ends now and no incremental snapshot is left.
fn catch_up(pg: &PrivatePostgres, follow_with: &Follow, mirror: &mut Mirror) -> Progress {
    let target = flushed(&mut pg.connect());
    follow(&config(pg), follow_with, mirror, &mut |p| p.position.is_some_and(|at| at >= target) && p.incremental_tables == 0).unwrap()
}

/// Each row of `sql` with its values as text, from the source and from the mirror.
/// (Sorted here: each side orders its own way.)
fn source_rows(db: &mut postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = db
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect())
        .collect();
    rows.sort();
    rows
}

fn mirror_rows(wh: &Arc<dyn Warehouse>, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = wh
        .connect()
        .unwrap()
        .query(sql)
        .unwrap()
        .rows
        .iter()
        .map(|r| r.iter().map(|d| if d.is_null() { String::new() } else { d.to_string() }).collect())
        .collect();
    rows.sort();
    rows
}

/// The rows only one side has, the first few of each, to say how they differ.
fn differences(source: &[Vec<String>], mirrored: &[Vec<String>]) -> String {
    let only = |a: &[Vec<String>], b: &[Vec<String>]| a.iter().filter(|r| !b.contains(r)).take(5).cloned().collect::<Vec<_>>();
    format!("only in the source: {:?}; only in the mirror: {:?}", only(source, mirrored), only(mirrored, source))
}

#[test]
fn an_incremental_snapshot_brings_a_mirror_back_in_step_while_writers_change_the_table() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute("create table orders (id int primary key, note text, big text, n int)").unwrap();
    db.batch_execute("alter table orders alter column big set storage external").unwrap();
    db.batch_execute("insert into orders select g, 'first', repeat(md5(g::text), 100), 0 from generate_series(1, 3000) g").unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let requests = dir.path().join("requests");
    let follow_with = settings(&["orders"], &requests, 250);
    let mut mirror = Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap();
    catch_up(&pg, &follow_with, &mut mirror);

    // The mirror drifts from the source (rows lost, values wrong), as after a bad restore.
    let mut conn = wh.connect().unwrap();
    conn.execute("delete from wh.main.orders where id % 4 = 0").unwrap();
    conn.execute("update wh.main.orders set note = 'stale', big = null where id % 3 = 0").unwrap();
    // Rows the table never had.
    conn.execute("insert into wh.main.orders select i, 'ghost', null, 0, null from range(50000, 50010) t(i)").unwrap();
    drop(conn);
    incremental::request(&requests, &["public.orders".into()]).unwrap();

    // Writers change the table all the while: updates that leave the TOAST value unchanged,
    // new TOAST values, inserts, deletes, keys moved, in transactions of several rows.
    let finished = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (port, finished) = (pg.port, finished.clone());
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"), postgres::NoTls)
                    .unwrap();
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
                let mut next = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                for round in 0..300 {
                    let mut tx = c.transaction().unwrap();
                    for _ in 0..1 + next(5) {
                        let id = 1 + next(3600) as i32;
                        let outcome = match next(10) {
                            0..=4 => tx.execute("update orders set note = $1, n = n + 1 where id = $2", &[&format!("w{w}r{round}"), &id]),
                            5 => tx.execute("update orders set big = repeat($1, 200) where id = $2", &[&format!("{w}-{round}"), &id]),
                            6 | 7 => tx.execute(
                                "insert into orders values ($1, 'new', repeat('z', 3000), 0) on conflict (id) do update set note = 'upserted'",
                                &[&id],
                            ),
                            8 => tx.execute("update orders set id = id + 10000 where id = $1", &[&id]),
                            _ => tx.execute("delete from orders where id = $1", &[&id]),
                        };
                        if outcome.is_err() {
                            break;
                        }
                    }
                    // A key moved onto one taken, or a deadlock between the writers: that
                    // transaction rolls back, as it would in production.
                    let _ = tx.commit();
                    std::thread::sleep(Duration::from_millis(next(4)));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let config = config(&pg);
    let mut watcher = pg.connect();
    let mut target: Option<Lsn> = None;
    let progress = follow(&config, &follow_with, &mut mirror, &mut |p| {
        if target.is_none() && finished.load(Ordering::SeqCst) == 2 {
            target = Some(flushed(&mut watcher));
        }
        target.is_some_and(|t| p.position.is_some_and(|at| at >= t)) && p.incremental_tables == 0
    })
    .unwrap();
    for w in writers {
        w.join().unwrap();
    }
    assert!(progress.incremental_rows >= 3000, "{progress:?}");
    assert!(!requests.read_dir().unwrap().any(|_| true), "the request was taken");
    assert!(mirror.incremental().unwrap().is_empty(), "nothing left under way");
    let sql = "select id::text, note, md5(coalesce(big, '')), n::text from orders order by id";
    let source = source_rows(&mut db, sql);
    let mirrored =
        mirror_rows(&wh, "select cast(id as varchar), note, md5(coalesce(big, '')), cast(n as varchar) from wh.main.orders order by id");
    assert!(mirrored == source, "the mirror differs from the source: {}", differences(&source, &mirrored));
}

#[test]
fn a_table_added_to_the_source_is_filled_without_a_new_snapshot() {
    let pg = PrivatePostgres::start(&[]);
    let mut db = pg.connect();
    db.batch_execute("create table orders (id int primary key, note text)").unwrap();
    db.batch_execute("create table customers (id bigint, region text, name text, primary key (region, id))").unwrap();
    db.batch_execute(
        "insert into customers select g, case when g % 2 = 0 then 'eu' else 'us''west' end, 'c' || g from generate_series(1, 1234) g",
    )
    .unwrap();
    db.batch_execute("create publication weir_pub for table orders").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = duckdb(dir.path());
    let requests = dir.path().join("requests");
    let mut mirror = Mirror::open(wh.clone(), "shop", "wh", "main", MirrorOptions::default()).unwrap();
    let first = catch_up(&pg, &settings(&["orders"], &requests, 100), &mut mirror);
    assert!(first.snapshotted);

    // `customers` joins the source's tables (and its publication); changes meanwhile.
    db.batch_execute("alter publication weir_pub add table customers").unwrap();
    db.batch_execute(
        "insert into orders values (1, 'a'); update customers set name = 'renamed' where id < 10; delete from customers where id = 20",
    )
    .unwrap();
    let both = settings(&["orders", "customers"], &requests, 100);
    let second = catch_up(&pg, &both, &mut mirror);
    assert!(!second.snapshotted, "no new snapshot of everything: {second:?}");
    assert_eq!(second.incremental_rows, 1233);
    let source = source_rows(&mut db, "select id::text, region, name from customers order by region, id");
    let mirrored = mirror_rows(&wh, "select cast(id as varchar), region, name from wh.main.customers order by region, id");
    assert!(mirrored == source, "customers' mirror differs from the source: {}", differences(&source, &mirrored));
    assert_eq!(mirror_rows(&wh, "select note from wh.main.orders"), vec![vec!["a".to_string()]]);

    // Stopped part way through a snapshot asked for again: the next follower goes on from the
    // last chunk merged, and ends with every row.
    wh.connect().unwrap().execute("delete from wh.main.customers where region = 'eu'").unwrap();
    incremental::request(&requests, &["public.customers".into()]).unwrap();
    let part = follow(&config(&pg), &both, &mut mirror, &mut |p| p.incremental_rows >= 300).unwrap();
    assert!(part.incremental_tables == 1 && part.incremental_rows < 1233, "{part:?}");
    let under_way = mirror.incremental().unwrap();
    assert!(
        matches!(under_way.as_slice(), [TableSnapshot { after: Some(key), rows, .. }] if key.len() == 2 && *rows >= 300),
        "{under_way:?}"
    );
    let rest = catch_up(&pg, &both, &mut mirror);
    assert!(rest.incremental_rows < 1233, "went on, not again from the start: {rest:?}");
    let mirrored = mirror_rows(&wh, "select cast(id as varchar), region, name from wh.main.customers order by region, id");
    assert!(mirrored == source, "customers' mirror differs from the source after going on: {}", differences(&source, &mirrored));
}
