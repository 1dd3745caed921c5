"""PII normalization and SHA-256 hashing: e-mails, E.164 phones and names, vectorized per distinct value."""

from __future__ import annotations

from airflow_provider_gravity.conversions.pii.emails import normalize_email
from airflow_provider_gravity.conversions.pii.hashing import sha256_hex
from airflow_provider_gravity.conversions.pii.names import normalize_name
from airflow_provider_gravity.conversions.pii.phones import normalize_phone
from airflow_provider_gravity.conversions.pii.user_fields import HashedUserFields, PiiCache, hash_user_fields

__all__ = [
    "HashedUserFields",
    "PiiCache",
    "hash_user_fields",
    "normalize_email",
    "normalize_name",
    "normalize_phone",
    "sha256_hex",
]
