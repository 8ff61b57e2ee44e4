//! Idempotency, property-tested on the real binary: any sequence of incremental runs over a
//! growing event log (runs that add days, reruns of the same day, and runs killed with SIGKILL
//! in the middle of their write), followed by the next morning's run, ends in exactly the table
//! one `--full-refresh` run over the same data gives. Likewise any sequence of microbatch
//! backfills, corrections of past days restated, and killed runs rerun.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;

const DAYS: u32 = 8;

fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.current_dir(dir).env_remove("DBT_PROFILES_DIR").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// A project with an event log seed (late events included) and one incremental model that
/// reprocesses its last day on every run. `work` makes a run slow enough to be killed mid-write.
fn project(strategy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("models")).unwrap();
    std::fs::create_dir_all(p.join("seeds")).unwrap();
    std::fs::write(p.join("dbt_project.yml"), "name: idem\nprofile: idem\n").unwrap();
    std::fs::write(p.join("profiles.yml"), "idem:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: idem.duckdb\n")
        .unwrap();
    let mut csv = String::from("event_id,day,user_id,amount\n");
    let mut id = 0;
    for day in 1..=DAYS {
        for user in 1..=4 {
            for k in 0..(day + user) % 3 + 1 {
                id += 1;
                csv.push_str(&format!("{id},{day},{user},{}.{}\n", day * user + k, k * 25));
            }
        }
    }
    std::fs::write(p.join("seeds/events.csv"), csv).unwrap();
    let model = format!(
        "{{{{ config(materialized='incremental', unique_key=['day', 'user_id'], incremental_strategy='{strategy}') }}}}\n\
         select day, user_id, count(*) as events, sum(amount) as amount\n\
         from {{{{ ref('events') }}}}\n\
         where day <= {{{{ var('upto') }}}}\n\
           and (select coalesce(sum(range % 7), 0) from range({{{{ var('work', 0) }}}})) >= 0\n\
         {{% if is_incremental() %}}\n\
           and day >= (select coalesce(max(day), 0) from {{{{ this }}}})\n\
         {{% endif %}}\n\
         group by 1, 2\n"
    );
    std::fs::write(p.join("models/daily.sql"), model).unwrap();
    let seeded = weir(p).arg("seed").output().unwrap();
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    dir
}

fn run(dir: &Path, upto: u32, extra: &[&str]) {
    let out = weir(dir).args(["run", "--vars", &format!("{{upto: {upto}}}")]).args(extra).output().unwrap();
    assert!(out.status.success(), "upto {upto}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts a slow run and kills the process after `after_ms`.
fn killed_run(dir: &Path, upto: u32, after_ms: u64) {
    let mut child = weir(dir).args(["run", "--vars", &format!("{{upto: {upto}, work: 100000000}}")]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(after_ms));
    let _ = child.kill();
    let _ = child.wait();
}

fn table(db: PathBuf) -> Vec<Vec<String>> {
    rows(db, "select * from main.daily order by all")
}

fn rows(db: PathBuf, sql: &str) -> Vec<Vec<String>> {
    let mut fields = serde_json::Map::new();
    fields.insert("path".into(), db.display().to_string().into());
    let wh = weir_warehouse::duckdb::DuckDb::open(&fields, Path::new("/")).unwrap();
    let mut c = weir_warehouse::Warehouse::connect(&wh).unwrap();
    c.query(sql).unwrap().rows.into_iter().map(|r| r.iter().map(|d| d.to_string()).collect()).collect()
}

#[derive(Debug, Clone)]
enum Step {
    /// Run with `upto` moved on by 0 (a rerun of the same day), 1 or 2 days.
    Advance(u32),
    /// The same, but the process is killed after this many milliseconds.
    Killed(u32, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![3 => (0u32..=2).prop_map(Step::Advance), 1 => ((0u32..=2), (20u64..400)).prop_map(|(d, ms)| Step::Killed(d, ms))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn incremental_runs_end_where_a_full_refresh_does(
        strategy in prop_oneof![Just("delete+insert"), Just("merge")],
        steps in prop::collection::vec(step(), 1..6),
    ) {
        let dir = project(strategy);
        let mut upto = 1;
        run(dir.path(), upto, &[]);
        for s in &steps {
            match *s {
                Step::Advance(d) => {
                    upto = (upto + d).min(DAYS);
                    run(dir.path(), upto, &[]);
                }
                Step::Killed(d, ms) => {
                    upto = (upto + d).min(DAYS);
                    killed_run(dir.path(), upto, ms);
                }
            }
        }
        // The next morning's run after whatever happened.
        run(dir.path(), upto, &[]);
        let reference = project(strategy);
        run(reference.path(), upto, &["--full-refresh"]);
        prop_assert_eq!(table(dir.path().join("idem.duckdb")), table(reference.path().join("idem.duckdb")));
    }
}

/// A project with a daily microbatch model over an hourly event log seed.
fn microbatch_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("models")).unwrap();
    std::fs::create_dir_all(p.join("seeds")).unwrap();
    std::fs::write(p.join("dbt_project.yml"), "name: idem\nprofile: idem\n").unwrap();
    std::fs::write(p.join("profiles.yml"), "idem:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: idem.duckdb\n")
        .unwrap();
    let mut csv = String::from("id,ts,user_id,amount\n");
    for h in 0..DAYS * 24 {
        csv.push_str(&format!("{h},2024-01-{:02} {:02}:30:00,{},{}\n", 1 + h / 24, h % 24, h % 3, h % 11));
    }
    std::fs::write(p.join("seeds/raw.csv"), csv).unwrap();
    std::fs::write(p.join("models/events.sql"), "{{ config(materialized='view', event_time='ts') }}\nselect * from {{ ref('raw') }}\n")
        .unwrap();
    let model = "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='day', batch_size='day', begin='2024-01-01') }}\n\
                 select cast(date_trunc('day', ts) as timestamp) as day, user_id, count(*) as events, sum(amount) as amount\n\
                 from {{ ref('events') }}\n\
                 where (select coalesce(sum(range % 7), 0) from range({{ var('work', 0) }})) >= 0\n\
                 group by 1, 2\n";
    std::fs::write(p.join("models/daily.sql"), model).unwrap();
    let seeded = weir(p).args(["build", "-s", "raw", "events"]).output().unwrap();
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    dir
}

fn day(d: u32) -> String {
    format!("2024-01-{:02}", d + 1)
}

#[derive(Debug, Clone)]
enum Op {
    /// `weir backfill` of days `[from, to)`.
    Backfill(u32, u32),
    /// A past day's events are corrected at the source, then that day is restated.
    Correct(u32),
    /// `weir backfill --restate` of days `[from, to)`.
    Restate(u32, u32),
}

impl Op {
    fn args(&self) -> Vec<String> {
        let (from, to, restate) = match *self {
            Op::Backfill(a, b) => (a, b, false),
            Op::Correct(d) => (d, d + 1, true),
            Op::Restate(a, b) => (a, b, true),
        };
        let mut v: Vec<String> =
            ["backfill", "daily", "--threads", "2", "--start", &day(from), "--end", &day(to)].map(String::from).to_vec();
        if restate {
            v.push("--restate".into());
        }
        v
    }
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0u32..DAYS).prop_flat_map(|a| (Just(a), a + 1..=DAYS));
    prop_oneof![
        range.clone().prop_map(|(a, b)| Op::Backfill(a, b)),
        (0u32..DAYS).prop_map(Op::Correct),
        range.prop_map(|(a, b)| Op::Restate(a, b)),
    ]
}

fn correct(dir: &Path, d: u32) {
    rows(dir.join("idem.duckdb"), &format!("update main.raw set amount = amount + 5 where ts >= '{}' and ts < '{}'", day(d), day(d + 1)));
}

fn backfill(dir: &Path, args: &[String]) {
    let out = weir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Backfills, restatements of corrected days and runs killed mid-write (then rerun, as a
    /// user resumes), ended by a backfill of the whole range, give the table one full
    /// refresh over the corrected data gives.
    #[test]
    fn backfills_and_restatements_end_where_a_full_refresh_does(
        ops in prop::collection::vec((op(), prop::option::weighted(0.3, 50u64..600)), 1..6),
    ) {
        let dir = microbatch_project();
        let reference = microbatch_project();
        for (op, kill_after) in &ops {
            if let Op::Correct(d) = op {
                correct(dir.path(), *d);
                correct(reference.path(), *d);
            }
            let args = op.args();
            if let Some(ms) = kill_after {
                let mut child = weir(dir.path()).args(&args).args(["--vars", "{work: 20000000}"]).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(*ms));
                let _ = child.kill();
                let _ = child.wait();
            }
            backfill(dir.path(), &args);
        }
        backfill(dir.path(), &Op::Backfill(0, DAYS).args());
        let full = ["run", "--full-refresh", "--event-time-start", &day(0), "--event-time-end", &day(DAYS)];
        let out = weir(reference.path()).args(full).output().unwrap();
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        prop_assert_eq!(table(dir.path().join("idem.duckdb")), table(reference.path().join("idem.duckdb")));
    }
}

/// A project with a timestamp-strategy snapshot of customers whose versions appear as
/// `upto` grows (some customers change at a version, others do not).
fn snapshot_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for d in ["models", "seeds", "snapshots"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("dbt_project.yml"), "name: idem\nprofile: idem\n").unwrap();
    std::fs::write(p.join("profiles.yml"), "idem:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: idem.duckdb\n")
        .unwrap();
    let mut csv = String::from("id,version,tier,updated_at\n");
    for v in 1..=VERSIONS {
        for id in 1..=4 {
            if v == 1 || (id + v) % 2 == 0 {
                let tier = ["bronze", "silver", "gold"][((id + v) % 3) as usize];
                csv.push_str(&format!("{id},{v},{tier},2024-01-{:02} {:02}:00:00\n", v + 1, id));
            }
        }
    }
    std::fs::write(p.join("seeds/versions.csv"), csv).unwrap();
    std::fs::write(
        p.join("models/current.sql"),
        "select id, tier, updated_at from (\n  select *, row_number() over (partition by id order by version desc) as rn\n  \
         from {{ ref('versions') }} where version <= {{ var('upto') }}\n) where rn = 1\n",
    )
    .unwrap();
    std::fs::write(
        p.join("snapshots/customers.sql"),
        "{% snapshot customers %}\n{{ config(strategy='timestamp', unique_key='id', updated_at='updated_at') }}\n\
         select * from {{ ref('current') }}\n\
         where (select coalesce(sum(range % 7), 0) from range({{ var('work', 0) }})) >= 0\n{% endsnapshot %}\n",
    )
    .unwrap();
    dir
}

const VERSIONS: u32 = 6;

fn snapshot_build(dir: &Path, upto: u32) {
    let out = weir(dir).args(["build", "--vars", &format!("{{upto: {upto}}}")]).output().unwrap();
    assert!(out.status.success(), "upto {upto}: {}", String::from_utf8_lossy(&out.stderr));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Snapshot runs over a changing source, with reruns of an unchanged source and runs
    /// killed mid-write (then rerun), record the same history as one run per source state.
    #[test]
    fn snapshot_history_ignores_reruns_and_kills(
        steps in prop::collection::vec((0u32..=2, prop::option::weighted(0.3, 20u64..500)), 1..7),
    ) {
        let dir = snapshot_project();
        let reference = snapshot_project();
        let mut upto = 1;
        let mut states = vec![upto];
        snapshot_build(dir.path(), upto);
        for (advance, kill_after) in &steps {
            upto = (upto + advance).min(VERSIONS);
            if let Some(ms) = kill_after {
                let vars = format!("{{upto: {upto}, work: 30000000}}");
                let mut child = weir(dir.path()).args(["build", "--vars", &vars]).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(*ms));
                let _ = child.kill();
                let _ = child.wait();
            }
            snapshot_build(dir.path(), upto);
            if states.last() != Some(&upto) {
                states.push(upto);
            }
        }
        for s in states {
            snapshot_build(reference.path(), s);
        }
        let sql = "select id, tier, updated_at, dbt_scd_id, dbt_updated_at, dbt_valid_from, dbt_valid_to from main.customers order by all";
        prop_assert_eq!(rows(dir.path().join("idem.duckdb"), sql), rows(reference.path().join("idem.duckdb"), sql));
    }
}
