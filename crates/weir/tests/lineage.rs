//! Column-level lineage with the real binary: `weir ls --lineage MODEL.COLUMN` on a built
//! project, its expected lineage written by hand: joins, CTEs, `select *`, unions, window
//! functions and a Jinja macro that writes a column's expression; and through a stream job to
//! its topic, a snapshot, and a load to the file it reads.

mod common;

use common::*;

fn project() -> tempfile::TempDir {
    let dir = minimal(&[
        SHOP_SEEDS[0],
        SHOP_SEEDS[1],
        SHOP_SEEDS[2],
        DOLLARS_MACRO,
        (
            "models/stg_orders.sql",
            "with src as (select * from {{ ref('raw_orders') }})\n\
             select id, customer_id, {{ dollars('amount_cents') }} as amount, ordered_at from src\n",
        ),
        (
            "models/movements.sql",
            "select id as order_id, amount from {{ ref('stg_orders') }}\n\
             union all\n\
             select order_id, -{{ dollars('refund_cents') }} from {{ ref('raw_refunds') }}\n",
        ),
        (
            "models/customer_revenue.sql",
            "with joined as (\n  select c.name, m.amount, o.ordered_at\n  from {{ ref('movements') }} m\n  \
             join {{ ref('stg_orders') }} o on o.id = m.order_id\n  join {{ ref('raw_customers') }} c on c.id = o.customer_id\n)\n\
             select name as customer, sum(amount) as revenue,\n  \
             sum(sum(amount)) over (order by min(ordered_at)) as running, count(*) as movements\n\
             from joined group by 1\n",
        ),
    ]);
    let o = weir(dir.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    dir
}

#[test]
fn a_mart_column_is_traced_back_to_the_seeds_through_every_model() {
    let dir = project();
    let o = weir(dir.path(), &["ls", "--lineage", "customer_revenue.revenue"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "customer_revenue.revenue = sum(amount)\n\
         \x20 <- movements.amount = amount\n\
         \x20   <- t.main.raw_refunds.refund_cents  (seed)\n\
         \x20   <- stg_orders.amount = amount_cents / 100.0\n\
         \x20     <- t.main.raw_orders.amount_cents  (seed)\n"
    );
    // A window over aggregates: every column it reads, the time the window is ordered by too.
    let o = weir(dir.path(), &["--log-format", "json", "ls", "--lineage", "customer_revenue.running"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let leaves: Vec<String> = lines
        .iter()
        .filter(|l| l.get("relation").is_some())
        .map(|l| format!("{}.{}", l["relation"].as_str().unwrap(), l["column"].as_str().unwrap()))
        .collect();
    assert_eq!(leaves, ["t.main.raw_refunds.refund_cents", "t.main.raw_orders.amount_cents", "t.main.raw_orders.ordered_at"]);
    let o = weir(dir.path(), &["ls", "--lineage", "customer_revenue.customer"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "customer_revenue.customer = name\n  <- t.main.raw_customers.name  (seed)\n");
    // Downstream: the columns a column feeds, through every model built on it.
    let o = weir(dir.path(), &["ls", "--lineage", "stg_orders.amount"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "stg_orders.amount = amount_cents / 100.0\n\
         \x20 <- t.main.raw_orders.amount_cents  (seed)\n\
         \x20 -> movements.amount = amount\n\
         \x20   -> customer_revenue.revenue = sum(amount)\n\
         \x20   -> customer_revenue.running = sum(sum(amount)) OVER (ORDER BY min(ordered_at))\n"
    );
    // No column feeds a count of rows.
    let o = weir(dir.path(), &["ls", "--lineage", "customer_revenue.movements"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "customer_revenue.movements = count(*)\n");
}

#[test]
fn lineage_mistakes_name_what_is_missing() {
    let dir = project();
    let o = weir(dir.path(), &["ls", "--lineage", "customer_revenue.profit"]);
    assert!(
        !o.status.success() && text(&o).contains("no column 'profit' among its columns (customer, revenue, running, movements)"),
        "{}",
        text(&o)
    );
    let o = weir(dir.path(), &["ls", "--lineage", "revenue"]);
    assert!(!o.status.success() && text(&o).contains("expected MODEL.COLUMN"), "{}", text(&o));
    let o = weir(dir.path(), &["ls", "--lineage", "nothing.revenue"]);
    assert!(
        !o.status.success() && text(&o).contains("no model, snapshot, stream job, seed, source or load named 'nothing'"),
        "{}",
        text(&o)
    );
}

#[test]
fn lineage_goes_through_stream_jobs_to_their_topics_and_through_loads_to_their_files() {
    let dir = minimal(&[
        ("streams/shop.yml", "topics:\n  - name: orders\n    columns: {customer_id: bigint, amount: double, ordered_at: timestamp}\n"),
        (
            "streams/spend.sql",
            "select customer_id, window_start as minute, sum(amount) as spent\n\
             from tumble({{ stream('orders') }}, ordered_at, interval '1 minute')\ngroup by customer_id, window_start\n",
        ),
        (
            "models/spend_daily.sql",
            "select customer_id, date_trunc('day', minute) as day, sum(spent) as spent from {{ ref('spend') }} group by 1, 2\n",
        ),
        ("inbox/payments.csv", "id,amount\n1,9.50\n"),
        ("loads/payments.yml", "loads:\n  - name: payments\n    source:\n      kind: csv\n      path: inbox/payments.csv\n"),
        ("models/sources.yml", "sources:\n  - name: raw\n    tables:\n      - name: payments\n"),
        ("models/pay.sql", "select id, amount * 100 as cents from {{ source('raw', 'payments') }}\n"),
        (
            "snapshots/payments_history.sql",
            "{% snapshot payments_history %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='check', check_cols='all') }}\n\
             select id, round(amount) as rounded from {{ source('raw', 'payments') }}\n{% endsnapshot %}\n",
        ),
    ]);
    let o = weir(dir.path(), &["ls", "--lineage", "spend_daily.spent"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "spend_daily.spent = sum(spent)\n\
         \x20 <- spend.spent = sum(amount)\n\
         \x20   <- topic orders: amount\n"
    );
    // A window's bounds are fed by the job's time column.
    let o = weir(dir.path(), &["ls", "--lineage", "spend_daily.day"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "spend_daily.day = date_trunc('day', minute)\n\
         \x20 <- spend.minute = window_start\n\
         \x20   <- topic orders: ordered_at\n"
    );
    let o = weir(dir.path(), &["ls", "--lineage", "pay.cents"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "pay.cents = amount * 100\n\
         \x20 <- t.raw.payments.amount  (load)\n\
         \x20   <- csv inbox/payments.csv: amount\n"
    );
    // A snapshot's column, read from its select like a model's.
    let o = weir(dir.path(), &["ls", "--lineage", "payments_history.rounded"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "payments_history.rounded = round(amount)\n\
         \x20 <- t.raw.payments.amount  (load)\n\
         \x20   <- csv inbox/payments.csv: amount\n",
        "{}",
        text(&o)
    );
    // From the raw column: where the load takes it, and what is built on it (through the
    // source over the load's table).
    let o = weir(dir.path(), &["ls", "--lineage", "payments.amount"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "t.raw.payments.amount  (load)\n\
         \x20 <- csv inbox/payments.csv: amount\n\
         \x20 -> pay.cents = amount * 100\n\
         \x20 -> payments_history.rounded = round(amount)\n"
    );
}
