"""
Run history of ``SendConversionsOperator``: one row per task try with its run summary, written when the
operator's ``run_history_table`` is set, and read by the Gravity view of the Airflow UI.

The tables are declared in :mod:`airflow_provider_gravity.storage` (beside the delivery log's); ``writer``
creates and fills them, ``rollup`` computes the day figures, ``recording`` is what the operator calls,
``baseline`` and ``queries`` are what the guard and the view read. Only ``recording`` imports Airflow, and only
when it writes.
"""
