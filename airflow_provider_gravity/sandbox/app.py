"""
The sandbox's HTTP API: a strict ``POST /gateway/events`` and test endpoints under ``/sandbox/``.

Handlers are ``async`` so that ``slow`` and ``stall`` faults wait without holding a worker
thread; batch processing is synchronous and guarded by the state's lock. Request bodies are
parsed with ``msgspec`` (strict JSON) and never logged: each request logs one line of counts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from fastapi import FastAPI, Request, Response

from airflow_provider_gravity.sandbox.faults import FaultSpecError
from airflow_provider_gravity.sandbox.state import SandboxState

log = logging.getLogger("airflow_provider_gravity.sandbox")

MAX_EVENTS_PER_REQUEST = 1000
#: Bodies above this size are refused with 413 before being read (1,000 rich events fit in ~2 MB).
MAX_BODY_BYTES = 20 * 1024 * 1024
AuthHeader = Literal["bearer", "x-api-key", "any"]
AUTH_HEADERS = ("bearer", "x-api-key", "any")


class EnvelopeError(ValueError):
    """The request body is not a valid ``{"data": [...]}`` envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DroppedConnection(Response):
    """
    Start a response, then abandon it: the server closes the connection mid-response.

    The client receives a status line and a ``Content-Length`` it never gets, so ``requests``
    raises ``ChunkedEncodingError`` (or ``ConnectionError``): the acknowledgement is lost.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"results": [', "more_body": True})


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json_response(status, {"error": message}, headers)


def parse_envelope(body: bytes) -> list:
    """
    Return the ``data`` array of a request body.

    :raises EnvelopeError: 400 for a malformed body, 413 for more than 1,000 events.
    """
    try:
        payload = msgspec.json.decode(body)  # strict JSON: NaN and Infinity are refused, as they must be
    except (msgspec.DecodeError, RecursionError):
        raise EnvelopeError(400, "request body is not valid JSON") from None
    if type(payload) is not dict:
        raise EnvelopeError(400, "request body must be a JSON object")
    unknown = [key[:40] for key in payload if key != "data"]
    if unknown:
        raise EnvelopeError(400, f"unknown top-level key(s) {sorted(unknown)}; only 'data' is accepted")
    if "data" not in payload:
        raise EnvelopeError(400, "request body needs a 'data' array of events")
    data = payload["data"]
    if type(data) is not list:
        raise EnvelopeError(400, "'data' must be an array of events")
    if not data:
        raise EnvelopeError(400, "'data' must hold at least one event")
    if len(data) > MAX_EVENTS_PER_REQUEST:
        raise EnvelopeError(
            413, f"a request may carry at most {MAX_EVENTS_PER_REQUEST} events, this one has {len(data)}"
        )
    return data


def _auth_error(headers: Any, api_key: str, auth_header: AuthHeader) -> str | None:
    """Return why the request is not authenticated, or None when it is."""
    presented = []
    if auth_header in ("bearer", "any"):
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented.append(token.strip())
    if auth_header in ("x-api-key", "any"):
        token = headers.get("x-api-key", "").strip()
        if token:
            presented.append(token)
    if not presented:
        expected = {
            "bearer": "'Authorization: Bearer KEY'",
            "x-api-key": "'X-API-Key: KEY'",
            "any": "'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
        }[auth_header]
        return f"missing API key: send {expected}"
    expected_bytes = api_key.encode()
    if any(hmac.compare_digest(token.encode(), expected_bytes) for token in presented):
        return None
    return "invalid API key"


async def _wait_for_disconnect(request: Request, seconds: float) -> bool:
    """Wait up to ``seconds`` for the client to give up; return True if it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(0.05)
    return False


async def _read_json_object(request: Request) -> dict:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise EnvelopeError(400, "request body is not valid JSON") from None
    if type(payload) is not dict:
        raise EnvelopeError(400, "request body must be a JSON object")
    return payload


def _gateway_routes(app: FastAPI, state: SandboxState, api_key: str, auth_header: AuthHeader) -> None:
    def finish(started: float, status: int | str, detail: str, response: Response) -> Response:
        state.count_response(status)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("POST /gateway/events %s %s %.1fms", status, detail, elapsed_ms)
        return response

    @app.post("/gateway/events", summary="Send a batch of conversion events (strict)")
    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        with state.lock:
            state.requests += 1
        auth_error = _auth_error(request.headers, api_key, auth_header)
        if auth_error:
            with state.lock:
                state.auth_failures += 1
            reason = "missing_key" if auth_error.startswith("missing") else "invalid_key"
            return finish(
                started,
                401,
                f"auth_failure={reason}",
                _error(401, auth_error, {"WWW-Authenticate": "Bearer"}),
            )
        with state.lock:
            fault = state.faults.next_fault()
            if fault:
                state.faults_served += 1
        declared_length = request.headers.get("content-length", "")
        if declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
            return finish(started, 413, "body_too_large", _error(413, "request body too large"))
        body = await request.body()

        if fault and fault["kind"] == "status":
            status = fault["status"]
            headers = {"Retry-After": fault["retry_after"]} if "retry_after" in fault else None
            detail = f"fault=status retry_after={fault.get('retry_after', '-')}"
            return finish(started, status, detail, _error(status, fault["error"], headers))
        if fault and fault["kind"] == "stall":
            gave_up = await _wait_for_disconnect(request, fault["seconds"])
            detail = "fault=stall client_gave_up=" + ("yes" if gave_up else "no")
            return finish(started, 504, detail, _error(504, "sandbox fault: stalled"))
        if fault and fault["kind"] == "drop" and not fault["process"]:
            return finish(started, "dropped", "fault=drop processed=no", DroppedConnection())
        if fault and fault["kind"] == "slow":
            await asyncio.sleep(fault["seconds"])

        try:
            data = parse_envelope(body)
        except EnvelopeError as exc:
            return finish(started, exc.status, f"bad_request={str(exc)!r}", _error(exc.status, str(exc)))
        poisoned = state.faults.poisoned_event_ids
        if poisoned and any(
            type(event) is dict and type(event.get("event_id")) is str and event["event_id"] in poisoned
            for event in data
        ):
            with state.lock:
                state.faults_served += 1
            detail = f"events={len(data)} fault=poison"
            return finish(started, 400, detail, _error(400, "invalid event(s) in batch"))

        results, counts = state.process_batch(data)
        detail = (
            f"events={len(data)} ok={counts['ok']} duplicate={counts['duplicate']} "
            f"error={counts['error']} plaintext_pii={counts['plaintext_pii']}"
        )
        if fault and fault["kind"] == "slow":
            detail += f" fault=slow seconds={fault['seconds']:g}"
        if fault and fault["kind"] == "drop":
            return finish(started, "dropped", detail + " fault=drop processed=yes", DroppedConnection())
        return finish(started, 200, detail, _json_response(200, {"results": results}))


def _sandbox_routes(app: FastAPI, state: SandboxState) -> None:
    @app.get("/sandbox/events", summary="Accepted events, PII hashed")
    async def get_events(event_name: str | None = None, event_id: str | None = None, limit: int | None = None):
        events = state.stored_events(event_name=event_name, event_id=event_id, limit=limit)
        return _json_response(200, {"events": events, "count": len(events)})

    @app.get("/sandbox/stats", summary="Counters since the last reset")
    async def get_stats():
        return _json_response(200, state.stats())

    @app.get("/sandbox/deliveries", summary="How many times one event was accepted as new")
    async def get_deliveries(event_name: str, event_id: str):
        return _json_response(200, {"deliveries": state.deliveries(event_name, event_id)})

    @app.post("/sandbox/reset", summary="Forget events, counters, faults and the clock offset")
    async def post_reset():
        state.reset()
        log.info("POST /sandbox/reset")
        return _json_response(200, {"reset": True})

    @app.get("/sandbox/clock", summary="The sandbox clock")
    async def get_clock():
        return _json_response(200, {"now": state.now(), "offset_seconds": state.clock_offset})

    @app.post("/sandbox/clock", summary="Move the sandbox clock: advance_hours, advance_seconds or set")
    async def post_clock(request: Request):
        try:
            payload = await _read_json_object(request)
        except EnvelopeError as exc:
            return _error(exc.status, str(exc))
        keys = set(payload)
        if len(keys) != 1 or not keys <= {"advance_hours", "advance_seconds", "set"}:
            return _error(400, "send exactly one of 'advance_hours', 'advance_seconds' or 'set'")
        (key,) = keys
        value = payload[key]
        if type(value) not in (int, float) or not math.isfinite(value):
            return _error(400, f"'{key}' must be a finite number")
        if key == "set":
            state.set_now(float(value))
        else:
            state.advance(value * 3600 if key == "advance_hours" else value)
        log.info("POST /sandbox/clock %s=%s now=%.0f", key, value, state.now())
        return _json_response(200, {"now": state.now(), "offset_seconds": state.clock_offset})

    @app.get("/sandbox/faults", summary="Faults still to serve")
    async def get_faults():
        with state.lock:
            return _json_response(200, state.faults.pending())

    @app.post("/sandbox/faults", summary="Queue faults for the next requests to /gateway/events")
    async def post_faults(request: Request):
        try:
            payload = await _read_json_object(request)
        except EnvelopeError as exc:
            return _error(exc.status, str(exc))
        specs = payload.get("faults")
        replace = payload.get("replace", False)
        if type(specs) is not list or set(payload) - {"faults", "replace"} or type(replace) is not bool:
            return _error(400, "send {'faults': [spec, ...], 'replace': true|false}")
        try:
            with state.lock:
                state.faults.add(specs, replace=replace)
                pending = state.faults.pending()
        except FaultSpecError as exc:
            return _error(400, str(exc))
        log.info("POST /sandbox/faults kinds=%s replace=%s", [s.get("kind") for s in specs], replace)
        return _json_response(200, pending)


def create_app(
    api_key: str,
    *,
    auth_header: AuthHeader = "any",
    dedup_window_hours: float = 48.0,
    max_event_age_days: float | None = None,
    max_future_seconds: float = 300.0,
    store_events: bool = True,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    """
    Build the sandbox application.

    :param api_key: the only key accepted by ``POST /gateway/events``.
    :param auth_header: ``bearer`` (``Authorization: Bearer KEY``), ``x-api-key``
        (``X-API-Key: KEY``) or ``any`` of the two.
    :param dedup_window_hours: an ``(event_name, event_id)`` accepted within this window is
        answered ``duplicate``.
    :param max_event_age_days: reject events whose ``event_time`` is older; None for no limit.
    :param max_future_seconds: reject events whose ``event_time`` is further in the future.
    :param store_events: keep accepted events for ``GET /sandbox/events``; turn off for
        million-event benchmarks (dedup keys and counters are always kept).
    :param clock: returns Unix seconds, ``time.time`` by default; tests inject their own.
    :return: a FastAPI app; its :class:`SandboxState` is ``app.state.sandbox``.
    """
    if not api_key:
        raise ValueError("the sandbox needs a non-empty API key")
    if auth_header not in AUTH_HEADERS:
        raise ValueError(f"auth_header must be one of {AUTH_HEADERS}")
    state = SandboxState(
        dedup_window_seconds=dedup_window_hours * 3600,
        max_event_age_seconds=None if max_event_age_days is None else max_event_age_days * 86400,
        max_future_seconds=max_future_seconds,
        store_events=store_events,
        clock=clock,
    )
    app = FastAPI(
        title="Gravity Conversions API sandbox",
        description="A strict local implementation of Gravity's POST /gateway/events, with test endpoints.",
    )
    app.state.sandbox = state
    _gateway_routes(app, state, api_key, auth_header)
    _sandbox_routes(app, state)
    return app
