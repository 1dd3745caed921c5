"""Seeded benchmark data in the local PostgreSQL: ``gravity_bench.orders``, loaded with ``COPY``.

Rows come from 200,000 distinct customers with the mess real CRM exports have: emails in mixed case,
padded, a few without ``@``; phones in national and international formats across twelve regions;
names with accents and punctuation; a few missing fields. Rows are generated in blocks of
``BLOCK_ROWS`` with one seed per block, so growing the table from 1 M to 3 M rows appends the rows
a fresh 3 M load would hold (event times are relative to the load time), and a table of the right
version and size is re-used as it is.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import phonenumbers
import psycopg2

SCHEMA = "gravity_bench"
TABLE = f"{SCHEMA}.orders"
GENERATOR_VERSION = 1
SEED = 20_260_101
BLOCK_ROWS = 100_000
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

REGION_CURRENCIES = {
    "US": "USD", "CA": "CAD", "MX": "MXN", "BR": "BRL", "GB": "GBP", "FR": "EUR",
    "DE": "EUR", "ES": "EUR", "IT": "EUR", "IN": "INR", "JP": "JPY", "AU": "AUD",
}  # fmt: skip
REGION_WEIGHTS = (30, 5, 5, 6, 10, 8, 8, 5, 5, 8, 5, 5)
FIRST_NAMES = (
    "José", "Zoë", "Émilie", "François", "Björn", "Łukasz", "Ana María", "Siân", "Chloé", "Jürgen",
    "Mary-Jane", "Noémie", "Ngozi", "Hiroshi", "Priya", "Olivia", "Liam", "Søren", "Dolores", "Mateo",
)  # fmt: skip
LAST_NAMES = (
    "García", "Müller", "O'Brien", "Nguyễn", "Da Silva", "Lefèvre", "Kowalczyk", "Ødegaard", "Smith",
    "Núñez", "D'Amico", "Van Dijk", "Tanaka", "Sharma", "Brown", "Żak", "Fernández", "Dubois",
)  # fmt: skip
EMAIL_DOMAINS = ("gmail.com", "yahoo.fr", "outlook.com", "web.de", "example.co.uk", "icloud.com")
COLUMNS = (
    "seq", "order_id", "created_at", "customer_id", "email", "phone",
    "first_name", "last_name", "country", "amount", "currency",
)  # fmt: skip
DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (
    generator_version int NOT NULL, customers bigint NOT NULL, rows bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigint PRIMARY KEY,
    order_id text NOT NULL,
    created_at timestamptz,
    customer_id text NOT NULL,
    email text,
    phone text,
    first_name text,
    last_name text,
    country text,
    amount numeric(12, 2),
    currency text
);
"""

#: What a user would write for the operator: the column aliases are the mapping (see DESIGN.md).
OPERATOR_SQL = f"""
SELECT order_id AS event_id, created_at AS event_time, email AS em, phone AS ph,
       first_name AS fn, last_name AS ln, customer_id AS external_id, country,
       amount AS value, currency
FROM {TABLE}
WHERE seq <= %(rows)s
ORDER BY seq
"""


def airflow_connection_json(dsn: str = DEFAULT_DSN) -> str:
    """The warehouse as an Airflow ``postgres`` connection (JSON, for ``AIRFLOW_CONN_WAREHOUSE``)."""
    parts = dict(part.split("=", 1) for part in dsn.split())
    connection = {
        "conn_type": "postgres",
        "host": parts.get("host", "127.0.0.1"),
        "port": int(parts.get("port", 5432)),
        "login": parts.get("user", "postgres"),
        "schema": parts.get("dbname", "postgres"),
        # psycopg2, the driver of the naive baseline, when rows are streamed rather than read through ADBC
        "extra": {"sqlalchemy_scheme": "postgresql+psycopg2"},
    }
    if "password" in parts:
        connection["password"] = parts["password"]
    return json.dumps(connection)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    country: str | None


def make_customers(count: int, seed: int = SEED) -> list[Customer]:
    """``count`` distinct customers, the same ones for the same seed."""
    rng = random.Random(seed)
    regions = list(REGION_CURRENCIES)
    national_numbers = {region: _example_mobile(region) for region in regions}
    customers = []
    for index in range(count):
        region = rng.choices(regions, REGION_WEIGHTS)[0]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        customers.append(
            Customer(
                customer_id=f"cust-{index:07d}",
                email=_messy_email(rng, first, last, index),
                phone=_messy_phone(rng, region, national_numbers[region]),
                first_name=_messy_name(rng, first),
                last_name=_messy_name(rng, last),
                country=None if rng.random() < 0.03 else (region if rng.random() < 0.8 else region.lower()),
            )
        )
    return customers


def _example_mobile(region: str) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    return phonenumbers.national_significant_number(example)


def _messy_email(rng: random.Random, first: str, last: str, index: int) -> str | None:
    roll = rng.random()
    if roll < 0.02:
        return None
    local = f"{first}.{last}{index}".replace(" ", "").replace("'", "")
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    if roll < 0.03:
        email = email.replace("@", " at ")  # no '@': dropped as invalid_email
    if rng.random() < 0.3:
        email = email.upper() if rng.random() < 0.3 else email.capitalize()
    if rng.random() < 0.15:
        email = f"  {email} "
    return email


def _messy_phone(rng: random.Random, region: str, example_national: str) -> str | None:
    if rng.random() < 0.05:
        return None
    digits = example_national[:-4] + f"{rng.randrange(10_000):04d}"
    number = phonenumbers.parse(digits, region)
    style = rng.random()
    if style < 0.35:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    if style < 0.65:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if style < 0.8:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if style < 0.9:
        return f"00{number.country_code}{digits}"
    if style < 0.98:
        return digits
    return digits[:-3]  # truncated: invalid


def _messy_name(rng: random.Random, name: str) -> str | None:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.2:
        name = name.upper()
    elif roll < 0.3:
        name = name.lower()
    return f" {name}  " if rng.random() < 0.1 else name


def write_block(block: int, customers: list[Customer], start_time: datetime, out: io.StringIO) -> None:
    """Rows ``block * BLOCK_ROWS + 1 ..`` as CSV, from a seed of their own."""
    rng = random.Random(SEED * 1_000 + block)
    writer = csv.writer(out)
    span_seconds = 4 * 24 * 3600
    first = block * BLOCK_ROWS + 1
    for seq in range(first, first + BLOCK_ROWS):
        customer = customers[rng.randrange(len(customers))]
        created = start_time + timedelta(seconds=rng.randrange(span_seconds))
        amount = f"{rng.lognormvariate(3.5, 0.9):.2f}"
        writer.writerow(
            (
                seq, f"ord-{seq:09d}", created.isoformat(), customer.customer_id, customer.email,
                customer.phone, customer.first_name, customer.last_name, customer.country, amount,
                REGION_CURRENCIES.get((customer.country or "US").upper(), "USD"),
            )
        )  # fmt: skip


def settle_table(table: str, dsn: str = DEFAULT_DSN, log=print) -> None:
    """
    Do the writes a fresh load still owes before anything is timed: the first read of new rows writes them
    again to set their hint bits, and the load's dirty pages go out at the next checkpoint. Both landed in the
    first configurations timed after a load (the empty task took 6 s instead of 2).
    """
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True  # VACUUM runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
            try:
                cursor.execute("CHECKPOINT")
            except psycopg2.Error as error:  # a role without pg_checkpoint: the server's own checkpoint comes later
                log(f"  no CHECKPOINT ({type(error).__name__}); the first timed run may pay for the load's writes")
    finally:
        connection.close()


def ensure_rows(rows: int, customers: int = 200_000, dsn: str = DEFAULT_DSN, log=print) -> None:
    """Make ``gravity_bench.orders`` hold at least ``rows`` rows of this generator version."""
    blocks_needed = -(-rows // BLOCK_ROWS)
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(DDL)
        cursor.execute(f"SELECT generator_version, customers, rows FROM {SCHEMA}.meta")
        meta = cursor.fetchone()
        same_data = meta is not None and meta[:2] == (GENERATOR_VERSION, customers)
        have = meta[2] if same_data else 0
        if have >= blocks_needed * BLOCK_ROWS:
            log(f"Re-using {TABLE}: {have:,} rows already loaded.")
            return
        if have == 0:
            cursor.execute(f"TRUNCATE {TABLE}")
        connection.commit()
        started = time.monotonic()
        pool = make_customers(customers)
        # Event times over the four days before this load, so the sandbox and operator accept them.
        start_time = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4, hours=1)
        for block in range(have // BLOCK_ROWS, blocks_needed):
            buffer = io.StringIO()
            write_block(block, pool, start_time, buffer)
            buffer.seek(0)
            cursor.copy_expert(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buffer)
            loaded = (block + 1) * BLOCK_ROWS
            cursor.execute(f"DELETE FROM {SCHEMA}.meta")
            cursor.execute(f"INSERT INTO {SCHEMA}.meta VALUES (%s, %s, %s)", (GENERATOR_VERSION, customers, loaded))
            connection.commit()
            if loaded % 500_000 == 0 or block == blocks_needed - 1:
                log(f"  loaded {loaded:,} rows ({time.monotonic() - started:.0f}s)")
        cursor.execute(f"ANALYZE {TABLE}")
        connection.commit()
    settle_table(TABLE, dsn, log)
    log(f"Loaded {TABLE} with COPY up to {blocks_needed * BLOCK_ROWS:,} rows in {time.monotonic() - started:.0f}s.")
