-- Every completed order's amount is counted in daily_revenue exactly once.
select *
from (
    select sum(total_amount) as staged from {{ ref('stg_orders') }} where status = 'completed'
) s
cross join (
    select sum(revenue) as reported from {{ ref('daily_revenue') }}
) r
where s.staged <> r.reported
