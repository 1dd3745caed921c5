"""
Where the Gravity view finds its tables: Airflow's ``[gravity]`` configuration section.

``run_history_conn_id``
    the SQL connection holding the run history (and the delivery log beside it);
``run_history_table``
    the run history table, ``gravity_run_history`` by default;
``delivery_log_table``
    the delivery log table whose dead letter the view shows, ``gravity_delivery_log`` by default; empty for none.

Like every Airflow option they can be set as ``AIRFLOW__GRAVITY__RUN_HISTORY_CONN_ID`` and so on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from airflow_provider_gravity.history.queries import HistoryReader
from airflow_provider_gravity.storage.engines import with_full_unicode
from airflow_provider_gravity.storage.names import parse_table_name

SECTION = "gravity"
DEFAULT_RUN_HISTORY_TABLE = "gravity_run_history"
DEFAULT_DELIVERY_LOG_TABLE = "gravity_delivery_log"


class ViewNotConfigured(RuntimeError):
    """The ``[gravity]`` settings do not say where the tables are, or the connection is unusable."""


@dataclass(frozen=True)
class ViewSettings:
    """
    The view's settings, read from Airflow's configuration.

    :param conn_id: connection of the run history and the delivery log.
    :param run_history_table: the run history table.
    :param delivery_log_table: the delivery log table, or ``None``.
    """

    conn_id: str
    run_history_table: str
    delivery_log_table: str | None

    @classmethod
    def from_airflow_config(cls) -> ViewSettings:
        """Read ``[gravity]``; raise :class:`ViewNotConfigured` with what to set when it is incomplete."""
        from airflow.configuration import conf

        conn_id = (conf.get(SECTION, "run_history_conn_id", fallback="") or "").strip()
        history = (conf.get(SECTION, "run_history_table", fallback="") or "").strip() or DEFAULT_RUN_HISTORY_TABLE
        delivery_log: str | None = conf.get(SECTION, "delivery_log_table", fallback=DEFAULT_DELIVERY_LOG_TABLE)
        delivery_log = (delivery_log or "").strip() or None
        if not conn_id:
            raise ViewNotConfigured(
                "The Gravity view is not configured: set [gravity] run_history_conn_id "
                "(AIRFLOW__GRAVITY__RUN_HISTORY_CONN_ID) to the SQL connection of the run history table."
            )
        for option, name in (("run_history_table", history), ("delivery_log_table", delivery_log)):
            if name is None:
                continue
            try:
                parse_table_name(name)
            except ValueError as error:
                raise ViewNotConfigured(f"[gravity] {option}: {error}") from None
        return cls(conn_id=conn_id, run_history_table=history, delivery_log_table=delivery_log)


class EngineCache:
    """One SQLAlchemy engine per connection URI, so that requests share a connection pool."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, conn_id: str) -> Engine:
        """Return the engine of ``conn_id``, looked up again on each call so that an edited connection is followed."""
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        try:
            connection = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            raise ViewNotConfigured(f"[gravity] run_history_conn_id: connection {conn_id!r} is not defined.") from None
        uri = connection.get_uri()
        with self._lock:
            engine = self._engines.get(uri)
            if engine is None:
                hook = connection.get_hook()
                if not isinstance(hook, DbApiHook):
                    raise ViewNotConfigured(
                        f"[gravity] run_history_conn_id: connection {conn_id!r} gives a {type(hook).__name__}, "
                        "not a SQL hook."
                    )
                # On MySQL/MariaDB a utf8mb4 connection: a filter holding an emoji is compared, not refused.
                engine = self._engines[uri] = with_full_unicode(hook.get_sqlalchemy_engine())
            return engine

    def reader(self, settings: ViewSettings) -> HistoryReader:
        """Build a reader of the tables ``settings`` names."""
        return HistoryReader(self.engine(settings.conn_id), settings.run_history_table, settings.delivery_log_table)
