{#- In-store purchases made in the run's window, or in the lookback_days before it (rows that
    landed late; the delivery log skips what was delivered), one Purchase event per till transaction.
    The column aliases are the mapping to Gravity's fields; see the column contract in the README.
    Timestamps are naive UTC; the window strings compare correctly on PostgreSQL and SQLite.
    With params.shard_count set (the sharded DAG), only the rows of shard params.shard are selected:
    id modulo shard_count, spelled with integer division because psycopg reads a bare percent sign
    as a placeholder (on MySQL, where / is not integer division, write MOD(id, n) instead). -#}
{%- set window = gravity_window() -%}
SELECT
    'pos-' || CAST(t.transaction_id AS TEXT) AS event_id,
    t.purchased_at AS event_time,
    t.email AS em,
    t.phone AS ph,
    t.first_name AS fn,
    t.last_name AS ln,
    t.loyalty_id AS external_id,
    t.country AS country,
    t.total AS value,
    t.currency AS currency,
    CAST(t.transaction_id AS TEXT) AS order_id,
    t.items AS contents,
    t.store_id AS custom_store_id
FROM {{ params.store_table }} AS t
WHERE t.purchased_at >= '{{ window.start }}'
  AND t.purchased_at < '{{ window.end }}'
{%- if params.shard_count is defined %}
  AND abs(t.transaction_id) - abs(t.transaction_id) / {{ params.shard_count | int }} * {{ params.shard_count | int }}
      = {{ params.shard | int }}
{%- endif %}
ORDER BY event_id
