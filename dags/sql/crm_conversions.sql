{#- CRM conversions (leads, sign-ups, phone orders) created in the run's window, or in the lookback_days before it
    (rows that landed late; the delivery log skips what was delivered).
    The column aliases are the mapping to Gravity's fields; see the column contract in the README.
    Timestamps are naive UTC; the window strings compare correctly on PostgreSQL and SQLite.
    With params.shard_count set (the sharded DAG), only the rows of shard params.shard are selected:
    id modulo shard_count, spelled with integer division because psycopg reads a bare percent sign
    as a placeholder (on MySQL, where / is not integer division, write MOD(id, n) instead). -#}
{%- set window = gravity_window() -%}
SELECT
    'crm-' || CAST(c.id AS TEXT) AS event_id,
    c.created_at AS event_time,
    CASE c.kind
        WHEN 'lead' THEN 'Lead'
        WHEN 'sign_up' THEN 'CompleteRegistration'
        ELSE 'Purchase'
    END AS event_name,
    CASE c.kind WHEN 'phone_order' THEN 'phone_call' ELSE 'system_generated' END AS action_source,
    c.email AS em,
    c.phone AS ph,
    c.first_name AS fn,
    c.last_name AS ln,
    c.customer_id AS external_id,
    c.country AS country,
    c.click_id AS click_id,
    c.value AS value,
    c.currency AS currency,
    CASE c.kind WHEN 'phone_order' THEN CAST(c.id AS TEXT) END AS order_id
FROM {{ params.crm_table }} AS c
WHERE c.created_at >= '{{ window.start }}'
  AND c.created_at < '{{ window.end }}'
{%- if params.shard_count is defined %}
  AND abs(c.id) - abs(c.id) / {{ params.shard_count | int }} * {{ params.shard_count | int }}
      = {{ params.shard | int }}
{%- endif %}
ORDER BY event_id
