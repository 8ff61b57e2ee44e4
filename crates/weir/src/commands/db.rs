//! `weir db backup|restore|info`: the metadata store as one thing to copy and put back.
//!
//! SQLite: the backup is a consistent snapshot taken while schedulers run (`VACUUM INTO`);
//! restoring replaces the file, and is refused while any worker is alive. PostgreSQL: the
//! backup is `pg_dump` of Weir's schema (custom format) and restoring is `pg_restore`, so
//! the usual PostgreSQL tools and practice apply.

use std::path::Path;
use std::sync::Arc;

use chrono::SecondsFormat;
use weir_store::Store;

use crate::cli::{DbCommand, Global};
use crate::output::Output;
use crate::workspace::{Error, Workspace, new_flags, store_settings};

pub fn run(g: &Global, cmd: &DbCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let ws = Workspace::load(g, out, new_flags("db", false, false))?;
    let root = ws.manifest.project.root.clone();
    let (url, schema) = store_settings(&root)?;
    let store = ws.store()?;
    match cmd {
        DbCommand::Info => {
            out.info(format!("Metadata store: {} (schema version {})", store.description(), store.schema_version()?));
            for w in store.live_workers()? {
                let beat = w.heartbeat_at.to_rfc3339_opts(SecondsFormat::Secs, true);
                out.info(format!("  worker {} ({}, pid {} on {}), last heartbeat {beat}", w.worker_id, w.kind, w.pid, w.host));
            }
            Ok(0)
        }
        DbCommand::Backup { path } => {
            if store.sqlite_file().is_some() {
                store.backup_sqlite(path)?;
            } else {
                let mut args = vec!["--format=custom".to_string(), format!("--file={}", path.display())];
                if let Some(s) = &schema {
                    args.push(format!("--schema={s}"));
                }
                args.push(format!("--dbname={url}"));
                pg_tool("pg_dump", &args)?;
            }
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            out.info(format!("Backed up {} to {} ({size} bytes)", store.description(), path.display()));
            Ok(0)
        }
        DbCommand::Restore { path, force } => {
            if !path.is_file() {
                return Err(format!("{}: no such backup file", path.display()).into());
            }
            let live = store.live_workers()?;
            if !live.is_empty() && !force {
                let who: Vec<String> = live.iter().map(|w| format!("{} (pid {} on {})", w.worker_id, w.pid, w.host)).collect();
                return Err(format!(
                    "refusing to restore while workers are alive: {}; stop them first (or pass --force if they are gone)",
                    who.join(", ")
                )
                .into());
            }
            match store.sqlite_file() {
                Some(file) => {
                    // The backup must be a store this binary can open (it is migrated if older).
                    let version = Store::sqlite(path)?.schema_version()?;
                    drop(store);
                    replace_sqlite(path, &file)?;
                    out.info(format!("Restored {} from {} (schema version {version})", file.display(), path.display()));
                }
                None => {
                    let args = vec!["--clean".to_string(), "--if-exists".into(), format!("--dbname={url}"), path.display().to_string()];
                    pg_tool("pg_restore", &args)?;
                    out.info(format!("Restored {} from {}", store.description(), path.display()));
                }
            }
            Ok(0)
        }
    }
}

/// Puts `backup` in place of the store file atomically (copy beside it, then rename), and
/// drops the old file's write-ahead log, which belongs to the old contents.
fn replace_sqlite(backup: &Path, file: &Path) -> Result<(), Error> {
    let staged = file.with_extension("restoring");
    std::fs::copy(backup, &staged).map_err(|e| format!("cannot copy {} to {}: {e}", backup.display(), staged.display()))?;
    for suffix in ["-wal", "-shm"] {
        let side = format!("{}{suffix}", file.display());
        let _ = std::fs::remove_file(side);
    }
    std::fs::rename(&staged, file).map_err(|e| format!("cannot move the restored store into place at {}: {e}", file.display()))?;
    Ok(())
}

fn pg_tool(tool: &str, args: &[String]) -> Result<(), Error> {
    let status = std::process::Command::new(tool)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {tool} (PostgreSQL's client tools must be installed for a PostgreSQL store): {e}"))?;
    if !status.success() {
        return Err(format!("{tool} failed ({status})").into());
    }
    Ok(())
}
