"""
Seeded warehouse rows with the mess real CRM data has, and what Gravity should receive for them, computed
row by row with phonenumbers and hashlib only: an independent reading of the normalization rules, sharing
no code with ``airflow_provider_gravity.conversions``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import unicodedata
from decimal import Decimal

import phonenumbers

PHONE_FORMATS = {
    "US": ["(650) 555-{n:04d}", "+1 650 555 {n:04d}", "1-212-555-{n:04d}", "650.555.{n:04d} ext. 12"],
    "GB": ["020 7946 {n:04d}", "+44 (0)20 7946 {n:04d}", "0044 20 7946 {n:04d}"],
    "FR": ["06 12 34 {a:02d} {b:02d}", "+33 6 12 34 {a:02d} {b:02d}"],
    "DE": ["0151 2345{n:04d}", "+49 151 2345 {n:04d}"],
    "JP": ["03-1234-{n:04d}", "+81 3 1234 {n:04d}"],
    "BR": ["(11) 9{n:04d}-1234", "+55 11 9{n:04d} 1234"],
    "IN": ["098765 4{n:04d}", "+91 98765 4{n:04d}"],
    "AU": ["0412 345 {c:03d}", "+61 412 345 {c:03d}"],
}
FIRST_NAMES = ["  Mary-Jane ", "Valéry", "JOSÉ", "Zoe\u0308", "Jean Paul", "Anne", "O'Neil", "李", "123", ""]
LAST_NAMES = ["O'Brien", "Smith", "Müller", "García-López", " dupont ", "Nguyễn", None, "!!!"]
EMAIL_SHAPES = ["{u}@example.com", "  {U}@Example.COM ", "{u}+ads@gmail.com", "{u}.example.com", "{u}@localhost"]


def messy_customers(count: int, rng: random.Random) -> list[dict]:
    customers = []
    for i in range(count):
        region = rng.choice(list(PHONE_FORMATS))
        n = rng.randrange(10_000)
        phone = rng.choice(PHONE_FORMATS[region]).format(n=n, a=n % 100, b=(n // 100) % 100, c=n % 1000)
        if rng.random() < 0.05:
            phone = rng.choice(["12345", "not a phone", "+1 555 555 5555"])
        user = f"user{i}"
        email = rng.choice(EMAIL_SHAPES).format(u=user, U=user.upper())
        customers.append(
            {
                "customer_id": 1000 + i,
                "email": None if rng.random() < 0.05 else email,
                "alt_email": f"{user}@work.example.org" if rng.random() < 0.1 else None,
                "phone": None if rng.random() < 0.05 else phone,
                "country": None if rng.random() < 0.2 else region,
                "region": region,
                "first_name": rng.choice(FIRST_NAMES),
                "last_name": rng.choice(LAST_NAMES),
            }
        )
    return customers


def messy_orders(count: int, *, seed: int = 7, customers: int = 2_000, now: dt.datetime | None = None) -> list[dict]:
    """Orders of repeat customers over the last day; about 1 % are exact duplicates of an earlier order."""
    rng = random.Random(seed)
    people = messy_customers(customers, rng)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    orders: list[dict] = []
    while len(orders) < count:
        if orders and rng.random() < 0.01:
            orders.append(dict(rng.choice(orders)))
            continue
        person = rng.choice(people)
        orders.append(
            {
                "order_id": 500_000 + len(orders),
                "created_at": now - dt.timedelta(seconds=rng.randrange(60, 86_000)),
                **{k: v for k, v in person.items() if k != "region"},
                "total": Decimal(rng.randrange(100, 50_000)) / 100,
                "currency": rng.choice(["usd", "USD", " eur ", "gbp"]),
            }
        )
    return orders


def unique_orders(count: int, *, seed: int, first_id: int) -> list[dict]:
    """:func:`messy_orders` with no exact duplicates: order ids ``first_id``, ``first_id + 1``, ..."""
    orders = messy_orders(count, seed=seed)
    for i, order in enumerate(orders):
        order["order_id"] = first_id + i
    return orders


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expected_email(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or "@" in domain or not local or "." not in domain or domain[0] == "." or domain[-1] == ".":
        return None
    if any(ch.isspace() for ch in email):
        return None
    return sha256(email)


def expected_phone(raw: str | None, region: str) -> str | None:
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return sha256(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+"))


def expected_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = unicodedata.normalize("NFC", raw).strip().lower()
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LM")
    return sha256(kept) if kept else None


def expected_event(order: dict, event_name: str) -> dict:
    """The event Gravity should receive for one valid order (user_data and custom_data only)."""
    emails = [expected_email(order["email"]), expected_email(order.get("alt_email"))]
    emails = list(dict.fromkeys(e for e in emails if e))
    phone = expected_phone(order["phone"], order["country"] or "US")
    user_data = {"external_id": [str(order["customer_id"])]}
    if emails:
        user_data["em"] = emails
    if phone:
        user_data["ph"] = [phone]
    for key, raw in (("fn", order["first_name"]), ("ln", order["last_name"])):
        hashed = expected_name(raw)
        if hashed:
            user_data[key] = hashed
    value = float(order["total"])
    return {
        "event_name": event_name,
        "event_id": str(order["order_id"]),
        "event_time": int(order["created_at"].replace(tzinfo=dt.UTC).timestamp()),
        "user_data": user_data,
        "custom_data": {
            "value": int(value) if value.is_integer() else value,
            "currency": order["currency"].strip().upper(),
            "order_id": str(order["order_id"]),
        },
    }


# -- The rest of the column contract, row by row ---------------------------------------------------------------
#
# ``messy_extras`` gives each order the columns the orders table lacks (pixel attribution, JSON columns, custom
# fields, per-row event names) and, for a few orders, one defect that makes the row invalid. ``reference_run``
# turns the rows a query returns into the events Gravity should receive and the reasons of the rows that must be
# refused, one row at a time, from the README's rules alone.

#: The time that Gravity treats as "now" may run ahead of the worker's clock by this much (README: 5 minutes).
FUTURE_TOLERANCE_SECONDS = 300
#: Keys of the pixel's ``user_data`` object that hold PII, hashed by the columns' rules.
PIXEL_PII_KEYS = ("em", "ph", "fn", "ln")
#: Columns whose text is sent unchanged in ``user_data`` (after trimming), never hashed.
PIXEL_ID_COLUMNS = ("click_id", "visitor_id", "session_id", "client_user_agent")
#: The row defects ``messy_extras`` plants, and the ``invalid`` reason the README gives each.
PLANTED_DEFECTS = {
    "no_event_id": "missing_event_id",
    "future": "event_time_in_future",
    "before_1970": "bad_event_time",
    "bad_currency": "bad_currency",
    "context_not_object": "bad_client_context",
    "user_data_not_object": "bad_user_data",
    "contents_not_array": "bad_contents",
}
EXTRA_COLUMNS = {
    "order_id": "BIGINT PRIMARY KEY",
    "event_name": "TEXT",
    "action_source": "TEXT",
    "event_source_url": "TEXT",
    "click_id": "TEXT",
    "visitor_id": "TEXT",
    "pixel_user_data": "JSONB",
    "client_context": "JSONB",
    "contents": "JSONB",
    "custom_store_id": "BIGINT",
    "custom_channel": "TEXT",
    "drop_event_id": "BOOLEAN",
    "event_time_override": "TIMESTAMP",
    "currency_override": "TEXT",
}


def messy_extras(orders: list[dict], rng: random.Random, *, defect_rate: float = 0.04) -> list[dict]:
    """
    One row of extra columns per distinct order id (duplicated orders share theirs, so a duplicate stays exact).
    JSON columns hold Python objects (JSONB in PostgreSQL). Defects go only to orders that appear once, so that
    an order is never both a duplicate and invalid for another reason.
    """
    copies: dict[int, int] = {}
    for order in orders:
        copies[order["order_id"]] = copies.get(order["order_id"], 0) + 1
    extras = []
    for order_id in sorted(copies):
        defect = rng.choice(list(PLANTED_DEFECTS)) if copies[order_id] == 1 and rng.random() < defect_rate else None
        extras.append(_extra_columns(order_id, defect, rng))
    return extras


def _extra_columns(order_id: int, defect: str | None, rng: random.Random) -> dict:
    pixel = None
    if rng.random() < 0.3:
        pixel = {
            "click_id": f"pixel-clk-{order_id}",
            "session_id": f"s-{order_id}",
            "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15",
        }
        if rng.random() < 0.5:
            pixel[rng.choice(["em", " EM ", "Em"])] = rng.choice([f" Pixel.{order_id}@Example.com", "not an email"])
        if rng.random() < 0.3:
            pixel["ph"] = rng.choice(["+1 650 555 0142", "+44 20 7946 0018", "555"])
        if rng.random() < 0.3:
            pixel["fn"] = "Pixel-Name"
    contents = None
    if rng.random() < 0.5:
        contents = [
            {
                "id": f"sku-{rng.randrange(50)}",
                "quantity": rng.randrange(1, 4),
                "item_price": rng.randrange(1, 9999) / 100,
            }
            for _ in range(rng.randrange(1, 4))
        ]
    extra = {
        "order_id": order_id,
        "event_name": rng.choice([None, None, None, "Lead", " Purchase "]),
        "action_source": rng.choice([None, "physical_store", " phone_call "]),
        "event_source_url": rng.choice([None, f"https://shop.example.com/thank-you?order={order_id}&lang=fr"]),
        "click_id": rng.choice([None, None, f"gr.1.{order_id:x}.Zr"]),
        "visitor_id": rng.choice([None, f"v-{order_id % 997}"]),
        "pixel_user_data": pixel,
        "client_context": rng.choice(
            [None, {"timezone": "America/New_York", "platform": "macOS", "screen": {"w": 1440, "h": 900}}]
        ),
        "contents": contents,
        "custom_store_id": rng.choice([None, rng.randrange(1, 40)]),
        "custom_channel": rng.choice([None, "web", "  in store ", "", "télé-vente"]),
        "drop_event_id": defect == "no_event_id",
        "event_time_override": None,
        "currency_override": "US$" if defect == "bad_currency" else None,
    }
    if defect == "future":
        extra["event_time_override"] = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) + dt.timedelta(
            days=2
        )
    elif defect == "before_1970":
        extra["event_time_override"] = dt.datetime(1969, 7, 20, 20, 17, 40)
    elif defect == "context_not_object":
        extra["client_context"] = ["not", "an", "object"]
    elif defect == "user_data_not_object":
        extra["pixel_user_data"] = "just text"
    elif defect == "contents_not_array":
        extra["contents"] = {"id": "sku-1", "quantity": 1}
    return extra


def query_rows(orders: list[dict], extras: list[dict], *, email_list: bool) -> list[dict]:
    """
    The rows a query over the orders joined to their extras returns, as a driver gives them: one dict per order,
    keyed by the column aliases of the column contract. ``email_list`` gives ``em`` as the array
    ``[email, alt_email]`` (a PostgreSQL array), else the email alone.
    """
    by_id = {extra["order_id"]: extra for extra in extras}
    rows = []
    for order in orders:
        extra = by_id[order["order_id"]]
        emails = [order["email"]] + ([order["alt_email"]] if order["alt_email"] is not None else [])
        rows.append(
            {
                "event_id": None if extra["drop_event_id"] else order["order_id"],
                "event_time": extra["event_time_override"] or order["created_at"],
                "event_name": extra["event_name"],
                "action_source": extra["action_source"],
                "event_source_url": extra["event_source_url"],
                "em": emails if email_list else order["email"],
                "ph": order["phone"],
                "fn": order["first_name"],
                "ln": order["last_name"],
                "external_id": order["customer_id"],
                "country": order["country"],
                "click_id": extra["click_id"],
                "visitor_id": extra["visitor_id"],
                "user_data": extra["pixel_user_data"],
                "client_context": extra["client_context"],
                "value": order["total"],
                "currency": extra["currency_override"] or order["currency"],
                "order_id": str(order["order_id"]),
                "contents": extra["contents"],
                "custom_store_id": extra["custom_store_id"],
                "custom_channel": extra["custom_channel"],
            }
        )
    return rows


class RefusedRow(Exception):
    """A row the README says is ``invalid``; the message is the reason."""


def cell_text_of(value: object) -> str | None:
    """A scalar cell as trimmed text (integers in full), ``None`` when missing or blank."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value.normalize())
    text = str(value).strip()
    return text or None


def reference_event(row: dict, *, event_name: str, now: float) -> dict:
    """
    The whole event Gravity should receive for one query row, computed from the README's rules.

    :param row: the row, keyed by column alias (see :func:`query_rows`).
    :param event_name: the operator's ``event_name``, for rows without one.
    :param now: the run's start, Unix seconds.
    :raises RefusedRow: with the row's ``invalid`` reason.
    """
    event_id = cell_text_of(row["event_id"])
    if event_id is None:
        raise RefusedRow("missing_event_id")
    name = cell_text_of(row.get("event_name")) or event_name
    seconds = int(row["event_time"].replace(tzinfo=dt.UTC).timestamp())
    if seconds < 0:
        raise RefusedRow("bad_event_time")
    if seconds > now + FUTURE_TOLERANCE_SECONDS:
        raise RefusedRow("event_time_in_future")
    event: dict = {"event_name": name, "event_id": event_id, "event_time": seconds}
    for key in ("action_source", "event_source_url"):
        if (text := cell_text_of(row.get(key))) is not None:
            event[key] = text
    custom_data = _reference_custom_data(row)
    client_context = row.get("client_context")
    if client_context is not None:
        if not isinstance(client_context, dict):
            raise RefusedRow("bad_client_context")
        event["client_context"] = client_context
    event["user_data"] = _reference_user_data(row)
    if custom_data:
        event["custom_data"] = custom_data
    return event


def _reference_custom_data(row: dict) -> dict:
    custom_data: dict = {}
    if row.get("value") is not None:
        value = float(row["value"])
        custom_data["value"] = int(value) if value.is_integer() else value
    if (currency := cell_text_of(row.get("currency"))) is not None:
        code = currency.upper()
        if len(code) != 3 or not all("A" <= ch <= "Z" for ch in code):
            raise RefusedRow("bad_currency")
        custom_data["currency"] = code
    if (order_id := cell_text_of(row.get("order_id"))) is not None:
        custom_data["order_id"] = order_id
    contents = row.get("contents")
    if contents is not None:
        if not isinstance(contents, list) or not all(isinstance(item, dict) and item.get("id") for item in contents):
            raise RefusedRow("bad_contents")
        custom_data["contents"] = contents
    for column, cell in row.items():
        if column.startswith("custom_"):
            # README, "How cells are read": every column goes through one cell reader; text is trimmed and
            # blank text is missing. Numbers keep their JSON type.
            if isinstance(cell, str):
                cell = cell.strip() or None
            if cell is not None:
                custom_data[column.removeprefix("custom_")] = cell
    return custom_data


def _reference_user_data(row: dict) -> dict:
    pixel = row.get("user_data")
    if pixel is not None and not isinstance(pixel, dict):
        raise RefusedRow("bad_user_data")
    pixel_pii: dict[str, list] = {key: [] for key in PIXEL_PII_KEYS}
    user_data: dict = {}
    for key, value in (pixel or {}).items():
        name = "".join(ch for ch in key if unicodedata.category(ch) != "Cf" and not ch.isspace()).lower()
        if name in PIXEL_PII_KEYS:
            pixel_pii[name].extend(value if isinstance(value, list) else [value])
        else:
            user_data[key] = value
    for column in PIXEL_ID_COLUMNS:
        if (text := cell_text_of(row.get(column))) is not None:
            user_data[column] = text
    region = row.get("country") or "US"
    column_emails = row["em"] if isinstance(row["em"], list) else [row["em"]]
    emails = [expected_email(raw) for raw in [*column_emails, *pixel_pii["em"]]]
    phones = [expected_phone(raw, region) for raw in [row["ph"], *pixel_pii["ph"]]]
    for key, hashes in (("em", emails), ("ph", phones)):
        unique = list(dict.fromkeys(h for h in hashes if h))
        if unique:
            user_data[key] = unique
    for key in ("fn", "ln"):
        hashed = expected_name(row[key]) or next(filter(None, map(expected_name, pixel_pii[key])), None)
        if hashed:
            user_data[key] = hashed
    if (external_id := cell_text_of(row["external_id"])) is not None:
        user_data["external_id"] = [external_id]
    return user_data


def reference_run(rows: list[dict], *, event_name: str, now: float) -> tuple[dict[str, dict], list[tuple[int, str]]]:
    """
    What a run over ``rows`` should send and refuse, row by row, in the rows' order.

    :return: the events to send keyed by ``event_id``, and ``(row index, reason)`` of every refused row; a row
        whose ``(event_name, event_id)`` an earlier row of the run already sends is ``duplicate_in_run``.
    """
    events: dict[str, dict] = {}
    sent_keys: set[tuple[str, str]] = set()
    refused: list[tuple[int, str]] = []
    for index, row in enumerate(rows):
        try:
            event = reference_event(row, event_name=event_name, now=now)
        except RefusedRow as refusal:
            refused.append((index, str(refusal)))
            continue
        key = (event["event_name"], event["event_id"])
        if key in sent_keys:
            refused.append((index, "duplicate_in_run"))
            continue
        sent_keys.add(key)
        events[event["event_id"]] = event
    return events, refused
