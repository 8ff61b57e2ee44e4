//! Idempotency, property-tested on the real binary: any sequence of incremental runs over a
//! growing event log (runs that add days, reruns of the same day, and runs killed with SIGKILL
//! in the middle of their write), followed by the next morning's run, ends in exactly the table
//! one `--full-refresh` run over the same data gives.

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
    let mut fields = serde_json::Map::new();
    fields.insert("path".into(), db.display().to_string().into());
    let wh = weir_warehouse::duckdb::DuckDb::open(&fields, Path::new("/")).unwrap();
    let mut c = weir_warehouse::Warehouse::connect(&wh).unwrap();
    c.query("select * from main.daily order by all").unwrap().rows.into_iter().map(|r| r.iter().map(|d| d.to_string()).collect()).collect()
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
