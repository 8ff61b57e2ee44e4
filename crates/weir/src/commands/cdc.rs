//! `weir cdc list|run|status|snapshot|drop`: the project's change data capture sources
//! (`mode: cdc` loads in `loads/*.yml`), followed into their mirror tables in the target's
//! warehouse.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use weir_cdc::follow::Progress;
use weir_cdc::incremental::TableSnapshot;
use weir_cdc::source::{BinlogStatus, CdcSource, Every, Origin, SlotStatus};
use weir_core::size::human;

use crate::cli::{CdcCommand, Global, LogFormat};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags};

pub fn run(g: &Global, cmd: &CdcCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("cdc", false, false))?;
    let sources = sources(&ws)?;
    let find = |name: &str| -> Result<&CdcSource, Error> {
        sources.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no cdc source named '{name}' in loads/*.yml (cdc sources: {})",
                if names.is_empty() { "none; add `mode: cdc` to a postgres or mariadb load".into() } else { names.join(", ") }
            )
            .into()
        })
    };
    let wh = super::stream::warehouse(&ws)?;
    match cmd {
        CdcCommand::List => {
            list(&sources, out);
            Ok(0)
        }
        CdcCommand::Status { name } => {
            let chosen: Vec<&CdcSource> = match name {
                Some(n) => vec![find(n)?],
                None => sources.iter().collect(),
            };
            for s in chosen {
                let incremental = s.incremental(wh.clone())?;
                match s.origin {
                    Origin::Postgres(_) => status(s, &s.status(wh.clone())?, &incremental, out),
                    Origin::Mariadb(_) => binlog_status(s, &s.binlog_status(wh.clone())?, &incremental, out),
                }
            }
            Ok(0)
        }
        CdcCommand::Snapshot { name, tables, batch_wait_ms } => {
            let s = find(name)?;
            let mut chosen = vec![];
            for t in tables {
                let table = s.captured(t).ok_or_else(|| {
                    format!("'{name}' does not capture {t}: its tables are {} (add it to `tables` first)", s.cdc.tables.join(", "))
                })?;
                if !chosen.contains(&table) {
                    chosen.push(table);
                }
            }
            let names = chosen.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", ");
            let file = s.request_snapshot(&chosen)?;
            if s.follower_running()? {
                let asked = Instant::now();
                while file.exists() && asked.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                out.info(if file.exists() {
                    format!("Asked the follower of '{name}' (running elsewhere) to read {names} again: it takes the request after its current batch")
                } else {
                    format!("The follower of '{name}' (running elsewhere) reads {names} again while it streams; `weir cdc status {name}` shows how far")
                });
                return Ok(0);
            }
            out.info(format!("Reading {names} of '{name}' again while following it (an incremental snapshot, by key)"));
            let p = follow_live(s, wh, *batch_wait_ms, out, &|p: &Progress| p.incremental_tables == 0)?;
            match out.format {
                LogFormat::Json => println!("{}", progress_json(&p)),
                LogFormat::Text => out.info(format!(
                    "Read {} row(s) of {names} again; mirrors at {}",
                    p.incremental_rows,
                    p.at().unwrap_or_else(|| "-".into())
                )),
            }
            Ok(0)
        }
        CdcCommand::Drop { name } => {
            let s = find(name)?;
            let d = s.drop(wh)?;
            let mut what = vec![];
            if d.slot {
                what.push(format!("slot '{}'", s.cdc.slot));
            }
            if d.publication {
                what.push(format!("publication '{}'", s.cdc.publication));
            }
            if d.position {
                what.push("the mirrors' position".to_string());
            }
            if what.is_empty() {
                out.info(format!("Nothing to drop for '{name}': no slot, no publication of Weir's, no position"));
            } else {
                out.info(format!("Dropped {} of '{name}'; the mirror tables stay, and the next run takes a new snapshot", what.join(", ")));
            }
            Ok(0)
        }
        CdcCommand::Run { name, full_refresh, batch_wait_ms } => {
            let s = find(name)?;
            if *full_refresh && s.forget(wh.clone())? {
                out.info(format!("Forgot the mirrors' position of '{name}': a new snapshot is taken"));
            }
            let through = match s.origin {
                Origin::Postgres(_) => format!("slot '{}'", s.cdc.slot),
                Origin::Mariadb(_) => "the binlog".to_string(),
            };
            out.info(format!(
                "Following '{name}': {} ({}) through {through} -> {}.{}",
                s.shown,
                s.cdc.tables.join(", "),
                s.database,
                s.schema
            ));
            let started = Instant::now();
            let p = follow_live(s, wh, *batch_wait_ms, out, &|_: &Progress| false)?;
            match out.format {
                LogFormat::Json => println!("{}", progress_json(&p)),
                LogFormat::Text => {
                    out.info(format!("Stopped '{name}' after {:.1}s: {}", started.elapsed().as_secs_f64(), line(&p, started.elapsed())))
                }
            }
            Ok(0)
        }
    }
}

/// Follows `s` in the foreground with a live line (on a terminal; a line every 10 s
/// otherwise) and the slot's retained WAL checked, until `done` says so or Ctrl-C.
fn follow_live(
    s: &CdcSource,
    wh: Arc<dyn weir_warehouse::Warehouse>,
    batch_wait_ms: u64,
    out: &Output,
    done: &dyn Fn(&Progress) -> bool,
) -> Result<Progress, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    super::stream::stop_on_signal(&stop);
    let live = std::io::stderr().is_terminal() && out.format == LogFormat::Text;
    let started = Instant::now();
    let (mut every_line, mut every_check) = (Every::new(Duration::from_secs(10)), Every::new(Duration::from_secs(30)));
    let mut report = |p: &Progress| {
        let text = line(p, started.elapsed());
        if live {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        } else if every_line.due() {
            out.info(&text);
        }
        if every_check.due() {
            match s.retained_warning() {
                Ok(Some(w)) => out.warn(w),
                Ok(None) => {}
                Err(e) => out.warn(format!("could not read slot '{}' on the server: {e}", s.cdc.slot)),
            }
        }
        stop.load(Ordering::Relaxed) || done(p)
    };
    let result = s.run(wh, Duration::from_millis(batch_wait_ms), &mut report);
    if live {
        eprintln!();
    }
    Ok(result?)
}

/// Every cdc source of the project, as its loads declare them.
pub(crate) fn sources(ws: &Workspace) -> Result<Vec<CdcSource>, Error> {
    let m = &ws.manifest;
    let database = m.target.database();
    let loads = m.nodes.values().filter_map(|n| n.load.as_deref()).filter(|l| l.cdc().is_some());
    let mut sources: Vec<CdcSource> = loads.map(|l| CdcSource::in_project(l, &database, &m.project.root)).collect::<Result<_, _>>()?;
    // Change events of `format: avro` topics are written through the registry in the store.
    if sources.iter().any(|s| s.events.as_ref().is_some_and(|e| !e.avro.is_empty())) {
        let registry = weir_registry::Registry::new(ws.store()?);
        sources = sources.into_iter().map(|s| s.with_registry(registry.clone(), m.target.auto_register_schemas())).collect();
    }
    Ok(sources)
}

fn list(sources: &[CdcSource], out: &Output) {
    if out.format == LogFormat::Json {
        for s in sources {
            println!(
                "{}",
                json!({"name": s.name, "source": s.shown, "tables": s.cdc.tables, "publication": s.cdc.publication, "slot": s.cdc.slot,
                       "mirrors": s.cdc.mirror_tables().iter().map(|t| format!("{}.{t}", s.schema)).collect::<Vec<_>>(),
                       "topics": s.cdc.topics(&s.name)})
            );
        }
        return;
    }
    if sources.is_empty() {
        out.info("No cdc sources: add `mode: cdc` to a postgres or mariadb load in loads/*.yml (see docs/cdc.md)");
        return;
    }
    println!("{:<16} {:<40} {:<20} writes", "source", "database", "slot");
    for s in sources {
        let mut mirrors: Vec<String> = s.cdc.mirror_tables().iter().map(|t| format!("{}.{t}", s.schema)).collect();
        mirrors.extend(s.cdc.topics(&s.name).into_iter().map(|t| format!("topic {t}")));
        println!("{:<16} {:<40} {:<20} {}", s.name, s.shown, s.cdc.slot, mirrors.join(", "));
    }
}

/// The incremental snapshots under way and asked for: (tables under way, tables asked for
/// that no follower has taken yet).
type Incremental = (Vec<TableSnapshot>, Vec<String>);

fn incremental_json(i: &Incremental) -> serde_json::Value {
    json!({"under_way": i.0.iter().map(|t| json!({"table": t.name(), "rows_read": t.rows, "after_key": t.after})).collect::<Vec<_>>(),
           "asked": i.1})
}

fn print_incremental(i: &Incremental) {
    for (n, t) in i.0.iter().enumerate() {
        let state = if n == 0 { "under way" } else { "waiting" };
        let after = t.after.as_ref().map(|k| format!(", after key ({})", k.join(", "))).unwrap_or_default();
        println!("  incremental snapshot of {} {state}: {} row(s) read{after}", t.name(), t.rows);
    }
    if !i.1.is_empty() {
        println!("  incremental snapshot asked for, not yet taken by a follower: {}", i.1.join(", "));
    }
}

fn status(s: &CdcSource, st: &SlotStatus, incremental: &Incremental, out: &Output) {
    let lsn = |l: Option<weir_cdc::Lsn>| l.map_or("-".to_string(), |l| l.to_string());
    let retained_over = st.retained_bytes.is_some_and(|r| r as u64 > s.cdc.max_retained_wal);
    if out.format == LogFormat::Json {
        println!(
            "{}",
            json!({"source": s.name, "slot": st.slot, "slot_exists": st.exists, "active_pid": st.active_pid,
                   "server_position": st.server_position.map(|l| l.to_string()), "confirmed": st.confirmed.map(|l| l.to_string()),
                   "mirror_position": st.mirror_position.map(|l| l.to_string()), "mirror_updated_at": st.mirror_updated_at,
                   "lag_bytes": st.lag_bytes, "lag_seconds": st.lag_seconds, "retained_wal_bytes": st.retained_bytes,
                   "wal_status": st.wal_status, "retained_wal_over_limit": retained_over,
                   "incremental_snapshots": incremental_json(incremental)})
        );
        return;
    }
    let state = match (st.exists, st.active_pid, st.mirror_position) {
        (false, _, None) => "never run".to_string(),
        (false, _, Some(_)) => "slot missing: take a new snapshot with `weir load NAME --full-refresh`".replace("NAME", &s.name),
        (true, Some(pid), _) => format!("following (server process {pid})"),
        (true, None, _) => "stopped".to_string(),
    };
    println!("{} ({state})", s.name);
    println!("  slot {} on {}, publication {}", st.slot, s.shown, s.cdc.publication);
    println!(
        "  server at {}, slot confirmed {}, mirrors at {} (stored {})",
        lsn(st.server_position),
        lsn(st.confirmed),
        lsn(st.mirror_position),
        st.mirror_updated_at.as_deref().unwrap_or("never")
    );
    if st.exists {
        let lag = st.lag_bytes.map_or("-".into(), |b| human(b.max(0) as u64));
        let secs = st.lag_seconds.map_or("-".into(), |s| format!("{s:.1} s"));
        println!("  lag {lag} ({secs} since the mirrors last moved)");
        let retained = st.retained_bytes.map_or("-".into(), |b| human(b.max(0) as u64));
        println!(
            "  retained WAL {retained} (limit {}){}{}",
            human(s.cdc.max_retained_wal),
            st.wal_status.as_deref().map(|w| format!(", wal_status {w}")).unwrap_or_default(),
            if retained_over {
                "  WARNING: past the limit; the server's disk fills until the mirrors catch up or the slot is dropped"
            } else {
                ""
            }
        );
    }
    print_incremental(incremental);
}

fn binlog_status(s: &CdcSource, st: &BinlogStatus, incremental: &Incremental, out: &Output) {
    let at = |p: &Option<weir_cdc::binlog::Position>| p.as_ref().map_or("-".to_string(), |p| p.to_string());
    if out.format == LogFormat::Json {
        println!(
            "{}",
            json!({"source": s.name, "server_position": st.server.as_ref().map(|p| p.to_string()),
                   "mirror_position": st.mirror.as_ref().map(|p| p.to_string()), "mirror_updated_at": st.mirror_updated_at,
                   "lag_bytes": st.lag_bytes, "lag_seconds": st.lag_seconds, "follower_connection": st.follower,
                   "binlog_file_kept": st.file_kept, "incremental_snapshots": incremental_json(incremental)})
        );
        return;
    }
    let state = match (&st.mirror, st.file_kept, st.follower) {
        (None, ..) => "never run".to_string(),
        (Some(_), false, _) => format!("binlog purged past the mirrors: take a new snapshot with `weir load {} --full-refresh`", s.name),
        (Some(_), true, Some(id)) => format!("following (server connection {id})"),
        (Some(_), true, None) => "stopped".to_string(),
    };
    println!("{} ({state})", s.name);
    println!("  binlog of {}", s.shown);
    println!(
        "  server at {}, mirrors at {} (stored {})",
        at(&st.server),
        at(&st.mirror),
        st.mirror_updated_at.as_deref().unwrap_or("never")
    );
    if let Some(lag) = st.lag_bytes {
        let secs = st.lag_seconds.map_or("-".into(), |s| format!("{s:.1} s"));
        println!("  lag {} ({secs} since the mirrors last moved)", human(lag));
    }
    print_incremental(incremental);
}

fn line(p: &Progress, elapsed: Duration) -> String {
    let changes = p.applied.upserted + p.applied.deleted;
    format!("{}, {:.0} changes/s", p.summary(), changes as f64 / elapsed.as_secs_f64().max(0.001))
}

fn progress_json(p: &Progress) -> serde_json::Value {
    json!({"position": p.at(), "batches": p.batches, "upserted": p.applied.upserted,
           "deleted": p.applied.deleted, "truncated": p.applied.truncated, "snapshot_rows": p.snapshot_rows,
           "incremental_rows": p.incremental_rows, "incremental_tables": p.incremental_tables})
}

/// A cdc source as work `weir serve` supervises: followed until stopped, warning while its
/// slot retains too much WAL; a slot another process reads is left to it.
pub(crate) fn work(s: CdcSource, wh: Arc<dyn weir_warehouse::Warehouse>, out: Arc<Output>) -> weir_server::Work {
    weir_server::Work {
        name: s.name.clone(),
        enabled: true,
        run: Box::new(move |stop| {
            let mut check = Every::new(Duration::from_secs(30));
            let outcome = s.run(wh.clone(), Duration::from_millis(500), &mut |_| {
                if check.due()
                    && let Ok(Some(w)) = s.retained_warning()
                {
                    out.warn(w);
                }
                stop.load(Ordering::Relaxed)
            });
            wh.release();
            match outcome {
                Ok(_) => weir_server::Ended::Stopped,
                Err(e) if e.slot_in_use() => weir_server::Ended::Elsewhere(format!("'{}' is read by another process", s.cdc.slot)),
                Err(e) => weir_server::Ended::Failed(e.to_string()),
            }
        }),
    }
}
