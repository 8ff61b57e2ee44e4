//! `weir deps`: installs the project's packages (see `weir_project::deps`).

use std::sync::Arc;

use serde_json::json;
use weir_project::deps::{self, Options};

use crate::cli::Global;
use crate::output::Output;
use crate::workspace::{Error, cli_vars, project_dir};

pub fn run(g: &Global, upgrade: bool, lock: bool, add: Option<(&str, &str)>, out: &Arc<Output>) -> Result<u8, Error> {
    if let Some((package, source)) = add {
        let file = deps::spec::add_package(&project_dir(g), package, source)?;
        out.info(format!("Added {package} to {}", file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    }
    let opts = Options { upgrade, lock_only: lock, ..Options::new(cli_vars(g)?) };
    let report = deps::install(&project_dir(g), &opts)?;
    for w in &report.warnings {
        out.warn(w);
    }
    if report.packages.is_empty() {
        out.info("No packages to install (packages.yml and dependencies.yml list none)");
        return Ok(0);
    }
    out.info(if report.lock_written { "Wrote package-lock.yml" } else { "Following package-lock.yml (the package list is unchanged)" });
    let verb = if lock { "Locked" } else { "Installed" };
    for p in &report.packages {
        let what = match (p.kind, &p.version) {
            ("hub", Some(v)) => format!("{v} from the dbt Hub ({})", p.from),
            ("git", Some(commit)) => format!("at {} from {}", &commit[..commit.len().min(10)], p.from),
            ("local", _) => format!("from the folder {}", p.from),
            (_, _) => format!("from {}", p.from),
        };
        let newer = p.newer.as_ref().map(|n| format!("; {n} is out")).unwrap_or_default();
        out.emit(
            "info",
            "package",
            &format!("{verb} {} {what}{newer}", p.name),
            json!({"package": p.name, "kind": p.kind, "from": p.from, "version": p.version, "newer": p.newer}),
        );
    }
    if !lock {
        let shown = report.install_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.info(format!("{} packages in {shown}/", report.packages.len()));
    }
    Ok(0)
}
