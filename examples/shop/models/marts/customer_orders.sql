-- Each customer's completed orders and spend, where the customer database is loaded.
{{ config(enabled=env_var('SHOP_SOURCE_URL', '') != '') }}

select
    c.customer_id,
    c.name,
    c.signed_up_at,
    count(o.order_id) as order_count,
    coalesce(sum(o.total_amount), 0) as spend
from {{ ref('stg_customers') }} c
left join {{ ref('stg_orders') }} o
    on o.user_id = c.customer_id and o.status = 'completed'
group by 1, 2, 3
