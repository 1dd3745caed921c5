"""The Gravity view's JSON endpoints on a real ``airflow api-server``: the data is the history table's, an
unauthenticated request is refused, and bad input gets a clear JSON error, never a trace."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests

from airflow_provider_gravity.history.table import COUNT_COLUMNS, COVERAGE_COLUMNS
from tests.support.gravity_view_server import DAG_ID, OTHER_DAG_ID, TASK_IDS, GravityView, gravity_view  # noqa: F401

pytestmark = pytest.mark.slow
ENDPOINTS = ("api/runs", "api/daily", "api/dead-letter")


@pytest.fixture(scope="module")
def token(gravity_view: GravityView) -> str:  # noqa: F811
    return gravity_view.token()


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
    assert {(task["dag_id"], task["task_id"]) for task in daily["tasks"]} == {(DAG_ID, task) for task in TASK_IDS}

    second_page = gravity_view.get("api/daily", token, limit=5, offset=5, dag_id=DAG_ID, **whole_range(gravity_view))
    assert second_page.json()["days"] == daily["days"][5:10]


def test_dead_letter_lists_rejected_and_invalid_events_of_the_runs(gravity_view: GravityView, token: str):  # noqa: F811
    # Dated by when the delivery log last recorded them (the night after the data's day), not by the data's day.
    logged = [
        row
        for row in gravity_view.delivery_log_rows()
        if row["status"] in ("rejected", "invalid")
        and gravity_view.first_day <= row["last_recorded_at"].date() <= gravity_view.last_day
    ]
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
    }
    rejected = gravity_view.get("api/dead-letter", token, status="rejected", limit=500, **whole_range(gravity_view))
    assert {event["status"] for event in rejected.json()["dead_letter"]} == {"rejected"}
    assert rejected.json()["total_entries"] == sum(row["status"] == "rejected" for row in logged)
    pos_only = gravity_view.get(
        "api/dead-letter", token, task_id=TASK_IDS[1], limit=500, **whole_range(gravity_view)
    ).json()
    assert pos_only["total_entries"] > 0
    # Both tasks of a night share its run id: a task filter keeps that night's dead letter.
    assert pos_only["total_entries"] <= len(logged)
    none = gravity_view.get("api/dead-letter", token, dag_id=OTHER_DAG_ID, **whole_range(gravity_view)).json()
    assert none["total_entries"] == 0


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
    ],
)
def test_bad_input_gets_a_clear_400(gravity_view: GravityView, token: str, path, parameters, words):  # noqa: F811
    assert_json_error(gravity_view.get(path, token, **parameters), 400, *words)


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
