"""Connect args for the SQLite metadata database of the real-Airflow tests (imported by Airflow by path).

api-server, scheduler, dag-processor and the CLI write to one SQLite file at once; pysqlite's default
5-second busy timeout let ``airflow backfill create`` fail with "database is locked" under load.
"""

CONNECT_ARGS = {"timeout": 60}
