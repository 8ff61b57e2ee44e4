//! The build library on a real DuckDB file: one selection holding every executor's kinds
//! (a load, a check, models, a data test, a saved query), run through `weir_build::run`, with
//! the walk's skip rules and the run's artifacts checked node by node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as J};
use weir_build::{Command, NodeResult, Reporter, RunOptions};
use weir_graph::{Graph, Node, Status};
use weir_transform::{ExecOptions, Session};

const FILES: &[(&str, &str)] = &[
    ("dbt_project.yml", "name: p\nversion: '1.0'\nprofile: p\n"),
    ("profiles.yml", "p:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: wh.duckdb\n      threads: 2\n"),
    ("data/orders.csv", "id,amount\n1,10\n2,20\n"),
    ("loads/shop.yml", "loads:\n  - name: orders\n    source: {kind: csv, path: data/orders.csv}\n"),
    ("checks/orders.yml", "checks for raw.orders:\n  - row_count = 2\n"),
    ("models/sources.yml", "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: orders\n"),
    ("models/stg_orders.sql", "select id, amount from {{ source('raw', 'orders') }}"),
    ("models/with_null.sql", "select id from {{ ref('stg_orders') }} union all select null"),
    ("models/after_null.sql", "select * from {{ ref('with_null') }}"),
    ("models/schema.yml", "version: 2\nmodels:\n  - name: with_null\n    columns:\n      - name: id\n        data_tests: [not_null]\n"),
    ("models/broken.sql", "select * from no_such_table"),
    ("models/after_broken.sql", "select * from {{ ref('broken') }}"),
];

struct Seen(Mutex<Vec<String>>);

impl Reporter for Seen {
    fn started(&self, node: &Node, _: usize, _: usize) {
        if let Ok(mut s) = self.0.lock() {
            s.push(node.unique_id.clone());
        }
    }

    fn finished(&self, _: &Node, _: &NodeResult, _: usize, _: usize) {}
}

fn project(dir: &Path) {
    for (path, text) in FILES {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn a_build_hands_each_kind_to_its_executor_and_skips_what_a_failure_guards() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let project = weir_project::Project::load(dir.path(), Map::new()).unwrap();
    let target = weir_project::profiles::load_target(&[dir.path().to_path_buf()], "p", None, &Map::new()).unwrap();
    let flags = weir_graph::Flags { which: "build".into(), invocation_id: "test".into(), ..Default::default() };
    let manifest = Arc::new(weir_graph::parse(project, target, flags).unwrap());
    let graph = Graph::build(&manifest).unwrap();
    let wh = weir_warehouse::open("duckdb", &manifest.target.fields, dir.path()).unwrap();
    let store = weir_store::Store::open("sqlite:.weir/weir.db", dir.path(), None).unwrap();
    let session = Arc::new(Session::new(manifest.clone(), Arc::from(wh), Arc::new(|_: &str| {})).with_store(Arc::new(store)));

    let selected: BTreeSet<String> = manifest.nodes.keys().cloned().collect();
    let ids = weir_build::runnable(&session, &selected, Command::Build);
    let target_dir = dir.path().join("target");
    let opts = RunOptions {
        fail_fast: false,
        command: Command::Build,
        exec: ExecOptions { threads: 2, target_dir: target_dir.clone(), ..Default::default() },
        load_progress: None,
    };
    let seen = Seen(Mutex::new(vec![]));
    let outcome = weir_build::run(&session, &graph, (&selected, &ids), None, &opts, &seen).unwrap();

    let status: BTreeMap<&str, Status> = outcome.results.iter().map(|r| (r.unique_id.as_str(), r.status)).collect();
    let test = status.keys().find(|k| k.starts_with("test.p.not_null_with_null_id")).copied().unwrap();
    assert_eq!(status["load.p.orders"], Status::Success, "{status:?}");
    assert_eq!(status["check.p.raw.orders"], Status::Pass, "{status:?}");
    assert_eq!(status["model.p.stg_orders"], Status::Success);
    assert_eq!(status["model.p.with_null"], Status::Success);
    assert_eq!(status[test], Status::Fail);
    assert_eq!(status["model.p.after_null"], Status::Skipped, "the failed test guards what is downstream of its model");
    assert_eq!(status["model.p.broken"], Status::Error);
    assert_eq!(status["model.p.after_broken"], Status::Skipped);
    assert_eq!(outcome.results.len(), ids.len());

    let load = outcome.results.iter().find(|r| r.unique_id == "load.p.orders").unwrap();
    assert_eq!(load.rows_affected, Some(2));
    assert!(load.load.is_some(), "the load's report travels with its result");
    let check = outcome.results.iter().find(|r| r.unique_id == "check.p.raw.orders").unwrap();
    assert_eq!(check.checks.as_ref().map(|c| c.outcomes.len()), Some(1));
    let broken = outcome.results.iter().find(|r| r.unique_id == "model.p.broken").unwrap();
    assert!(broken.compiled_code.as_deref().is_some_and(|s| s.contains("no_such_table")), "compiled SQL is kept with the error");
    let skipped = outcome.results.iter().find(|r| r.unique_id == "model.p.after_broken").unwrap();
    assert_eq!(skipped.message.as_deref(), Some("skipped: upstream model.p.broken did not succeed"));

    // The load ran before the source's readers: everything downstream of raw.orders started after it.
    let started = seen.0.into_inner().unwrap();
    let at = |id: &str| started.iter().position(|s| s == id).unwrap();
    assert!(at("load.p.orders") < at("model.p.stg_orders") && at("load.p.orders") < at("check.p.raw.orders"));
    assert!(!started.iter().any(|s| s == "model.p.after_broken"), "a skipped node is reported, never started");

    weir_build::artifacts::write_run_results(&manifest, &outcome, J::Null, &target_dir).unwrap();
    let doc: J = serde_json::from_slice(&std::fs::read(target_dir.join("run_results.json")).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), outcome.results.len());
    let check_doc = results.iter().find(|r| r["unique_id"] == "check.p.raw.orders").unwrap();
    assert_eq!(check_doc["checks"][0]["status"], "pass");
}
