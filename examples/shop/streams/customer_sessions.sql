-- Shopping sessions: a customer's orders less than ten minutes apart form one session.
select
    customer_id,
    window_start as session_start,
    window_end as session_end,
    count(*) as orders,
    sum(total_amount) as amount
from session({{ stream('order_events') }}, created_at, interval '10 minutes')
group by customer_id, window_start, window_end
