-- Built where the customer database is loaded (loads/shop.yml, `customers`).
{{ config(enabled=env_var('SHOP_SOURCE_URL', '') != '') }}

select
    customer_id::bigint as customer_id,
    name::text as name,
    lower(country_code) as country_code,
    signed_up_at::timestamp as signed_up_at
from {{ source('raw', 'customers') }}
