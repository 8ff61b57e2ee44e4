//! The `weir` binary: parses arguments, dispatches to one module per command, and renders
//! errors for people. All behaviour lives in the library crates.

mod cli;
mod commands;
mod output;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

// Parsing and compiling a project is allocation-bound (YAML trees, Jinja values, JSON
// artifacts) on several threads; mimalloc cut `weir compile`'s time on big projects.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let out = std::sync::Arc::new(output::Output::new(cli.global.log_format));
    match commands::dispatch(&cli, &out) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            out.error(&e);
            ExitCode::from(2)
        }
    }
}
