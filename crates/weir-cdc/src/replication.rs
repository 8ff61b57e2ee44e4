//! PostgreSQL's streaming replication protocol, for logical decoding: a connection in
//! replication mode, the commands it takes (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`,
//! `START_REPLICATION`), and the stream of WAL data it then sends, answered with the standby
//! status updates that tell the server how far Weir has made changes durable (and so how
//! much WAL the slot may let go of).
//!
//! The wire messages are framed, and passwords (cleartext, MD5, SCRAM-SHA-256) answered, by
//! `postgres-protocol`, the protocol crate under the `postgres` client; the replication
//! sub-protocol on top (`CopyBoth`, XLogData, keepalives, status updates) is here. The
//! connection is blocking, one per source, read with a timeout so that a caller can send
//! status updates while the server is quiet. [`ChangeSource`] is what the rest of Weir reads
//! changes through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};

use crate::pgoutput::Lsn;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{at}: {message}")]
    Io { at: String, message: String },
    /// What the server said, with its SQLSTATE code.
    #[error("{at}: the server says: {message} (SQLSTATE {code}){}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Server { at: String, code: String, message: String, hint: Option<String> },
    #[error("{at}: {message}")]
    Protocol { at: String, message: String },
}

/// What a source of changes gives: WAL data, or (the server quiet) nothing within the wait.
pub trait ChangeSource {
    /// The next piece of WAL data, waiting at most `wait`.
    fn recv(&mut self, wait: Duration) -> Result<Option<WalData>, ReplicationError>;

    /// Everything up to `lsn` is durable on Weir's side: the server may let go of it.
    fn confirm(&mut self, lsn: Lsn) -> Result<(), ReplicationError>;

    /// How far the server has decoded the WAL for this stream, as its last keepalive said:
    /// everything of ours before it has been sent. With nothing held, a follower may
    /// confirm it, so that a slot whose tables are quiet does not keep WAL that only other
    /// tables wrote.
    fn sent(&self) -> Lsn;

    /// Asks the server for a keepalive (so that [`ChangeSource::sent`] is fresh).
    fn ask(&mut self) -> Result<(), ReplicationError>;
}

/// One XLogData message: a logical decoding message (see [`crate::pgoutput`]) and where it
/// lies in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalData {
    pub start: Lsn,
    /// The server's WAL end when it was sent.
    pub end: Lsn,
    pub data: Vec<u8>,
}

/// A slot just made, and the snapshot it exported (valid while this connection runs no other
/// command): reading the tables in it gives exactly their state at `consistent_point`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCreated {
    pub name: String,
    pub consistent_point: Lsn,
    pub snapshot: Option<String>,
}

/// A connection in replication mode, before it streams.
pub struct Connection {
    stream: TcpStream,
    read: BytesMut,
    at: String,
    user: String,
}

impl Connection {
    pub fn connect(config: &Config) -> Result<Connection, ReplicationError> {
        let at = format!("postgres://{}@{}:{}/{} (replication)", config.user, config.host, config.port, config.database);
        let stream = TcpStream::connect((config.host.as_str(), config.port)).map_err(|e| io(&at, e))?;
        stream.set_nodelay(true).map_err(|e| io(&at, e))?;
        let mut conn = Connection { stream, read: BytesMut::with_capacity(64 * 1024), at, user: config.user.clone() };
        let mut out = BytesMut::new();
        let params = [
            ("user", config.user.as_str()),
            ("database", config.database.as_str()),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
            ("application_name", "weir"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| io(&conn.at, e))?;
        conn.send(&out)?;
        conn.authenticate(config)?;
        conn.until_ready()?;
        Ok(conn)
    }

    /// `IDENTIFY_SYSTEM`: the server's current WAL position.
    pub fn identify_system(&mut self) -> Result<Lsn, ReplicationError> {
        let rows = self.command("IDENTIFY_SYSTEM")?;
        let lsn = rows.first().and_then(|r| r.get(2)).cloned().flatten().unwrap_or_default();
        lsn.parse().map_err(|m| self.protocol(m))
    }

    /// Makes a logical slot decoded by `pgoutput`, exporting its snapshot.
    pub fn create_slot(&mut self, name: &str) -> Result<SlotCreated, ReplicationError> {
        let rows = self.command(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')", quote_ident(name)))?;
        let row = rows.into_iter().next().ok_or_else(|| self.protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten();
        let consistent_point = field(1).unwrap_or_default().parse().map_err(|m| self.protocol(m))?;
        Ok(SlotCreated { name: field(0).unwrap_or_else(|| name.to_string()), consistent_point, snapshot: field(2) })
    }

    /// Drops the slot `name` when there is one. A slot another connection reads is waited for
    /// up to `patience` (the server lets go of a slot soon after its reader dies), then
    /// refused with the server's "is active" error (SQLSTATE 55006): a live reader elsewhere
    /// keeps its slot, where `WAIT` would hang until it stops.
    pub fn drop_slot_if_exists(&mut self, name: &str, patience: Duration) -> Result<(), ReplicationError> {
        let started = Instant::now();
        loop {
            let found = self.command(&format!("select 1 from pg_replication_slots where slot_name = '{}'", name.replace('\'', "''")))?;
            if found.is_empty() {
                return Ok(());
            }
            match self.command(&format!("DROP_REPLICATION_SLOT {}", quote_ident(name))) {
                Err(ReplicationError::Server { code, .. }) if code == "55006" && started.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// Runs a replication command (or, in a database connection, SQL) and returns its rows as
    /// text.
    pub fn command(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| io(&self.at, e))?;
        self.send(&out)?;
        let mut rows = vec![];
        let mut failed = None;
        loop {
            match self.next()? {
                Frame::Message(backend::Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let values: Vec<Option<String>> = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(|e| io(&self.at, e))?;
                    rows.push(values);
                }
                Frame::Message(backend::Message::ErrorResponse(e)) => failed = Some(self.server_error(&e)),
                Frame::Message(backend::Message::ReadyForQuery(_)) => break,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `START_REPLICATION` of `slot` from `from` (`Lsn(0)`: where the slot's confirmed
    /// position is), with `pgoutput`'s options (`proto_version`, `publication_names`,
    /// `streaming`, `messages`, ...).
    pub fn start(mut self, slot: &str, from: Lsn, options: &[(&str, &str)]) -> Result<WalStream, ReplicationError> {
        let options: Vec<String> = options.iter().map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''"))).collect();
        let sql = format!("START_REPLICATION SLOT {} LOGICAL {from} ({})", quote_ident(slot), options.join(", "));
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out).map_err(|e| io(&self.at, e))?;
        self.send(&out)?;
        loop {
            match self.next()? {
                Frame::CopyBoth => break,
                Frame::Message(backend::Message::ErrorResponse(e)) => {
                    let err = self.server_error(&e);
                    return Err(err);
                }
                _ => {}
            }
        }
        Ok(WalStream { conn: self, flushed: from, sent: from, last_status: Instant::now(), status_every: Duration::from_secs(10) })
    }

    fn authenticate(&mut self, config: &Config) -> Result<(), ReplicationError> {
        let password = || config.password.clone().unwrap_or_default();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.next()? {
                Frame::Message(backend::Message::AuthenticationOk) => return Ok(()),
                Frame::Message(backend::Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password().as_bytes(), &mut out).map_err(|e| io(&self.at, e))?;
                }
                Frame::Message(backend::Message::AuthenticationMd5Password(body)) => {
                    let hashed = postgres_protocol::authentication::md5_hash(config.user.as_bytes(), password().as_bytes(), body.salt());
                    frontend::password_message(hashed.as_bytes(), &mut out).map_err(|e| io(&self.at, e))?;
                }
                Frame::Message(backend::Message::AuthenticationSasl(body)) => {
                    let offered: Vec<String> = body.mechanisms().map(|m| Ok(m.to_string())).collect().map_err(|e| io(&self.at, e))?;
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(self.protocol(format!("the server offers only {} to authenticate with", offered.join(", "))));
                    }
                    let s = ScramSha256::new(password().as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).map_err(|e| io(&self.at, e))?;
                    scram = Some(s);
                }
                Frame::Message(backend::Message::AuthenticationSaslContinue(body)) => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol("SCRAM continued before it began".into()))?;
                    s.update(body.data()).map_err(|e| io(&self.at, e))?;
                    frontend::sasl_response(s.message(), &mut out).map_err(|e| io(&self.at, e))?;
                }
                Frame::Message(backend::Message::AuthenticationSaslFinal(body)) => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol("SCRAM ended before it began".into()))?;
                    s.finish(body.data()).map_err(|e| io(&self.at, e))?;
                }
                Frame::Message(backend::Message::ErrorResponse(e)) => return Err(self.server_error(&e)),
                Frame::Message(_) | Frame::CopyBoth => {
                    return Err(self.protocol("the server asked for a way of authenticating Weir does not speak".into()));
                }
            }
            if !out.is_empty() {
                self.send(&out)?;
            }
        }
    }

    fn until_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            match self.next()? {
                Frame::Message(backend::Message::ReadyForQuery(_)) => return Ok(()),
                Frame::Message(backend::Message::ErrorResponse(e)) => return Err(self.server_error(&e)),
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), ReplicationError> {
        self.stream.write_all(bytes).map_err(|e| io(&self.at, e))
    }

    /// The next whole message, reading as much as it takes.
    fn next(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if !self.fill()? {
                return Err(self.protocol("the server sent nothing within the read timeout".into()));
            }
        }
    }

    /// A whole message from what has been read, if there is one.
    fn parse(&mut self) -> Result<Option<Frame>, ReplicationError> {
        // `CopyBothResponse` ('W') is the one message postgres-protocol does not know.
        if self.read.first() == Some(&b'W')
            && let Some(header) = backend::Header::parse(&self.read).map_err(|e| io(&self.at, e))?
        {
            let total = header.len() as usize + 1;
            if self.read.len() < total {
                return Ok(None);
            }
            let _ = self.read.split_to(total);
            return Ok(Some(Frame::CopyBoth));
        }
        Ok(backend::Message::parse(&mut self.read).map_err(|e| io(&self.at, e))?.map(Frame::Message))
    }

    /// Reads what the server has sent: `false` when the read timeout passed first; an error
    /// when the server closed the connection.
    fn fill(&mut self) -> Result<bool, ReplicationError> {
        let mut chunk = [0u8; 64 * 1024];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(io(&self.at, e)),
        };
        if n == 0 {
            return Err(self.protocol("the server closed the connection".into()));
        }
        self.read.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    fn server_error(&self, e: &backend::ErrorResponseBody) -> ReplicationError {
        let (mut code, mut message, mut hint) = (String::new(), String::new(), None);
        let mut fields = e.fields();
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => code = value,
                b'M' => message = value,
                b'H' => hint = Some(value),
                _ => {}
            }
        }
        let hint = hint.or_else(|| what_to_change(&code, &message, &self.user));
        ReplicationError::Server { at: self.at.clone(), code, message, hint }
    }

    fn protocol(&self, message: String) -> ReplicationError {
        ReplicationError::Protocol { at: self.at.clone(), message }
    }
}

/// A connection streaming WAL data.
pub struct WalStream {
    conn: Connection,
    /// What Weir has made durable: reported in every status update.
    flushed: Lsn,
    /// What the server's last keepalive said it had sent up to.
    sent: Lsn,
    last_status: Instant,
    status_every: Duration,
}

impl WalStream {
    /// How often a status update goes out even when nothing changed (the server's
    /// `wal_sender_timeout` must be longer; its default is 60 s).
    pub fn status_every(mut self, every: Duration) -> WalStream {
        self.status_every = every;
        self
    }

    fn status(&mut self, reply: bool) -> Result<(), ReplicationError> {
        let mut body = Vec::with_capacity(34);
        body.push(b'r');
        for _ in 0..3 {
            // Written, flushed and applied: all of it, once durable.
            body.extend_from_slice(&self.flushed.0.to_be_bytes());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        body.extend_from_slice(&(now - PG_EPOCH_MICROS).to_be_bytes());
        body.push(u8::from(reply));
        let mut out = BytesMut::new();
        frontend::CopyData::new(&body[..]).map_err(|e| io(&self.conn.at, e))?.write(&mut out);
        self.conn.send(&out)?;
        self.last_status = Instant::now();
        Ok(())
    }
}

impl ChangeSource for WalStream {
    fn recv(&mut self, wait: Duration) -> Result<Option<WalData>, ReplicationError> {
        let deadline = Instant::now() + wait;
        loop {
            if self.last_status.elapsed() >= self.status_every {
                self.status(false)?;
            }
            match self.conn.parse()? {
                Some(Frame::Message(backend::Message::CopyData(body))) => {
                    let data = body.data();
                    match data.first() {
                        Some(b'w') if data.len() >= 25 => {
                            let lsn = |i: usize| Lsn(u64::from_be_bytes(data[i..i + 8].try_into().unwrap_or_default()));
                            return Ok(Some(WalData { start: lsn(1), end: lsn(9), data: data[25..].to_vec() }));
                        }
                        // A keepalive; one asking for a reply gets the position at once.
                        Some(b'k') if data.len() >= 18 => {
                            let end = Lsn(u64::from_be_bytes(data[1..9].try_into().unwrap_or_default()));
                            self.sent = self.sent.max(end);
                            if data[17] == 1 {
                                self.status(false)?;
                            }
                        }
                        _ => return Err(self.conn.protocol(format!("a replication message of unknown kind ({} bytes)", data.len()))),
                    }
                    continue;
                }
                Some(Frame::Message(backend::Message::ErrorResponse(e))) => return Err(self.conn.server_error(&e)),
                Some(Frame::Message(backend::Message::CopyDone)) => return Err(self.conn.protocol("the server ended the stream".into())),
                Some(_) => continue,
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A zero timeout is refused by the socket: at least a millisecond.
            let timeout = left.min(self.status_every).max(Duration::from_millis(1));
            self.conn.stream.set_read_timeout(Some(timeout)).map_err(|e| io(&self.conn.at, e))?;
            self.conn.fill()?;
        }
    }

    fn confirm(&mut self, lsn: Lsn) -> Result<(), ReplicationError> {
        self.flushed = self.flushed.max(lsn);
        self.status(false)
    }

    fn sent(&self) -> Lsn {
        self.sent
    }

    fn ask(&mut self) -> Result<(), ReplicationError> {
        self.status(true)
    }
}

/// One message from the server.
enum Frame {
    Message(backend::Message),
    /// `CopyBothResponse`: the stream has begun.
    CopyBoth,
}

/// What to change for the mistakes nearly everyone makes once setting up logical
/// replication, when the server does not say it itself.
fn what_to_change(code: &str, message: &str, user: &str) -> Option<String> {
    match code {
        "55000" if message.contains("wal_level") => {
            Some("set wal_level = logical (ALTER SYSTEM SET wal_level = logical) and restart the server".into())
        }
        "42501" if message.contains("replication") => {
            Some(format!("let the user replicate: ALTER ROLE {} WITH REPLICATION", quote_ident(user)))
        }
        "42704" if message.contains("publication") => {
            Some("create it for the tables to capture: CREATE PUBLICATION name FOR TABLE schema.table, ...".into())
        }
        "53400" if message.contains("replication slots") => Some("raise max_replication_slots, or drop a slot no longer used".into()),
        _ => None,
    }
}

/// A name quoted as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn io(at: &str, e: std::io::Error) -> ReplicationError {
    ReplicationError::Io { at: at.to_string(), message: e.to_string() }
}
