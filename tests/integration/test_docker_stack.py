"""What can be checked of ``docker/`` without a Docker engine: the compose file and its references,
versions against ``pyproject.toml``, the preset connections against the DAGs, and the warehouse seed
loaded into a real PostgreSQL, where the DAGs' SQL selects the same rows as on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pendulum
import psycopg2
import pytest
import yaml
from airflow.timetables.base import DataInterval
from packaging.requirements import Requirement

from demo.sample_data import CRM_TABLE, STORE_TABLE, SampleConfig, write_postgres_sql, write_sqlite
from tests.integration.test_dags import EXACT_WINDOW, NIGHTLY, SHARDED, load_dag_bag, render_sql_file, run_context
from tests.support.airflow_fixtures import REPO_ROOT

DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yaml"
SEED_FILE = DOCKER_DIR / "warehouse" / "seed.sql"
POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
COMPOSE_DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dag_bag():
    return load_dag_bag()


def with_compose_defaults(value: str) -> str:
    """``${VAR:-default}`` -> ``default``: the value compose uses when the variable is unset."""
    return COMPOSE_DEFAULT.sub(lambda match: match.group(1), value)


def test_compose_file_references_files_that_exist(compose):
    assert {
        "warehouse",
        "sandbox",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "redis",
        "airflow-worker",
    } <= set(compose["services"])
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DOCKER_DIR / build["context"]).resolve()
            assert context == REPO_ROOT, f"{name}: the build context must be the repository root"
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER_DIR / source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_copies_existing_paths_and_extends_a_supported_airflow():
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    image_version = re.search(r"^FROM apache/airflow:(\d+\.\d+\.\d+)", dockerfile, re.M).group(1)
    requirements = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    airflow_requirement = next(Requirement(r) for r in requirements if Requirement(r).name == "apache-airflow")
    assert airflow_requirement.specifier.contains(image_version), (image_version, str(airflow_requirement))

    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        *sources, _destination = [part for part in line.split() if not part.startswith("--")]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_preset_connections_are_the_ones_the_dags_use(compose, dag_bag):
    environment = compose["services"]["airflow-scheduler"]["environment"]
    preset = {key.removeprefix("AIRFLOW_CONN_").lower() for key in environment if key.startswith("AIRFLOW_CONN_")}
    params = dag_bag.dags[NIGHTLY].params.dump()
    used = {params["warehouse_conn_id"], params["gravity_conn_id"], params["delivery_log_conn_id"]} - {""}
    assert preset == used

    gravity = json.loads(with_compose_defaults(environment["AIRFLOW_CONN_GRAVITY_DEFAULT"]))
    assert gravity["conn_type"] == "gravity"
    assert gravity["host"] == "http://127.0.0.1:8085"  # loopback: the workers share the sandbox's network
    sandbox = compose["services"]["sandbox"]
    assert compose["services"]["airflow-worker"]["network_mode"] == "service:sandbox"
    assert "8085" in sandbox["command"]
    assert sandbox["ports"] == ["127.0.0.1:8085:8085"]
    assert with_compose_defaults(sandbox["environment"]["GRAVITY_SANDBOX_API_KEY"]) == gravity["password"]
    warehouse = compose["services"]["warehouse"]["environment"]
    assert environment["AIRFLOW_CONN_GRAVITY_WAREHOUSE"] == (
        f"postgres://{warehouse['POSTGRES_USER']}:{warehouse['POSTGRES_PASSWORD']}@warehouse:5432/"
        f"{warehouse['POSTGRES_DB']}"
    )


def test_celery_executor_with_redis_and_scalable_workers(compose):
    """What the Celery test runs: Redis broker, results in the metadata database, workers that ``--scale``."""
    services = compose["services"]
    environment = services["airflow-scheduler"]["environment"]
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(environment["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname in services
    assert services[broker.hostname]["image"].startswith("redis:")
    assert "redis-cli" in services[broker.hostname]["healthcheck"]["test"]
    results = urlsplit(environment["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    metadata = urlsplit(environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert (results.hostname, results.username, results.path) == (metadata.hostname, metadata.username, metadata.path)

    worker = services["airflow-worker"]
    assert worker["image"] == services["airflow-scheduler"]["image"]
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"] == environment["AIRFLOW__CELERY__BROKER_URL"]
    command = " ".join(worker["command"])
    assert "airflow celery worker" in command
    # Scaled copies share the sandbox's network: a fixed name or host port would collide, so would a log server.
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    assert "--skip-serve-logs" in command and "--celery-hostname" in command
    assert worker["depends_on"][broker.hostname]["condition"] == "service_healthy"
    logs = next(volume for volume in worker["volumes"] if volume.endswith(":/opt/airflow/logs"))
    assert logs in services["airflow-apiserver"]["volumes"], "the api-server must read the workers' task logs"
    assert logs.split(":")[0] in compose["volumes"]


def test_committed_seed_is_what_the_generator_writes(tmp_path):
    regenerated = tmp_path / "seed.sql"
    write_postgres_sql(regenerated)
    assert regenerated.read_bytes() == SEED_FILE.read_bytes(), "run: python -m demo.sample_data --postgres-sql ..."
    assert SEED_FILE.stat().st_size < 5_000_000


@pytest.fixture(scope="module")
def seeded_postgres() -> Iterator[str]:
    """A scratch database loaded with ``seed.sql`` by ``psql``, as the postgres image's entrypoint does."""
    try:
        admin = psycopg2.connect(POSTGRES_DSN, connect_timeout=5)
    except psycopg2.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI: {error}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {error}")
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is needed to load seed.sql the way the postgres image does")
    admin.autocommit = True
    database = f"gravity_seed_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {database}")
    try:
        subprocess.run(
            [
                psql,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                database,
                "-f",
                str(SEED_FILE),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={database}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def sqlite_warehouse(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warehouse") / "warehouse.db"
    write_sqlite(path)
    return path


def postgres_rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_seed_loads_into_postgres_with_the_generated_rows(seeded_postgres, sqlite_warehouse):
    config = SampleConfig()
    expected = {CRM_TABLE: config.days * config.crm_rows_per_day, STORE_TABLE: config.days * config.store_rows_per_day}
    for table, count in expected.items():
        assert postgres_rows(seeded_postgres, f"SELECT count(*) FROM {table}") == [(count,)]

    # Same rows as the SQLite writer: compare per-day counts and money totals, NULLs and accents included.
    summary = (
        "SELECT substr(CAST(purchased_at AS TEXT), 1, 10), count(*), count(email), "
        "CAST(sum(total) AS TEXT), sum(length(first_name)) FROM store_transactions GROUP BY 1 ORDER BY 1"
    )

    def normalized(rows) -> list[tuple]:  # the engines sort NULL differently and sum to different types
        return sorted(((d or "", n, e, f"{float(t):.2f}", a) for d, n, e, t, a in rows))

    with sqlite3.connect(sqlite_warehouse) as sqlite:
        sqlite_summary = normalized(sqlite.execute(summary))
    assert normalized(postgres_rows(seeded_postgres, summary)) == sqlite_summary
    assert postgres_rows(seeded_postgres, "SELECT count(*) FROM crm_conversions WHERE last_name = 'Müller'")[0][0] > 0


@pytest.mark.parametrize(
    ("dag_id", "sql_path"), [(NIGHTLY, "sql/crm_conversions.sql"), (NIGHTLY, "sql/store_purchases.sql")]
)
def test_dag_sql_selects_the_same_window_on_postgres_and_sqlite(
    dag_bag, seeded_postgres, sqlite_warehouse, dag_id, sql_path
):
    interval = DataInterval(pendulum.datetime(2025, 6, 3, 3, tz="UTC"), pendulum.datetime(2025, 6, 4, 3, tz="UTC"))
    dag = dag_bag.dags[dag_id]
    sql = render_sql_file(dag, sql_path, run_context(dag, interval, **EXACT_WINDOW))
    with sqlite3.connect(sqlite_warehouse) as sqlite:
        on_sqlite = [row[0] for row in sqlite.execute(sql)]
    on_postgres = [row[0] for row in postgres_rows(seeded_postgres, sql)]
    assert on_postgres == on_sqlite  # same ids, same order (ORDER BY event_id)
    assert len(on_postgres) > 1000

    sharded = dag_bag.dags[SHARDED]
    shards = [{"shard": n, "shard_count": 4} for n in range(4)]
    per_shard = [
        {
            row[0]
            for row in postgres_rows(
                seeded_postgres,
                render_sql_file(sharded, sql_path, run_context(sharded, interval, **s, **EXACT_WINDOW)),
            )
        }
        for s in shards
    ]
    assert sorted(set().union(*per_shard)) == sorted(on_postgres)
    assert sum(map(len, per_shard)) == len(on_postgres)


def test_window_boundaries_are_half_open_on_postgres(dag_bag, seeded_postgres):
    """A row stamped exactly at the window end belongs to the next window, on PostgreSQL too."""
    boundary = postgres_rows(seeded_postgres, "SELECT min(created_at) FROM crm_conversions")[0][0]
    start = pendulum.instance(boundary, tz="UTC")
    dag = dag_bag.dags[NIGHTLY]
    before = DataInterval(start - dt.timedelta(days=1), start)
    after = DataInterval(start, start + dt.timedelta(days=1))
    first_id = postgres_rows(seeded_postgres, "SELECT 'crm-' || id FROM crm_conversions ORDER BY created_at LIMIT 1")
    ids_before = {
        r[0]
        for r in postgres_rows(
            seeded_postgres, render_sql_file(dag, "sql/crm_conversions.sql", run_context(dag, before, **EXACT_WINDOW))
        )
    }
    ids_after = {
        r[0]
        for r in postgres_rows(
            seeded_postgres, render_sql_file(dag, "sql/crm_conversions.sql", run_context(dag, after, **EXACT_WINDOW))
        )
    }
    assert first_id[0][0] in ids_after and first_id[0][0] not in ids_before


def airflow_dags_test(dag_id: str, logical_date: str, env: dict[str, str], conf: dict) -> None:
    completed = subprocess.run(
        ["airflow", "dags", "test", dag_id, logical_date, "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]


def test_nightly_and_sharded_dags_deliver_the_same_events_from_postgres(airflow_db, seeded_postgres, sandbox):
    params = dict(item.split("=") for item in seeded_postgres.split())
    env = {
        **os.environ,
        "AIRFLOW_CONN_GRAVITY_DEFAULT": json.dumps(
            {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key}
        ),
        "AIRFLOW_CONN_GRAVITY_WAREHOUSE": f"postgres://postgres@127.0.0.1:5432/{params['dbname']}",
        "GRAVITY_DAG_RETRIES": "0",  # `dags test` would otherwise wait out the retry delays of a failure
    }
    logical_date = "2025-06-04T03:00:00+00:00"  # the window 2025-06-03 03:00 -> 2025-06-04 03:00 UTC
    expected = {
        r[0]
        for r in postgres_rows(
            seeded_postgres,
            """
        SELECT 'crm-' || id FROM crm_conversions
        WHERE created_at >= '2025-06-03 03:00:00' AND created_at < '2025-06-04 03:00:00'
        UNION ALL SELECT 'pos-' || transaction_id FROM store_transactions
        WHERE purchased_at >= '2025-06-03 03:00:00' AND purchased_at < '2025-06-04 03:00:00'""",
        )
    }

    airflow_dags_test(NIGHTLY, logical_date, env, {"delivery_log_table": "delivery_log_nightly", **EXACT_WINDOW})
    nightly = {(event["event_name"], event["event_id"]) for event in sandbox.events()}
    sandbox.reset()
    airflow_dags_test(SHARDED, logical_date, env, {"delivery_log_table": "delivery_log_sharded", **EXACT_WINDOW})
    sharded_events = sandbox.events()
    sharded = {(event["event_name"], event["event_id"]) for event in sharded_events}

    assert sharded == nightly
    assert len(sharded_events) == len(sharded), "an event was delivered twice"
    delivered_ids = {event_id for _, event_id in nightly}
    assert delivered_ids <= expected and len(delivered_ids) > 0.98 * len(expected)
    assert sandbox.stats()["plaintext_pii_seen"] == 0
