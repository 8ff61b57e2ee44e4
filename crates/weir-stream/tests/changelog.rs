//! Jobs over a table's change events (`cdc()`), run end to end on the embedded log and a
//! DuckDB file: whatever the changes (rows moving between groups, deletes, truncates, a
//! snapshot taken again), and however the runs are cut (stopped, or started again from an
//! older checkpoint), the job's table equals the same query over the table as it ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value as J, json};
use weir_core::{Datum, Relation};
use weir_graph::stream_jobs::parse_job;
use weir_log::{EmbeddedLog, Log, Record, TopicSpec};
use weir_stream::job::{self, Control, JobRun};
use weir_warehouse::Warehouse;

const TOPIC: &str = "shop.public.orders";

/// A change to the source table `orders (id bigint primary key, status varchar, amount
/// decimal(10,2))`.
#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: i64,
        status: u8,
        cents: i64,
    },
    Delete {
        id: i64,
    },
    Truncate,
    /// A snapshot taken again: a `t` event, then every row as `r`.
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..40i64, 0..4u8, -500..50_000i64).prop_map(|(id, status, cents)| Op::Upsert { id, status, cents }),
        5 => (0..40i64).prop_map(|id| Op::Delete { id }),
        1 => Just(Op::Truncate),
        1 => Just(Op::Snapshot),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
    log: EmbeddedLog,
    wh: Arc<dyn Warehouse>,
    /// The source table as it stands: id -> (status, cents).
    table: BTreeMap<i64, (u8, i64)>,
}

const STATUSES: [&str; 4] = ["new", "paid", "shipped", "void"];

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join(".weir/log")).unwrap();
        log.create_topic(&TopicSpec::new(TOPIC, 2)).unwrap();
        let columns = [("id", "bigint"), ("status", "varchar"), ("amount", "decimal(10,2)")].map(|(n, t)| (n.to_string(), t.to_string()));
        let described = weir_graph::streams::changelog_json(TOPIC, 2, &columns, &["id".to_string()]);
        let path = weir_graph::streams::changelog_file(dir.path(), TOPIC);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, described.to_string()).unwrap();
        let mut fields = Map::new();
        fields.insert("path".into(), J::String(dir.path().join("wh.duckdb").display().to_string()));
        let wh: Arc<dyn Warehouse> = Arc::from(weir_warehouse::open("duckdb", &fields, dir.path()).unwrap());
        Fixture { dir, log, wh, table: BTreeMap::new() }
    }

    fn job(&self, name: &str, sql: &str) -> JobRun {
        let job = parse_job(Path::new(&format!("streams/{name}.sql")), sql).unwrap();
        let topic = weir_graph::streams::read_changelog(self.dir.path(), TOPIC, None).unwrap().unwrap();
        JobRun::new(self.dir.path(), job, &[topic], Relation::new("wh", "main", name), vec![]).unwrap()
    }

    fn drain(&self, run: &JobRun) {
        job::run(run, &self.log, self.wh.clone(), &Control { drain: true, ..Control::default() }, &mut |_| {}).unwrap();
    }

    /// Applies `op` to the table and publishes its events as a cdc source does.
    fn apply(&mut self, op: &Op) {
        let row = |id: i64, (status, cents): (u8, i64)| json!({"id": id, "status": STATUSES[status as usize], "amount": format!("{}.{:02}", cents.div_euclid(100), cents.rem_euclid(100))});
        let event = |op: &str, before: J, after: J| json!({"before": before, "after": after, "op": op, "source": {"table": "orders"}});
        let keyed = |id: i64, e: J| Record {
            key: Some(json!({"id": id}).to_string().into_bytes()),
            value: e.to_string().into_bytes(),
            timestamp: 0,
            headers: vec![],
        };
        let truncate = || Record { key: None, value: event("t", J::Null, J::Null).to_string().into_bytes(), timestamp: 0, headers: vec![] };
        let mut records = vec![];
        match *op {
            Op::Upsert { id, status, cents } => {
                let before = self.table.insert(id, (status, cents));
                let e = match before {
                    Some(b) => event("u", row(id, b), row(id, (status, cents))),
                    None => event("c", J::Null, row(id, (status, cents))),
                };
                records.push(keyed(id, e));
            }
            Op::Delete { id } => {
                if let Some(b) = self.table.remove(&id) {
                    records.push(keyed(id, event("d", row(id, b), J::Null)));
                }
            }
            Op::Truncate | Op::Snapshot => {
                // A truncate goes to every partition, in its turn.
                for p in 0..2 {
                    self.log.append(TOPIC, Some(p), &[truncate()]).unwrap();
                }
                if let Op::Truncate = op {
                    self.table.clear();
                }
                for (id, r) in &self.table {
                    records.push(keyed(*id, event("r", J::Null, row(*id, *r))));
                }
            }
        }
        self.log.append(TOPIC, None, &records).unwrap();
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows = self.wh.connect().unwrap().query(sql).unwrap().rows;
        rows.into_iter().map(|r| r.iter().map(|d| if *d == Datum::Null { "null".into() } else { d.to_string() }).collect()).collect()
    }

    /// The query as a batch over the table as it stands.
    fn expected(&self, sql: &str) -> Vec<Vec<String>> {
        let mut c = self.wh.connect().unwrap();
        c.execute("create or replace table source_now (id bigint, status varchar, amount decimal(10,2))").unwrap();
        for chunk in self.table.iter().collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, (s, cents))| {
                    format!("({id}, '{}', {}.{:02})", STATUSES[*s as usize], cents.div_euclid(100), cents.rem_euclid(100))
                })
                .collect();
            c.execute(&format!("insert into source_now values {}", values.join(", "))).unwrap();
        }
        drop(c);
        self.rows(sql)
    }
}

const RUNNING: &str = "select status, count(*) as orders, sum(amount) as revenue, min(amount) as least, max(amount) as most, \
    avg(amount) as mean, count(distinct amount) as amounts\nfrom {{ cdc('shop', 'public.orders') }}\nwhere amount >= 0\ngroup by status";

const RUNNING_SEEN: &str = "select status, orders, round(revenue, 2), least, most, round(mean, 4), amounts from running order by status";
const RUNNING_BATCH: &str = "select status, count(*), round(cast(sum(amount) as double), 2), cast(min(amount) as double), \
    cast(max(amount) as double), round(cast(avg(amount) as double), 4), count(distinct amount) from source_now where amount >= 0 \
    group by status order by status";

const PROJECTION: &str =
    "select id, upper(status) as status, amount * 2 as doubled\nfrom {{ cdc('shop', 'public.orders') }}\nwhere status <> 'void'";

const PROJECTION_SEEN: &str = "select id, status, cast(doubled as double) from projection order by id";
const PROJECTION_BATCH: &str = "select id, upper(status), cast(amount * 2 as double) from source_now where status <> 'void' order by id";

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_changelog_job_equals_its_query_over_the_table_as_it_ends(
        ops in prop::collection::vec(op(), 1..120),
        cuts in prop::collection::vec(0..120usize, 0..4),
        rewind in any::<bool>(),
    ) {
        let mut f = Fixture::new();
        let (running, projection) = (f.job("running", RUNNING), f.job("projection", PROJECTION));
        let checkpoint = running.dir.join("checkpoint.json");
        let mut older: Option<Vec<u8>> = None;
        for (i, op) in ops.iter().enumerate() {
            f.apply(op);
            if cuts.contains(&i) {
                f.drain(&running);
                f.drain(&projection);
                // Kept to start again from, as after a crash past a later checkpoint.
                if older.is_none() {
                    older = std::fs::read(&checkpoint).ok();
                }
            }
        }
        if rewind && let Some(old) = &older {
            std::fs::write(&checkpoint, old).unwrap();
        }
        f.drain(&running);
        f.drain(&projection);
        prop_assert_eq!(f.rows(RUNNING_SEEN), f.expected(RUNNING_BATCH));
        prop_assert_eq!(f.rows(PROJECTION_SEEN), f.expected(PROJECTION_BATCH));
    }
}

#[test]
fn without_group_by_the_totals_stay_a_row_when_every_row_is_gone() {
    let mut f = Fixture::new();
    let run = f.job("totals", "select count(*) as n, sum(amount) as total from {{ cdc('shop', 'public.orders') }}");
    f.apply(&Op::Upsert { id: 1, status: 0, cents: 250 });
    f.apply(&Op::Upsert { id: 2, status: 1, cents: 100 });
    f.drain(&run);
    assert_eq!(f.rows("select n, total from totals"), vec![vec!["2", "3.5"]]);
    f.apply(&Op::Delete { id: 1 });
    f.apply(&Op::Delete { id: 2 });
    f.drain(&run);
    assert_eq!(f.rows("select n, total from totals"), vec![vec!["0", "null"]]);
}

#[test]
fn mistakes_over_a_changelog_name_their_place() {
    let f = Fixture::new();
    let topic = weir_graph::streams::read_changelog(f.dir.path(), TOPIC, None).unwrap().unwrap();
    let plan = |sql: &str| {
        let job = parse_job(Path::new("streams/j.sql"), sql).unwrap();
        weir_stream::plan::plan(&job, std::slice::from_ref(&topic)).map(|_| ()).map_err(|e| e.to_string())
    };
    let e = plan("select status, amount from {{ cdc('shop', 'public.orders') }}").unwrap_err();
    assert!(e.starts_with("streams/j.sql:1:1") && e.contains("select the table's key (id)"), "{e}");
    let e = plan(
        "select status, window_start, window_end, count(*) as n\nfrom tumble({{ cdc('shop', 'public.orders') }}, amount, interval '1 minute')\ngroup by status, window_start, window_end",
    )
    .unwrap_err();
    assert!(e.starts_with("streams/j.sql:2:") && e.contains("a window over cdc() is not supported"), "{e}");
    let e = plan("select status, approx_quantile(amount, 0.5) as p50 from {{ cdc('shop', 'public.orders') }} group by status").unwrap_err();
    assert!(e.contains("a sketch cannot take back"), "{e}");
}
