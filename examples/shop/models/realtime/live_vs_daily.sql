-- The live day beside the nightly history: today's revenue per country from the stream job,
-- against the average day of the marts built from the daily exports.
-- The stream job of streams/live_revenue.sql writes the source's table (models/realtime/
-- sources.yml), so `weir build` reads the events the log holds into it first, unless
-- `weir serve` runs the job and keeps it current. (A Weir-only project may `ref('live_revenue')`.)
{{ config(materialized='table') }}

with live as (
    select
        country_code,
        cast(min(window_start) as date) as day,
        sum(orders) as orders,
        cast(sum(revenue) as numeric(18, 2)) as revenue,
        max(window_end) as through
    from {{ source('streams', 'live_revenue') }}
    group by country_code
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
