//! dbt parity: each project is built with dbt-core + dbt-duckdb (the reference, from
//! `scripts/install-dbt.sh`) and with Weir, step by step. After every step the outcome of
//! every node must match; at the end every relation must have the same columns, types and
//! rows (compared as multisets).
//!
//! Projects: `examples/shop` and the folders under `tests/fixtures/parity/`. A project's
//! `steps.txt` lists the commands to run (default: `build`). Weir's own loads and stream jobs
//! write the tables both tools then read as sources, and are left out of the outcomes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as J;
use weir_core::Datum;
use weir_warehouse::Warehouse;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn dbt() -> PathBuf {
    let venv = std::env::var("WEIR_DBT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/dbt-venv"));
    let dbt = venv.join("bin/dbt");
    assert!(dbt.exists(), "the dbt reference is not installed at {}; run scripts/install-dbt.sh", dbt.display());
    dbt
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name.ends_with(".duckdb") || name == "dbt_packages" || name == "logs" || name == "exports" || name == ".weir"
        {
            continue;
        }
        let dest = to.join(&*name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Splits a steps.txt line into arguments, keeping "double-quoted" parts together.
fn split_args(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const PROFILES: &str = "parity:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: parity.duckdb\n      threads: 4\n";

fn run(program: &Path, dir: &Path, args: &[String], profiles: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("SHOP_SOURCE_URL")
        .envs(env.iter().copied())
        .arg("--profiles-dir")
        .arg(profiles)
        .current_dir(dir)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env_remove("DBT_PROFILES_DIR")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// name -> status from target/run_results.json (test ids carry tool-specific hashes). Weir's
/// own check suites and loads (`checks/*.yml`, `loads/*.yml`, which dbt does not read) are
/// left out.
fn outcomes(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("target/run_results.json")).unwrap();
    let doc: J = serde_json::from_str(&text).unwrap();
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let id = r["unique_id"].as_str().unwrap_or_default();
            !id.starts_with("check.") && !id.starts_with("load.") && !id.starts_with("stream.")
        })
        .map(|r| {
            let id = r["unique_id"].as_str().unwrap();
            let parts: Vec<&str> = id.split('.').collect();
            // unit_test.PACKAGE.MODEL.NAME: a model may have several.
            let name = if parts[0] == "unit_test" { parts[2..].join(".") } else { parts[2].to_string() };
            (format!("{}.{name}", parts[0]), r["status"].as_str().unwrap().to_string())
        })
        .collect()
}

type Table = (Vec<(String, String)>, Vec<Vec<String>>);

/// Every relation in a DuckDB file: its columns with types, and its rows sorted. Values of
/// `volatile` columns (`relation.column`: stamped with the run's clock, so never equal between
/// two runs) are compared by whether they are set.
fn snapshot(db: &Path, volatile: &[String]) -> BTreeMap<String, Table> {
    let mut fields = serde_json::Map::new();
    fields.insert("path".into(), J::from(db.display().to_string()));
    let wh = weir_warehouse::duckdb::DuckDb::open(&fields, Path::new("/")).unwrap();
    let mut c = wh.connect().unwrap();
    let rels = c
        .query("select table_schema, table_name, table_type from information_schema.tables where table_catalog = 'parity' order by 1, 2")
        .unwrap();
    let mut out = BTreeMap::new();
    for r in rels.rows {
        let (schema, name, kind) = (r[0].to_string(), r[1].to_string(), r[2].to_string());
        // A load's own records (`_weir_loads`, `_weir_rejected`) differ by their run ids.
        if name.starts_with("_weir") {
            continue;
        }
        let cols = c
            .query(&format!(
                "select column_name, data_type from information_schema.columns where table_catalog = 'parity' and table_schema = '{schema}' and table_name = '{name}' order by ordinal_position"
            ))
            .unwrap()
            .rows
            .into_iter()
            .map(|r| (r[0].to_string(), r[1].to_string()))
            .collect();
        let data = c.query(&format!("select * from \"{schema}\".\"{name}\"")).unwrap();
        // A loaded row's `_weir_load_id` and `_weir_loaded_at` name its run.
        let clocked: Vec<bool> = data
            .columns
            .iter()
            .map(|col| col.name.starts_with("_weir_load") || volatile.contains(&format!("{name}.{}", col.name)))
            .collect();
        let mut rows: Vec<Vec<String>> = data
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&clocked)
                    .map(|(d, clocked)| match d {
                        Datum::Null => "NULL".to_string(),
                        _ if *clocked => "<set>".to_string(),
                        // Parallel float sums differ in the last bits from run to run.
                        Datum::Float(f) => format!("{:.9e}", f),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        out.insert(format!("{schema}.{name} ({kind})"), (cols, rows));
    }
    out
}

fn check_project(src: &Path, env: &[(&str, &str)]) {
    let name = src.file_name().unwrap().to_string_lossy().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let (dbt_dir, weir_dir, profiles) = (tmp.path().join("dbt"), tmp.path().join("weir"), tmp.path().join("profiles"));
    copy_dir(src, &dbt_dir);
    copy_dir(src, &weir_dir);
    std::fs::create_dir_all(&profiles).unwrap();
    let project_profile = std::fs::read_to_string(src.join("dbt_project.yml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("profile:").map(|p| p.trim().trim_matches('"').to_string()))
        .unwrap_or_else(|| "parity".into());
    std::fs::write(profiles.join("profiles.yml"), PROFILES.replace("parity:", &format!("{project_profile}:"))).unwrap();
    let dbt = dbt();
    let weir = PathBuf::from(env!("CARGO_BIN_EXE_weir"));
    if src.join("packages.yml").exists() {
        let (ok, text) = run(&dbt, &dbt_dir, &["deps".to_string()], &profiles, env);
        assert!(ok, "{name}: dbt deps failed:\n{text}");
        let (ok, text) = run(&weir, &weir_dir, &["deps".to_string()], &profiles, env);
        assert!(ok, "{name}: weir deps failed:\n{text}");
        // The same lock, byte for byte: the pins, the names and dbt's hash of the list.
        let lock = |d: &Path| std::fs::read_to_string(d.join("package-lock.yml")).unwrap_or_default();
        assert_eq!(lock(&dbt_dir), lock(&weir_dir), "{name}: package-lock.yml differs");
    }
    // Loads are Weir's (dbt users run a loader before dbt): both warehouses get the raw layer
    // from `weir load`, then each tool builds on it.
    if src.join("loads").is_dir() {
        for d in [&dbt_dir, &weir_dir] {
            if src.join("scripts/generate_orders.py").exists() {
                let o =
                    Command::new("python3").arg("scripts/generate_orders.py").current_dir(d).envs(env.iter().copied()).output().unwrap();
                assert!(o.status.success(), "{name}: exporting the order files failed");
            }
            let (ok, text) = run(&weir, d, &["load".to_string()], &profiles, env);
            assert!(ok, "{name}: weir load failed:\n{text}");
        }
    }
    // So are stream jobs: both warehouses get their tables from `weir build` of the jobs.
    if src.join("streams").is_dir() {
        for d in [&dbt_dir, &weir_dir] {
            let select = ["build", "--select", "resource_type:stream"].map(str::to_string);
            let (ok, text) = run(&weir, d, &select, &profiles, env);
            assert!(ok, "{name}: weir build of the stream jobs failed:\n{text}");
        }
    }
    let steps = std::fs::read_to_string(src.join("steps.txt")).unwrap_or_else(|_| "build\n".into());
    for line in steps.lines().filter(|l| !l.trim().is_empty()) {
        let args = split_args(line);
        let (dbt_ok, dbt_out) = run(&dbt, &dbt_dir, &args, &profiles, env);
        let (weir_ok, weir_out) = run(&weir, &weir_dir, &args, &profiles, env);
        let (d, w) = (outcomes(&dbt_dir), outcomes(&weir_dir));
        assert_eq!(d, w, "{name}: `{line}`: node outcomes differ\n--- dbt:\n{dbt_out}\n--- weir:\n{weir_out}");
        assert_eq!(dbt_ok, weir_ok, "{name}: `{line}`: exit status differs\n--- dbt:\n{dbt_out}\n--- weir:\n{weir_out}");
    }
    let volatile: Vec<String> = std::fs::read_to_string(src.join("volatile.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let (d, w) = (snapshot(&dbt_dir.join("parity.duckdb"), &volatile), snapshot(&weir_dir.join("parity.duckdb"), &volatile));
    let dk: Vec<&String> = d.keys().collect();
    let wk: Vec<&String> = w.keys().collect();
    assert_eq!(dk, wk, "{name}: the two warehouses hold different relations");
    for (rel, (dcols, drows)) in &d {
        let (wcols, wrows) = &w[rel];
        assert_eq!(dcols, wcols, "{name}: {rel}: columns or types differ");
        assert_eq!(drows.len(), wrows.len(), "{name}: {rel}: row counts differ");
        assert!(drows == wrows, "{name}: {rel}: rows differ (first dbt row {:?}, first weir row {:?})", drows.first(), wrows.first());
    }
}

#[test]
fn example_shop_matches_dbt() {
    check_project(&repo().join("examples/shop"), &[]);
}

/// The example with its customer database in PostgreSQL: the customer models are enabled.
#[test]
fn example_shop_with_its_customer_database_matches_dbt() {
    let shop = repo().join("examples/shop");
    let db = format!("weir_parity_shop_{}", std::process::id());
    let made = Command::new("bash").args(["scripts/create_source_db.sh", &db]).current_dir(&shop).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let url = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let checked = std::panic::catch_unwind(|| check_project(&shop, &[("SHOP_SOURCE_URL", &url)]));
    let mut admin = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=postgres", postgres::NoTls).unwrap();
    admin.batch_execute(&format!("drop database if exists {db}")).unwrap();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn jinja_macros_and_packages_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/jinja_macros"), &[]);
}

#[test]
fn incremental_reruns_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/incremental"), &[]);
}

#[test]
fn on_schema_change_matches_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/schema_change"), &[]);
}

#[test]
fn microbatch_matches_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/microbatch"), &[]);
}

#[test]
fn snapshots_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/snapshots"), &[]);
}

#[test]
fn test_configs_and_contracts_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/tests_config"), &[]);
}

/// Model versions: files per version, the latest by a plain ref, a version by `v=`, columns
/// and tests per version.
#[test]
fn model_versions_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/versions"), &[]);
}

/// Unit tests: dict, csv and sql fixtures, overrides, and a failing test holding its model back.
#[test]
fn unit_tests_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/unit_tests"), &[]);
}

/// Jinja in YAML configs and vars, relations passed to tests, post-hooks that query the new
/// table, dbt's cross-database macros, and packages installed by `weir deps`.
#[test]
fn yaml_jinja_relations_and_hooks_match_dbt() {
    check_project(&repo().join("crates/weir/tests/fixtures/parity/yaml_jinja"), &[]);
}
