//! The web UI and the API it reads, against `weir serve` on a built project: the asset graph,
//! a node's page and a column's lineage through the API; then the UI itself in Chromium,
//! driven by Playwright (tests/ui/browser.mjs), with a screenshot of each main page kept in
//! the target folder.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value as J;

fn project() -> tempfile::TempDir {
    let dir = minimal(&[
        SHOP_SEEDS[0],
        SHOP_SEEDS[1],
        SHOP_SEEDS[2],
        DOLLARS_MACRO,
        (
            "models/stg_orders.sql",
            "select id, customer_id, {{ dollars('amount_cents') }} as amount, ordered_at from {{ ref('raw_orders') }}\n",
        ),
        (
            "models/movements.sql",
            "select id as order_id, amount from {{ ref('stg_orders') }}\n\
             union all\n\
             select order_id, -{{ dollars('refund_cents') }} from {{ ref('raw_refunds') }}\n",
        ),
        (
            "models/customer_revenue.sql",
            "{{ config(materialized='table') }}\nselect c.name as customer, sum(m.amount) as revenue\n\
             from {{ ref('movements') }} m join {{ ref('stg_orders') }} o on o.id = m.order_id\n\
             join {{ ref('raw_customers') }} c on c.id = o.customer_id group by 1\n",
        ),
        (
            "models/schema.yml",
            "models:\n  - name: customer_revenue\n    description: Revenue per customer, refunds taken off.\n    columns:\n\
             \x20     - name: customer\n        description: The customer's name.\n        tests: [not_null]\n\
             \x20     - name: revenue\n        description: In dollars.\n",
        ),
        (
            "pipelines/daily.yml",
            "params: {note: none}\ntasks:\n  start:\n    shell: echo starting\n  marts:\n    build: \"+customer_revenue\"\n    after: start\n\
             \x20 report:\n    shell: echo 'built ({{ params.note }})'\n    after: marts\n",
        ),
        ("checks/revenue.yml", "checks for customer_revenue:\n  - row_count between 1 and 10\n  - min(revenue) >= 0\n"),
        ("inbox/payments.csv", "id,amount\n1,9.50\n2,oops\n3,4.00\n"),
        (
            "loads/payments.yml",
            "loads:\n  - name: payments\n    source:\n      kind: csv\n      path: inbox/payments.csv\n      columns: {amount: 'decimal(10,2)'}\n",
        ),
        (
            "pipelines/flaky.yml",
            "tasks:\n  check:\n    shell: echo 'looking for the fix'; test -f fixed\n  report:\n    shell: echo reported\n    after: check\n",
        ),
    ]);
    // Twice, so the checks have a history.
    for _ in 0..2 {
        let o = weir(dir.path(), &["build"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    dir
}

fn get(s: &Serve, path: &str) -> (u16, J) {
    let r = reqwest::blocking::Client::new().get(format!("{}{path}", s.base)).bearer_auth(TOKEN).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(J::Null))
}

#[test]
fn the_api_shows_the_asset_graph_a_node_and_a_columns_lineage() {
    let dir = project();
    let serve = Serve::start(dir.path(), &[]);

    // Every node kind the project has, each with its last build's status and its edges.
    let (status, graph) = get(&serve, "/api/v1/assets");
    assert_eq!(status, 200, "{graph}");
    let nodes = graph["nodes"].as_array().unwrap();
    let by_id = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no {id} in {graph}"));
    assert_eq!(by_id("model.t.customer_revenue")["status"], "success");
    assert_eq!(by_id("seed.t.raw_orders")["kind"], "seed");
    assert_eq!(by_id("model.t.movements")["depends_on"], serde_json::json!(["model.t.stg_orders", "seed.t.raw_refunds"]));
    let test = nodes.iter().find(|n| n["kind"] == "test").expect("the not_null test is a node");
    assert_eq!(test["status"], "pass");
    assert_eq!(by_id("load.t.payments")["kind"], "load");
    assert_eq!(by_id("check.t.customer_revenue")["status"], "pass");
    assert_eq!(nodes.len(), 9, "{graph}");

    // A selection in dbt's syntax picks the nodes; one that does not parse is refused.
    let (_, picked) = get(&serve, "/api/v1/assets?select=%2Bstg_orders");
    let mut ids: Vec<&str> = picked["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["model.t.stg_orders", "seed.t.raw_orders"]);
    let (_, less) = get(&serve, "/api/v1/assets?select=stg_orders%2B&exclude=customer_revenue");
    let less: Vec<&str> = less["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(less, ["movements", "stg_orders", "not_null_customer_revenue_customer"]);
    let (status, e) = get(&serve, "/api/v1/assets?select=bogus_method:x");
    assert_eq!(status, 400, "{e}");

    // A node's page: compiled SQL, the warehouse's columns described from the YAML, builds.
    let (status, node) = get(&serve, "/api/v1/assets/model.t.customer_revenue");
    assert_eq!(status, 200, "{node}");
    assert!(node["compiled_sql"].as_str().unwrap().contains("sum(m.amount) as revenue"), "{node}");
    assert_eq!(node["columns"][0], serde_json::json!({"name": "customer", "data_type": "VARCHAR", "description": "The customer's name."}));
    assert_eq!(node["columns"][1]["name"], "revenue");
    assert_eq!(node["builds"][0]["status"], "success");
    assert_eq!(node["builds"][0]["rows"], 2);
    let tests: Vec<(&str, &str)> =
        node["tests"].as_array().unwrap().iter().map(|t| (t["kind"].as_str().unwrap(), t["status"].as_str().unwrap())).collect();
    assert_eq!(tests, [("check", "pass"), ("test", "pass")]);
    assert_eq!(node["description"], "Revenue per customer, refunds taken off.");
    let (_, seed) = get(&serve, "/api/v1/assets/seed.t.raw_orders");
    assert_eq!(seed["downstream"], serde_json::json!(["model.t.stg_orders"]));
    assert!(seed["compiled_sql"].is_null());
    let (status, _) = get(&serve, "/api/v1/assets/model.t.nothing");
    assert_eq!(status, 404);

    // A column's lineage, as `weir ls --lineage` gives it.
    let (status, l) = get(&serve, "/api/v1/assets/model.t.customer_revenue/lineage?column=revenue");
    assert_eq!(status, 200, "{l}");
    let steps: Vec<String> = l["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let what = s["expression"].as_str().map(|e| format!(" = {e}")).unwrap_or_default();
            let at = s["node"].as_str().map(|n| n.rsplit('.').next().unwrap().to_string()).unwrap_or_default();
            format!("{} {} {at}.{}{what}", s["depth"], s["direction"].as_str().unwrap(), s["column"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        [
            "0 up customer_revenue.revenue = sum(m.amount)",
            "1 up movements.amount = amount",
            "2 up raw_refunds.refund_cents",
            "2 up stg_orders.amount = amount_cents / 100.0",
            "3 up raw_orders.amount_cents",
        ]
    );
    let (_, down) = get(&serve, "/api/v1/assets/model.t.stg_orders/lineage?column=amount");
    let fed: Vec<&str> =
        down["steps"].as_array().unwrap().iter().filter(|s| s["direction"] == "down").map(|s| s["column"].as_str().unwrap()).collect();
    assert_eq!(fed, ["amount", "revenue"]);
    let (status, e) = get(&serve, "/api/v1/assets/model.t.customer_revenue/lineage?column=nope");
    assert_eq!(status, 422);
    assert!(e["error"].as_str().unwrap().contains("no column 'nope'"), "{e}");
    // A raw column: what is built on it, all the way to the mart.
    let (status, raw) = get(&serve, "/api/v1/assets/seed.t.raw_orders/lineage?column=amount_cents");
    assert_eq!(status, 200, "{raw}");
    let fed: Vec<String> = raw["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {} {}", s["depth"], s["node"].as_str().unwrap().rsplit('.').next().unwrap(), s["column"].as_str().unwrap()))
        .collect();
    assert_eq!(fed, ["0 raw_orders amount_cents", "1 stg_orders amount", "2 movements amount", "3 customer_revenue revenue"]);
    let (status, _) = get(&serve, "/api/v1/assets/seed.t.raw_orders/lineage?column=nope");
    assert_eq!(status, 422);
    let (status, _) = get(&serve, "/api/v1/assets/check.t.customer_revenue/lineage?column=x");
    assert_eq!(status, 422);

    // A check suite's history, each check with its threshold for the chart.
    let (status, h) = get(&serve, "/api/v1/assets/check.t.customer_revenue/checks");
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["dataset"], r#""t"."main"."customer_revenue""#);
    let rows = &h["checks"][0];
    assert_eq!(rows["check"], "row_count between 1 and 10");
    assert_eq!(rows["threshold_values"], serde_json::json!([1.0, 10.0]));
    let values: Vec<(f64, &str)> =
        rows["points"].as_array().unwrap().iter().map(|p| (p["value"].as_f64().unwrap(), p["status"].as_str().unwrap())).collect();
    assert_eq!(values, [(2.0, "pass"), (2.0, "pass")]);
    assert_eq!(h["checks"][1]["check"], "min(revenue) >= 0");
    let (status, _) = get(&serve, "/api/v1/assets/model.t.stg_orders/checks");
    assert_eq!(status, 404);

    // A load's runs, its rejected row kept with where it was and why.
    let (status, l) = get(&serve, "/api/v1/assets/load.t.payments/loads");
    assert_eq!(status, 200, "{l}");
    assert_eq!(l["destination"], r#""t"."raw"."payments""#);
    let first = l["runs"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (first["rows_read"].as_u64(), first["rows_loaded"].as_u64(), first["rows_rejected"].as_u64()),
        (Some(3), Some(2), Some(1)),
        "{l}"
    );
    let load_id = first["load_id"].as_str().unwrap();
    let (status, r) = get(&serve, &format!("/api/v1/assets/load.t.payments/rejected?load_id={load_id}"));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["rows"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["rows"][0][0], "inbox/payments.csv:3");
    assert!(r["rows"][0][2].as_str().unwrap().contains("oops"), "{r}");
    let (status, none) = get(&serve, "/api/v1/assets/load.t.payments/rejected?load_id=nope'--");
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["rows"], serde_json::json!([]));

    // The UI's files are served without a token; the API behind them still wants one.
    let ui = reqwest::blocking::get(format!("{}/ui/", serve.base)).unwrap();
    assert_eq!(ui.status().as_u16(), 200);
    assert!(ui.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
    assert!(ui.text().unwrap().contains("/ui/app.js"));
    let script = reqwest::blocking::get(format!("{}/ui/app.js", serve.base)).unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(reqwest::blocking::get(format!("{}/api/v1/assets", serve.base)).unwrap().status().as_u16(), 401);
    serve.terminate();
}

#[test]
fn the_ui_in_chromium_runs_clears_and_follows_lineage() {
    let dir = project();
    let serve = Serve::start(dir.path(), &[]);
    let tools = std::env::var("WEIR_BROWSER_DIR").unwrap_or_else(|_| format!("{}/.cache/weir/browser", std::env::var("HOME").unwrap()));
    assert!(
        std::path::Path::new(&tools).join("node_modules/playwright-core").exists(),
        "Playwright is not installed in {tools}: run scripts/install-browser.sh"
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let o = std::process::Command::new("node")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/browser.mjs"))
        .env("WEIR_URL", &serve.base)
        .env("WEIR_TOKEN", TOKEN)
        .env("WEIR_PROJECT", dir.path())
        .env("WEIR_SHOTS", &shots)
        .env("WEIR_BROWSER_DIR", &tools)
        .output()
        .unwrap();
    let log = std::fs::read_to_string(
        dir.path().join(
            std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("serve-"))
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap_or_default();
    assert!(o.status.success(), "{}\nscreenshots in {}\nweir serve's log:\n{log}", text(&o), shots.display());
    for page in ["sign-in", "pipelines", "grid", "pipeline-graph", "run", "task-log", "assets", "asset-lineage", "check", "load", "streams"]
    {
        assert!(shots.join(format!("{page}.png")).exists(), "no screenshot of {page}");
    }
    // What the browser did, seen from the API: the run it triggered, with its params.
    let runs = serve.call("GET", "/api/v1/pipelines/daily/runs", None).unwrap();
    assert_eq!(runs[0]["params"]["note"], "from the browser");
    let flaky = serve.call("GET", "/api/v1/pipelines/flaky/runs", None).unwrap();
    let run_id = flaky[0]["run_id"].as_str().unwrap().to_string();
    wait(Duration::from_secs(10), "the cleared run to be green", || {
        serve.call("GET", &format!("/api/v1/pipelines/flaky/runs/{run_id}"), None).is_some_and(|r| r["state"] == "success")
    });
    let check = serve.call("GET", &format!("/api/v1/pipelines/flaky/runs/{run_id}/tasks/check"), None).unwrap();
    assert_eq!(check["attempts"].as_array().unwrap().len(), 2, "failed once, then cleared and run again: {check}");
    serve.terminate();
}
