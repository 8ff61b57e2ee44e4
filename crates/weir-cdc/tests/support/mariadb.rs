//! A private MariaDB for the tests that read a binlog (the shared server runs without one):
//! `mariadb-install-db` into a temporary folder, `mariadbd` with the row binlog change data
//! capture needs on a free loopback port, killed and deleted when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    server: Child,
    pub port: u16,
}

impl PrivateMariadb {
    /// Starts a server with the binlog as the docs ask for, and a database `shop`.
    pub fn start() -> PrivateMariadb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            // A temporary folder of its own: installs side by side otherwise meet there.
            .arg(format!("--tmpdir={}", dir.path().display()))
            .output()
            .expect("run mariadb-install-db");
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
        let server = Command::new(if std::path::Path::new("/usr/sbin/mariadbd").exists() { "/usr/sbin/mariadbd" } else { "mariadbd" })
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--log-bin={}", data.join("bin").display()))
            .args(["--user=root", "--bind-address=127.0.0.1", "--server-id=1", "--innodb-flush-log-at-trx-commit=0", "--sync-binlog=0"])
            .args(["--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL"])
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        let db = PrivateMariadb { dir, server, port };
        let started = Instant::now();
        loop {
            if let Ok(mut c) = mysql::Conn::new(mysql::Opts::from_url(&db.url("")).expect("a URL")) {
                c.query_drop("create database if not exists shop character set utf8mb4").expect("create shop");
                return db;
            }
            let log = std::fs::read_to_string(db.dir.path().join("server.log")).unwrap_or_default();
            assert!(started.elapsed() < Duration::from_secs(30), "mariadbd did not start: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `mysql://root@127.0.0.1:PORT/database`.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}?prefer_socket=false", self.port)
    }

    pub fn connect(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url("shop")).expect("a URL")).expect("connect to the private server")
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
