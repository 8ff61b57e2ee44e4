//! A CDC source as the project declares it (`mode: cdc` in `loads/*.yml`): the publication
//! made or checked, the slot followed into the mirrors, caught up once or followed until
//! stopped, its standing reported, and what Weir made dropped again.
//!
//! On PostgreSQL, everything the server is asked outside the replication stream (the
//! publication, the tables' keys, the slot's retained WAL) goes over an ordinary connection
//! of the `postgres` client; the stream itself is [`crate::follow`]. On MariaDB the binlog
//! has no slot or publication: [`crate::binlog`] checks the server's settings and reads it.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use weir_core::size::human;
use weir_graph::loads::{Cdc, Deletes, Engine, Load, SchemaContract};
use weir_warehouse::Warehouse;

use crate::binlog::{BinlogError, Position, Server};
use crate::events::{Connector, Publisher};
use crate::follow::{BinlogFollow, Follow, FollowError, Progress, follow, follow_binlog};
use crate::incremental::{self, IncrementalError, TableSnapshot};
use crate::mirror::{Mirror, MirrorError, MirrorOptions};
use crate::pgoutput::Lsn;
use crate::replication::{Config, ReplicationError};

/// The comment that marks a publication as Weir's own: kept in step with `tables`, and
/// dropped by [`CdcSource::drop`]. A publication without it is the user's and is only read.
const MADE_BY_WEIR: &str = "made by weir";

/// Why a CDC source could not be prepared, followed or reported.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("load '{0}' is not a cdc source (`mode: cdc` on a postgres source)")]
    NotCdc(String),
    #[error("{load}: url: {message}")]
    Url { load: String, message: String },
    #[error("{at}: {message}")]
    Postgres { at: String, message: String },
    /// A mistake in the source database's setup, with what to change.
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error("{load}: the event log for its change events: {message}")]
    Events { load: String, message: String },
    #[error(transparent)]
    Incremental(#[from] IncrementalError),
}

impl SourceError {
    /// The slot (or a MariaDB source's lock) is held by another process (only one may read
    /// it): a follower runs elsewhere.
    pub fn slot_in_use(&self) -> bool {
        match self {
            SourceError::Follow(FollowError::Replication(ReplicationError::Server { code, .. })) => code == "55006",
            SourceError::Follow(FollowError::Binlog(BinlogError::InUse(_))) => true,
            _ => false,
        }
    }
}

/// Where the changes come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// PostgreSQL's logical replication, through a slot and a publication.
    Postgres(Config),
    /// A MariaDB server's binlog.
    Mariadb(Server),
}

/// One cdc load, ready to run against the warehouse.
#[derive(Debug, Clone)]
pub struct CdcSource {
    pub name: String,
    pub cdc: Cdc,
    pub origin: Origin,
    /// The warehouse database and schema its mirrors are in.
    pub database: String,
    pub schema: String,
    pub options: MirrorOptions,
    /// Where the source is, its password hidden.
    pub shown: String,
    /// Where its change events go (`events: true`).
    pub events: Option<EventLog>,
    /// The project, where `weir cdc snapshot` leaves requests for its follower.
    pub root: Option<std::path::PathBuf>,
}

/// The event log a source publishes its change events to, with the topics `streams/*.yml`
/// declares (made with their partitions and retention).
#[derive(Clone)]
pub struct EventLog {
    pub log: Arc<dyn weir_log::Log>,
    pub declared: Vec<weir_log::TopicSpec>,
    /// The project, where each topic is described for the stream jobs that read it.
    pub root: std::path::PathBuf,
    /// Topics declared `format: avro`, with their own `auto_register` if they set one.
    pub avro: Vec<(String, Option<bool>)>,
    /// The schema registry Avro topics are written through, and whether schemas are
    /// registered where a topic does not say ([`CdcSource::with_registry`]).
    pub registry: Option<(weir_registry::Registry, bool)>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("declared", &self.declared).finish_non_exhaustive()
    }
}

/// How a follower stands, for `weir cdc status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotStatus {
    pub slot: String,
    /// Whether the slot exists on the server.
    pub exists: bool,
    /// The process streaming from it, if one is.
    pub active_pid: Option<i32>,
    /// The server's WAL position now.
    pub server_position: Option<Lsn>,
    /// What the slot has confirmed: the server keeps WAL from `restart` on.
    pub confirmed: Option<Lsn>,
    /// Bytes of WAL written since the confirmed position.
    pub lag_bytes: Option<i64>,
    /// Bytes of WAL the slot keeps on the server's disk.
    pub retained_bytes: Option<i64>,
    /// PostgreSQL's `wal_status`: reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    /// The mirror's position and when it last moved.
    pub mirror_position: Option<Lsn>,
    pub mirror_updated_at: Option<String>,
    /// Seconds since the mirror last moved, when the server has written since.
    pub lag_seconds: Option<f64>,
}

/// How a MariaDB source stands, for `weir cdc status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinlogStatus {
    /// Where the server's binlog ends now.
    pub server: Option<Position>,
    /// The mirrors' position, and when it was stored (UTC).
    pub mirror: Option<Position>,
    pub mirror_updated_at: Option<String>,
    /// Bytes of binlog written since the mirrors' position.
    pub lag_bytes: Option<u64>,
    /// Seconds since the mirrors last moved, when the server has written since.
    pub lag_seconds: Option<f64>,
    /// The server's connection id of the follower holding the source's lock, if one runs.
    pub follower: Option<u64>,
    /// False when the mirrors' binlog file is no longer on the server: changes were lost.
    pub file_kept: bool,
}

/// What `drop` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    pub slot: bool,
    pub publication: bool,
    pub position: bool,
}

impl CdcSource {
    /// The cdc source a load declares, its mirrors in `database`, without its event log
    /// ([`CdcSource::in_project`] attaches it: no caller can leave `events: true` unpublished).
    fn from_load(load: &Load, database: &str) -> Result<CdcSource, SourceError> {
        let (Some(cdc), weir_graph::loads::Source::Database(d)) = (load.cdc(), &load.source) else {
            return Err(SourceError::NotCdc(load.name.clone()));
        };
        let url_err = |message: String| SourceError::Url { load: load.name.clone(), message };
        let options = MirrorOptions {
            soft_deletes: cdc.deletes == Deletes::Soft,
            freeze: load.schema_contract == SchemaContract::Freeze,
            history: cdc.history,
        };
        if d.engine == Engine::Mysql {
            let server = Server::from_url(&d.url, server_id(&load.name)).map_err(url_err)?;
            return Ok(CdcSource {
                name: load.name.clone(),
                cdc: cdc.clone(),
                shown: server.shown.clone(),
                origin: Origin::Mariadb(server),
                database: database.to_string(),
                schema: load.schema.clone(),
                options,
                events: None,
                root: None,
            });
        }
        let pg = postgres::Config::from_str(&d.url).map_err(|e| url_err(e.to_string()))?;
        let host = match pg.get_hosts().first() {
            None => "localhost".to_string(),
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => {
                return Err(url_err(format!("change data capture connects over TCP, not the socket {}", p.display())));
            }
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let user = pg.get_user().map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "postgres".into());
        let password = pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
        let dbname = pg.get_dbname().map(str::to_string).unwrap_or_else(|| user.clone());
        let shown = format!("postgres://{user}@{host}:{port}/{dbname}");
        Ok(CdcSource {
            name: load.name.clone(),
            cdc: cdc.clone(),
            origin: Origin::Postgres(Config { host, port, user, password, database: dbname }),
            database: database.to_string(),
            schema: load.schema.clone(),
            options,
            shown,
            events: None,
            root: None,
        })
    }

    /// The cdc source a load of the project in `root` declares, its mirrors in `database`;
    /// with `events: true`, publishing to the project's event log.
    pub fn in_project(load: &Load, database: &str, root: &Path) -> Result<CdcSource, SourceError> {
        let mut source = CdcSource::from_load(load, database)?;
        source.root = Some(root.to_path_buf());
        if source.cdc.events {
            let err = |message: String| SourceError::Events { load: load.name.clone(), message };
            let declared = weir_graph::streams::read_topics(root).map_err(|e| err(e.to_string()))?;
            // Its topics are `<load>.<schema>.<table>`: on Kafka when streams/*.yml declares
            // them there.
            let prefix = format!("{}.", load.name);
            let mine: Vec<&str> = declared.iter().map(|t| t.name.as_str()).filter(|t| t.starts_with(&prefix)).collect();
            let logs = weir_graph::logs::project_logs(root, &declared).map_err(|e| err(e.to_string()))?;
            let log = logs.for_topics(&mine).map_err(|e| err(e.to_string()))?;
            use weir_graph::streams::Format;
            let mut avro = vec![];
            for t in declared.iter().filter(|t| mine.contains(&t.name.as_str())) {
                match t.format {
                    Format::Json | Format::Changelog => {}
                    Format::Avro => avro.push((t.name.clone(), t.auto_register)),
                    other => {
                        return Err(err(format!(
                            "topic '{}' ({}) is `format: {}`: change events are written as json or avro",
                            t.name,
                            t.location,
                            other.name()
                        )));
                    }
                }
            }
            source.events = Some(EventLog {
                log,
                declared: declared.iter().map(|t| t.spec()).collect(),
                root: root.to_path_buf(),
                avro,
                registry: None,
            });
        }
        Ok(source)
    }

    /// Writes its `format: avro` topics through `registry`, registering schemas where a topic
    /// does not say otherwise when `auto_register`.
    pub fn with_registry(mut self, registry: weir_registry::Registry, auto_register: bool) -> CdcSource {
        if let Some(e) = &mut self.events {
            e.registry = Some((registry, auto_register));
        }
        self
    }

    /// The source's mirrors in `wh`, publishing its events first when it has an event log.
    pub fn mirror(&self, wh: Arc<dyn Warehouse>) -> Result<Mirror, MirrorError> {
        let mirror = Mirror::open(wh, &self.name, &self.database, &self.schema, self.options.clone())?.with_home(&self.cdc.home);
        Ok(match &self.events {
            Some(e) => {
                let connector = match &self.origin {
                    Origin::Postgres(config) => Connector::Postgres { database: config.database.clone() },
                    Origin::Mariadb(_) => Connector::Mariadb,
                };
                let mut publisher = Publisher::new(e.log.clone(), &self.name, connector, e.declared.clone()).describing_in(&e.root);
                if let Some((registry, auto_register)) = &e.registry {
                    let topics = e.avro.iter().map(|(t, own)| (t.clone(), own.unwrap_or(*auto_register))).collect();
                    publisher = publisher.with_avro(registry.clone(), topics);
                } else if let Some((topic, _)) = e.avro.first() {
                    return Err(MirrorError::Events(crate::events::EventsError::Schema {
                        topic: topic.clone(),
                        message:
                            "it is `format: avro`, written through the project's schema registry, which this run of the load has not opened"
                                .into(),
                    }));
                }
                mirror.with_events(publisher)
            }
            None => mirror,
        })
    }

    /// The captured tables as (schema, table).
    fn tables(&self) -> Vec<(String, String)> {
        self.cdc.source_tables().map(|(s, t)| (s.to_string(), t.to_string())).collect()
    }

    /// Makes sure the tables can be captured and the publication names them: Weir's own
    /// publication is made or brought in step with `tables`; the user's must hold them.
    /// Returns where the server's WAL is flushed to now (what a catch-up follows up to).
    pub fn prepare(&self) -> Result<Lsn, SourceError> {
        if let Origin::Mariadb(server) = &self.origin {
            return Err(SourceError::Setup(format!("{}: {} is MariaDB, which has no publication to prepare", self.name, server.shown)));
        }
        let mut client = self.client()?;
        let err = |e: postgres::Error| self.pg_error(e);
        for (schema, table) in self.cdc.source_tables() {
            let row = client
                .query_opt(
                    "select c.relreplident::text, exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)
                     from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')",
                    &[&schema, &table],
                )
                .map_err(err)?;
            let Some(row) = row else {
                return Err(SourceError::Setup(format!("{}: there is no table {schema}.{table} in {}", self.name, self.shown)));
            };
            let (identity, primary): (String, bool) = (row.get(0), row.get(1));
            let q = format!("{}.{}", quote(schema), quote(table));
            match identity.as_str() {
                "n" => {
                    return Err(SourceError::Setup(format!(
                        "{}: {schema}.{table} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be captured: ALTER TABLE {q} REPLICA IDENTITY DEFAULT (with a primary key)",
                        self.name
                    )));
                }
                "d" if !primary => {
                    return Err(SourceError::Setup(format!(
                        "{}: {schema}.{table} has no primary key, so its mirror's rows cannot be matched: add one (ALTER TABLE {q} ADD PRIMARY KEY (...)), or ALTER TABLE {q} REPLICA IDENTITY FULL",
                        self.name
                    )));
                }
                _ => {}
            }
        }
        let wanted: Vec<String> = self.cdc.source_tables().map(|(s, t)| format!("{s}.{t}")).collect();
        let publication = client
            .query_opt(
                "select coalesce(obj_description(oid, 'pg_publication'), ''), puballtables from pg_publication where pubname = $1",
                &[&self.cdc.publication],
            )
            .map_err(err)?;
        let list = self.cdc.source_tables().map(|(s, t)| format!("{}.{}", quote(s), quote(t))).collect::<Vec<_>>().join(", ");
        let p = quote(&self.cdc.publication);
        match publication {
            None => {
                client
                    .batch_execute(&format!("create publication {p} for table {list}; comment on publication {p} is '{MADE_BY_WEIR}'"))
                    .map_err(|e| {
                    let mut e = self.pg_error(e);
                    if let SourceError::Postgres { message, .. } = &mut e
                        && message.contains("must be owner")
                    {
                        message.push_str(&format!(
                            "; creating a publication needs the tables' owner: have it run CREATE PUBLICATION {p} FOR TABLE {list}"
                        ));
                    }
                    e
                })?;
            }
            Some(row) => {
                let (comment, all): (String, bool) = (row.get(0), row.get(1));
                let has: Vec<String> = client
                    .query("select schemaname || '.' || tablename from pg_publication_tables where pubname = $1", &[&self.cdc.publication])
                    .map_err(err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let same = wanted.len() == has.len() && wanted.iter().all(|w| has.contains(w));
                if comment == MADE_BY_WEIR && !same && !all {
                    client.batch_execute(&format!("alter publication {p} set table {list}")).map_err(err)?;
                } else if comment != MADE_BY_WEIR {
                    let missing: Vec<&String> = wanted.iter().filter(|w| !has.contains(w)).collect();
                    if !missing.is_empty() {
                        let names = missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
                        return Err(SourceError::Setup(format!(
                            "{}: publication '{}' does not publish {names}: ALTER PUBLICATION {p} ADD TABLE {names}",
                            self.name, self.cdc.publication
                        )));
                    }
                }
            }
        }
        let flushed: String = client.query_one("select pg_current_wal_flush_lsn()::text", &[]).map_err(err)?.get(0);
        flushed.parse().map_err(|m: String| SourceError::Postgres { at: self.shown.clone(), message: m })
    }

    /// Brings the mirrors up to the source's WAL position as it stands now (a new mirror
    /// first takes a snapshot), then stops: what `weir load` and `weir build` do.
    pub fn catch_up(&self, wh: Arc<dyn Warehouse>) -> Result<Progress, SourceError> {
        let wait = Duration::from_millis(100);
        match &self.origin {
            Origin::Postgres(config) => {
                let target = self.prepare()?;
                let mut mirror = self.mirror(wh)?;
                // An incremental snapshot under way (a table added since) is finished too.
                let done = |p: &Progress| p.position.is_some_and(|at| at >= target) && p.incremental_tables == 0;
                follow(config, &self.follow_settings(wait), &mut mirror, &mut |p| done(p)).map_err(|e| self.follow_error(e))
            }
            Origin::Mariadb(server) => {
                let target = server.prepare(&self.name, &self.tables())?;
                let mut mirror = self.mirror(wh)?;
                let reached = |p: &Progress| p.binlog.as_ref().is_some_and(|at| at.reached(&target)) && p.incremental_tables == 0;
                Ok(follow_binlog(server, &self.binlog_settings(wait), &mut mirror, &mut |p| reached(p))?)
            }
        }
    }

    /// Follows the source until `stop` says so (asked after each merge, and at least every
    /// `batch_wait` while the source is quiet).
    pub fn run(
        &self,
        wh: Arc<dyn Warehouse>,
        batch_wait: Duration,
        stop: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<Progress, SourceError> {
        match &self.origin {
            Origin::Postgres(config) => {
                self.prepare()?;
                let mut mirror = self.mirror(wh)?;
                follow(config, &self.follow_settings(batch_wait), &mut mirror, stop).map_err(|e| self.follow_error(e))
            }
            Origin::Mariadb(server) => {
                server.prepare(&self.name, &self.tables())?;
                let mut mirror = self.mirror(wh)?;
                Ok(follow_binlog(server, &self.binlog_settings(batch_wait), &mut mirror, stop)?)
            }
        }
    }

    /// The captured table `name` names (`schema.table`, or a table of the source's home
    /// schema), as (schema, table).
    pub fn captured(&self, name: &str) -> Option<(String, String)> {
        let (schema, table) = name.split_once('.').unwrap_or((self.cdc.home.as_str(), name));
        self.cdc.source_tables().find(|(s, t)| *s == schema && *t == table).map(|(s, t)| (s.to_string(), t.to_string()))
    }

    /// Asks the source's follower to read `tables` again (an incremental snapshot): a request
    /// a running follower takes within a second, or the next one when it starts. Returns the
    /// request's file, removed once taken.
    pub fn request_snapshot(&self, tables: &[(String, String)]) -> Result<std::path::PathBuf, SourceError> {
        let Some(dir) = self.requests() else {
            return Err(SourceError::Setup(format!("{}: a source outside a project takes no snapshot requests", self.name)));
        };
        let names: Vec<String> = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        Ok(incremental::request(&dir, &names)?)
    }

    /// Whether a follower of the source runs now, in any process: its slot is active, or the
    /// binlog lock is held.
    pub fn follower_running(&self) -> Result<bool, SourceError> {
        match &self.origin {
            Origin::Postgres(_) => {
                let mut client = self.client()?;
                let row = client
                    .query_opt("select active from pg_replication_slots where slot_name = $1", &[&self.cdc.slot])
                    .map_err(|e| self.pg_error(e))?;
                Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
            }
            Origin::Mariadb(server) => Ok(server.lock_holder(&self.cdc.slot)?.is_some()),
        }
    }

    /// The incremental snapshots under way, as the mirrors store them, and the tables asked
    /// for that no follower has taken yet.
    pub fn incremental(&self, wh: Arc<dyn Warehouse>) -> Result<(Vec<TableSnapshot>, Vec<String>), SourceError> {
        let under_way = self.mirror(wh)?.incremental()?;
        let mut asked = vec![];
        if let Some(dir) = self.requests() {
            for (_, tables) in incremental::Incremental::new(vec![], Some(dir)).asked()? {
                asked.extend(tables.into_iter().map(|(s, t)| format!("{s}.{t}")));
            }
        }
        Ok((under_way, asked))
    }

    /// Where `weir cdc snapshot` leaves requests for the source's follower.
    fn requests(&self) -> Option<std::path::PathBuf> {
        self.root.as_ref().map(|root| incremental::requests_dir(root, &self.name))
    }

    /// Forgets the mirrors' position, so the next run drops the slot and takes a new
    /// snapshot (over the mirrors as they are: each table is emptied as its copy begins).
    pub fn forget(&self, wh: Arc<dyn Warehouse>) -> Result<bool, SourceError> {
        Ok(self.mirror(wh)?.forget()?)
    }

    /// A MariaDB source's binlog and the mirrors' position in the warehouse.
    pub fn binlog_status(&self, wh: Arc<dyn Warehouse>) -> Result<BinlogStatus, SourceError> {
        use mysql::prelude::Queryable;
        let Origin::Mariadb(server) = &self.origin else {
            return Err(SourceError::Setup(format!("{}: {} has no binlog", self.name, self.shown)));
        };
        let standing = self.mirror(wh)?.standing()?;
        let mirror: Option<Position> = standing.text.as_deref().and_then(|t| t.parse().ok());
        let mut conn = server.connect()?;
        let err = |e: mysql::Error| SourceError::Binlog(BinlogError::Server { at: self.shown.clone(), message: e.to_string() });
        let files: Vec<(String, u64)> = conn
            .query_map("show binary logs", |row: mysql::Row| (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default()))
            .map_err(err)?;
        let server_at = files.last().map(|(file, size)| Position { file: file.clone(), offset: *size, gtid: String::new() });
        let mut s = BinlogStatus {
            server: server_at.clone(),
            mirror_updated_at: standing.stored_at,
            follower: server.lock_holder(&self.cdc.slot)?,
            file_kept: mirror.as_ref().is_none_or(|m| files.iter().any(|(f, _)| *f == m.file)),
            ..BinlogStatus::default()
        };
        if let Some(m) = &mirror
            && s.file_kept
        {
            let lag: u64 = files
                .iter()
                .filter(|(f, _)| *f >= m.file)
                .map(|(f, size)| if *f == m.file { size.saturating_sub(m.offset) } else { *size })
                .sum();
            s.lag_bytes = Some(lag);
            s.lag_seconds = if lag > 0 { standing.seconds_since } else { Some(0.0) };
        }
        s.mirror = mirror;
        Ok(s)
    }

    /// The slot on the server and the mirrors' position in the warehouse.
    pub fn status(&self, wh: Arc<dyn Warehouse>) -> Result<SlotStatus, SourceError> {
        let mut mirror = self.mirror(wh)?;
        let standing = mirror.standing()?;
        let (mirror_position, mirror_updated_at, since) = (standing.position, standing.stored_at, standing.seconds_since);
        let mut client = self.client()?;
        let row = client
            .query_opt(
                "select active_pid, confirmed_flush_lsn::text, pg_current_wal_lsn()::text,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status
                 from pg_replication_slots where slot_name = $1",
                &[&self.cdc.slot],
            )
            .map_err(|e| self.pg_error(e))?;
        let mut s = SlotStatus { slot: self.cdc.slot.clone(), mirror_position, mirror_updated_at, ..SlotStatus::default() };
        let lsn = |t: Option<String>| t.and_then(|t| t.parse::<Lsn>().ok());
        if let Some(r) = row {
            s.exists = true;
            s.active_pid = r.get(0);
            s.confirmed = lsn(r.get(1));
            s.server_position = lsn(r.get(2));
            s.lag_bytes = r.get(3);
            s.retained_bytes = r.get(4);
            s.wal_status = r.get(5);
        } else {
            let now: String = client.query_one("select pg_current_wal_lsn()::text", &[]).map_err(|e| self.pg_error(e))?.get(0);
            s.server_position = now.parse().ok();
        }
        let behind = match (s.server_position, s.mirror_position) {
            (Some(server), Some(m)) => server > m,
            _ => false,
        };
        s.lag_seconds = if behind { since } else { s.mirror_position.map(|_| 0.0) };
        Ok(s)
    }

    /// The retained WAL when it is past `max_retained_wal`: the slot is holding the source's
    /// disk hostage (nothing reads it, or the mirror cannot keep up).
    pub fn retained_warning(&self) -> Result<Option<String>, SourceError> {
        if matches!(self.origin, Origin::Mariadb(_)) {
            // No slot: the server keeps its binlog for its own expiry, read or not.
            return Ok(None);
        }
        let mut client = self.client()?;
        let row = client
            .query_opt(
                "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint from pg_replication_slots where slot_name = $1",
                &[&self.cdc.slot],
            )
            .map_err(|e| self.pg_error(e))?;
        let retained: Option<i64> = row.and_then(|r| r.get(0));
        Ok(retained.filter(|r| *r as u64 > self.cdc.max_retained_wal).map(|r| {
            format!(
                "slot '{}' keeps {} of WAL on {} (max_retained_wal {}): the mirror is behind, and the server's disk fills until it catches up or the slot is dropped (`weir cdc drop {}`)",
                self.cdc.slot,
                human(r as u64),
                self.shown,
                human(self.cdc.max_retained_wal),
                self.name
            )
        }))
    }

    /// Drops the slot, the publication if Weir made it, and the mirrors' position (the
    /// mirror tables stay; the next run takes a new snapshot into them).
    pub fn drop(&self, wh: Arc<dyn Warehouse>) -> Result<Dropped, SourceError> {
        if let Origin::Mariadb(server) = &self.origin {
            // Nothing on the server is Weir's; a running follower keeps its lock.
            drop(server.lock(&self.cdc.slot).map_err(|e| match e {
                BinlogError::InUse(m) => {
                    SourceError::Setup(format!("{m}: stop the follower (`weir cdc run {}`, or `weir serve`) first", self.name))
                }
                e => e.into(),
            })?);
            return Ok(Dropped { position: self.forget(wh)?, ..Dropped::default() });
        }
        let mut client = self.client()?;
        let err = |e: postgres::Error| self.pg_error(e);
        let mut dropped = Dropped::default();
        if let Some(r) =
            client.query_opt("select active_pid from pg_replication_slots where slot_name = $1", &[&self.cdc.slot]).map_err(err)?
        {
            if let Some(pid) = r.get::<_, Option<i32>>(0) {
                return Err(SourceError::Setup(format!(
                    "slot '{}' is in use by process {pid} on the server: stop the follower (`weir cdc run {}`, or `weir serve`) first",
                    self.cdc.slot, self.name
                )));
            }
            client.execute("select pg_drop_replication_slot($1)", &[&self.cdc.slot]).map_err(err)?;
            dropped.slot = true;
        }
        let comment: Option<String> = client
            .query_opt("select obj_description(oid, 'pg_publication') from pg_publication where pubname = $1", &[&self.cdc.publication])
            .map_err(err)?
            .and_then(|r| r.get(0));
        if comment.as_deref() == Some(MADE_BY_WEIR) {
            client.batch_execute(&format!("drop publication {}", quote(&self.cdc.publication))).map_err(err)?;
            dropped.publication = true;
        }
        dropped.position = self.forget(wh)?;
        Ok(dropped)
    }

    fn binlog_settings(&self, batch_wait: Duration) -> BinlogFollow {
        BinlogFollow {
            lock: self.cdc.slot.clone(),
            tables: self.tables(),
            batch_messages: 50_000,
            batch_wait,
            requests: self.requests(),
            chunk_rows: self.cdc.snapshot_chunk,
        }
    }

    fn follow_settings(&self, batch_wait: Duration) -> Follow {
        Follow {
            slot: self.cdc.slot.clone(),
            publication: self.cdc.publication.clone(),
            batch_messages: 50_000,
            batch_wait,
            tables: self.tables(),
            requests: self.requests(),
            chunk_rows: self.cdc.snapshot_chunk,
        }
    }

    fn client(&self) -> Result<Client, SourceError> {
        let Origin::Postgres(config) = &self.origin else {
            return Err(SourceError::Setup(format!("{}: {} is not PostgreSQL", self.name, self.shown)));
        };
        let mut pg = postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .user(&config.user)
            .dbname(&config.database)
            .application_name("weir cdc")
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &config.password {
            pg.password(p);
        }
        pg.connect(NoTls).map_err(|e| self.pg_error(e))
    }

    fn pg_error(&self, e: postgres::Error) -> SourceError {
        let message = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        SourceError::Postgres { at: self.shown.clone(), message }
    }

    /// A slot that is gone says how to start over.
    fn follow_error(&self, e: FollowError) -> SourceError {
        if let FollowError::Replication(ReplicationError::Server { code, message, .. }) = &e
            && (code == "42704" && message.contains("replication slot") || code == "55000" && message.contains("no longer"))
        {
            return SourceError::Setup(format!(
                "{e}; the slot is gone (dropped, or invalidated after it kept more WAL than max_slot_wal_keep_size), so changes since the mirror's position are lost: take the mirrors again with `weir load {} --full-refresh`",
                self.name
            ));
        }
        SourceError::Follow(e)
    }
}

/// Waits out `every` between checks of something slow (the retained WAL), from a loop that
/// runs far more often.
#[derive(Debug)]
pub struct Every {
    every: Duration,
    last: Option<Instant>,
}

impl Every {
    pub fn new(every: Duration) -> Every {
        Every { every, last: None }
    }

    /// True the first time, then once `every` has passed since it last was.
    pub fn due(&mut self) -> bool {
        if self.last.is_some_and(|l| l.elapsed() < self.every) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }
}

/// The replica id a MariaDB source is read as: one per load, in a range of its own.
fn server_id(load: &str) -> u32 {
    let hash = load.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    0x5745_0000 | (hash & 0xffff)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
