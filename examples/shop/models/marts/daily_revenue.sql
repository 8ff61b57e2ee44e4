-- Marts: completed revenue per day and country. Incremental: each run recomputes the
-- last loaded day onwards and replaces those (sale_date, country_code) rows.
{{ config(materialized='incremental', unique_key=['sale_date', 'country_code']) }}

select
    cast(date_trunc('day', created_at) as date) as sale_date,
    country_code,
    count(*) as order_count,
    sum(total_amount) as revenue
from {{ ref('stg_orders') }}
where status = 'completed'
{% if is_incremental() %}
  and created_at >= (select max(sale_date) from {{ this }})
{% endif %}
group by 1, 2
