-- Completed revenue per country per minute, as orders arrive. An order up to a minute late
-- still updates its minute; a later one is kept in _weir_late_events.
{{ config(allowed_lateness='1 minute') }}

select
    lower(country_code) as country_code,
    window_start,
    window_end,
    count(*) as orders,
    sum(total_amount) as revenue,
    approx_quantile(total_amount, 0.95) as p95_amount
from tumble({{ stream('order_events') }}, created_at, interval '1 minute')
where status = 'completed'
group by lower(country_code), window_start, window_end
