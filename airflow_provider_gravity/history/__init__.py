"""
Run history of ``SendConversionsOperator``: one row per task try with its run summary, written when the
operator's ``run_history_table`` is set, and read by the Gravity view of the Airflow UI.

``table`` defines the table, ``writer`` creates and fills it, ``recording`` is what the operator calls, and
``queries`` are what the view reads. Only ``recording`` imports Airflow, and only when it writes.
"""
