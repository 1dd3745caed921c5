"""The Gravity view's JSON endpoints on a real ``airflow api-server``: the data is the history table's, an
unauthenticated request is refused, a reader of one DAG sees that DAG's runs and dead letter only, and bad input
gets a clear JSON error, never a trace (also from requests a fuzzer makes of the view's own OpenAPI schema)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests

from airflow_provider_gravity.storage.run_history_tables import COUNT_COLUMNS, COVERAGE_COLUMNS
from tests.support.gravity_view_server import (  # noqa: F401
    DAG_ID,
    OTHER_DAG_ID,
    OTHER_DAG_MESSAGE,
    READER,
    READER_PASSWORD,
    TASK_IDS,
    GravityView,
    gravity_view,
)

pytestmark = pytest.mark.slow
ENDPOINTS = ("api/runs", "api/daily", "api/dead-letter")


@pytest.fixture(scope="module")
def token(gravity_view: GravityView) -> str:  # noqa: F811
    return gravity_view.token()


@pytest.fixture(scope="module")
def reader_token(gravity_view: GravityView) -> str:  # noqa: F811
    """The token of a user who may read DAG_ID only."""
    return gravity_view.token(READER, READER_PASSWORD)


def whole_range(view: GravityView) -> dict[str, str]:
    return {"start_date": view.first_day.isoformat(), "end_date": view.last_day.isoformat()}


def latest_tries(rows: list[dict]) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda row: row["id"]):
        latest[(row["dag_id"], row["task_id"], row["run_id"], row["map_index"])] = row
    return list(latest.values())


def assert_json_error(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail and 'File "' not in detail
    for word in words:
        assert word in detail, detail


def test_unauthenticated_requests_are_refused(gravity_view: GravityView):  # noqa: F811
    for path in ENDPOINTS:
        assert_json_error(gravity_view.get(path), 401)
        refused = gravity_view.get(path, token="not-a-token")
        assert refused.status_code in (401, 403) and "runs" not in refused.text
    page = gravity_view.get("")
    assert page.status_code == 303
    assert "/auth/login?next=" in page.headers["location"] and "gravity" in page.headers["location"]


def test_only_the_page_code_and_the_schema_answer_without_authentication(gravity_view: GravityView):  # noqa: F811
    # The decision (README, the view's section): static files and openapi.json hold no data, and are served to
    # anyone, as the Airflow UI serves its own page code; every path that reads a table wants a user.
    schema = gravity_view.get("openapi.json")
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Gravity view"
    for name in ("gravity.js", "gravity.css", "gravity-icon.svg", "vendor/chart.umd.min.js"):
        assert gravity_view.get(f"static/{name}").status_code == 200, name
    paths = schema.json()["paths"]
    assert sorted(paths) == ["/api/daily", "/api/dead-letter", "/api/runs"]
    for path in paths:
        assert_json_error(gravity_view.get(path.lstrip("/")), 401)
        assert_json_error(gravity_view.get(path.lstrip("/"), dag_id=DAG_ID, limit=1), 401)
    assert gravity_view.get("").status_code == 303
    for hidden in ("docs", "redoc", "static/../app.py", "static/%2e%2e/app.py", "static/"):
        answer = gravity_view.get(hidden)
        assert answer.status_code in (401, 404), hidden
        assert "def create_app" not in answer.text


def test_the_plugin_is_registered_with_a_navigation_link(gravity_view: GravityView, token: str):  # noqa: F811
    plugins = requests.get(
        f"{gravity_view.airflow.url}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()["plugins"]
    (plugin,) = [plugin for plugin in plugins if plugin["name"] == "gravity"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/gravity"
    (view,) = plugin["external_views"]
    assert (view["href"], view["url_route"], view["destination"]) == ("/gravity/", "gravity", "nav")
    assert "airflow-provider-gravity" in plugin["source"]


def test_runs_are_the_rows_of_the_history_table(gravity_view: GravityView, token: str):  # noqa: F811
    rows = {row["id"]: row for row in gravity_view.history_rows()}
    in_range = {key: row for key, row in rows.items() if gravity_view.first_day <= row["day"] <= gravity_view.last_day}
    seen = []
    offset = 0
    while True:
        page = gravity_view.get("api/runs", token, limit=7, offset=offset, **whole_range(gravity_view)).json()
        assert page["total_entries"] == len(in_range)
        seen += page["runs"]
        offset += 7
        if offset >= page["total_entries"]:
            break
    assert sorted(run["id"] for run in seen) == sorted(in_range)
    assert [run["day"] for run in seen] == sorted((run["day"] for run in seen), reverse=True)
    for run in seen:
        row = rows[run["id"]]
        for key in ("dag_id", "task_id", "map_index", "run_id", "try_number", "outcome", "failure", *COUNT_COLUMNS):
            assert run[key] == row[key], key
        assert run["day"] == row["day"].isoformat()
        assert run["match_key_coverage"] == {key: row[column] for key, column in COVERAGE_COLUMNS.items()}
        assert run["seconds"] == row["seconds"] and run["rows_per_second"] == row["rows_per_second"]
    retried = [run for run in seen if run["outcome"] == "incomplete"]
    assert len(retried) == 1 and retried[0]["failure"] == "Gravity answered 503 five times"

    only_crm = gravity_view.get("api/runs", token, dag_id=DAG_ID, task_id=TASK_IDS[0], **whole_range(gravity_view))
    assert {run["task_id"] for run in only_crm.json()["runs"]} == {TASK_IDS[0]}
    assert only_crm.json()["total_entries"] == sum(1 for row in in_range.values() if row["task_id"] == TASK_IDS[0])


def test_daily_sums_the_last_try_of_each_task_per_day(gravity_view: GravityView, token: str):  # noqa: F811
    rows = [
        row
        for row in latest_tries(gravity_view.history_rows())
        if gravity_view.first_day <= row["day"] <= gravity_view.last_day and row["dag_id"] == DAG_ID
    ]
    daily = gravity_view.get("api/daily", token, dag_id=DAG_ID, **whole_range(gravity_view)).json()

    by_day: dict[str, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["day"].isoformat(), []).append(row)
    assert [day["day"] for day in daily["days"]] == sorted(by_day)
    for day in daily["days"]:
        tries = by_day[day["day"]]
        assert day["runs"] == len(tries) == len(TASK_IDS)
        for name in COUNT_COLUMNS:
            assert day[name] == sum(row[name] for row in tries), name
        sent = sum(row["events_sent"] for row in tries)
        for key, column in COVERAGE_COLUMNS.items():
            expected = sum(row[column] * row["events_sent"] for row in tries) / sent
            assert day["match_key_coverage"][key] == pytest.approx(expected, abs=1e-4)
    assert daily["totals"]["delivered"] == sum(row["delivered"] for row in rows)
    assert daily["total_entries"] == len(by_day)

    reasons: Counter = Counter()
    for row in rows:
        for kind, column in (("invalid", "invalid_reasons"), ("rejected", "rejected_errors")):
            for reason, count in json.loads(row[column]).items():
                reasons[(kind, reason)] += count
    expected_top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert [(r["kind"], r["reason"], r["rows"]) for r in daily["top_reasons"]] == [
        (kind, reason, count) for (kind, reason), count in expected_top
    ]
    assert {(task["dag_id"], task["task_id"]) for task in daily["tasks"]} == {
        *((DAG_ID, task) for task in TASK_IDS),
        (OTHER_DAG_ID, "send"),
    }

    second_page = gravity_view.get("api/daily", token, limit=5, offset=5, dag_id=DAG_ID, **whole_range(gravity_view))
    assert second_page.json()["days"] == daily["days"][5:10]


def dead_letter_rows(view: GravityView, **matching: object) -> list[dict]:
    """The delivery log's rejected and invalid rows last recorded in the whole range, with these values."""
    return [
        row
        for row in view.delivery_log_rows()
        if row["status"] in ("rejected", "invalid")
        and view.first_day <= row["last_recorded_at"].date() <= view.last_day
        and all(row[key] == value for key, value in matching.items())
    ]


def dead_letter_ids(view: GravityView, token: str, **parameters: object) -> tuple[set[str], int]:
    page = view.get("api/dead-letter", token, limit=500, **whole_range(view), **parameters)
    assert page.status_code == 200, page.text
    return {event["event_id"] for event in page.json()["dead_letter"]}, page.json()["total_entries"]


def test_dead_letter_lists_rejected_and_invalid_events_of_the_runs(gravity_view: GravityView, token: str):  # noqa: F811
    # Dated by when the delivery log last recorded them (the night after the data's day), not by the data's day.
    logged = dead_letter_rows(gravity_view)
    first = gravity_view.get("api/dead-letter", token, limit=500, **whole_range(gravity_view)).json()
    assert first["total_entries"] == len(logged) > 0
    assert {event["event_id"] for event in first["dead_letter"]} == {row["event_id"] for row in logged}
    assert set(first["dead_letter"][0]) == {
        "event_name",
        "event_id",
        "status",
        "detail",
        "payload_sha256",
        "attempts",
        "first_run_id",
        "last_run_id",
        "first_recorded_at",
        "last_recorded_at",
        "dag_id",
        "task_id",
    }
    rejected = gravity_view.get("api/dead-letter", token, status="rejected", limit=500, **whole_range(gravity_view))
    assert {event["status"] for event in rejected.json()["dead_letter"]} == {"rejected"}
    assert rejected.json()["total_entries"] == sum(row["status"] == "rejected" for row in logged)
    pos_only, total = dead_letter_ids(gravity_view, token, task_id=TASK_IDS[1])
    assert pos_only == {row["event_id"] for row in dead_letter_rows(gravity_view, task_id=TASK_IDS[1])}
    assert total == len(pos_only) > 0 and all(event_id.startswith("pos-") for event_id in pos_only)
    # Rows written before the delivery log recorded DAGs are listed to an admin without a filter.
    assert {row["event_id"] for row in logged if row["dag_id"] is None} <= {e["event_id"] for e in first["dead_letter"]}


def test_a_dag_filter_lists_that_dags_dead_letter_only_for_an_admin_too(gravity_view: GravityView, token: str):  # noqa: F811
    # Both DAGs run on the same schedule, so their runs have the same ids: the DAG is what tells them apart.
    for dag_id in (DAG_ID, OTHER_DAG_ID):
        listed, total = dead_letter_ids(gravity_view, token, dag_id=dag_id)
        expected = {row["event_id"] for row in dead_letter_rows(gravity_view, dag_id=dag_id)}
        assert listed == expected and total == len(expected) > 0, dag_id
    other = gravity_view.get("api/dead-letter", token, dag_id=DAG_ID, limit=500, **whole_range(gravity_view))
    assert OTHER_DAG_MESSAGE not in other.text
    assert all(event["dag_id"] == DAG_ID for event in other.json()["dead_letter"])
    none, total = dead_letter_ids(gravity_view, token, dag_id="no_such_dag")
    assert none == set() and total == 0


def test_a_reader_of_one_dag_sees_its_runs_and_dead_letter_only(
    gravity_view: GravityView,  # noqa: F811
    reader_token: str,
):
    expected = {row["event_id"] for row in dead_letter_rows(gravity_view, dag_id=DAG_ID)}
    listed, total = dead_letter_ids(gravity_view, reader_token)
    assert listed == expected and total == len(expected)
    # Not the other DAG's events, whose runs have the same ids; not the rows that record no DAG.
    assert not listed & {row["event_id"] for row in dead_letter_rows(gravity_view) if row["dag_id"] != DAG_ID}
    page = gravity_view.get("api/dead-letter", reader_token, limit=500, **whole_range(gravity_view))
    assert OTHER_DAG_MESSAGE not in page.text and "old-" not in page.text
    for parameters in (
        {"dag_id": OTHER_DAG_ID},
        {"task_id": "send"},
        {"event_name": "Purchase", "dag_id": OTHER_DAG_ID},
    ):
        assert dead_letter_ids(gravity_view, reader_token, **parameters) == (set(), 0), parameters

    runs = gravity_view.get("api/runs", reader_token, limit=500, **whole_range(gravity_view)).json()
    assert runs["total_entries"] > 0 and {run["dag_id"] for run in runs["runs"]} == {DAG_ID}
    daily = gravity_view.get("api/daily", reader_token, **whole_range(gravity_view)).json()
    assert {task["dag_id"] for task in daily["tasks"]} == {DAG_ID}
    admin_view_of_dag = gravity_view.get("api/daily", gravity_view.token(), dag_id=DAG_ID, **whole_range(gravity_view))
    assert daily["days"] == admin_view_of_dag.json()["days"]
    assert daily["top_reasons"] == admin_view_of_dag.json()["top_reasons"]


@pytest.mark.parametrize(
    ("path", "parameters", "words"),
    [
        ("api/runs", {"dag": "x"}, ("Unknown query parameter", "dag", "dag_id")),
        ("api/daily", {"start_date": "2020-01-01", "end_date": "2026-01-01"}, ("at most 366",)),
        ("api/runs", {"start_date": "2026-02-01", "end_date": "2026-01-01"}, ("after",)),
        ("api/dead-letter", {"start_date": "yesterday"}, ("start_date",)),
        ("api/runs", {"limit": "0"}, ("limit",)),
        ("api/runs", {"limit": "100000"}, ("limit",)),
        ("api/dead-letter", {"status": "delivered"}, ("status",)),
        ("api/runs", {"dag_id": "d" * 300}, ("dag_id",)),
        ("api/dead-letter", {"end_date": "9999-12-31"}, ("end_date", "9999-12-31")),
        ("api/daily", {"end_date": "9999-12-31", "start_date": "9999-12-01"}, ("end_date",)),
        ("api/runs", {"end_date": "0001-01-05"}, ("start_date",)),
        ("api/dead-letter", {"end_date": "0001-01-05"}, ("start_date",)),
        ("api/runs", {"dag_id": "dag\x00a"}, ("dag_id", "NUL")),
        ("api/daily", {"task_id": "send\x00"}, ("task_id", "NUL")),
        ("api/dead-letter", {"event_name": "Purchase\x00"}, ("event_name", "NUL")),
        ("api/dead-letter", {"dag_id": "\x00"}, ("dag_id",)),
        ("api/runs", {"offset": str(2**63)}, ("offset",)),
        ("api/dead-letter", {"offset": str(2**64)}, ("offset",)),
        ("api/daily", {"offset": "1" + "0" * 40}, ("offset",)),
        ("api/daily", {"start_date": "2026-02-30"}, ("start_date",)),
    ],
)
def test_bad_input_gets_a_clear_400(gravity_view: GravityView, token: str, path, parameters, words):  # noqa: F811
    assert_json_error(gravity_view.get(path, token, **parameters), 400, *words)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_edges_of_what_a_request_may_ask_are_answered(gravity_view: GravityView, token: str, path):  # noqa: F811
    for parameters in (
        {"start_date": "0001-01-01", "end_date": "0001-01-05"},
        {"start_date": "9999-12-01", "end_date": "9999-12-30"},
        {"offset": str(2**63 - 1)},
        {"dag_id": "d" * 250, "task_id": "é✓🙂"},
    ):
        answer = gravity_view.get(path, token, **parameters)
        assert answer.status_code == 200, (parameters, answer.text)
        listed = {"api/runs": "runs", "api/daily": "days", "api/dead-letter": "dead_letter"}[path]
        assert answer.json()[listed] == [] or "offset" not in parameters and "start_date" not in parameters


def test_a_missing_table_gets_a_clear_404(gravity_view: GravityView, token: str):  # noqa: F811
    schema, table = gravity_view.history_table.split(".")
    with gravity_view.engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {schema}.{table} RENAME TO {table}_away")
    try:
        for path in ENDPOINTS:
            response = gravity_view.get(path, token)
            if path == "api/dead-letter":
                assert response.status_code == 200  # the dead letter of every DAG needs no history
            else:
                assert_json_error(response, 404, "does not exist", table)
    finally:
        with gravity_view.engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {schema}.{table}_away RENAME TO {table}")


#: Requests the fuzzer makes, all operations and both modes together: about 25 s on the api-server.
FUZZ_EXAMPLES = 400


def test_no_request_made_from_the_views_own_openapi_schema_gets_a_5xx(gravity_view: GravityView, token: str):  # noqa: F811
    # schemathesis generates requests from /gravity/openapi.json, valid ones and ones that break the schema
    # (wrong types, out of range, any text), with an admin's token, with a one-DAG reader's and with none.
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{gravity_view.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ENDPOINTS)
    cases = st.one_of(
        [
            operation.as_strategy(mode)
            for operation in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    )
    tokens = {"admin": token, "reader": gravity_view.token(READER, READER_PASSWORD), "nobody": None}
    answered: Counter = Counter()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, who=st.sampled_from(sorted(tokens)))
    def no_5xx(case, who: str) -> None:
        headers = {"Authorization": f"Bearer {tokens[who]}"} if tokens[who] else {}
        response = case.call(base_url=gravity_view.url, headers=headers, allow_redirects=False, timeout=60)
        answered[response.status_code] += 1
        assert response.status_code < 500, f"{case.as_curl_command()}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            assert isinstance(response.json()["detail"], str), response.text[:300]
        if who == "nobody":  # 403 when the fuzzer made up a token or a cookie of its own
            assert response.status_code in (401, 403), case.as_curl_command()

    no_5xx()
    assert answered[200] > 0 and answered[400] > 0 and answered[401] > 0, answered
