"""A seeded generator of a small, realistically messy conversions warehouse.

Two tables, the same rows whichever writer is used:

``crm_conversions``
    CRM records: leads, sign-ups and phone orders (``kind``), created at a naive UTC timestamp.
``store_transactions``
    In-store purchases with their line items as JSON text.

The mess is deliberate, as in real warehouses: phones in national and international formats,
padded or uppercase emails, lowercase or missing countries, accented names, repeat customers,
missing fields, and a few broken rows (unknown currency, negative total, NULL timestamp,
unparseable line items, an email without ``@``).

Usage::

    python -m demo.sample_data --sqlite warehouse.db
    python -m demo.sample_data --postgres-sql docker/warehouse/seed.sql
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

CRM_TABLE = "crm_conversions"
STORE_TABLE = "store_transactions"

#: Column names and their PostgreSQL types, in table order. SQLite gets the same names.
CRM_COLUMNS: dict[str, str] = {
    "id": "BIGINT PRIMARY KEY",
    "kind": "TEXT NOT NULL",
    "created_at": "TIMESTAMP",
    "customer_id": "TEXT",
    "email": "TEXT",
    "phone": "TEXT",
    "first_name": "TEXT",
    "last_name": "TEXT",
    "country": "TEXT",
    "value": "NUMERIC(12, 2)",
    "currency": "TEXT",
    "click_id": "TEXT",
}
STORE_COLUMNS: dict[str, str] = {
    "transaction_id": "BIGINT PRIMARY KEY",
    "store_id": "TEXT NOT NULL",
    "purchased_at": "TIMESTAMP",
    "loyalty_id": "TEXT",
    "email": "TEXT",
    "phone": "TEXT",
    "first_name": "TEXT",
    "last_name": "TEXT",
    "country": "TEXT",
    "total": "NUMERIC(12, 2)",
    "currency": "TEXT",
    "items": "TEXT",
}
TIME_COLUMNS = {CRM_TABLE: "created_at", STORE_TABLE: "purchased_at"}

DEFAULT_START = dt.date(2025, 6, 2)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

_NAMES = {
    "US": (
        ["James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "David", "Linda", "María", "José"],
        ["Smith", "Johnson", "Williams", "Brown", "Jones", "García", "Miller", "Davis", "O'Brien", "Nguyen"],
    ),
    "GB": (
        ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Siobhán", "Noah", "Freya", "Rhys"],
        ["Taylor", "Evans", "Thomas", "Roberts", "Walker", "Wright", "Hughes", "O'Connor", "Patel", "Khan"],
    ),
    "FR": (
        ["Élodie", "François", "Zoë", "Hélène", "Jérôme", "Camille", "Léa", "Théo", "Anaïs", "Noël"],
        ["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Girard", "Roux", "Fournier", "Da Silva", "Lemaître"],
    ),
    "DE": (
        ["Jürgen", "Lena", "Jörg", "Sophie", "Maximilian", "Mia", "Björn", "Hannah", "Uwe", "Lukas"],
        ["Müller", "Schmidt", "Schneider", "Fischer", "Weiß", "Meyer", "Wagner", "Becker", "Schäfer", "Groß"],
    ),
    "ES": (
        ["Alejandro", "Lucía", "Martín", "Sofía", "Íñigo", "Paula"],
        ["García", "Fernández", "López", "Martínez", "Sánchez", "Muñoz"],
    ),
    "CA": (
        ["Liam", "Emma", "Étienne", "Chloé", "Benjamin", "Olivia"],
        ["Tremblay", "Gagnon", "Roy", "Côté", "Wilson", "MacDonald"],
    ),
}
_COUNTRY_WEIGHTS = {"US": 50, "GB": 15, "FR": 12, "DE": 12, "ES": 6, "CA": 5}
_CURRENCIES = {"US": "USD", "GB": "GBP", "FR": "EUR", "DE": "EUR", "ES": "EUR", "CA": "CAD"}
_DIAL_CODES = {"US": "1", "CA": "1", "GB": "44", "FR": "33", "DE": "49", "ES": "34"}
_US_AREA_CODES = ["212", "312", "415", "617", "646", "718", "213", "305", "404", "206", "512", "303"]
_CA_AREA_CODES = ["416", "514", "604", "613", "403"]
_EMAIL_DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "hotmail.co.uk",
    "orange.fr",
    "web.de",
    "gmx.de",
    "proton.me",
    "example.org",
]
_PRODUCTS = [
    ("sku-espresso", 3.5),
    ("sku-croissant", 2.9),
    ("sku-beans-1kg", 24.0),
    ("sku-mug", 12.5),
    ("sku-grinder", 89.0),
    ("sku-tea", 6.75),
    ("sku-gift-card", 50.0),
    ("sku-kettle", 45.0),
]
_STORES = [f"store-{n:03d}" for n in range(1, 25)]


@dataclass(frozen=True)
class Customer:
    """One person who may appear in many rows (repeat customers)."""

    customer_id: str
    loyalty_id: str | None
    first_name: str
    last_name: str
    email: str | None
    phone_national: str
    country: str


@dataclass(frozen=True)
class SampleConfig:
    """What to generate: ``days`` days from ``start`` (UTC), with these row counts per day."""

    days: int = 5
    crm_rows_per_day: int = 1_500
    store_rows_per_day: int = 2_500
    start: dt.date = DEFAULT_START
    seed: int = 42

    @property
    def end(self) -> dt.date:
        """The first day after the generated data (exclusive)."""
        return self.start + dt.timedelta(days=self.days)


def _national_phone(rng: random.Random, country: str) -> str:
    """A valid phone number written as a local would write it, without the country code."""
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    if country in ("US", "CA"):
        area = rng.choice(_US_AREA_CODES if country == "US" else _CA_AREA_CODES)
        exchange = str(rng.randint(201, 989))
        if exchange[1:] == "11" or exchange == "555":
            exchange = "734"
        return f"{area}{exchange}{digits(4)}"
    if country == "GB":
        return f"07{rng.choice('45789')}{digits(8)}"
    if country == "FR":
        prefix = rng.choice(["06", "073", "075", "076", "077", "078"])
        return prefix + digits(10 - len(prefix))
    if country == "DE":
        return f"015{rng.choice('127')}{digits(8)}"
    return f"6{digits(8)}"  # ES mobile


def _format_phone(rng: random.Random, national: str, country: str) -> str:
    """Spell one number in one of the many ways CRMs and tills store them."""
    style = rng.random()
    dial = _DIAL_CODES[country]
    trunk = national[1:] if national.startswith("0") else national
    if country in ("US", "CA"):
        if style < 0.3:
            return f"({national[:3]}) {national[3:6]}-{national[6:]}"
        if style < 0.5:
            return f"{national[:3]}-{national[3:6]}-{national[6:]}"
        if style < 0.7:
            return national
        if style < 0.9:
            return f"+1 {national[:3]} {national[3:6]} {national[6:]}"
        return f"1-{national[:3]}-{national[3:6]}-{national[6:]}"
    if style < 0.35:
        if country == "FR":
            return " ".join(national[i : i + 2] for i in range(0, len(national), 2))
        return national
    if style < 0.7:
        return f"+{dial} {trunk[:3]} {trunk[3:]}"
    if style < 0.85:
        return f"+{dial}{trunk}"
    if style < 0.95:
        return f"00{dial} {trunk}"
    return f"+{dial} (0){trunk}" if national.startswith("0") else f"+{dial} {trunk}"


def _messy_email(rng: random.Random, email: str | None) -> str | None:
    if email is None:
        return None
    style = rng.random()
    if style < 0.1:
        return email.upper()
    if style < 0.2:
        return f"  {email.title()} "
    if style < 0.23:
        return email + "\t"
    return email


def _messy_country(rng: random.Random, country: str) -> str | None:
    style = rng.random()
    if style < 0.05:
        return None
    if style < 0.1:
        return country.lower()
    return country


def _ascii_fold(text: str) -> str:
    """``hélène`` -> ``helene``: mailbox names are rarely accented even when the person's name is."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _make_customers(rng: random.Random, count: int) -> list[Customer]:
    countries = list(_COUNTRY_WEIGHTS)
    weights = list(_COUNTRY_WEIGHTS.values())
    customers = []
    for number in range(1, count + 1):
        country = rng.choices(countries, weights)[0]
        first_names, last_names = _NAMES[country]
        first, last = rng.choice(first_names), rng.choice(last_names)
        local = _ascii_fold(f"{first}.{last}".lower().replace(" ", "").replace("'", ""))
        email = None if rng.random() < 0.12 else f"{local}{number}@{rng.choice(_EMAIL_DOMAINS)}"
        customers.append(
            Customer(
                customer_id=f"C{number:06d}",
                loyalty_id=f"L{number:07d}" if rng.random() < 0.6 else None,
                first_name=first,
                last_name=last,
                email=email,
                phone_national=_national_phone(rng, country),
                country=country,
            )
        )
    return customers


def _timestamp_in_day(rng: random.Random, day: dt.date, opening_hours: tuple[int, int]) -> str:
    opens, closes = opening_hours
    seconds = rng.randint(opens * 3600, closes * 3600 - 1)
    moment = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds)
    return moment.strftime(TIMESTAMP_FORMAT)


def _money(amount: float) -> Decimal:
    return Decimal(str(amount)).quantize(Decimal("0.01"))


def _crm_rows(rng: random.Random, config: SampleConfig, customers: list[Customer]) -> Iterator[tuple]:
    row_id = 100_000
    for day_number in range(config.days):
        day = config.start + dt.timedelta(days=day_number)
        for _ in range(config.crm_rows_per_day):
            row_id += 1
            customer = rng.choice(customers)
            kind = rng.choices(["lead", "sign_up", "phone_order"], [45, 30, 25])[0]
            created_at: str | None = _timestamp_in_day(rng, day, (0, 24))
            value: Decimal | None = None
            currency: str | None = None
            if kind == "phone_order":
                value = _money(rng.uniform(15, 400))
                currency = _CURRENCIES[customer.country]
            elif kind == "lead" and rng.random() < 0.3:
                value = _money(rng.choice([5, 10, 25]))
                currency = "USD"
            phone = _format_phone(rng, customer.phone_national, customer.country)
            email = _messy_email(rng, customer.email)
            first_name: str | None = customer.first_name
            breakage = rng.random()
            if breakage < 0.002:
                created_at = None
            elif breakage < 0.004 and value is not None:
                currency = rng.choice(["US$", "EURO", "??"])
            elif breakage < 0.006 and email:
                email = email.replace("@", " at ")
            elif breakage < 0.008:
                phone = "n/a"
            if rng.random() < 0.15:
                phone = None
            if rng.random() < 0.05:
                first_name = None
            click_id = None
            if kind != "phone_order" and rng.random() < 0.35:  # attributed to a pixel click
                click_id = f"grv.{rng.getrandbits(64):016x}"
            yield (
                row_id,
                kind,
                created_at,
                customer.customer_id,
                email,
                phone,
                first_name,
                customer.last_name,
                _messy_country(rng, customer.country),
                value,
                currency,
                click_id,
            )


def _line_items(rng: random.Random) -> tuple[str, float]:
    items = []
    total = 0.0
    for sku, price in rng.sample(_PRODUCTS, rng.randint(1, 4)):
        quantity = rng.choices([1, 2, 3], [75, 20, 5])[0]
        items.append({"id": sku, "quantity": quantity, "item_price": price})
        total += quantity * price
    return json.dumps(items, separators=(",", ":")), total


def _store_rows(rng: random.Random, config: SampleConfig, customers: list[Customer]) -> Iterator[tuple]:
    transaction_id = 5_000_000
    for day_number in range(config.days):
        day = config.start + dt.timedelta(days=day_number)
        for _ in range(config.store_rows_per_day):
            transaction_id += rng.randint(1, 3)  # ids with gaps, as after voided transactions
            items, total = _line_items(rng)
            purchased_at: str | None = _timestamp_in_day(rng, day, (7, 21))
            total_amount: Decimal | None = _money(total)
            if rng.random() < 0.25:  # anonymous walk-in: nothing to match on
                customer = None
                loyalty_id = email = phone = first = last = None
                country = rng.choice(list(_CURRENCIES))
            else:
                customer = rng.choice(customers)
                loyalty_id = customer.loyalty_id
                email = _messy_email(rng, customer.email) if rng.random() < 0.7 else None
                phone = None
                if rng.random() < 0.6:
                    phone = _format_phone(rng, customer.phone_national, customer.country)
                first, last = customer.first_name, customer.last_name
                country = customer.country
            currency = _CURRENCIES[country]
            breakage = rng.random()
            if breakage < 0.002:
                purchased_at = None
            elif breakage < 0.004:
                total_amount = -total_amount
            elif breakage < 0.006:
                currency = rng.choice(["EURO", "£", "usd$"])
            elif breakage < 0.008:
                items = items[: len(items) // 2]  # truncated export: unparseable JSON
            elif breakage < 0.009:
                total_amount = None
            yield (
                transaction_id,
                rng.choice(_STORES),
                purchased_at,
                loyalty_id,
                email,
                phone,
                first,
                last,
                _messy_country(rng, country) if customer else country,
                total_amount,
                currency,
                items,
            )


def generate(config: SampleConfig | None = None) -> dict[str, list[tuple]]:
    """Generate both tables' rows (tuples in column order), the same for the same ``config``."""
    config = config or SampleConfig()
    rng = random.Random(config.seed)
    total_rows = config.days * (config.crm_rows_per_day + config.store_rows_per_day)
    customers = _make_customers(rng, max(10, total_rows // 4))
    return {
        CRM_TABLE: list(_crm_rows(rng, config, customers)),
        STORE_TABLE: list(_store_rows(rng, config, customers)),
    }


def _columns(table: str) -> dict[str, str]:
    return CRM_COLUMNS if table == CRM_TABLE else STORE_COLUMNS


def write_sqlite(path: str | Path, config: SampleConfig | None = None) -> dict[str, int]:
    """Create (or replace) both tables in the SQLite file at ``path``; return the row count per table.

    Timestamps are stored as ``'YYYY-MM-DD HH:MM:SS'`` text (naive UTC), which sorts and compares like
    a timestamp; amounts as text so that no cent is lost to floating point.
    """
    tables = generate(config)
    connection = sqlite3.connect(str(path))
    try:
        with connection:
            for table, rows in tables.items():
                columns = _columns(table)
                definitions = ", ".join(f"{name} {kind}" for name, kind in columns.items())
                connection.execute(f"DROP TABLE IF EXISTS {table}")
                connection.execute(f"CREATE TABLE {table} ({definitions})")
                time_column = TIME_COLUMNS[table]
                connection.execute(f"CREATE INDEX {table}_{time_column} ON {table} ({time_column})")
                placeholders = ", ".join("?" for _ in columns)
                connection.executemany(
                    f"INSERT INTO {table} VALUES ({placeholders})",
                    ([str(v) if isinstance(v, Decimal) else v for v in row] for row in rows),
                )
    finally:
        connection.close()
    return {table: len(rows) for table, rows in tables.items()}


def _copy_field(value: object) -> str:
    if value is None:
        return r"\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def postgres_schema_sql() -> str:
    """``CREATE TABLE`` statements for both tables (dropping earlier versions), PostgreSQL dialect."""
    statements = []
    for table in (CRM_TABLE, STORE_TABLE):
        definitions = ",\n  ".join(f"{name} {kind}" for name, kind in _columns(table).items())
        statements.append(f"DROP TABLE IF EXISTS {table};\nCREATE TABLE {table} (\n  {definitions}\n);")
        statements.append(f"CREATE INDEX {table}_{TIME_COLUMNS[table]} ON {table} ({TIME_COLUMNS[table]});")
    return "\n".join(statements) + "\n"


def write_postgres_sql(path: str | Path, config: SampleConfig | None = None) -> dict[str, int]:
    """Write a ``psql`` seed script (schema + ``COPY ... FROM stdin``) with the same rows as SQLite.

    Load it with ``psql -v ON_ERROR_STOP=1 -f seed.sql``; the official ``postgres`` image runs it
    from ``/docker-entrypoint-initdb.d``.
    """
    tables = generate(config)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write("-- Sample warehouse generated by `python -m demo.sample_data`; do not edit by hand.\n")
        out.write("SET client_encoding = 'UTF8';\nBEGIN;\n")
        out.write(postgres_schema_sql())
        for table, rows in tables.items():
            out.write(f"COPY {table} ({', '.join(_columns(table))}) FROM stdin;\n")
            for row in rows:
                out.write("\t".join(_copy_field(value) for value in row) + "\n")
            out.write("\\.\n")
        out.write("COMMIT;\n")
    return {table: len(rows) for table, rows in tables.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", type=Path, help="write both tables into this SQLite file")
    parser.add_argument("--postgres-sql", type=Path, help="write a psql seed script (schema + COPY)")
    parser.add_argument("--postgres-schema", type=Path, help="write the PostgreSQL CREATE TABLE statements")
    parser.add_argument("--days", type=int, default=SampleConfig.days)
    parser.add_argument("--crm-rows-per-day", type=int, default=SampleConfig.crm_rows_per_day)
    parser.add_argument("--store-rows-per-day", type=int, default=SampleConfig.store_rows_per_day)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=DEFAULT_START, help="first day, UTC")
    parser.add_argument("--seed", type=int, default=SampleConfig.seed)
    args = parser.parse_args(argv)
    if not (args.sqlite or args.postgres_sql or args.postgres_schema):
        parser.error("give at least one of --sqlite, --postgres-sql, --postgres-schema")
    config = SampleConfig(args.days, args.crm_rows_per_day, args.store_rows_per_day, args.start, args.seed)
    if args.sqlite:
        print(f"{args.sqlite}: {write_sqlite(args.sqlite, config)}")
    if args.postgres_sql:
        print(f"{args.postgres_sql}: {write_postgres_sql(args.postgres_sql, config)}")
    if args.postgres_schema:
        args.postgres_schema.write_text(postgres_schema_sql(), encoding="utf-8")
        print(f"{args.postgres_schema}: schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
