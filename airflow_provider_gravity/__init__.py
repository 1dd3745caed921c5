"""Apache Airflow provider for Gravity's Conversions API."""

from __future__ import annotations

from typing import Any

from airflow_provider_gravity.version import __version__


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata read by Airflow's ``ProvidersManager``."""
    # Here, not at the top: importing the package (the sandbox does) loads nothing of the client side.
    from airflow_provider_gravity.conversions.api.endpoint import DEFAULT_BASE_URL

    return {
        "package-name": "airflow-provider-gravity",
        "name": "Gravity",
        "description": "Send offline conversions from any SQL warehouse to Gravity's Conversions API.",
        "versions": [__version__],
        "hooks": [
            {
                "integration-name": "Gravity",
                "python-modules": ["airflow_provider_gravity.hooks.gravity"],
            }
        ],
        "operators": [
            {
                "integration-name": "Gravity",
                "python-modules": ["airflow_provider_gravity.operators.send_conversions"],
            }
        ],
        "asset-uris": [
            {
                "schemes": ["gravity"],
                "handler": "airflow_provider_gravity.assets.sanitize_uri",
                "factory": "airflow_provider_gravity.assets.create_asset",
                "to_openlineage_converter": "airflow_provider_gravity.assets.convert_asset_to_openlineage",
            }
        ],
        "integrations": [
            {
                "integration-name": "Gravity",
                "external-doc-url": "https://www.trygravity.ai",
                "tags": ["service"],
            }
        ],
        "config": {
            "gravity": {
                "description": "Where the Gravity view of the Airflow UI (Browse > Gravity) finds its tables.",
                "options": {
                    "run_history_conn_id": {
                        "description": "SQL connection holding the run history table and the delivery log.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "gravity_warehouse",
                        "default": None,
                    },
                    "run_history_table": {
                        "description": "The operators' run_history_table, as table or schema.table.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "analytics.gravity_run_history",
                        "default": "gravity_run_history",
                    },
                    "delivery_log_table": {
                        "description": "The delivery log whose dead letter the view shows; empty for none.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "analytics.gravity_delivery_log",
                        "default": "gravity_delivery_log",
                    },
                },
            }
        },
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_gravity.hooks.gravity.GravityHook",
                "connection-type": "gravity",
                "hook-name": "Gravity",
                "conn-fields": {
                    "auth_header": {
                        "label": "Auth header",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["bearer", "x-api-key", None],
                            "default": "bearer",
                        },
                        "description": "bearer (Authorization: Bearer KEY, default) or x-api-key (X-API-Key: KEY).",
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
                        "description": "Read timeout of one request. Default 30.",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0},
                        "description": "Retries of one request on 408, 429, 5xx, timeouts and resets. Default 5.",
                    },
                    "hash_phone_with_plus": {
                        "label": "Hash phones with +",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Hash E.164 phones with their leading + (default: digits only).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port", "extra"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {
                        "host": DEFAULT_BASE_URL,
                        "password": "Gravity advertiser API key",
                        "auth_header": "bearer",
                        "timeout": "30",
                        "max_retries": "5",
                    },
                },
            }
        ],
    }
