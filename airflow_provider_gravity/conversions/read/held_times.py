"""
PostgreSQL dates and timestamps beyond Python's years 1 to 9999, held at those ends on the cursor path.

PostgreSQL stores ``infinity``, ``-infinity``, dates BC and years after 9999; Python's ``date`` and ``datetime``
hold none of them. psycopg 3 raises ``DataError`` on such a cell (``date too large (after year 10K)``), and
psycopg2 raises ``ValueError`` on a BC or year-10000 cell: the whole read fails, and every retry the same way.
:func:`hold_times_beyond_python` makes a connection of either driver give ``date.max``/``datetime.max`` for a
cell after year 9999 (``infinity`` included) and ``date.min``/``datetime.min`` for one before year 1, as
psycopg2 gives ``infinity`` and as the Arrow reader (:mod:`.arrow`) holds every timestamp. The event builder then
names them as it names those ends: ``event_time_in_future`` and ``bad_event_time`` in ``event_time``.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from typing import Any

#: For each type: the value held before year 1, and the one held after year 9999.
_ENDS: dict[str, tuple[Any, Any]] = {
    "date": (dt.date.min, dt.date.max),
    "timestamp": (dt.datetime.min, dt.datetime.max),
    "timestamptz": (dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC)),
}
#: PostgreSQL's binary form: days (int32) or microseconds (int64) from 2000-01-01.
_BINARY_FORMS = {"date": struct.Struct("!i"), "timestamp": struct.Struct("!q"), "timestamptz": struct.Struct("!q")}
_LONG_YEAR = re.compile(rb"\d{5,}-")  # ISO DateStyle, PostgreSQL's default and psycopg's: 10000-01-01 ...


def held_end(text: bytes, low: Any, high: Any) -> Any:
    """
    ``low`` or ``high`` for the text of a date or timestamp Python cannot hold.

    :raises ValueError: for text that is not such a time (the driver's own error is raised instead).
    """
    if text == b"infinity" or _LONG_YEAR.match(text):
        return high
    if text == b"-infinity" or text.endswith(b" BC"):
        return low
    raise ValueError("not a time beyond Python's years")


def hold_times_beyond_python(dbapi_connection: Any) -> None:
    """Make ``dbapi_connection`` (psycopg 3 or psycopg2; others are left alone) hold such times at the ends."""
    module = type(dbapi_connection).__module__
    if module.startswith("psycopg2"):
        _hold_on_psycopg2(dbapi_connection)
    elif module.startswith("psycopg"):
        _hold_on_psycopg(dbapi_connection)


# -- psycopg 3 -----------------------------------------------------------------------------------------------


def _hold_on_psycopg(connection: Any) -> None:
    from psycopg.pq import Format

    adapters = connection.adapters
    for name, (low, high) in _ENDS.items():
        info = adapters.types.get(name)
        if info is None:
            continue
        for fmt in (Format.TEXT, Format.BINARY):
            base = adapters.get_loader(info.oid, fmt)
            if base is None or getattr(base, "holds_times_beyond_python", False):
                continue
            adapters.register_loader(info.oid, _psycopg_loader(name, base, fmt, low, high))


def _psycopg_loader(name: str, base: type, fmt: Any, low: Any, high: Any) -> type:
    """Build a loader that reads as ``base`` does (its C implementation, where installed) and holds what it refuses."""
    from psycopg import DataError
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    binary = _BINARY_FORMS[name] if fmt == Format.BINARY else None

    class HeldLoader(Loader):
        format = fmt
        holds_times_beyond_python = True

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._load = base(oid, context).load

        def load(self, data: Any) -> Any:
            try:
                return self._load(data)
            except DataError:
                if binary is not None:
                    return high if binary.unpack(bytes(data))[0] >= 0 else low
                try:
                    return held_end(bytes(data), low, high)
                except ValueError:
                    pass
                raise

    HeldLoader.__name__ = HeldLoader.__qualname__ = f"Held{base.__name__}"
    return HeldLoader


# -- psycopg2 ------------------------------------------------------------------------------------------------


def _hold_on_psycopg2(connection: Any) -> None:
    import psycopg2.extensions as extensions  # type: ignore[import-untyped]

    casters = {
        "date": (extensions.PYDATE, extensions.PYDATEARRAY),
        "timestamp": (extensions.PYDATETIME, extensions.PYDATETIMEARRAY),
        "timestamptz": (extensions.PYDATETIMETZ, extensions.PYDATETIMETZARRAY),
    }
    for name, (caster, array_caster) in casters.items():
        low, high = _ENDS[name]
        held = extensions.new_type(caster.values, f"HELD_{caster.name}", _psycopg2_cast(caster, low, high))
        extensions.register_type(held, connection)
        extensions.register_type(
            extensions.new_array_type(array_caster.values, f"HELD_{array_caster.name}", held), connection
        )


def _psycopg2_cast(caster: Any, low: Any, high: Any) -> Any:
    def cast(value: str | None, cursor: Any) -> Any:
        try:
            return caster(value, cursor)
        except ValueError:  # "year 10000 is out of range", "year -44 is out of range"
            try:
                return held_end(value.encode(), low, high) if value is not None else None
            except ValueError:
                pass
            raise

    return cast
