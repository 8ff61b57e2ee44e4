//! `weir debug`: is the project readable, the profile complete, the warehouse reachable?

use std::sync::Arc;

use weir_project::{Project, profiles};

use crate::cli::Global;
use crate::output::Output;
use crate::workspace::{Error, cli_vars, project_dir};

pub fn run(g: &Global, out: &Arc<Output>) -> Result<u8, Error> {
    let dir = project_dir(g);
    out.info(format!("weir version: {}", env!("CARGO_PKG_VERSION")));
    let vars = cli_vars(g)?;
    let project = match Project::load(&dir, vars.clone()) {
        Ok(p) => {
            out.info(format!("dbt_project.yml file [OK found and valid] ({})", p.root.join("dbt_project.yml").display()));
            p
        }
        Err(e) => {
            out.info(format!("dbt_project.yml file [ERROR] {e}"));
            return Ok(1);
        }
    };
    let profile = project.root_package().settings.profile.clone().unwrap_or_else(|| project.name().to_string());
    let dirs = profiles::profiles_dirs(g.profiles_dir.as_deref(), &project.root);
    let target = match profiles::load_target(&dirs, &profile, g.target.as_deref(), &vars) {
        Ok(t) => {
            out.info(format!("profiles.yml file [OK found and valid] ({})", t.file.display()));
            t
        }
        Err(e) => {
            out.info(format!("profiles.yml file [ERROR] {e}"));
            return Ok(1);
        }
    };
    out.info(format!(
        "  profile: {profile}, target: {}, type: {}, database: {}, schema: {}, threads: {}",
        target.name,
        target.adapter_type,
        target.database(),
        target.schema(),
        target.threads
    ));
    let cwd = std::env::current_dir()?;
    let checked = weir_warehouse::open(&target.adapter_type, &target.fields, &cwd).and_then(|wh| {
        let mut c = wh.connect()?;
        c.execute("select 1")?;
        Ok((wh.describe(), c.server_version()?))
    });
    match checked {
        Ok((where_, version)) => {
            out.info(format!("Connection test: [OK connection ok] {where_} ({version})"));
            out.info("All checks passed!");
            Ok(0)
        }
        Err(e) => {
            out.info(format!("Connection test: [ERROR] {e}"));
            Ok(1)
        }
    }
}
