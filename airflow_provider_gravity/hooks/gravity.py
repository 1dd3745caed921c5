"""Airflow hook for Gravity's Conversions API."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    # The client is imported when the hook first makes one: it loads requests and the event encoder (numpy),
    # which a DAG file that only names the hook or the operator should not pay for at every parse.
    from airflow_provider_gravity.conversions.api.client import EventResult, GravityClient


def _with_port(base_url: str, port: int) -> str:
    """
    ``base_url`` with the connection's port field in its authority, where a port belongs: appended to the text it
    landed after a path (``https://host/gravity:8443``) or after the host's own port (``host:8443:8443``). A port
    written in the host field wins.
    """
    parts = urllib.parse.urlsplit(base_url)
    if not parts.netloc or ":" in parts.netloc.rpartition("@")[2].rpartition("]")[2]:
        return base_url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def _max_retries(value: Any) -> int:
    """Read the ``max_retries`` extra: 5 when empty (the form saves ``null``), else a count of at least 0."""
    if value is None or value == "":
        return 5
    retries = int(value)
    if retries < 0:
        raise ValueError(f"Extra max_retries must be 0 or more, got {retries}.")
    return retries


class GravityHook(BaseHook):
    """
    Interact with Gravity's Conversions API (``POST /gateway/events``).

    The connection is read lazily, on first use. Its fields: host = base URL (``https://api.trygravity.ai``
    when empty; ``http://`` is allowed only for a loopback host such as the local sandbox), password = API key.
    Extras: ``auth_header`` (``bearer`` default, or ``x-api-key``), ``timeout`` (seconds, default 30),
    ``max_retries`` (default 5), ``hash_phone_with_plus`` (default false).

    :param gravity_conn_id: The Gravity connection id (see the README's "Connection" section).
    :param pool_size: HTTP connections kept open; set it to at least the number of parallel requests.
    """

    conn_name_attr = "gravity_conn_id"
    default_conn_name = "gravity_default"
    conn_type = "gravity"
    hook_name = "Gravity"

    def __init__(self, gravity_conn_id: str = default_conn_name, *, pool_size: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gravity_conn_id = gravity_conn_id
        self.pool_size = pool_size

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """
        Return the connection form's behaviour in the shape Airflow 3.1 reads (``hidden_fields``,
        ``relabeling``, ``placeholders``). Airflow 3.2+ reads the declarative ``ui-field-behaviour`` and
        ``conn-fields`` of the provider info instead. The extra stays visible here: Airflow 3.1 does not
        show ``conn-fields``, so the extra JSON is where its users set them.
        """
        from airflow_provider_gravity import get_provider_info

        declared = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": [name for name in declared["hidden-fields"] if name != "extra"],
            "relabeling": dict(declared["relabeling"]),
            "placeholders": dict(declared["placeholders"]),
        }

    @cached_property
    def extras(self) -> dict[str, Any]:
        """The connection's extra fields."""
        return self.get_connection(self.gravity_conn_id).extra_dejson

    @cached_property
    def client(self) -> GravityClient:
        """
        The :class:`GravityClient` built from the connection, created once and reused.

        The hook keeps the connection's id and this client, never the ``Connection`` itself, so that
        ``vars(hook)`` cannot show the API key.
        """
        from airflow.sdk.log import mask_secret

        from airflow_provider_gravity.conversions.api.client import AUTH_HEADER_STYLES, GravityClient, RetryPolicy

        conn = self.get_connection(self.gravity_conn_id)
        api_key = (conn.password or "").strip()  # a key pasted with its line break
        if not api_key:
            raise ValueError(f"Connection {self.gravity_conn_id!r} has no API key (password).")
        mask_secret(api_key)
        auth_header = str(self.extras.get("auth_header") or "bearer").lower()
        if auth_header not in AUTH_HEADER_STYLES:
            raise ValueError(f"Extra auth_header must be one of {AUTH_HEADER_STYLES}, got {auth_header!r}.")
        base_url = conn.host or None
        if base_url and "://" not in base_url:
            base_url = f"{conn.schema or 'https'}://{base_url}"
        if base_url and conn.port:
            base_url = _with_port(base_url, conn.port)
        return GravityClient(
            base_url,
            api_key,
            auth_header=auth_header,
            timeout=float(self.extras.get("timeout") or 30),
            retry=RetryPolicy(max_retries=_max_retries(self.extras.get("max_retries"))),
            pool_size=self.pool_size,
        )

    @property
    def hash_phone_with_plus(self) -> bool:
        """
        Whether phones are hashed as ``+E.164`` rather than E.164 digits (extra ``hash_phone_with_plus``): a JSON
        boolean, or text read by Airflow's own ``to_boolean`` (``true``, ``yes``, ``on``, ``1``, ...).
        """
        from airflow.utils.strings import to_boolean  # Airflow 3.1 to 3.3; imported when a run reads the extra

        value = self.extras.get("hash_phone_with_plus")
        return value if isinstance(value, bool) else to_boolean(None if value is None else str(value))

    def get_conn(self) -> GravityClient:
        """Return the :class:`GravityClient` of this connection."""
        return self.client

    def send_events(self, events: Sequence[dict]) -> list[EventResult]:
        """
        Send up to 1,000 events in one request; see :meth:`GravityClient.send_events`.

        :param events: JSON-ready event dicts.
        :return: one :class:`EventResult` per event, in order.
        """
        return self.client.send_events(events)

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and API key without sending a conversion."""
        try:
            return self.client.check_connection()
        except ValueError as err:  # the provider's own messages about the connection; they never quote the key
            return False, str(err)
        except Exception as err:  # noqa: BLE001 - another library's text might quote the key: its type only
            return False, f"The Gravity connection could not be read ({type(err).__name__})."

    def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if "client" in self.__dict__:
            self.client.close()
