//! Helpers shared by the binary's test files: temporary projects, running `weir`, reading
//! the DuckDB file it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name == "target" || name == ".weir" || name == "exports" || name.ends_with(".duckdb") {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// A copy of the example with its order files exported (its customer database is not set).
pub fn shop() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples/shop"), dir.path());
    let o = Command::new("python3").arg("scripts/generate_orders.py").current_dir(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    dir
}

/// `weir ARGS` in `dir`, away from the caller's dbt profiles and the example's customer database.
pub fn weir(dir: &Path, args: &[&str]) -> Output {
    weir_command(dir).args(args).output().unwrap()
}

/// The command `weir` runs as, to add arguments and environment to.
pub fn weir_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.current_dir(dir).env_remove("DBT_PROFILES_DIR").env_remove("SHOP_SOURCE_URL").env_remove("WEIR_SHOP_RAW_SCHEMA");
    cmd
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn query(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let mut fields = serde_json::Map::new();
    fields.insert("path".into(), db.display().to_string().into());
    let wh = weir_warehouse::duckdb::DuckDb::open(&fields, Path::new("/")).unwrap();
    let mut c = weir_warehouse::Warehouse::connect(&wh).unwrap();
    c.query(sql).unwrap().rows.into_iter().map(|r| r.iter().map(|d| d.to_string()).collect()).collect()
}

pub fn minimal(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![
        ("dbt_project.yml", "name: t\nprofile: t\n"),
        ("profiles.yml", "t:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: t.duckdb\n"),
    ];
    all.extend_from_slice(files);
    for (rel, body) in all {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

/// A shop's raw tables as seeds, in cents, for the lineage and web UI tests.
pub const SHOP_SEEDS: [(&str, &str); 3] = [
    ("seeds/raw_orders.csv", "id,customer_id,amount_cents,ordered_at\n1,7,1250,2026-12-01\n2,8,300,2026-12-02\n"),
    ("seeds/raw_customers.csv", "id,name\n7,Ada\n8,Bo\n"),
    ("seeds/raw_refunds.csv", "order_id,refund_cents\n1,250\n"),
];

/// A macro that writes a column's expression (cents to dollars), which lineage sees through.
pub const DOLLARS_MACRO: (&str, &str) = ("macros/money.sql", "{% macro dollars(column) %}{{ column }} / 100.0{% endmacro %}\n");

/// A small xorshift generator for the random tests, seeded so a failure can be run again.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `weir cdc run shop` in `dir` for `rounds` rounds while `write` runs 10 to 50
/// transactions a few milliseconds apart, killing the follower with -9 at a random one of
/// them (while it starts, takes its snapshot or follows).
pub fn follow_and_kill(dir: &Path, rng: &mut Rng, rounds: u32, write: &mut dyn FnMut(&mut Rng)) {
    for round in 0..rounds {
        let mut follower = weir_command(dir)
            .args(["cdc", "run", "shop", "--batch-wait-ms", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let writes = 10 + rng.below(40);
        let kill_at = rng.below(writes);
        for i in 0..writes {
            if i == kill_at {
                follower.kill().unwrap();
            }
            write(rng);
            std::thread::sleep(std::time::Duration::from_millis(5 + rng.below(40)));
        }
        follower.wait().unwrap();
        eprintln!("round {round}: {writes} transactions, killed after {kill_at}");
    }
}

/// Asserts that the mirror's rows equal the source's, showing a few of each side's own.
pub fn assert_same_rows(seed: u64, source: &[Vec<String>], mirror: &[Vec<String>]) {
    let only =
        |a: &[Vec<String>], b: &[Vec<String>]| -> Vec<Vec<String>> { a.iter().filter(|r| !b.contains(r)).take(5).cloned().collect() };
    assert!(
        mirror == source,
        "seed {seed}: the mirror ({} rows) differs from the source ({} rows); only in the source: {:?}; only in the mirror: {:?}",
        mirror.len(),
        source.len(),
        only(source, mirror),
        only(mirror, source)
    );
    assert!(source.len() > 100, "the test still has rows to compare ({})", source.len());
}

/// Replays a topic of change events (Debezium's envelope) by key onto an empty table, as a
/// reader of the topic would: each row's last `after`, deleted rows gone, a truncate emptying
/// it. Asserts that no committed change was published twice (each transaction's changes are
/// there once). Returns the rows by their key's text.
pub fn replay(dir: &Path, topic: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let o = weir(dir, &["log", "consume", topic]);
    assert!(o.status.success(), "{}", text(&o));
    let mut rows = std::collections::BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let v = &e["value"];
        let key = e["key"].as_str().unwrap_or_default().to_string();
        if let Some(txn) = v["transaction"].as_object() {
            let change = (txn["id"].to_string(), txn["total_order"].to_string());
            assert!(seen.insert(change.clone()), "the change {change:?} was published twice: {line}");
        }
        match v["op"].as_str() {
            Some("c" | "u" | "r") => {
                rows.insert(key, v["after"].clone());
            }
            Some("d") => {
                rows.remove(&key);
            }
            Some("t") => rows.clear(),
            other => panic!("an event with op {other:?}: {line}"),
        }
    }
    rows
}

pub const TOKEN: &str = "serve-test-token";

/// A `weir serve` child process on a free port.
pub struct Serve {
    pub child: Child,
    pub base: String,
}

impl Serve {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env("WEIR_API_TOKEN", TOKEN)
            .env_remove("DBT_PROFILES_DIR")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let s = Serve { child: cmd.spawn().unwrap(), base: format!("http://127.0.0.1:{port}") };
        wait(Duration::from_secs(60), "the server to answer", || s.call("GET", "/api/v1/health", None).is_some());
        s
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Option<J> {
        let http = reqwest::blocking::Client::new();
        let url = format!("{}{path}", self.base);
        let req = if method == "POST" { http.post(url).body(body.unwrap_or("").to_string()) } else { http.get(url) };
        let resp = req.bearer_auth(TOKEN).timeout(Duration::from_secs(10)).send().ok()?;
        resp.json().ok()
    }

    /// Stops it as an operator would (SIGTERM) and waits for it to exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("weir serve did not stop on SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}
