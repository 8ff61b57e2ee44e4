//! One module per command; each returns the process exit code (0 ok, 1 a node failed).

mod build;
mod cdc;
mod check;
mod clean;
mod compile;
mod db;
mod debug;
mod deps;
mod docs;
mod init;
mod load;
pub mod log;
mod ls;
pub mod pipeline;
mod registry;
mod serve;
mod show;
mod source;
mod sql;
mod stream;

use std::sync::Arc;

use crate::cli::{Cli, Command, DocsCommand, SourceCommand};
use crate::output::Output;
use crate::workspace::Error;

pub fn dispatch(cli: &Cli, out: &Arc<Output>) -> Result<u8, Error> {
    let g = &cli.global;
    match &cli.command {
        Command::Build(f) => build::run(g, f, weir_build::Command::Build, out),
        Command::Run(f) => build::run(g, f, weir_build::Command::Run, out),
        Command::Test(f) => build::run(g, f, weir_build::Command::Test, out),
        Command::Seed(f) => build::run(g, f, weir_build::Command::Seed, out),
        Command::Snapshot(f) => build::run(g, f, weir_build::Command::Snapshot, out),
        Command::Backfill(a) => build::backfill(g, a, out),
        Command::Check(a) => check::run(g, a, out),
        Command::Load(a) => load::run(g, a, out),
        Command::Compile { selection, inline } => compile::run(g, selection, inline.as_deref(), out),
        Command::Parse => compile::parse_only(g, out),
        Command::Ls { selection, resource_type, output, intervals, lineage } => match lineage {
            Some(column) => ls::lineage(g, column, out),
            None => ls::run(g, selection, resource_type, output, *intervals, out),
        },
        Command::Show { selection, inline, limit } => show::run(g, selection, inline.as_deref(), *limit, out),
        Command::Debug => debug::run(g, out),
        Command::Clean => clean::run(g, out),
        Command::Deps { upgrade, lock, add_package, source } => {
            deps::run(g, *upgrade, *lock, add_package.as_deref().map(|p| (p, source.as_str())), out)
        }
        Command::Init { name, adapter } => init::run(name, adapter, out),
        Command::Docs { command: DocsCommand::Generate } => docs::generate(g, out),
        Command::Source { command: SourceCommand::Freshness { selection, output } } => {
            source::freshness(g, selection, output.as_deref(), out)
        }
        Command::Pipeline { command } => pipeline::run(g, command, out),
        Command::Sql { sql, json_out } => sql::run(g, sql, json_out.as_deref(), out),
        Command::Serve { bind } => serve::run(g, bind.as_deref(), out),
        Command::Log { command } => log::run(g, command, out),
        Command::Stream { command } => stream::run(g, command, out),
        Command::Cdc { command } => cdc::run(g, command, out),
        Command::Registry { command } => registry::run(g, command, out),
        Command::Db { command } => db::run(g, command, out),
    }
}
