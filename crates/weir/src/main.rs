//! The `weir` binary: parses arguments, dispatches to one module per command, and renders
//! errors for people. All behaviour lives in the library crates.

mod cli;
mod commands;
mod output;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

// One allocator for the whole process, the bundled DuckDB's C++ included (jemalloc takes the
// C `malloc` symbols): DuckDB's own release builds link jemalloc, and a 1 GB CSV load into
// DuckDB took 4-5% longer with DuckDB on glibc's malloc. Parsing and compiling a project is
// allocation-bound too (YAML trees, Jinja values, JSON artifacts); `weir compile` of 10,000
// models ran as fast as under mimalloc, the allocator before, in 11-18% less memory.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`weir registry show x | head`) ends the
    // process quietly, as for any Unix tool, instead of a failed print panicking.
    #[cfg(unix)]
    // SAFETY: called first, before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
