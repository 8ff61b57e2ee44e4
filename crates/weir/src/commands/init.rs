//! `weir init NAME`: a new project folder that builds and tests out of the box.

use std::path::Path;
use std::sync::Arc;

use crate::output::Output;
use crate::workspace::Error;

pub fn run(name: &str, adapter: &str, out: &Arc<Output>) -> Result<u8, Error> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("project name '{name}' must be letters, digits and underscores, not starting with a digit").into());
    }
    let root = Path::new(name);
    if root.exists() {
        return Err(format!("{} already exists; choose another name", root.display()).into());
    }
    let output = match adapter {
        "duckdb" => format!("      type: duckdb\n      path: {name}.duckdb\n      threads: 4\n"),
        "postgres" => "      type: postgres\n      host: \"{{ env_var('PGHOST', '127.0.0.1') }}\"\n      port: 5432\n      user: \"{{ env_var('PGUSER', 'postgres') }}\"\n      password: \"{{ env_var('PGPASSWORD', '') }}\"\n      dbname: \"{{ env_var('PGDATABASE', 'postgres') }}\"\n      schema: public\n      threads: 4\n".to_string(),
        other => return Err(format!("adapter '{other}' is not supported; use duckdb or postgres").into()),
    };
    let files: Vec<(&str, String)> = vec![
        ("dbt_project.yml", format!(
            "name: {name}\nversion: '1.0.0'\nprofile: {name}\n\nmodel-paths: [models]\nseed-paths: [seeds]\ntest-paths: [tests]\nmacro-paths: [macros]\n\nmodels:\n  {name}:\n    staging:\n      +materialized: view\n    marts:\n      +materialized: table\n"
        )),
        ("profiles.yml", format!("{name}:\n  target: dev\n  outputs:\n    dev:\n{output}")),
        ("seeds/raw_customers.csv", "id,first_name,last_name,signed_up_at\n1,Ada,Lovelace,2024-01-03\n2,Alan,Turing,2024-01-05\n3,Grace,Hopper,2024-02-11\n".to_string()),
        ("models/staging/stg_customers.sql", "select\n    id as customer_id,\n    first_name || ' ' || last_name as full_name,\n    cast(signed_up_at as date) as signed_up_on\nfrom {{ ref('raw_customers') }}\n".to_string()),
        ("models/staging/schema.yml", "version: 2\n\nmodels:\n  - name: stg_customers\n    description: One row per customer.\n    columns:\n      - name: customer_id\n        data_tests: [unique, not_null]\n".to_string()),
        ("models/marts/signups_by_month.sql", "select\n    date_trunc('month', signed_up_on) as month,\n    count(*) as signups\nfrom {{ ref('stg_customers') }}\ngroup by 1\n".to_string()),
        ("tests/assert_signups_are_positive.sql", "select * from {{ ref('signups_by_month') }} where signups <= 0\n".to_string()),
        ("macros/.gitkeep", String::new()),
        (".gitignore", "target/\n.weir/\n*.duckdb\n*.duckdb.wal\n".to_string()),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    out.info(format!("Created project '{name}'. Next: cd {name} && weir build"));
    Ok(0)
}
