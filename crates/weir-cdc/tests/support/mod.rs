//! A private PostgreSQL for the tests that need logical decoding (the shared server runs with
//! `wal_level=replica`): `initdb` and `pg_ctl` into a temporary folder, on a free loopback
//! port, stopped and deleted when dropped. As root (CI here), the server runs as the
//! `postgres` user, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePostgres {
    /// Starts a server with `settings` (`name=value`) beside `wal_level=logical`.
    pub fn start(settings: &[&str]) -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let owner = as_postgres();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown to postgres");
        }
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        run(owner, &bin("initdb"), &["-D", &path(&data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        let mut options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical -c fsync=off", path(dir.path()));
        for s in settings {
            options.push_str(&format!(" -c {s}"));
        }
        let log = dir.path().join("server.log");
        run(owner, &bin("pg_ctl"), &["-D", &path(&data), "-o", &options, "-l", &path(&log), "-w", "start"]);
        PrivatePostgres { dir, port }
    }

    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port), postgres::NoTls)
            .expect("connect to the private server")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = command(as_postgres(), &bin("pg_ctl"), &["-D", &path(&data), "-m", "immediate", "stop"]).output();
    }
}

/// The uid and gid of `postgres` when this process is root.
fn as_postgres() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    (id(&["-u"])? == 0).then_some(())?;
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

/// PostgreSQL's programs: on PATH, else Debian's versioned folder.
fn bin(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir(debian).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    versions.sort();
    versions.into_iter().rev().map(|v| v.join("bin").join(name)).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn command(owner: Option<(u32, u32)>, program: &Path, args: &[&str]) -> Command {
    match owner {
        Some(_) => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn run(owner: Option<(u32, u32)>, program: &Path, args: &[&str]) {
    let out = command(owner, program, args).output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
