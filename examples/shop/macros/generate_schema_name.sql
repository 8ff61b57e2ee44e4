{#- On the local DuckDB target custom schemas are used as written (raw, not main_raw): the raw
    layer is shared. On other targets they are prefixed with the target schema, so several
    people (or tests) can share one PostgreSQL database. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.type == 'duckdb' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
