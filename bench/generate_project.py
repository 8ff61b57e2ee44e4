#!/usr/bin/env python3
"""Writes a synthetic dbt project of N models in layers, for Weir's benchmarks.

The project is plain dbt (dbt-duckdb runs it unchanged) and looks like a real one: a few base
models generate rows with DuckDB's range(), staging models clean them (views), intermediate
models join two staging models (tables) and marts aggregate intermediate models (tables). About
one model in ten has `not_null` and `unique` tests; every model uses `ref`, `config` and a
project macro, so parsing exercises the Jinja context rather than plain text.

    generate_project.py OUT_DIR --models 1000 [--rows 100]
"""

import argparse
import os
import random


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=100, help="rows per base model")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    n = args.models
    n_base = max(2, n // 100)
    n_stg = max(2, (n - n_base) * 2 // 5)
    n_int = max(2, (n - n_base) * 2 // 5)
    n_mart = max(1, n - n_base - n_stg - n_int)

    out = args.out
    for d in ["models/base", "models/staging", "models/intermediate", "models/marts", "macros"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)

    write(out, "dbt_project.yml", f"""name: bench
version: "1.0.0"
profile: bench
model-paths: ["models"]
macro-paths: ["macros"]
vars:
  amount_scale: 100
models:
  bench:
    +materialized: table
    staging:
      +materialized: view
      +tags: [staging]
    marts:
      +tags: [marts]
""")
    write(out, "profiles.yml", """bench:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: bench.duckdb
      threads: 1
""")
    write(out, "macros/cents.sql", """{% macro cents_to_units(col, scale=none) -%}
  round({{ col }} / {{ scale or var('amount_scale') }}, 2)
{%- endmacro %}
""")

    tested = []
    for i in range(n_base):
        name = f"base_{i:05d}"
        write(out, f"models/base/{name}.sql", f"""{{{{ config(materialized='table') }}}}
select
    range as id,
    range % 17 as customer_id,
    (range * {i + 3}) % 1000 as amount_cents,
    date '2024-01-01' + cast(range % 365 as integer) as order_date
from range({args.rows})
""")
        tested.append(("base", name))

    stg_names = []
    for i in range(n_stg):
        name = f"stg_{i:05d}"
        base = f"base_{rnd.randrange(n_base):05d}"
        write(out, f"models/staging/{name}.sql", f"""select
    id,
    customer_id,
    {{{{ cents_to_units('amount_cents') }}}} as amount,
    order_date
from {{{{ ref('{base}') }}}}
where amount_cents >= 0
""")
        stg_names.append(name)
        if i % 10 == 0:
            tested.append(("staging", name))

    int_names = []
    for i in range(n_int):
        name = f"int_{i:05d}"
        a, b = rnd.sample(stg_names, 2) if len(stg_names) > 1 else (stg_names[0], stg_names[0])
        write(out, f"models/intermediate/{name}.sql", f"""with a as (
    select * from {{{{ ref('{a}') }}}}
), b as (
    select id, amount as other_amount from {{{{ ref('{b}') }}}}
)
select a.id, a.customer_id, a.order_date, a.amount + coalesce(b.other_amount, 0) as amount
from a
left join b using (id)
""")
        int_names.append(name)
        if i % 10 == 0:
            tested.append(("intermediate", name))

    for i in range(n_mart):
        name = f"mart_{i:05d}"
        parents = rnd.sample(int_names, min(3, len(int_names)))
        union = "\n    union all\n    ".join(f"select * from {{{{ ref('{p}') }}}}" for p in parents)
        write(out, f"models/marts/{name}.sql", f"""{{{{ config(materialized='table') }}}}
with unioned as (
    {union}
)
select
    customer_id,
    order_date,
    count(*) as orders,
    sum(amount) as revenue
from unioned
group by 1, 2
""")
        if i % 10 == 0:
            tested.append(("marts", name))

    by_folder = {}
    for folder, name in tested:
        by_folder.setdefault(folder, []).append(name)
    for folder, names in by_folder.items():
        lines = ["version: 2", "models:"]
        for name in names:
            key = "customer_id" if folder == "marts" else "id"
            lines += [f"  - name: {name}", "    columns:", f"      - name: {key}", "        data_tests:", "          - not_null"]
            if folder != "marts":
                lines.append("          - unique")
        write(out, f"models/{folder}/schema.yml", "\n".join(lines) + "\n")
    print(f"{out}: {n_base} base, {n_stg} staging, {n_int} intermediate, {n_mart} marts models; "
          f"{len(tested)} models with tests")


def write(root: str, rel: str, text: str) -> None:
    with open(os.path.join(root, rel), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
