-- The live day beside the nightly history: today's revenue per country from the stream job,
-- against the average day of the marts built from the daily exports.
-- Until the stream job has run here, its table does not exist and the live side is empty.
{{ config(materialized='table') }}
{%- set live_table = adapter.get_relation(database=target.database, schema=target.schema, identifier='live_revenue') %}

with live as (
{%- if live_table %}
    select
        country_code,
        cast(min(window_start) as date) as day,
        sum(orders) as orders,
        sum(revenue) as revenue,
        max(window_end) as through
    from {{ source('streams', 'live_revenue') }}
    group by country_code
{%- else %}
    select
        cast(null as varchar) as country_code,
        cast(null as date) as day,
        cast(null as bigint) as orders,
        cast(null as numeric) as revenue,
        cast(null as timestamp) as through
    where false
{%- endif %}
),

history as (
    select country_code, avg(revenue) as avg_daily_revenue, count(*) as days
    from {{ ref('daily_revenue') }}
    group by country_code
)

select
    live.country_code,
    live.day,
    live.through,
    live.orders,
    round(live.revenue, 2) as revenue,
    round(history.avg_daily_revenue, 2) as avg_daily_revenue,
    round(live.revenue / nullif(history.avg_daily_revenue, 0), 2) as share_of_an_average_day
from live
left join history using (country_code)
order by live.revenue desc
