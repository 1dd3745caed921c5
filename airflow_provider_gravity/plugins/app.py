"""
The Gravity view's FastAPI app, mounted by the api-server under ``/gravity``.

``GET /gravity/``                 the page: charts per day, top refusal reasons, runs and the dead letter;
``GET /gravity/api/runs``         one entry per task try, newest first;
``GET /gravity/api/daily``        per day: buckets, coverage; plus totals, top refusal reasons and the tasks seen;
``GET /gravity/api/dead-letter``  rejected and invalid events of the delivery log (ids, reasons, hashes).

Every endpoint takes ``dag_id``, ``task_id``, ``start_date`` and ``end_date`` (inclusive ``YYYY-MM-DD``, at most
366 days apart; the last 30 days by default), and ``limit`` / ``offset``. Users script against these names: keep
them stable. Requests are authenticated by Airflow's auth manager (the UI's cookie or a bearer token); a reader
sees the runs, and the dead letter, of the DAGs whose runs they may read. ``/static/*`` and ``/openapi.json`` are
served without a user, by decision: they hold no data (page code and the endpoints' schema), as the Airflow UI's
own assets. Errors are JSON ``{"detail": "..."}``, never a trace: bad input is a 400.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader, TableMissing
from airflow_provider_gravity.plugins.settings import EngineCache, ViewNotConfigured, ViewSettings
from airflow_provider_gravity.storage.run_history_tables import COUNT_COLUMNS
from airflow_provider_gravity.storage.sql_types import MAX_ID_LENGTH

log = logging.getLogger(__name__)

URL_PREFIX = "/gravity"
DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_LIMIT = 500
#: The largest offset: SQL's OFFSET is a signed 64-bit integer on PostgreSQL and SQLite.
MAX_OFFSET = 2**63 - 1
COMMON_PARAMETERS = frozenset({"dag_id", "task_id", "start_date", "end_date", "limit", "offset"})
_PACKAGE_FILES = files("airflow_provider_gravity.plugins")

User = Annotated[Any, Depends(get_user)]
DagId = Annotated[str | None, Query(max_length=MAX_ID_LENGTH)]
Day = Annotated[date | None, Query()]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
EventName = Annotated[str | None, Query(max_length=255)]
#: Text no stored id holds: PostgreSQL cannot even compare a NUL, and neither a DAG, a task nor an event name
#: holds a control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_PARAMETERS = ("dag_id", "task_id", "event_name")


def create_app() -> FastAPI:
    """Build the app; this module imports the api-server's security: import it inside the api-server only."""
    app = FastAPI(
        title="Gravity view",
        description="Run history and dead letter of airflow-provider-gravity.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.engines = EngineCache()
    app.mount("/static", StaticFiles(directory=str(_PACKAGE_FILES / "static")), name="static")
    app.include_router(router)
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    return app


router = APIRouter()


def _permitted_dag_ids(user: Any, candidates: Callable[[], set[str]]) -> frozenset[str] | None:
    """
    ``None`` when the user may read the runs of every DAG, else those of ``candidates()`` (the DAGs of the rows
    the query reads) whose runs they may read.
    """
    auth_manager = get_auth_manager()
    entity = DagAccessEntity.RUN
    if auth_manager.is_authorized_dag(method="GET", access_entity=entity, user=user):
        return None
    return frozenset(
        dag_id
        for dag_id in candidates()
        if auth_manager.is_authorized_dag(method="GET", access_entity=entity, details=DagDetails(id=dag_id), user=user)
    )


def _answer(
    request: Request,
    user: Any,
    known: frozenset[str],
    query: Callable[[HistoryReader, HistoryFilter], dict[str, Any]],
    days: tuple[date | None, date | None],
    candidates: Callable[[HistoryReader, HistoryFilter], set[str]] = lambda reader, where: reader.dag_ids(),
) -> dict[str, Any]:
    """Check the query string, find the tables, run ``query`` and turn what can go wrong into JSON errors."""
    parameters = request.query_params
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise HTTPException(
            400, f"Unknown query parameter(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
        )
    for name in _TEXT_PARAMETERS:
        if _CONTROL.search(parameters.get(name) or ""):
            raise HTTPException(400, f"{name} holds a control character (such as NUL); no {name} does.")
    start_date, end_date = _date_range(*days)
    try:
        reader = request.app.state.engines.reader(ViewSettings.from_airflow_config())
        where = HistoryFilter(
            start_date=start_date,
            end_date=end_date,
            dag_id=parameters.get("dag_id") or None,
            task_id=parameters.get("task_id") or None,
        )
        permitted = _permitted_dag_ids(user, lambda: candidates(reader, where))
        body = query(reader, replace(where, permitted_dag_ids=permitted))
    except ViewNotConfigured as error:
        raise HTTPException(503, str(error)) from None
    except TableMissing as error:
        raise HTTPException(404, f"{error} A SendConversionsOperator that sets it creates it.") from None
    except SQLAlchemyError as error:
        log.warning("Gravity view: reading the run history failed: %s", error)
        raise HTTPException(
            503, f"Could not read the run history ({type(error).__name__}); see the api-server log."
        ) from None
    return {**body, "start_date": start_date.isoformat(), "end_date": end_date.isoformat()}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(user: User) -> HTMLResponse:
    return HTMLResponse(
        (_PACKAGE_FILES / "templates" / "gravity.html").read_text(encoding="utf-8"),
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/runs")
def runs(
    request: Request,
    user: User,
    dag_id: DagId = None,
    task_id: DagId = None,
    start_date: Day = None,
    end_date: Day = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Task tries of the run history, newest first: summary counters, coverage, reasons, timings."""

    def query(reader: HistoryReader, where: HistoryFilter) -> dict[str, Any]:
        entries, total = reader.runs(where, limit=limit, offset=offset)
        return {"runs": entries, "total_entries": total, "limit": limit, "offset": offset}

    return _answer(request, user, COMMON_PARAMETERS, query, (start_date, end_date))


@router.get("/api/daily")
def daily(
    request: Request,
    user: User,
    dag_id: DagId = None,
    task_id: DagId = None,
    start_date: Day = None,
    end_date: Day = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DAYS)] = MAX_DAYS,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Per day (oldest first): runs, buckets and match-key coverage; totals and top reasons of the range."""

    def query(reader: HistoryReader, where: HistoryFilter) -> dict[str, Any]:
        days = reader.daily(where)
        totals = {name: sum(day[name] for day in days) for name in ("runs", *COUNT_COLUMNS)}
        return {
            "days": days[offset : offset + limit],
            "total_entries": len(days),
            "limit": limit,
            "offset": offset,
            "totals": totals,
            "top_reasons": reader.top_reasons(where),
            "tasks": reader.tasks(where),
        }

    return _answer(request, user, COMMON_PARAMETERS, query, (start_date, end_date))


@router.get("/api/dead-letter")
def dead_letter(
    request: Request,
    user: User,
    dag_id: DagId = None,
    task_id: DagId = None,
    start_date: Day = None,
    end_date: Day = None,
    status: Annotated[str | None, Query(pattern="^(rejected|invalid)$")] = None,
    event_name: EventName = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Rejected and invalid events last recorded in the range, newest first: ids, reasons and hashes."""

    def query(reader: HistoryReader, where: HistoryFilter) -> dict[str, Any]:
        entries, total = reader.dead_letter(where, status=status, event_name=event_name, limit=limit, offset=offset)
        return {"dead_letter": entries, "total_entries": total, "limit": limit, "offset": offset}

    return _answer(
        request,
        user,
        COMMON_PARAMETERS | {"status", "event_name"},
        query,
        (start_date, end_date),
        lambda reader, where: reader.dead_letter_dag_ids(where),
    )


async def _http_error(request: Request, error: HTTPException) -> Response:
    if error.status_code == 401 and request.method == "GET" and not _is_api(request):
        # A person opening the page: to the login page, and back here after it.
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        if "next=" not in login:  # Airflow before 3.3 leaves it out; its login page reads it all the same
            login += ("&" if "?" in login else "?") + urlencode({"next": str(request.url)})
        return RedirectResponse(login, status_code=303)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(part) for part in problem['loc'] if part != 'query')}: {problem['msg']}"
        for problem in error.errors()
    ]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=400)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("Gravity view: unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "Unexpected error in the Gravity view; see the api-server log."}, 500)


def _is_api(request: Request) -> bool:
    return "/api/" in request.url.path


def _date_range(start: date | None, end: date | None) -> tuple[date, date]:
    """Return the inclusive date range of a request: the last 30 days by default, at most 366 days."""
    if end is None:
        end = datetime.now(UTC).date()
    if end >= date.max:
        raise HTTPException(400, f"end_date {end} is the last day a date can hold; give an earlier one.")
    if start is None:
        if end - date.min < timedelta(days=DEFAULT_DAYS - 1):
            raise HTTPException(
                400, f"end_date {end} is less than {DEFAULT_DAYS} days after 0001-01-01: give start_date too."
            )
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise HTTPException(400, f"start_date {start} is after end_date {end}.")
    if (end - start).days + 1 > MAX_DAYS:
        raise HTTPException(400, f"The date range spans {(end - start).days + 1} days; at most {MAX_DAYS} are allowed.")
    return start, end
