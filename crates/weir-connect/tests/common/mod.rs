//! What the load tests share: a project folder with a DuckDB file or the shared PostgreSQL
//! as its warehouse, a SQLite metadata store, and helpers to run loads and read tables.

#![allow(dead_code)]

use std::path::Path;

use weir_connect::{ConnectError, Load, LoadOptions, LoadReport, parse_file, run_load};
use weir_core::Datum;
use weir_store::Store;
use weir_warehouse::Warehouse;

pub const PG: &str = "postgresql://postgres@127.0.0.1:5432/test";

pub struct Project {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub wh: Box<dyn Warehouse>,
    pub database: String,
}

impl Project {
    pub fn duckdb() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let mut fields = serde_json::Map::new();
        fields.insert("path".into(), "warehouse.duckdb".into());
        let wh = weir_warehouse::open("duckdb", &fields, dir.path()).unwrap();
        let store = Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap();
        Project { dir, store, wh, database: "warehouse".into() }
    }

    pub fn postgres() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let mut fields = serde_json::Map::new();
        for (k, v) in [("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"), ("dbname", "test")] {
            fields.insert(k.into(), v.into());
        }
        let wh = weir_warehouse::open("postgres", &fields, dir.path()).unwrap();
        let store = Store::sqlite(&dir.path().join(".weir/weir.db")).unwrap();
        Project { dir, store, wh, database: "test".into() }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn load(&self, yaml: &str) -> Load {
        parse_file(Path::new("loads/test.yml"), yaml).unwrap().remove(0)
    }

    pub fn run(&self, load: &Load, full_refresh: bool) -> Result<LoadReport, ConnectError> {
        let opts =
            LoadOptions { root: self.root().to_path_buf(), database: self.database.clone(), full_refresh, progress: None, topic: None };
        run_load(self.wh.as_ref(), load, &self.store, &opts)
    }

    pub fn execute(&self, sql: &str) {
        self.wh.connect().unwrap().execute(sql).unwrap();
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut c = self.wh.connect().unwrap();
        c.query(sql)
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(|d| if d == Datum::Null { "NULL".into() } else { d.to_string() }).collect())
            .collect()
    }

    pub fn scalar(&self, sql: &str) -> String {
        self.rows(sql).remove(0).remove(0)
    }
}

pub fn pg_client() -> postgres::Client {
    postgres::Client::connect(PG, postgres::NoTls).unwrap_or_else(|e| panic!("PostgreSQL at {PG} is required for this test: {e}"))
}

/// A TCP proxy on a free loopback port to `upstream` that cuts every connection once the
/// server has sent `limit` bytes through it: a database going away mid-load.
pub fn cutting_proxy(upstream: &str, limit: u64) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&upstream) else { return };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut sent = 0u64;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = n.min((limit - sent) as usize);
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    port
}
