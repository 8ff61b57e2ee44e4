#!/usr/bin/env bash
# Stands in for the shop's customer system: creates a small PostgreSQL database of customers
# for the `customers` load (loads/shop.yml) and prints the URL to put in SHOP_SOURCE_URL.
#
#   bash scripts/create_source_db.sh [DATABASE]     # default: shop
#
# It connects as psql does (PGHOST, PGPORT, PGUSER; default postgres@127.0.0.1:5432). Running
# it again keeps the database and its rows as they are.
set -euo pipefail
db="${1:-shop}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
if [ -z "$(psql -d postgres -Atqc "select 1 from pg_database where datname = '$db'")" ]; then
  psql -d postgres -qc "create database \"$db\"" >/dev/null
fi
psql -d "$db" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
set client_min_messages = warning;
create table if not exists customers (
    customer_id bigint primary key,
    name text not null,
    country_code text,
    signed_up_at timestamp not null,
    updated_at timestamp not null
);
insert into customers
select id,
       'Customer ' || id,
       (array['US', 'GB', 'DE', 'FR', 'JP', 'BR', 'CA'])[id % 7 + 1],
       timestamp '2019-06-01' + id * interval '3 hours',
       timestamp '2019-06-01' + id * interval '3 hours'
from generate_series(1, 4999) id
on conflict (customer_id) do nothing;
SQL
echo "postgresql://$PGUSER@$PGHOST:$PGPORT/$db"
