"""Command line of the sandbox: ``python -m airflow_provider_gravity.sandbox``."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import sys

from airflow_provider_gravity.sandbox.app import AUTH_HEADERS, MAX_EVENTS_PER_REQUEST, create_app

API_KEY_ENV = "GRAVITY_SANDBOX_API_KEY"

log = logging.getLogger("airflow_provider_gravity.sandbox")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_gravity.sandbox",
        description=(
            "Serve a strict local copy of Gravity's Conversions API (POST /gateway/events: auth, "
            f"1-{MAX_EVENTS_PER_REQUEST} events per request, per-event results, dedup by "
            "(event_name, event_id), PII hashed on receipt) plus test endpoints under /sandbox/: "
            "GET events, GET stats, POST reset, GET/POST clock, GET/POST faults."
        ),
        epilog=(
            "Point a Gravity connection at it: host http://127.0.0.1:PORT, password = the API key. "
            "Example: python -m airflow_provider_gravity.sandbox --port 8085 --api-key dev-key"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8085, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        metavar="KEY",
        help=f"the accepted API key (default: ${API_KEY_ENV}); required",
    )
    parser.add_argument(
        "--auth-header",
        choices=AUTH_HEADERS,
        default="any",
        help="accepted header: 'Authorization: Bearer KEY', 'X-API-Key: KEY' or any (default: %(default)s)",
    )
    parser.add_argument(
        "--dedup-window-hours",
        type=float,
        default=48.0,
        help="an event seen again within this window is a duplicate (default: %(default)s)",
    )
    parser.add_argument(
        "--max-event-age-days",
        type=float,
        default=None,
        help="reject events whose event_time is older than this (default: no limit)",
    )
    parser.add_argument(
        "--max-future-seconds",
        type=float,
        default=300.0,
        help="reject events whose event_time is further ahead of the clock (default: %(default)s)",
    )
    parser.add_argument(
        "--no-store-events",
        dest="store_events",
        action="store_false",
        help="keep only dedup keys and counters, not the events (for million-event benchmarks)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: %(default)s); INFO logs one line of counts per request, never a body",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (the sandbox is meant for local use only)",
    )
    return parser


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _DeliberateDropFilter(logging.Filter):
    """Hide uvicorn's error line for responses the sandbox abandons on purpose (``drop`` faults)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error(f"an API key is required: pass --api-key or set {API_KEY_ENV}")
    if not is_loopback(args.host) and not args.allow_remote:
        parser.error(f"refusing to bind non-loopback host {args.host!r}; pass --allow-remote to do it anyway")

    import uvicorn

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.error").addFilter(_DeliberateDropFilter())
    app = create_app(
        args.api_key,
        auth_header=args.auth_header,
        dedup_window_hours=args.dedup_window_hours,
        max_event_age_days=args.max_event_age_days,
        max_future_seconds=args.max_future_seconds,
        store_events=args.store_events,
    )
    # Stored events are millions of long-lived dicts free of reference cycles; letting the
    # collector rescan them on every full collection halved throughput. Full collections stay
    # possible, just rarer (this process only: in-process users keep their own GC settings).
    gc.freeze()
    gc.set_threshold(700, 10, 1000)
    log.info(
        "Gravity sandbox on http://%s:%s auth_header=%s dedup_window_hours=%g max_event_age_days=%s store_events=%s",
        args.host,
        args.port,
        args.auth_header,
        args.dedup_window_hours,
        "none" if args.max_event_age_days is None else f"{args.max_event_age_days:g}",
        args.store_events,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
