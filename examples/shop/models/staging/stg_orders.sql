-- Staging layer: clean and type-cast raw data.
select
    order_id::uuid as order_id,
    user_id::bigint as user_id,
    created_at::timestamp as created_at,
    status::text as status,
    total_amount::numeric(10, 2) as total_amount,
    -- Clean nulls, standardize casing
    coalesce(lower(country_code), 'us') as country_code
from {{ source('raw', 'orders') }}
where created_at >= '2020-01-01' -- filter old test data
