//! MariaDB's binary log: the server's setup checked, a consistent snapshot taken at a binlog
//! position, and the row events from there on read as the same messages PostgreSQL's
//! logical replication gives ([`Message`]), so that one collapser and one mirror serve both.
//!
//! Weir reads the binlog as a replica does (`COM_BINLOG_DUMP` through the `mysql` crate), with
//! MariaDB's GTIDs: it announces the capability (`@mariadb_slave_capability=4`) so that each
//! transaction begins with a GTID event, and it resumes from the GTID state stored with the
//! mirrors (`@slave_connect_state`), which survives the server renaming or purging its files;
//! the file and offset are kept beside it for people and for servers without GTIDs. Row events
//! need `binlog_format=ROW`, `binlog_row_image=FULL` (every column of the row before and
//! after) and `binlog_row_metadata=FULL` (the columns' names and keys in each table map, so a
//! column added mid-stream is seen where it happened).
//!
//! MariaDB has no replication slots: the server keeps its binlog files for
//! `binlog_expire_logs_seconds` whether anyone reads them or not. A follower holds a named
//! lock (`GET_LOCK`) while it runs, so that a second one for the same source knows it runs
//! elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use mysql::binlog::EventType;
use mysql::binlog::events::{EventData, OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql::binlog::value::BinlogValue;
use mysql::consts::ColumnType as My;
use mysql::prelude::Queryable;
use mysql::{BinlogRequest, Conn, Opts, OptsBuilder};
use weir_core::ColumnType;

use crate::pgoutput::{Column, Lsn, Message, OldRow, Relation, ReplicaIdentity, Tuple, Value};

/// A place in the binlog: the file and offset a transaction ends at, and the server's GTID
/// state there (`domain-server-sequence` per replication domain, comma-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub offset: u64,
    pub gtid: String,
}

impl Position {
    /// Whether this position is at or past `other` in the binlog (by file and offset).
    pub fn reached(&self, other: &Position) -> bool {
        (self.file.as_str(), self.offset) >= (other.file.as_str(), other.offset)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if !self.gtid.is_empty() {
            write!(f, " gtid {}", self.gtid)?;
        }
        Ok(())
    }
}

impl FromStr for Position {
    type Err = String;

    /// `file:offset`, then optionally ` gtid 0-1-42,...`.
    fn from_str(s: &str) -> Result<Position, String> {
        let (place, gtid) = s.split_once(" gtid ").unwrap_or((s, ""));
        let (file, offset) = place.rsplit_once(':').ok_or_else(|| format!("binlog position '{s}' is not file:offset"))?;
        let offset = offset.parse().map_err(|_| format!("binlog position '{s}' has no offset"))?;
        Ok(Position { file: file.to_string(), offset, gtid: gtid.trim().to_string() })
    }
}

/// Why the binlog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("{at}: {message}")]
    Server { at: String, message: String },
    /// A mistake in the server's setup or grants, with what to change.
    #[error("{0}")]
    Setup(String),
    #[error("the binlog at {at}: {message}")]
    Stream { at: Position, message: String },
    /// Another follower holds the source's lock.
    #[error("{0}")]
    InUse(String),
}

/// A MariaDB server and who Weir is to it.
#[derive(Debug, Clone)]
pub struct Server {
    opts: Opts,
    /// Where it is, the password hidden.
    pub shown: String,
    /// The replica id Weir reads the binlog as (one per source, unlike any real replica's).
    pub server_id: u32,
}

/// One captured table: its description for the mirror, and how each column's binlog value
/// becomes text.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub relation: Relation,
    kinds: Vec<Kind>,
}

/// How a column's value is written as text the warehouse casts to the mirror's type.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Numbers and text: as they are.
    Plain,
    /// A signed `MEDIUMINT`, which the binlog reader hands over as its unsigned 24 bits.
    Int24,
    Date,
    DateTime,
    /// `TIMESTAMP`, which the binlog holds as seconds since 1970 (UTC).
    Epoch,
    Time,
    /// Binary strings, as hex (as the loads write them).
    Binary,
    /// Text in `latin1`, which the binlog holds as the table stores it (the text protocol
    /// converts it; the binlog does not).
    Latin1,
    /// `BIT(n)`: big-endian bytes, as a number.
    Bit,
    /// The binlog holds an `ENUM` as its index, a `SET` as a bitmask.
    Enum(Vec<String>),
    Set(Vec<String>),
}

/// A column as `information_schema.columns` gives it: name, data type, column type,
/// precision, scale, key.
type CatalogColumn = (String, String, String, Option<u64>, Option<u64>, String);

/// What the binlog reader hands the follower.
#[derive(Debug)]
pub enum Read {
    Message(Message),
    /// A transaction ended here, committed at this time (microseconds since 1970, UTC; the
    /// binlog keeps seconds); its changes, if any, were the messages before.
    Commit(Position, i64),
    /// Nothing to read: the server has sent everything up to here.
    Quiet(Position),
}

impl Server {
    /// The server a `mysql://` (or `mariadb://`) URL names, read as replica `server_id`.
    pub fn from_url(url: &str, server_id: u32) -> Result<Server, String> {
        let normal = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let opts = Opts::from_url(&normal).map_err(|e| e.to_string())?;
        let shown = format!(
            "mysql://{}@{}:{}/{}",
            opts.get_user().unwrap_or("root"),
            opts.get_ip_or_hostname(),
            opts.get_tcp_port(),
            opts.get_db_name().unwrap_or("")
        );
        // Where the URL says (not the server's socket), with heartbeats every second: a
        // silence of half a minute is a lost connection.
        let opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .read_timeout(Some(Duration::from_secs(30)))
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .into();
        Ok(Server { opts, shown, server_id })
    }

    /// A connection with its session in UTC (`TIMESTAMP` values are read as UTC).
    pub fn connect(&self) -> Result<Conn, BinlogError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(|e| self.error(e))?;
        conn.query_drop("set time_zone = '+00:00'").map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// Checks that the binlog holds what change data capture needs, and that `tables` exist
    /// with primary keys; returns where the binlog ends now.
    pub fn prepare(&self, load: &str, tables: &[(String, String)]) -> Result<Position, BinlogError> {
        let mut conn = self.connect()?;
        let settings: Option<(String, String, String, String, String, String)> = conn
            .query_first(
                "select cast(@@log_bin as char), @@binlog_format, @@binlog_row_image, \
                 coalesce(@@binlog_row_metadata, ''), @@version, cast(coalesce(@@log_bin_compress, 0) as char)",
            )
            .map_err(|e| self.error(e))?;
        let Some((log_bin, format, image, metadata, version, compress)) = settings else {
            return Err(self.setup(load, "the server did not say how its binlog is set"));
        };
        if !version.contains("MariaDB") {
            return Err(self
                .setup(load, &format!("{version} is MySQL; change data capture reads MariaDB's binlog (MySQL's GTIDs are not read yet)")));
        }
        let want = [
            (
                !matches!(log_bin.as_str(), "1" | "ON"),
                "binary logging is off: start the server with --log-bin (log_bin in my.cnf)".to_string(),
            ),
            (!format.eq_ignore_ascii_case("ROW"), format!("binlog_format is {format}: set binlog_format=ROW")),
            (!image.eq_ignore_ascii_case("FULL"), format!("binlog_row_image is {image}: set binlog_row_image=FULL")),
            (
                !metadata.eq_ignore_ascii_case("FULL"),
                format!("binlog_row_metadata is {metadata}: set binlog_row_metadata=FULL, so row events name their columns"),
            ),
            (
                matches!(compress.as_str(), "1" | "ON"),
                "log_bin_compress is on: Weir reads uncompressed binlogs; set log_bin_compress=OFF".to_string(),
            ),
        ];
        if let Some((_, what)) = want.iter().find(|(wrong, _)| *wrong) {
            return Err(self.setup(load, what));
        }
        let end = self.end(&mut conn, load)?;
        for (schema, table) in tables {
            let keys: Vec<(String, String)> = conn
                .exec(
                    "select column_name, column_key from information_schema.columns where table_schema = ? and table_name = ?",
                    (schema, table),
                )
                .map_err(|e| self.error(e))?;
            if keys.is_empty() {
                return Err(self.setup(
                    load,
                    &format!("there is no table {schema}.{table} (or the user may not read it: GRANT SELECT ON `{schema}`.* TO it)"),
                ));
            }
            if !keys.iter().any(|(_, k)| k == "PRI") {
                return Err(self.setup(
                    load,
                    &format!("{schema}.{table} has no primary key, so its mirror's rows cannot be matched: ALTER TABLE `{schema}`.`{table}` ADD PRIMARY KEY (...)"),
                ));
            }
        }
        Ok(end)
    }

    /// Where the binlog ends now, with the GTID state there.
    fn end(&self, conn: &mut Conn, load: &str) -> Result<Position, BinlogError> {
        let status: Option<mysql::Row> = conn.query_first("show master status").map_err(|e| {
            let mut e = self.error(e);
            if let BinlogError::Server { message, .. } = &mut e
                && message.contains("denied")
            {
                message.push_str("; change data capture needs GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the user");
            }
            e
        })?;
        let Some(row) = status else {
            return Err(self.setup(load, "the server has no binlog (SHOW MASTER STATUS is empty): start it with --log-bin"));
        };
        let (file, offset): (String, u64) = (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default());
        let gtid: Option<String> = conn.query_first("select @@gtid_binlog_pos").map_err(|e| self.error(e))?;
        Ok(Position { file, offset, gtid: gtid.unwrap_or_default() })
    }

    /// Takes the source's lock for a follower (released when the connection closes); another
    /// follower holding it means this one runs elsewhere.
    pub fn lock(&self, name: &str) -> Result<Conn, BinlogError> {
        let mut conn = self.connect()?;
        let got: Option<Option<i64>> =
            conn.exec_first("select get_lock(?, 0)", (format!("weir_cdc.{name}"),)).map_err(|e| self.error(e))?;
        if got.flatten() != Some(1) {
            return Err(BinlogError::InUse(format!("another follower of '{name}' is reading {}", self.shown)));
        }
        Ok(conn)
    }

    /// The server connection holding the follower's lock `name` ([`Server::lock`]), if one does.
    pub fn lock_holder(&self, name: &str) -> Result<Option<u64>, BinlogError> {
        let mut conn = self.connect()?;
        let held: Option<Option<u64>> =
            conn.exec_first("select is_used_lock(?)", (format!("weir_cdc.{name}"),)).map_err(|e| self.error(e))?;
        Ok(held.flatten())
    }

    /// Opens a consistent snapshot and the binlog position it stands at: MariaDB gives both
    /// without locking the tables (`binlog_snapshot_file` and `_position`).
    pub fn snapshot(&self) -> Result<(Conn, Position), BinlogError> {
        let mut conn = self.connect()?;
        conn.query_drop("set session transaction isolation level repeatable read").map_err(|e| self.error(e))?;
        conn.query_drop("start transaction with consistent snapshot, read only").map_err(|e| self.error(e))?;
        let status: Vec<(String, String)> = conn.query("show status like 'binlog_snapshot_%'").map_err(|e| self.error(e))?;
        let get = |k: &str| status.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        let (Some(file), Some(offset)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position")) else {
            return Err(BinlogError::Server { at: self.shown.clone(), message: "the server gave no binlog_snapshot_file".into() });
        };
        let offset: u64 = offset.parse().unwrap_or_default();
        let gtid: Option<Option<String>> = conn.exec_first("select binlog_gtid_pos(?, ?)", (&file, offset)).map_err(|e| self.error(e))?;
        Ok((conn, Position { file, offset, gtid: gtid.flatten().unwrap_or_default() }))
    }

    /// A table as the catalog describes it now (for a snapshot, or a table the stream
    /// truncates before any of its rows changed).
    pub fn describe(&self, conn: &mut Conn, id: u32, schema: &str, table: &str) -> Result<Mapped, BinlogError> {
        let rows: Vec<CatalogColumn> = conn
            .exec(
                "select column_name, data_type, column_type, numeric_precision, numeric_scale, column_key \
                 from information_schema.columns where table_schema = ? and table_name = ? order by ordinal_position",
                (schema, table),
            )
            .map_err(|e| self.error(e))?;
        let (mut columns, mut kinds) = (vec![], vec![]);
        for (name, data_type, column_type, precision, scale, key) in rows {
            let unsigned = column_type.contains("unsigned");
            let (kind, ty) = match data_type.as_str() {
                "tinyint" | "smallint" | "mediumint" | "year" => (Kind::Plain, ColumnType::Integer),
                "int" => (Kind::Plain, if unsigned { ColumnType::BigInt } else { ColumnType::Integer }),
                "bigint" => (Kind::Plain, if unsigned { ColumnType::Decimal { precision: 20, scale: 0 } } else { ColumnType::BigInt }),
                "float" | "double" => (Kind::Plain, ColumnType::Double),
                "decimal" => (Kind::Plain, decimal(precision.unwrap_or(65), scale.unwrap_or(0))),
                "date" => (Kind::Date, ColumnType::Date),
                "datetime" | "timestamp" => (Kind::DateTime, ColumnType::Timestamp),
                "time" => (Kind::Time, ColumnType::Time),
                "bit" => (Kind::Bit, ColumnType::BigInt),
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => (Kind::Binary, ColumnType::Varchar),
                "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
                | "geometrycollection" => (Kind::Binary, ColumnType::Varchar),
                _ => (Kind::Plain, ColumnType::Varchar),
            };
            columns.push(Column { key: key == "PRI", name, type_oid: 0, type_modifier: -1, ty });
            kinds.push(kind);
        }
        if columns.is_empty() {
            return Err(BinlogError::Setup(format!("there is no table {schema}.{table} on {}", self.shown)));
        }
        let relation = Relation {
            xid: None,
            oid: id,
            namespace: schema.into(),
            name: table.into(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        };
        Ok(Mapped { relation, kinds })
    }

    /// Reads the binlog from `from` on a thread of its own, handing what concerns `tables`
    /// to the receiver (bounded: the reader waits while the follower merges). The thread ends
    /// when the receiver is dropped (it notices at the next event or heartbeat, within a
    /// second) or the stream fails (the error is the last thing sent).
    pub fn read(&self, from: &Position, tables: &[(String, String)]) -> Result<Receiver<Result<Read, BinlogError>>, BinlogError> {
        let mut conn = self.connect()?;
        conn.query_drop("set @mariadb_slave_capability = 4").map_err(|e| self.error(e))?;
        conn.query_drop("set @master_heartbeat_period = 1000000000").map_err(|e| self.error(e))?;
        let mut request = BinlogRequest::new(self.server_id);
        if from.gtid.is_empty() {
            request = request.with_filename(from.file.as_bytes().to_vec()).with_pos(from.offset);
        } else {
            // From the GTID state: the server finds the file, and the names may have changed.
            conn.exec_drop("set @slave_connect_state = ?", (&from.gtid,)).map_err(|e| self.error(e))?;
            conn.query_drop("set @slave_gtid_strict_mode = 0, @slave_gtid_ignore_duplicates = 0").map_err(|e| self.error(e))?;
        }
        let stream = conn.get_binlog_stream(request).map_err(|e| self.stream_error(from, e))?;
        let (sender, receiver) = sync_channel(4096);
        let mut reader = Reader {
            server: self.clone(),
            tables: tables.to_vec(),
            at: from.clone(),
            domains: domains(&from.gtid),
            ids: HashMap::new(),
            maps: HashMap::new(),
            shown: HashMap::new(),
            in_group: false,
            standalone: false,
            described: false,
            time: 0,
            side: None,
        };
        std::thread::Builder::new()
            .name("weir-binlog".into())
            .spawn(move || {
                for event in stream {
                    let sent = match event {
                        Ok(event) => reader.take(&event, &sender),
                        Err(e) => Err(reader.server.stream_error(&reader.at, e)),
                    };
                    if let Err(e) = sent {
                        // Also how a dropped receiver ends the thread: the send fails.
                        let _ = sender.send(Err(e));
                        return;
                    }
                }
                let _ = sender.send(Err(reader.server.stream_error(&reader.at, "the server ended the binlog stream")));
            })
            .map_err(|e| BinlogError::Server { at: self.shown.clone(), message: format!("starting the binlog reader: {e}") })?;
        Ok(receiver)
    }

    fn error(&self, e: impl fmt::Display) -> BinlogError {
        BinlogError::Server { at: self.shown.clone(), message: e.to_string() }
    }

    fn stream_error(&self, at: &Position, e: impl fmt::Display) -> BinlogError {
        let message = e.to_string();
        if message.contains("denied") || message.contains("1227") {
            return BinlogError::Setup(format!(
                "{}: reading the binlog needs GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the user ({message})",
                self.shown
            ));
        }
        if message.contains("1236") || message.contains("Could not find") || message.contains("purged") {
            return BinlogError::Setup(format!(
                "{}: the binlog at {at} is gone from the server ({message}), so changes since the mirror's position are lost: take the mirrors again with a full refresh",
                self.shown
            ));
        }
        BinlogError::Stream { at: at.clone(), message }
    }

    fn setup(&self, load: &str, what: &str) -> BinlogError {
        BinlogError::Setup(format!("{load}: {} ({})", what, self.shown))
    }
}

/// Receives what the reader sends, waiting at most `wait`; None when nothing came.
pub fn receive(receiver: &Receiver<Result<Read, BinlogError>>, wait: Duration) -> Result<Option<Read>, BinlogError> {
    match receiver.recv_timeout(wait) {
        Ok(read) => read.map(Some),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err(BinlogError::Server { at: "the binlog reader".into(), message: "stopped".into() }),
    }
}

/// The text of a value as the warehouse casts it to the mirror's column, from a row event or
/// from a snapshot read over the text protocol. A zero date, which no warehouse holds, is
/// null.
pub fn text(kind_of: &Mapped, column: usize, value: mysql::Value) -> Value {
    use mysql::Value as V;
    let kind = kind_of.kinds.get(column).unwrap_or(&Kind::Plain);
    let t = |s: String| Value::Text(s.into_bytes());
    match (kind, value) {
        (_, V::NULL) => Value::Null,
        (Kind::Bit, V::Bytes(b)) => t(b.iter().fold(0u64, |n, x| (n << 8) | u64::from(*x)).to_string()),
        (Kind::Int24, V::Int(i)) if i >= 1 << 23 => t((i - (1 << 24)).to_string()),
        (Kind::Binary, V::Bytes(b)) => t(b.iter().map(|x| format!("{x:02x}")).collect()),
        (Kind::Latin1, V::Bytes(b)) => t(b.iter().map(|&x| char::from(x)).collect()),
        (Kind::Enum(names), V::Int(i)) => {
            t(usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).and_then(|i| names.get(i)).cloned().unwrap_or_default())
        }
        (Kind::Set(names), V::Bytes(mask)) => {
            let on = |i: usize| mask.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1);
            t(names.iter().enumerate().filter(|(i, _)| on(*i)).map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(","))
        }
        (Kind::Date | Kind::DateTime | Kind::Epoch, V::Date(0, 0, 0, ..)) => Value::Null,
        (Kind::Date, V::Date(y, m, d, ..)) => t(format!("{y:04}-{m:02}-{d:02}")),
        (_, V::Date(y, m, d, h, i, s, us)) => t(format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}.{us:06}")),
        (Kind::Date | Kind::DateTime, V::Bytes(b)) if b.starts_with(b"0000-00-00") => Value::Null,
        (Kind::Epoch, V::Bytes(b)) => epoch(&String::from_utf8_lossy(&b)),
        (Kind::Epoch, V::Int(seconds)) => epoch(&seconds.to_string()),
        (_, V::Time(negative, days, h, m, s, us)) => {
            t(format!("{}{:02}:{m:02}:{s:02}.{us:06}", if negative { "-" } else { "" }, days * 24 + u32::from(h)))
        }
        (_, V::Int(i)) => t(i.to_string()),
        (_, V::UInt(u)) => t(u.to_string()),
        (_, V::Float(f)) => t(f.to_string()),
        (_, V::Double(d)) => t(d.to_string()),
        (_, V::Bytes(b)) => Value::Text(b),
    }
}

/// `TIMESTAMP` seconds since 1970 (`1700000000.123456`) as UTC text; zero is MySQL's zero
/// timestamp, null.
fn epoch(text: &str) -> Value {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = seconds.parse().unwrap_or_default();
    let micros: u32 = format!("{fraction:0<6}").get(..6).and_then(|f| f.parse().ok()).unwrap_or_default();
    if seconds == 0 && micros == 0 {
        return Value::Null;
    }
    match chrono::DateTime::from_timestamp(seconds, micros * 1000) {
        Some(at) => Value::Text(at.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes()),
        None => Value::Null,
    }
}

fn decimal(precision: u64, scale: u64) -> ColumnType {
    // Wider than the warehouses' decimals: its text.
    if precision <= 38 && scale <= precision {
        ColumnType::Decimal { precision: precision as u8, scale: scale as u8 }
    } else {
        ColumnType::Varchar
    }
}

/// The GTID state as one `domain-server-sequence` per domain.
fn domains(gtid: &str) -> Vec<(u32, String)> {
    gtid.split(',')
        .filter(|g| !g.trim().is_empty())
        .map(|g| (g.trim().split('-').next().and_then(|d| d.parse().ok()).unwrap_or(0), g.trim().to_string()))
        .collect()
}

/// The collations of `latin1`, by id.
const LATIN1: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];

/// MariaDB's own event types, past MySQL's.
const ANNOTATE_ROWS: u8 = 160;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
/// The compressed query and row events (`log_bin_compress`).
const COMPRESSED: std::ops::RangeInclusive<u8> = 165..=170;
/// A GTID event's flag: the group is one statement (DDL), with no commit of its own.
const FL_STANDALONE: u8 = 1;

/// The reading side: turns events into [`Read`]s.
struct Reader {
    server: Server,
    tables: Vec<(String, String)>,
    /// Where the stream has come to (the end of the last event read).
    at: Position,
    /// The GTID state, per domain.
    domains: Vec<(u32, String)>,
    /// A stable id per captured table (the server's table ids change).
    ids: HashMap<(String, String), u32>,
    /// The server's table ids this stream has mapped: the event and, if captured, the table.
    maps: HashMap<u64, (TableMapEvent<'static>, Option<Mapped>)>,
    /// The description last handed over per table id of ours.
    shown: HashMap<u32, Relation>,
    in_group: bool,
    standalone: bool,
    /// Whether the stream's format description has come (until then, events keep their
    /// checksums).
    described: bool,
    /// When the event read last was written (microseconds since 1970, UTC).
    time: i64,
    /// A connection for describing a table the stream truncates before it mapped it.
    side: Option<Conn>,
}

impl Reader {
    fn take(&mut self, event: &mysql::binlog::events::Event, sender: &SyncSender<Result<Read, BinlogError>>) -> Result<(), BinlogError> {
        let header = event.header();
        if header.timestamp() > 0 {
            self.time = i64::from(header.timestamp()) * 1_000_000;
        }
        let kind = header.event_type_raw();
        let send = |r: Read| sender.send(Ok(r)).map_err(|_| BinlogError::InUse(String::new()));
        let next = u64::from(header.log_pos());
        let bad = |at: &Position, e: std::io::Error| BinlogError::Stream { at: at.clone(), message: e.to_string() };
        if COMPRESSED.contains(&kind) {
            return Err(BinlogError::Setup(format!(
                "{}: the binlog is compressed (log_bin_compress): set log_bin_compress=OFF",
                self.server.shown
            )));
        }
        match kind {
            MARIADB_GTID => {
                let data = event.data();
                if data.len() >= 13 {
                    let sequence = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                    let gtid = format!("{domain}-{}-{sequence}", header.server_id());
                    match self.domains.iter_mut().find(|(d, _)| *d == domain) {
                        Some((_, g)) => *g = gtid,
                        None => self.domains.push((domain, gtid)),
                    }
                    self.standalone = data[12] & FL_STANDALONE != 0;
                }
                self.in_group = true;
                send(Read::Message(Message::Begin { final_lsn: Lsn(0), commit_time: 0, xid: 0 }))?;
            }
            MARIADB_GTID_LIST if self.domains.is_empty() => {
                // The state as the file begins: where a stream without a stored state stands.
                let data = event.data();
                let count = data.get(0..4).map_or(0, |c| u32::from_le_bytes(c.try_into().unwrap_or_default()) & 0x0fff_ffff) as usize;
                for i in 0..count {
                    let Some(g) = data.get(4 + i * 16..4 + (i + 1) * 16) else { break };
                    let (domain, server, sequence) = (
                        u32::from_le_bytes(g[0..4].try_into().unwrap_or_default()),
                        u32::from_le_bytes(g[4..8].try_into().unwrap_or_default()),
                        u64::from_le_bytes(g[8..16].try_into().unwrap_or_default()),
                    );
                    self.domains.push((domain, format!("{domain}-{server}-{sequence}")));
                }
            }
            k if k == EventType::HEARTBEAT_EVENT as u8 => {
                if !self.in_group {
                    // The file is the one the stream is in (a new file comes with a rotate
                    // event first); the event's own copy of its name arrives with the
                    // checksum still on it, so it is not read.
                    if next > 0 {
                        self.at.offset = next;
                    }
                    self.at.gtid = self.gtid();
                    send(Read::Quiet(self.at.clone()))?;
                }
                return Ok(());
            }
            ANNOTATE_ROWS => {}
            _ => match event.read_data().map_err(|e| bad(&self.at, e))? {
                Some(EventData::RotateEvent(r)) => {
                    // The rotate that opens the stream comes before the format description, so
                    // its checksum is still on it: the server adds one to it whenever the
                    // replica says it takes checksums (the `mysql` crate always does), even
                    // with `binlog_checksum=NONE`.
                    let name = r.name_raw();
                    let name = if self.described { name } else { &name[..name.len().saturating_sub(4)] };
                    self.at.file = String::from_utf8_lossy(name).into_owned();
                    self.at.offset = r.position();
                    return Ok(());
                }
                Some(EventData::FormatDescriptionEvent(_)) => self.described = true,
                Some(EventData::TableMapEvent(tme)) => {
                    let tme = tme.into_owned();
                    let key = (tme.database_name().into_owned(), tme.table_name().into_owned());
                    let mapped = if self.tables.contains(&key) { Some(self.map(&tme, &key)?) } else { None };
                    if let Some(m) = &mapped
                        && self.shown.get(&m.relation.oid) != Some(&m.relation)
                    {
                        self.shown.insert(m.relation.oid, m.relation.clone());
                        send(Read::Message(Message::Relation(m.relation.clone())))?;
                    }
                    self.maps.insert(tme.table_id(), (tme, mapped));
                }
                Some(EventData::RowsEvent(rows)) => {
                    let Some((tme, Some(mapped))) = self.maps.get(&rows.table_id()) else { return self.moved(next) };
                    let id = mapped.relation.oid;
                    for row in rows.rows(tme) {
                        let (before, after) = row.map_err(|e| bad(&self.at, e))?;
                        let values = |r: mysql::binlog::row::BinlogRow| -> Result<Tuple, BinlogError> {
                            let mut out = Vec::with_capacity(r.len());
                            for (i, v) in r.unwrap().into_iter().enumerate() {
                                match v {
                                    BinlogValue::Value(v) => out.push(text(mapped, i, v)),
                                    other => {
                                        return Err(BinlogError::Stream {
                                            at: self.at.clone(),
                                            message: format!("{}: a JSON value in MySQL's binary form ({other:?})", mapped.relation.name),
                                        });
                                    }
                                }
                            }
                            Ok(Tuple(out))
                        };
                        let message = match (before, after) {
                            (None, Some(a)) => Message::Insert { xid: None, relation: id, new: values(a)? },
                            (Some(b), Some(a)) => {
                                Message::Update { xid: None, relation: id, old: Some((OldRow::Full, values(b)?)), new: values(a)? }
                            }
                            (Some(b), None) => Message::Delete { xid: None, relation: id, old: (OldRow::Full, values(b)?) },
                            (None, None) => continue,
                        };
                        send(Read::Message(message))?;
                    }
                }
                Some(EventData::XidEvent(_)) => return self.commit(next, &send),
                Some(EventData::QueryEvent(q)) => {
                    let query = q.query().trim().to_ascii_lowercase();
                    match query.as_str() {
                        "begin" => {
                            self.in_group = true;
                            send(Read::Message(Message::Begin { final_lsn: Lsn(0), commit_time: 0, xid: 0 }))?;
                        }
                        "commit" => return self.commit(next, &send),
                        "rollback" => {
                            send(Read::Message(Message::Begin { final_lsn: Lsn(0), commit_time: 0, xid: 0 }))?;
                            return self.commit(next, &send);
                        }
                        _ => {
                            if let Some((schema, table)) = truncated(&query, &q.schema())
                                && self.tables.contains(&(schema.clone(), table.clone()))
                            {
                                let id = self.id(&schema, &table);
                                if !self.shown.contains_key(&id) {
                                    let server = self.server.clone();
                                    let side = match self.side.as_mut() {
                                        Some(c) => c,
                                        None => self.side.insert(server.connect()?),
                                    };
                                    let m = server.describe(side, id, &schema, &table)?;
                                    self.shown.insert(id, m.relation.clone());
                                    send(Read::Message(Message::Relation(m.relation)))?;
                                }
                                send(Read::Message(Message::Truncate {
                                    xid: None,
                                    relations: vec![id],
                                    cascade: false,
                                    restart_identity: false,
                                }))?;
                            }
                            if self.standalone || !self.in_group {
                                return self.commit(next, &send);
                            }
                        }
                    }
                }
                _ => {}
            },
        }
        self.moved(next)
    }

    /// The stream has read up to `next` (artificial events say 0).
    fn moved(&mut self, next: u64) -> Result<(), BinlogError> {
        if next > 0 {
            self.at.offset = next;
        }
        Ok(())
    }

    fn commit(&mut self, next: u64, send: &dyn Fn(Read) -> Result<(), BinlogError>) -> Result<(), BinlogError> {
        self.moved(next)?;
        self.at.gtid = self.gtid();
        (self.in_group, self.standalone) = (false, false);
        send(Read::Commit(self.at.clone(), self.time))
    }

    fn gtid(&self) -> String {
        self.domains.iter().map(|(_, g)| g.as_str()).collect::<Vec<_>>().join(",")
    }

    /// A table's number in the stream: its place among the captured tables (from 1), as the
    /// snapshots number it, so that a chunk read apart from the stream is the same relation.
    fn id(&mut self, schema: &str, table: &str) -> u32 {
        if let Some(i) = self.tables.iter().position(|(s, t)| s == schema && t == table) {
            return i as u32 + 1;
        }
        let next = (self.tables.len() + self.ids.len()) as u32 + 1;
        *self.ids.entry((schema.to_string(), table.to_string())).or_insert(next)
    }

    /// A captured table as its table map describes it (names, keys, signedness, charsets,
    /// enum and set values: `binlog_row_metadata=FULL`).
    fn map(&mut self, tme: &TableMapEvent<'static>, (schema, table): &(String, String)) -> Result<Mapped, BinlogError> {
        let id = self.id(schema, table);
        let at = self.at.clone();
        let bad = |m: String| BinlogError::Stream { at: at.clone(), message: format!("the table map of {schema}.{table}: {m}") };
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(|e| bad(e.to_string()))?;
        let (mut enums, mut sets) = (vec![], vec![]);
        for field in tme.iter_optional_meta() {
            match field.map_err(|e| bad(e.to_string()))? {
                OptionalMetadataField::EnumStrValue(v) => {
                    for e in v.iter_values() {
                        enums.push(e.map_err(|e| bad(e.to_string()))?.values().iter().map(|s| s.value().into_owned()).collect::<Vec<_>>());
                    }
                }
                OptionalMetadataField::SetStrValue(v) => {
                    for s in v.iter_values() {
                        sets.push(s.map_err(|e| bad(e.to_string()))?.values().iter().map(|s| s.value().into_owned()).collect::<Vec<_>>());
                    }
                }
                _ => {}
            }
        }
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        let mut signed = meta.iter_signedness();
        let mut charsets = meta.iter_charset();
        let names: Vec<String> =
            meta.iter_column_name().map(|n| n.map(|n| n.name().into_owned())).collect::<Result<_, _>>().map_err(|e| bad(e.to_string()))?;
        let keys: Vec<u64> = meta.iter_primary_key().collect::<Result<_, _>>().map_err(|e| bad(e.to_string()))?;
        let count = tme.columns_count() as usize;
        if names.len() != count {
            return Err(BinlogError::Setup(format!(
                "{}: row events of {schema}.{table} do not name their columns: set binlog_row_metadata=FULL",
                self.server.shown
            )));
        }
        let (mut columns, mut kinds) = (vec![], vec![]);
        for (i, name) in names.into_iter().enumerate() {
            let ty = tme.get_column_type(i).map_err(|e| bad(e.to_string()))?.ok_or_else(|| bad(format!("no type for column {i}")))?;
            let meta_bytes = tme.get_column_metadata(i).unwrap_or(&[]);
            let unsigned = if ty.is_numeric_type() { signed.next().unwrap_or(false) } else { false };
            let charset =
                if ty.is_character_type() { charsets.next().transpose().map_err(|e| bad(e.to_string()))?.unwrap_or(0) } else { 0 };
            let (kind, column_type) = match ty {
                My::MYSQL_TYPE_INT24 if !unsigned => (Kind::Int24, ColumnType::Integer),
                My::MYSQL_TYPE_TINY | My::MYSQL_TYPE_SHORT | My::MYSQL_TYPE_INT24 | My::MYSQL_TYPE_YEAR => {
                    (Kind::Plain, ColumnType::Integer)
                }
                My::MYSQL_TYPE_LONG => (Kind::Plain, if unsigned { ColumnType::BigInt } else { ColumnType::Integer }),
                My::MYSQL_TYPE_LONGLONG => {
                    (Kind::Plain, if unsigned { ColumnType::Decimal { precision: 20, scale: 0 } } else { ColumnType::BigInt })
                }
                My::MYSQL_TYPE_FLOAT | My::MYSQL_TYPE_DOUBLE => (Kind::Plain, ColumnType::Double),
                My::MYSQL_TYPE_NEWDECIMAL | My::MYSQL_TYPE_DECIMAL => (
                    Kind::Plain,
                    decimal(u64::from(meta_bytes.first().copied().unwrap_or(65)), u64::from(meta_bytes.get(1).copied().unwrap_or(0))),
                ),
                My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => (Kind::Date, ColumnType::Date),
                My::MYSQL_TYPE_DATETIME | My::MYSQL_TYPE_DATETIME2 => (Kind::DateTime, ColumnType::Timestamp),
                My::MYSQL_TYPE_TIMESTAMP | My::MYSQL_TYPE_TIMESTAMP2 => (Kind::Epoch, ColumnType::Timestamp),
                My::MYSQL_TYPE_TIME | My::MYSQL_TYPE_TIME2 => (Kind::Time, ColumnType::Time),
                My::MYSQL_TYPE_BIT => (Kind::Bit, ColumnType::BigInt),
                My::MYSQL_TYPE_ENUM => (Kind::Enum(enums.next().unwrap_or_default()), ColumnType::Varchar),
                My::MYSQL_TYPE_SET => (Kind::Set(sets.next().unwrap_or_default()), ColumnType::Varchar),
                My::MYSQL_TYPE_GEOMETRY => (Kind::Binary, ColumnType::Varchar),
                // Charset 63 is `binary`: BINARY, VARBINARY and the BLOBs.
                _ if charset == 63 => (Kind::Binary, ColumnType::Varchar),
                _ if LATIN1.contains(&charset) => (Kind::Latin1, ColumnType::Varchar),
                _ => (Kind::Plain, ColumnType::Varchar),
            };
            columns.push(Column { key: keys.contains(&(i as u64)), name, type_oid: 0, type_modifier: -1, ty: column_type });
            kinds.push(kind);
        }
        let relation = Relation {
            xid: None,
            oid: id,
            namespace: schema.clone(),
            name: table.clone(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        };
        Ok(Mapped { relation, kinds })
    }
}

/// The table a `TRUNCATE [TABLE] name` statement (lower-cased) empties, in `schema` unless it
/// names one.
fn truncated(query: &str, schema: &str) -> Option<(String, String)> {
    let rest = query.strip_prefix("truncate")?.trim_start();
    let rest = rest.strip_prefix("table").map_or(rest, str::trim_start);
    let name = rest.split_whitespace().next()?.trim_end_matches(';');
    let parts: Vec<String> = name.split('.').map(|p| p.trim_matches('`').to_string()).collect();
    match parts.as_slice() {
        [t] => Some((schema.to_string(), t.clone())),
        [s, t] => Some((s.clone(), t.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_as_written_and_order_by_file_then_offset() {
        let p = Position { file: "bin.000002".into(), offset: 42, gtid: "0-1-7,1-2-3".into() };
        assert_eq!(p.to_string(), "bin.000002:42 gtid 0-1-7,1-2-3");
        assert_eq!(p.to_string().parse::<Position>(), Ok(p.clone()));
        assert_eq!("bin.000001:4".parse::<Position>().map(|p| p.gtid), Ok(String::new()));
        assert!(p.reached(&Position { file: "bin.000001".into(), offset: 900, gtid: String::new() }));
        assert!(!p.reached(&Position { file: "bin.000002".into(), offset: 43, gtid: String::new() }));
        assert!("nothing".parse::<Position>().is_err());
        assert_eq!(domains("0-1-7, 1-2-3"), vec![(0, "0-1-7".into()), (1, "1-2-3".into())]);
    }

    #[test]
    fn values_become_the_text_the_warehouse_casts() {
        use mysql::Value as V;
        let m = Mapped {
            relation: Relation {
                xid: None,
                oid: 1,
                namespace: "s".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Default,
                columns: vec![],
            },
            kinds: vec![
                Kind::Date,
                Kind::DateTime,
                Kind::Epoch,
                Kind::Time,
                Kind::Binary,
                Kind::Bit,
                Kind::Enum(vec!["a".into(), "b".into()]),
                Kind::Set(vec!["x".into(), "y".into(), "z".into()]),
                Kind::Plain,
            ],
        };
        let t = |i: usize, v: V| match text(&m, i, v) {
            Value::Text(t) => String::from_utf8(t).unwrap(),
            other => format!("{other:?}"),
        };
        assert_eq!(t(0, V::Date(2024, 2, 29, 0, 0, 0, 0)), "2024-02-29");
        assert_eq!(t(0, V::Date(0, 0, 0, 0, 0, 0, 0)), "Null");
        assert_eq!(t(0, V::Bytes(b"0000-00-00".to_vec())), "Null");
        assert_eq!(t(1, V::Date(2024, 1, 2, 3, 4, 5, 6)), "2024-01-02 03:04:05.000006");
        assert_eq!(t(2, V::Bytes(b"1700000000.5".to_vec())), "2023-11-14 22:13:20.500000");
        assert_eq!(t(2, V::Bytes(b"0".to_vec())), "Null");
        assert_eq!(t(3, V::Time(true, 1, 2, 3, 4, 0)), "-26:03:04.000000");
        assert_eq!(t(4, V::Bytes(vec![0, 255])), "00ff");
        assert_eq!(t(5, V::Bytes(vec![1, 0])), "256");
        assert_eq!(t(6, V::Int(2)), "b");
        assert_eq!(t(6, V::Int(0)), "");
        assert_eq!(t(7, V::Bytes(vec![0b101])), "x,z");
        assert_eq!(t(8, V::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(t(8, V::Float(1.1)), "1.1");
        assert_eq!(t(8, V::NULL), "Null");
    }

    #[test]
    fn truncates_name_their_table() {
        assert_eq!(truncated("truncate table `shop`.`orders`", "x"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncated("truncate orders;", "shop"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncated("alter table orders add x int", "shop"), None);
    }
}
