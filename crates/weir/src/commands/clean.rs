//! `weir clean`: deletes the folders listed in `clean-targets` (only inside the project).

use std::sync::Arc;

use weir_project::Project;

use crate::cli::Global;
use crate::output::Output;
use crate::workspace::{Error, cli_vars, project_dir};

pub fn run(g: &Global, out: &Arc<Output>) -> Result<u8, Error> {
    let project = Project::load(&project_dir(g), cli_vars(g)?)?;
    for t in &project.root_package().settings.clean_targets {
        let path = project.root.join(t);
        let Ok(real) = path.canonicalize() else {
            out.info(format!("{t}: nothing to clean"));
            continue;
        };
        if !real.starts_with(&project.root) || real == project.root {
            return Err(format!("clean-target '{t}' is outside the project folder; refusing to delete it").into());
        }
        std::fs::remove_dir_all(&real)?;
        out.info(format!("Cleaned {t}/"));
    }
    Ok(0)
}
