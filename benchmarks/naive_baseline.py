"""The baseline: what a user would write in a ``PythonOperator`` without this provider.

A server-side cursor, then per row: ``phonenumbers`` parse / is_valid / format E.164 and ``hashlib`` SHA-256
of the stripped, lower-cased email, phone and names; a dict per event; ``requests.post`` of JSON batches
of 1,000, one after the other, on one session. No cache, no parallelism, no vectorization: the usual
shape of such a task, written carefully enough to produce the same kind of events.
"""

from __future__ import annotations

import hashlib
import json
import time

import phonenumbers
import psycopg2
import requests

BATCH_SIZE = 1_000
BASELINE_SQL = """
SELECT order_id, created_at, email, phone, first_name, last_name, customer_id, country, amount, currency
FROM gravity_bench.orders
WHERE seq <= %(rows)s
ORDER BY seq
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_to_event(row: tuple) -> dict:
    order_id, created_at, email, phone, first_name, last_name, customer_id, country, amount, currency = row
    user_data: dict = {"external_id": [customer_id]}
    if email and "@" in email:
        user_data["em"] = [sha256(email.strip().lower())]
    if phone:
        try:
            number = phonenumbers.parse(phone, (country or "US").upper())
            if phonenumbers.is_valid_number(number):
                e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                user_data["ph"] = [sha256(e164.lstrip("+"))]
        except phonenumbers.NumberParseException:
            pass
    if first_name and first_name.strip():
        user_data["fn"] = sha256(first_name.strip().lower())
    if last_name and last_name.strip():
        user_data["ln"] = sha256(last_name.strip().lower())
    return {
        "event_name": "Purchase",
        "event_time": int(created_at.timestamp()),
        "event_id": order_id,
        "action_source": "physical_store",
        "user_data": user_data,
        "custom_data": {"value": float(amount), "currency": currency},
    }


def run_baseline(dsn: str, base_url: str, api_key: str, rows: int, time_limit: float | None) -> dict:
    """
    Send the first ``rows`` rows; stop early, after a whole batch, once ``time_limit`` seconds have passed.

    :return: rows processed, events the sandbox accepted, seconds, and whether the time limit stopped it.
    """
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    url = base_url.rstrip("/") + "/gateway/events"
    processed = accepted = 0
    stopped_early = False
    started = time.monotonic()
    with psycopg2.connect(dsn) as connection:
        with connection.cursor(name="baseline") as cursor:
            cursor.itersize = 5_000
            cursor.execute(BASELINE_SQL, {"rows": rows})
            while batch := cursor.fetchmany(BATCH_SIZE):
                events = [row_to_event(row) for row in batch if row[1] is not None]
                response = session.post(url, data=json.dumps({"data": events}), timeout=60)
                response.raise_for_status()
                accepted += sum(r["status"] == "ok" for r in response.json()["results"])
                processed += len(batch)
                if time_limit is not None and time.monotonic() - started > time_limit:
                    stopped_early = processed < rows
                    break
    return {
        "rows": processed,
        "accepted": accepted,
        "seconds": time.monotonic() - started,
        "stopped_early": stopped_early,
    }
