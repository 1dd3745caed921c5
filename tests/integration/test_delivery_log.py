"""The delivery log against real PostgreSQL, MariaDB and SQLite databases."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.conversions.run import delivery_log
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog, DeliveryRecord, LoggedEvent
from airflow_provider_gravity.storage.delivery_log_table import DELIVERY_LOG_COLUMNS, delivery_log_table
from airflow_provider_gravity.storage.names import index_name
from tests.support.databases import DELIVERY_LOG_COLUMNS as ALL_COLUMNS
from tests.support.databases import require_server

SERVER_URLS = {
    "postgresql": os.environ.get("GRAVITY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("GRAVITY_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ["postgresql", "mariadb", "sqlite"]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def delivered(event_id: str, payload: str = "payload", event_name: str = "Purchase") -> DeliveryRecord:
    return DeliveryRecord(event_name, event_id, "delivered", "ok", sha256(payload))


def rejected(event_id: str, event_name: str = "Purchase") -> DeliveryRecord:
    """A rejected event: Gravity accepted no payload, so the record has no payload hash."""
    return DeliveryRecord(event_name, event_id, "rejected", "error: invalid event_time", None)


@pytest.fixture(params=BACKENDS)
def url_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[], str]:
    """Returns the database URL of the backend; every engine built from it reaches the same database."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'delivery_log.db'}"
        return lambda: url
    url = SERVER_URLS[backend]
    require_server(url).dispose()
    return lambda: url


@pytest.fixture
def backend(url_factory, request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["url_factory"]


@pytest.fixture
def table_names(url_factory) -> Iterator[Callable[[], str]]:
    """Hands out fresh table names and drops every one of them after the test."""
    created: list[str] = []

    def new_name() -> str:
        created.append(f"gravity_delivery_log_{uuid.uuid4().hex[:12]}")
        return created[-1]

    yield new_name
    engine = sa.create_engine(url_factory())
    with engine.begin() as connection:
        for name in created:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture
def engine(url_factory) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url_factory())
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine, table_names) -> DeliveryLog:
    delivery = DeliveryLog(engine, table_names())
    delivery.ensure_table()
    return delivery


def stored_rows(delivery: DeliveryLog) -> dict[tuple[str, str], dict]:
    with delivery.engine.connect() as connection:
        result = connection.execute(sa.select(delivery.table))
        return {(row.event_name, row.event_id): row._asdict() for row in result}


def test_record_then_lookup_returns_the_logged_status_of_present_keys_only(log):
    log.record(
        [
            delivered("o-1", "p1"),
            DeliveryRecord("Purchase", "o-2", "duplicate", "duplicate", None),
            rejected("o-3"),
            DeliveryRecord("Lead", "o-1", "invalid", "bad_currency", None),
        ],
        run_id="scheduled__2025-01-01T00:00:00+00:00",
    )

    found = log.lookup(
        [
            ("Purchase", "o-1"),
            ("Purchase", "o-2"),
            ("Purchase", "o-3"),
            ("Lead", "o-1"),
            ("Lead", "o-2"),
            ("Purchase", "missing"),
            ("Purchase", "o-1"),
        ]
    )

    assert found == {
        ("Purchase", "o-1"): LoggedEvent("delivered", sha256("p1")),
        ("Purchase", "o-2"): LoggedEvent("duplicate", None),
        ("Purchase", "o-3"): LoggedEvent("rejected", None),
        ("Lead", "o-1"): LoggedEvent("invalid", None),
    }
    assert log.lookup([]) == {}


def test_stored_row_holds_only_what_was_given(log):
    before = datetime.now(UTC)
    log.record([rejected("o-1")], run_id="manual__1")

    rows = stored_rows(log)

    assert list(rows) == [("Purchase", "o-1")]
    row = rows["Purchase", "o-1"]
    assert set(row) == ALL_COLUMNS
    assert row["first_recorded_at"] == row["last_recorded_at"]
    assert before.replace(microsecond=0) <= row["last_recorded_at"] <= datetime.now(UTC)
    del row["first_recorded_at"], row["last_recorded_at"]
    assert row == {
        "event_name": "Purchase",
        "event_id": "o-1",
        "status": "rejected",
        "detail": "error: invalid event_time",
        "payload_sha256": None,
        "attempts": 1,
        "first_run_id": "manual__1",
        "last_run_id": "manual__1",
        "dag_id": None,
        "task_id": None,
    }


def test_re_recording_counts_attempts_and_keeps_the_first_run(log):
    log.record([rejected("o-1")], run_id="run-1")
    first = stored_rows(log)["Purchase", "o-1"]
    log.record([rejected("o-1")], run_id="run-2")
    log.record([delivered("o-1", "v3")], run_id="run-3")

    row = stored_rows(log)["Purchase", "o-1"]
    assert row["attempts"] == 3
    assert (row["first_run_id"], row["last_run_id"]) == ("run-1", "run-3")
    assert row["first_recorded_at"] == first["first_recorded_at"]
    assert row["last_recorded_at"] > first["last_recorded_at"]
    assert (row["status"], row["payload_sha256"], row["detail"]) == ("delivered", sha256("v3"), "ok")


@pytest.mark.parametrize("earlier_status", ["delivered", "duplicate"])
@pytest.mark.parametrize("later_status", ["rejected", "invalid"])
def test_a_delivery_is_never_downgraded_by_a_later_failure(log, earlier_status, later_status):
    earlier_hash = sha256("sent") if earlier_status == "delivered" else None
    log.record([DeliveryRecord("Purchase", "o-1", earlier_status, earlier_status, earlier_hash)], run_id="r1")
    log.record([DeliveryRecord("Purchase", "o-1", later_status, "bad_value", None)], run_id="r2")

    assert log.lookup([("Purchase", "o-1")]) == {("Purchase", "o-1"): LoggedEvent(earlier_status, earlier_hash)}
    row = stored_rows(log)["Purchase", "o-1"]
    assert (row["detail"], row["last_run_id"], row["attempts"]) == ("bad_value", "r2", 2)


def test_a_key_repeated_in_one_call_is_merged_by_the_same_rules(log):
    log.record([delivered("o-1", "first"), rejected("o-1"), delivered("o-2")], run_id="r1")

    rows = stored_rows(log)
    assert rows["Purchase", "o-1"]["status"] == "delivered"
    assert rows["Purchase", "o-1"]["payload_sha256"] == sha256("first")
    assert rows["Purchase", "o-1"]["attempts"] == 2
    assert rows["Purchase", "o-2"]["attempts"] == 1


def test_ids_differing_only_in_case_or_trailing_space_are_different_events(log):
    log.record([delivered("AB-1", "upper"), delivered("ab-1", "lower"), rejected("ab-1 ")], run_id="r1")

    assert log.lookup([("Purchase", "AB-1"), ("Purchase", "ab-1"), ("Purchase", "ab-1 ")]) == {
        ("Purchase", "AB-1"): LoggedEvent("delivered", sha256("upper")),
        ("Purchase", "ab-1"): LoggedEvent("delivered", sha256("lower")),
        ("Purchase", "ab-1 "): LoggedEvent("rejected", None),
    }


def test_ten_thousand_records_in_one_call_are_written_in_batches(log, backend):
    records = [delivered(f"order-{i:05d}", f"p{i}") for i in range(10_000)]
    statements: list[str] = []
    row_by_row: list[int] = []

    def count_statement(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def count_driver_executemany(cursor, statement, parameters, context):
        row_by_row.append(len(parameters))

    sa.event.listen(log.engine, "before_cursor_execute", count_statement)
    sa.event.listen(log.engine, "do_executemany", count_driver_executemany)
    started = time.perf_counter()
    log.record(records, run_id="backfill__2025-01-01")
    elapsed = time.perf_counter() - started
    sa.event.remove(log.engine, "before_cursor_execute", count_statement)
    sa.event.remove(log.engine, "do_executemany", count_driver_executemany)

    rows = stored_rows(log)
    assert len(rows) == 10_000
    assert rows["Purchase", "order-09999"]["payload_sha256"] == sha256("p9999")
    assert len(statements) <= 20
    if backend == "postgresql":
        # psycopg2's executemany is one round trip per row; the rows must go as multi-row INSERTs.
        assert row_by_row == []
    assert elapsed < 30


def test_lookup_of_five_thousand_keys_finds_exactly_the_present_half(log):
    log.record([delivered(f"o-{i}") for i in range(0, 5_000, 2)], run_id="r1")

    found = log.lookup([("Purchase", f"o-{i}") for i in range(5_000)])

    assert set(found) == {("Purchase", f"o-{i}") for i in range(0, 5_000, 2)}
    assert set(found.values()) == {LoggedEvent("delivered", sha256("payload"))}


def run_together(workers: list[Callable[[], None]]) -> list[BaseException]:
    """Starts each worker in its own thread at the same moment; returns the exceptions they raised."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        try:
            barrier.wait()
            work()
        except BaseException as error:  # noqa: B036 - reported to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return errors


def test_concurrent_first_use_creates_the_table_once_and_loses_no_rows(url_factory, table_names, backend):
    # Four processes' worth of engines racing CREATE TABLE IF NOT EXISTS; on PostgreSQL the losers
    # of that race get a pg_type unique violation most of the time, so a few rounds are enough to hit it.
    rounds = 4 if backend == "postgresql" else 2
    for _ in range(rounds):
        table = table_names()
        engines = [sa.create_engine(url_factory()) for _ in range(4)]
        for engine in engines:
            with engine.connect():  # connect beforehand so the barrier lines up the CREATE statements
                pass

        def first_use(engine: sa.Engine, table: str, worker: int) -> Callable[[], None]:
            def work() -> None:
                writer = DeliveryLog(engine, table)
                writer.ensure_table()
                writer.record([delivered(f"w{worker}-{i}") for i in range(250)], run_id=f"run-{worker}")

            return work

        try:
            errors = run_together([first_use(engine, table, worker) for worker, engine in enumerate(engines)])
            assert errors == []
            rows = stored_rows(DeliveryLog(engines[0], table))
            assert len(rows) == 1_000
            assert {row["attempts"] for row in rows.values()} == {1}
        finally:
            for engine in engines:
                engine.dispose()


def test_concurrent_writers_of_overlapping_keys_leave_consistent_rows(url_factory, log):
    shared = [f"shared-{i:04d}" for i in range(1_000)]
    engines = [sa.create_engine(url_factory()) for _ in range(4)]

    def writer(worker: int) -> Callable[[], None]:
        delivery = DeliveryLog(engines[worker], log.table_name)
        # Worker 0 delivers the shared events; the others report them rejected, in reversed
        # order and in several calls, which is how lock-order conflicts arise.
        make = delivered if worker == 0 else rejected
        ids = shared if worker % 2 == 0 else shared[::-1]

        def work() -> None:
            for start in range(0, len(ids), 250):
                batch = [
                    make(event_id, f"w{worker}") if worker == 0 else make(event_id)
                    for event_id in ids[start : start + 250]
                ]
                delivery.record(batch + [rejected(f"own-{worker}-{start}")], run_id=f"run-{worker}")

        return work

    try:
        assert run_together([writer(worker) for worker in range(4)]) == []
    finally:
        for engine in engines:
            engine.dispose()

    rows = stored_rows(log)
    assert len(rows) == 1_000 + 4 * 4
    for event_id in shared:
        row = rows["Purchase", event_id]
        assert (row["status"], row["payload_sha256"], row["attempts"]) == ("delivered", sha256("w0"), 4)
    assert all(rows["Purchase", f"own-{w}-{s}"]["attempts"] == 1 for w in range(4) for s in range(0, 1000, 250))


def test_a_deadlock_with_another_writer_is_retried(log, backend, caplog):
    if backend != "postgresql":
        pytest.skip("choosing the deadlock victim needs PostgreSQL's per-session deadlock_timeout")
    caplog.set_level(logging.INFO, logger=delivery_log.__name__)
    log.record([rejected("o-1"), rejected("o-2")], run_id="r1")
    table = log.table_name
    outcome: list[BaseException | None] = []

    def record_both() -> None:
        try:
            log.record([delivered("o-1"), delivered("o-2")], run_id="r2")
            outcome.append(None)
        except BaseException as error:  # noqa: B036 - reported to the test
            outcome.append(error)

    other = sa.create_engine(log.engine.url)
    try:
        with other.begin() as connection:
            # This session waits 10 s before checking for deadlocks, so the delivery log's session
            # (1 s default) is the one PostgreSQL aborts.
            connection.execute(sa.text("SET LOCAL deadlock_timeout = '10s'"))
            connection.execute(sa.text(f"UPDATE {table} SET detail = 'other' WHERE event_id = 'o-2'"))
            writer = threading.Thread(target=record_both)
            writer.start()
            time.sleep(0.5)  # the writer now holds o-1 and waits for o-2
            connection.execute(sa.text(f"UPDATE {table} SET detail = 'other' WHERE event_id = 'o-1'"))
        writer.join(timeout=60)
    finally:
        other.dispose()

    assert outcome == [None]
    assert "lock conflict" in caplog.text
    rows = stored_rows(log)
    assert [rows["Purchase", key]["status"] for key in ("o-1", "o-2")] == ["delivered", "delivered"]
    assert [rows["Purchase", key]["attempts"] for key in ("o-1", "o-2")] == [2, 2]


def test_portable_fallback_keeps_the_same_semantics(engine, table_names, monkeypatch, backend):
    if backend != "sqlite":
        pytest.skip("the fallback is dialect independent; one database is enough")
    monkeypatch.setattr(delivery_log, "_NATIVE_UPSERTS", {})
    delivery = DeliveryLog(engine, table_names())
    delivery.ensure_table()

    delivery.record([delivered("o-1", "sent"), rejected("o-2")], run_id="r1")
    delivery.record([rejected("o-1"), delivered("o-2", "fixed"), delivered("o-3")], run_id="r2")

    rows = stored_rows(delivery)
    assert {key: (row["status"], row["attempts"], row["first_run_id"]) for key, row in rows.items()} == {
        ("Purchase", "o-1"): ("delivered", 2, "r1"),
        ("Purchase", "o-2"): ("delivered", 2, "r1"),
        ("Purchase", "o-3"): ("delivered", 1, "r2"),
    }
    assert rows["Purchase", "o-1"]["payload_sha256"] == sha256("sent")


def test_schema_qualified_table_name(engine, table_names, backend):
    schema = {"postgresql": "public", "mariadb": "test", "sqlite": "main"}[backend]
    delivery = DeliveryLog(engine, f"{schema}.{table_names()}")
    delivery.ensure_table()
    delivery.ensure_table()
    delivery.record([delivered("o-1")], run_id="r1")

    assert delivery.lookup([("Purchase", "o-1")]) == {("Purchase", "o-1"): LoggedEvent("delivered", sha256("payload"))}


def test_an_unrelated_existing_table_is_refused(engine, table_names):
    name = table_names()
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {name} (event_name VARCHAR(10), other INTEGER)"))

    with pytest.raises(ValueError, match="not a delivery log"):
        DeliveryLog(engine, name).ensure_table()


@pytest.mark.parametrize(
    "table_name",
    [
        "",
        "log; DROP TABLE users",
        'log"',
        "log`x",
        "1log",
        "delivery-log",
        "a.b.c",
        ".log",
        "log.",
        "x" * 64,
        "emails (id int)",
    ],
)
def test_an_unsafe_table_name_is_refused(table_name):
    with pytest.raises(ValueError, match="(?i)delivery log"):
        DeliveryLog(sa.create_engine("sqlite://"), table_name)


def test_a_schema_given_twice_is_refused():
    with pytest.raises(ValueError, match="already names a schema"):
        DeliveryLog(sa.create_engine("sqlite://"), "audit.delivery_log", schema="other")


@pytest.mark.parametrize(
    "record",
    [
        DeliveryRecord("Purchase", "o-1", "sent", None, None),
        DeliveryRecord("Purchase", "o-1", "delivered", None, "jane@example.com"),
        DeliveryRecord("Purchase", "o-1", "delivered", None, sha256("x").upper()),
        DeliveryRecord("Purchase", "x" * 256, "delivered", None, None),
        DeliveryRecord("Purchase", "", "delivered", None, None),
        DeliveryRecord("Purchase", "o-1", "duplicate", None, sha256("x")),
        DeliveryRecord("Purchase", "o-1", "rejected", None, sha256("x")),
    ],
    ids=[
        "unknown-status",
        "plaintext-instead-of-hash",
        "uppercase-hash",
        "id-too-long",
        "empty-id",
        "hash-of-a-duplicate",
        "hash-of-a-rejected-payload",
    ],
)
def test_a_malformed_record_is_refused_before_anything_is_written(log, record):
    with pytest.raises(ValueError) as raised:
        log.record([delivered("o-ok"), record], run_id="r1")

    assert "jane@example.com" not in str(raised.value)
    assert stored_rows(log) == {}


def test_detail_is_truncated(log):
    log.record([DeliveryRecord("Purchase", "o-1", "rejected", "e" * 5_000, None)], run_id="r1")

    assert stored_rows(log)["Purchase", "o-1"]["detail"] == "e" * 1_000


def test_the_stored_hash_is_only_ever_one_gravity_accepted(log):
    """Gravity keeps the values of the first send and answers ``duplicate`` to a changed one: keep its hash."""
    log.record([delivered("o-1", "original")], run_id="r1")
    log.record([DeliveryRecord("Purchase", "o-1", "duplicate", "duplicate", None)], run_id="r2")
    log.record([rejected("o-1")], run_id="r3")
    log.record([DeliveryRecord("Purchase", "o-2", "duplicate", "duplicate", None)], run_id="r3")

    assert log.lookup([("Purchase", "o-1"), ("Purchase", "o-2")]) == {
        ("Purchase", "o-1"): LoggedEvent("duplicate", sha256("original")),
        ("Purchase", "o-2"): LoggedEvent("duplicate", None),
    }


def test_an_over_long_key_is_fitted_into_the_table_and_stays_distinct(log):
    long_ids = ["x" * 300, "x" * 299 + "y"]
    fitted = [delivery_log.fit_key(event_id) for event_id in long_ids]

    log.record([DeliveryRecord("Purchase", key, "invalid", "event_id_too_long", None) for key in fitted], run_id="r1")

    assert all(len(key) <= delivery_log.MAX_KEY_LENGTH for key in fitted)
    assert fitted[0] != fitted[1] and fitted[0].startswith("x" * 100)
    assert delivery_log.fit_key("short-id") == "short-id"
    assert set(stored_rows(log)) == {("Purchase", key) for key in fitted}


@pytest.mark.parametrize("charset", ["utf8", "latin1"])
def test_an_emoji_id_is_logged_on_mysql_whatever_the_connection_charset(url_factory, table_names, backend, charset):
    """An adversarial review found an emoji id failing the write over a utf8 (3-byte) or latin1 connection."""
    if backend != "mariadb":
        pytest.skip("the connection charset is a MySQL/MariaDB setting")
    engine = sa.create_engine(sa.make_url(url_factory()).update_query_dict({"charset": charset}))
    delivery = DeliveryLog(engine, table_names())
    try:
        delivery.ensure_table()
        delivery.record([delivered("😀-1"), rejected("𠮷-2")], run_id="r1")

        assert set(delivery.lookup([("Purchase", "😀-1"), ("Purchase", "𠮷-2")])) == {
            ("Purchase", "😀-1"),
            ("Purchase", "𠮷-2"),
        }
    finally:
        delivery.engine.dispose()
        engine.dispose()


# -- the DAG and task of each record, and the migration that adds them ------------------------------------


def table_of_the_previous_version(engine: sa.Engine, name: str) -> sa.Table:
    """The delivery log as versions before the DAG columns created it: ten columns, no index of the view."""
    current = delivery_log_table(name, None)
    previous = sa.Table(
        name,
        sa.MetaData(),
        *(current.c[column]._copy() for column in DELIVERY_LOG_COLUMNS),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    previous.create(engine)
    return previous


def test_each_record_holds_the_dag_and_task_that_wrote_it_last(engine, table_names):
    name = table_names()
    dag_a = DeliveryLog(engine, name, dag_id="dag_a", task_id="send")
    dag_a.ensure_table()
    dag_a.record([rejected("o-1"), delivered("o-2")], run_id="scheduled__2026-01-01T00:00:00+00:00")
    DeliveryLog(engine, name, dag_id="dag_b", task_id="push").record(
        [rejected("o-1"), rejected("o-3")], run_id="scheduled__2026-01-01T00:00:00+00:00"
    )

    rows = stored_rows(dag_a)
    assert (rows["Purchase", "o-1"]["dag_id"], rows["Purchase", "o-1"]["task_id"]) == ("dag_b", "push")
    assert (rows["Purchase", "o-2"]["dag_id"], rows["Purchase", "o-2"]["task_id"]) == ("dag_a", "send")
    assert rows["Purchase", "o-3"]["dag_id"] == "dag_b"
    with pytest.raises(ValueError, match="dag_id"):
        DeliveryLog(engine, name, dag_id="d" * 251)


def test_a_table_of_the_previous_version_is_migrated_once_by_concurrent_writers(url_factory, table_names, backend):
    engine = sa.create_engine(url_factory())
    name = table_names()
    previous = table_of_the_previous_version(engine, name)
    at = datetime(2026, 1, 2, 3, tzinfo=UTC)
    old_rows = [
        {
            "event_name": "Purchase",
            "event_id": f"old-{number}",
            "status": "rejected" if number % 2 else "delivered",
            "detail": "error: invalid event_time" if number % 2 else "ok",
            "payload_sha256": None if number % 2 else sha256(str(number)),
            "attempts": 1,
            "first_run_id": "scheduled__2026-01-01T00:00:00+00:00",
            "last_run_id": "scheduled__2026-01-01T00:00:00+00:00",
            "first_recorded_at": at,
            "last_recorded_at": at,
        }
        for number in range(200)
    ]
    with engine.begin() as connection:
        connection.execute(sa.insert(previous), old_rows)
    engine.dispose()

    writers = 4
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def migrate(number: int) -> None:
        options = {"connect_args": {"timeout": 30}} if backend == "sqlite" else {}
        writer_engine = sa.create_engine(url_factory(), poolclass=sa.NullPool, **options)
        try:
            barrier.wait(timeout=30)
            log = DeliveryLog(writer_engine, name, dag_id=f"dag_{number}", task_id="send")
            log.ensure_table()
            log.record([rejected(f"new-{number}")], run_id="scheduled__2026-01-02T00:00:00+00:00")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            writer_engine.dispose()

    threads = [threading.Thread(target=migrate, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []

    engine = sa.create_engine(url_factory())
    log = DeliveryLog(engine, name, dag_id="dag_z", task_id="send")
    log.ensure_table()  # again, on a migrated table: nothing happens
    inspector = sa.inspect(engine)
    assert {column["name"] for column in inspector.get_columns(name)} == ALL_COLUMNS
    assert {index["name"] for index in inspector.get_indexes(name)} >= {
        index_name(name, "dead_letter"),
        index_name(name, "dag_dead_letter"),
    }
    rows = stored_rows(log)
    for old in old_rows:  # kept as they were, with no DAG
        stored = rows["Purchase", old["event_id"]]
        assert {key: stored[key] for key in old} == old
        assert stored["dag_id"] is None and stored["task_id"] is None
    for number in range(writers):
        assert rows["Purchase", f"new-{number}"]["dag_id"] == f"dag_{number}"
    log.record([rejected("old-1")], run_id="scheduled__2026-01-03T00:00:00+00:00")
    assert stored_rows(log)["Purchase", "old-1"]["dag_id"] == "dag_z"
    assert stored_rows(log)["Purchase", "old-1"]["attempts"] == 2
    engine.dispose()


def test_index_names_fit_every_database():
    name = "t" * 63
    assert len(index_name(name, "dag_dead_letter")) == 63
    assert index_name(name, "dead_letter") != index_name(name + "x", "dead_letter")
    assert index_name("log", "dead_letter") == "ix_log_dead_letter"
