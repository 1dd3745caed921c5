"""The core of the provider: PII normalization and hashing, importable without Airflow."""

from __future__ import annotations

from airflow_provider_gravity.conversions.emails import normalize_email
from airflow_provider_gravity.conversions.hashing import sha256_hex
from airflow_provider_gravity.conversions.names import normalize_name
from airflow_provider_gravity.conversions.phones import normalize_phone
from airflow_provider_gravity.conversions.pii import HashedUserFields, PiiCache, hash_user_fields

__all__ = [
    "HashedUserFields",
    "PiiCache",
    "hash_user_fields",
    "normalize_email",
    "normalize_name",
    "normalize_phone",
    "sha256_hex",
]
