-- Orders and their payments, paired as both arrive: each order with the payments the provider
-- reports for it within half an hour. How long customers take to pay is the checkout's health;
-- an order with no row here was not paid in time.
select
    o.order_id,
    o.customer_id,
    lower(o.country_code) as country_code,
    o.total_amount,
    p.method,
    p.paid_at,
    date_diff('second', o.created_at, p.paid_at) as seconds_to_pay
from {{ stream('order_events') }} o
join {{ stream('payment_events') }} p
  on o.order_id = p.order_id
 and p.paid_at between o.created_at and o.created_at + interval '30 minutes'
