"""
The SQL tables the provider owns (the delivery log, the run history and its rollup): their names, schemas,
engines, DDL and retries, in one package that the pipeline (``conversions.run``) and the Gravity view
(``history``) both use, and that imports neither of them, nor Airflow.

``names`` checks table names and makes index names, ``engines`` gives an engine that speaks full Unicode,
``sql_types`` the column types the tables share, ``delivery_log_table`` and ``run_history_tables`` declare the
tables, ``ddl`` creates and migrates them while other writers may do the same, and ``retry`` retries a write
that lost a lock conflict.
"""
