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
