"""``airflow dags test DAG_ID DATE`` for several logical dates in one process: Airflow starts once, not once a night.

Usage: ``python demo/run_nights.py DAG_ID LOGICAL_DATE...``, in the demo's Airflow environment. Each night runs
through the CLI's own ``dags test`` command; the exit code is 1 when a night's DAG run failed.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from airflow.cli import cli_parser

    dag_id, *logical_dates = argv
    parser = cli_parser.get_parser()
    failed = []
    for logical_date in logical_dates:
        print(f"===== airflow dags test {dag_id} {logical_date}", flush=True)
        arguments = parser.parse_args(["dags", "test", dag_id, logical_date])
        try:
            arguments.func(arguments)
        except SystemExit as stop:  # "DagRun failed"
            if stop.code:
                failed.append(logical_date)
    if failed:
        print(f"===== DAG runs failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
