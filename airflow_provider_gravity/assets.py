"""
The asset a Gravity delivery updates: ``gravity://<host>/conversions/<event_name>``.

``<host>`` is the Gravity connection's base URL without its scheme (``api.trygravity.ai``, or
``127.0.0.1:8123`` for a local sandbox) and ``<event_name>`` the operator's ``event_name`` (``events`` when it
has none). The same host and name are the operator's OpenLineage output (namespace ``gravity://<host>``, name
``conversions/<event_name>``): :func:`conversions_asset` builds both.

The scheme is registered in the provider info's ``asset-uris``: Airflow normalizes every ``gravity://`` URI
with :func:`sanitize_uri` (host in lower case, no default port, the path checked). An asset is its name and its
URI, and an ``Asset(uri)`` is named by the text given: the operator's asset is named by its normalized URI, so
a downstream DAG schedules on that text, e.g. ``Asset("gravity://api.trygravity.ai/conversions/Purchase")``.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseHook

from airflow_provider_gravity.conversions.api.endpoint import DEFAULT_HOST

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

log = logging.getLogger(__name__)

SCHEME = "gravity"
#: The event name of an operator without ``event_name`` (every row names its own).
DEFAULT_EVENT_NAME = "events"
_DEFAULT_PORTS = {"443", "80"}


def conversions_host(gravity_conn_id: str) -> str:
    """
    Return the host part of the Gravity connection's base URL (``host[:port]``, no scheme, no path), or
    :data:`DEFAULT_HOST` when the connection has none or cannot be read.

    :param gravity_conn_id: the Gravity connection.
    """
    host = port = None
    try:
        connection = BaseHook.get_connection(gravity_conn_id)
        host, port = connection.host, connection.port
    except Exception:  # noqa: BLE001 - naming the asset must never fail the task
        log.debug("No Gravity connection %r to name the asset; using %s.", gravity_conn_id, DEFAULT_HOST)
    if not host:
        return DEFAULT_HOST
    netloc = urllib.parse.urlsplit(host if "://" in host else f"//{host}").netloc
    netloc = netloc.rpartition("@")[2]  # a base URL with user info names the same host
    if not netloc:
        return DEFAULT_HOST
    if port and ":" not in netloc.rpartition("]")[2]:  # the hook sends to the connection's port field
        netloc = f"{netloc}:{port}"
    return netloc


def create_asset(*, host: str, event_name: str | None = None, extra: dict[str, Any] | None = None) -> Asset:
    """
    Build the asset of Gravity's conversions of one event name (the ``factory`` of the provider's ``asset-uris``).

    :param host: the API's host, ``host[:port]``.
    :param event_name: the event name; :data:`DEFAULT_EVENT_NAME` when ``None`` or empty.
    :param extra: the asset's extra.
    """
    name = urllib.parse.quote(event_name or DEFAULT_EVENT_NAME, safe="")
    uri = urllib.parse.urlunsplit(sanitize_uri(urllib.parse.urlsplit(f"{SCHEME}://{host}/conversions/{name}")))
    return Asset(name=uri, uri=uri, extra=extra)  # named by the normalized URI, which downstream DAGs write


def conversions_asset(gravity_conn_id: str, event_name: str | None) -> Asset:
    """
    Return the asset an operator delivering ``event_name`` through ``gravity_conn_id`` updates; its OpenLineage
    form (:func:`convert_asset_to_openlineage`) is the operator's lineage output.

    :param gravity_conn_id: the Gravity connection.
    :param event_name: the operator's ``event_name``.
    """
    return create_asset(host=conversions_host(gravity_conn_id), event_name=event_name)


def conversions_alias(dag_id: str, task_id: str) -> AssetAlias:
    """
    Return the asset alias a task declares in its outlets. The asset's URI is only known when the task runs (the
    connection's host, a templated ``event_name``), and a run that delivers nothing must emit no event: the
    task adds the asset to this alias at the end of a run that delivered something, and emits nothing else.

    :param dag_id: the task's DAG.
    :param task_id: the task.
    """
    return AssetAlias(name=f"{SCHEME}-conversions:{dag_id}.{task_id}", group="gravity")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Normalize a ``gravity://`` asset URI (the ``handler`` of the provider's ``asset-uris``): the host in lower
    case and without a trailing dot, without the default port (443, 80), and a path ``/conversions/<event_name>``.

    :param uri: the URI, already split and normalized by Airflow (no user info, no fragment, no trailing
        slash).
    :raises ValueError: without a host, with a port that is not one, or with another path.
    """
    if not uri.hostname:
        raise ValueError("URI format gravity:// must contain a host: gravity://<host>/conversions/<event_name>")
    parts = uri.path.split("/")
    if len(parts) != 3 or parts[1] != "conversions" or not parts[2]:  # a leading slash, then two segments
        raise ValueError(
            f"URI format gravity:// must be gravity://<host>/conversions/<event_name>, got path {uri.path!r}"
        )
    if uri.query:
        raise ValueError("URI format gravity:// takes no query")
    try:
        port = uri.port
    except ValueError:  # not a number, or out of range; the text is not quoted, it may be a piece of user info
        raise ValueError(
            "URI format gravity:// must be gravity://<host>[:<port>]/conversions/<event_name>, with a port from "
            "0 to 65535"
        ) from None
    host = uri.hostname.rstrip(".")  # a fully qualified name's trailing dot names the same host
    if not host:
        raise ValueError("URI format gravity:// must contain a host: gravity://<host>/conversions/<event_name>")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or str(port) in _DEFAULT_PORTS else f"{host}:{port}"
    return uri._replace(scheme=SCHEME, netloc=netloc)


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any = None) -> OpenLineageDataset:
    """
    Return the OpenLineage dataset of a ``gravity://`` asset (the ``to_openlineage_converter`` of the provider's
    ``asset-uris``): namespace ``gravity://<host>``, name ``conversions/<event_name>``.

    :param asset: a ``gravity://`` asset.
    :param lineage_context: unused; Airflow passes it to every converter.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

    parsed = urllib.parse.urlsplit(asset.uri)
    return OpenLineageDataset(namespace=f"{SCHEME}://{parsed.netloc}", name=urllib.parse.unquote(parsed.path[1:]))
