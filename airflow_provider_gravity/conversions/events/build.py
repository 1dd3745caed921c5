"""Build Gravity events from one chunk of warehouse rows, giving each bad row a named reason."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_gravity.conversions.canonical_json import canonical_json
from airflow_provider_gravity.conversions.encoded_event import UNENCODABLE, EncodedEvents
from airflow_provider_gravity.conversions.events import fields
from airflow_provider_gravity.conversions.events.encode import (
    Fragments,
    constant_fragments,
    joined_objects,
    object_fragments,
    text_fragments,
    unencodable_rows,
    value_fragments,
    written_fragments,
)
from airflow_provider_gravity.conversions.events.event_times import event_time_seconds
from airflow_provider_gravity.conversions.events.fields import per_cell, per_distinct_value, text_column
from airflow_provider_gravity.conversions.match_keys import MATCH_KEY_BITS, MATCH_KEYS
from airflow_provider_gravity.conversions.pii.pixel_user_data import split_pixel_pii
from airflow_provider_gravity.conversions.pii.user_fields import (
    UNREADABLE_DROP_REASONS,
    HashedUserFields,
    PiiCache,
    garbage_collection_paused,
    hash_user_fields,
)
from airflow_provider_gravity.conversions.read.columns import CUSTOM_PREFIX, MAX_KEY_LENGTH
from airflow_provider_gravity.conversions.read.prepare import PreparedChunk, prepare_cells

PIXEL_ID_FIELDS = ("click_id", "visitor_id", "session_id", "client_user_agent")
# A control character in a key cannot be stored by PostgreSQL (NUL) or shown on one log line.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EventSettings:
    """
    How rows become events; the operator's arguments.

    :param event_name: used where the row has no ``event_name``.
    :param action_source: used where the row has no ``action_source``; omitted when neither is set.
    :param event_source_url: used where the row has no ``event_source_url``.
    :param timezone: zone of naive ``event_time`` values.
    :param default_region: phone region where the row has no ``country``.
    :param phone_with_plus: hash phones as ``+E.164`` rather than E.164 digits.
    :param require_match_key: refuse rows without em, ph, external_id, click_id or fn+ln (``no_match_keys``).
    :param max_event_age_seconds: refuse older events (``event_too_old``); ``None`` for no limit.
    :param future_tolerance_seconds: clock skew allowed before an event counts as in the future.
    :param phone_backend: ``phonenumbers`` (reference) or ``rphonenumbers``.
    """

    event_name: str | None = None
    action_source: str | None = None
    event_source_url: str | None = None
    timezone: str = "UTC"
    default_region: str = "US"
    phone_with_plus: bool = False
    require_match_key: bool = False
    max_event_age_seconds: float | None = None
    future_tolerance_seconds: float = 300.0
    phone_backend: str = "phonenumbers"

    def __post_init__(self) -> None:
        for name in ("event_name", "action_source", "event_source_url"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                # A template rendered as a native object can give a number or bytes: named before any row is read.
                raise TypeError(f"{name} must be text or None, got a {type(value).__name__}.")


@dataclass
class BuiltChunk:
    """
    The events of one chunk, aligned with its rows.

    :param encoded: each valid row's event as canonical JSON text (:mod:`.encode`), ``None`` for an invalid row.
    :param reasons: the ``invalid`` reason of each row, ``None`` for a valid one.
    :param event_names: each row's event name (or ``None``), for keys of invalid rows.
    :param event_ids: each row's event id (or ``None``).
    :param coverage: each row's match keys, as bits of :data:`~..match_keys.MATCH_KEYS` order (0 for invalid rows).
    :param field_drops: counts of values dropped from otherwise valid events (``invalid_email``,
        ``unreadable_click_id``, ...).
    """

    encoded: list[str | None]
    reasons: list[str | None]
    event_names: list[str | None]
    event_ids: list[str | None]
    coverage: list[int]
    field_drops: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> list[dict[str, Any] | None]:
        """The events as dicts, parsed from their JSON: for previews and checks, not for the hot path."""
        return [None if text is None else json.loads(text) for text in self.encoded]

    def encoded_events(self, rows: list[int]) -> EncodedEvents:
        """
        Return the events of valid rows ``rows`` as one batch ready to send.

        :param rows: valid rows, ascending; consecutive rows (nearly every batch) are sliced, not picked one by one.
        """
        # A valid row has its name, its id and its text.
        names, ids, texts = cast(
            "tuple[list[str], list[str], list[str]]", (self.event_names, self.event_ids, self.encoded)
        )
        if rows and rows[-1] - rows[0] + 1 == len(rows):
            first, stop = rows[0], rows[-1] + 1
            return EncodedEvents(names[first:stop], ids[first:stop], texts[first:stop])
        return EncodedEvents(
            list(map(names.__getitem__, rows)), list(map(ids.__getitem__, rows)), list(map(texts.__getitem__, rows))
        )


def build_events(
    chunk: PreparedChunk | pd.DataFrame, settings: EventSettings, now: float, cache: PiiCache | None = None
) -> BuiltChunk:
    """
    Validate a chunk, hash its PII and build one event per valid row.

    :param chunk: the chunk as :func:`~..read.prepare.prepare_chunk` made it ready, or a frame whose column names
        already follow the column contract (lower-case), made ready here; the frame given is never changed.
    :param settings: the operator's choices.
    :param now: the run's reference time, Unix seconds.
    :param cache: normalized values of earlier chunks of the run, so repeat customers cost a lookup.
    """
    frame = _prepared(chunk)
    with garbage_collection_paused():  # a chunk allocates many small dicts; rescanning the cache each time is waste
        return _build_events(frame, settings, now, cache)


def event_keys(
    chunk: PreparedChunk | pd.DataFrame, settings: EventSettings
) -> tuple[list[str | None], list[str | None]]:
    """Each row's ``(event_name, event_id)`` texts as :func:`build_events` reads them, without building events."""
    column = _ColumnReader(_prepared(chunk))
    return column.texts("event_name", settings.event_name), column.texts("event_id", None)


def _prepared(chunk: PreparedChunk | pd.DataFrame) -> pd.DataFrame:
    return chunk.frame if isinstance(chunk, PreparedChunk) else prepare_cells(chunk).frame


def _build_events(frame: pd.DataFrame, settings: EventSettings, now: float, cache: PiiCache | None) -> BuiltChunk:
    rows = len(frame)
    column = _ColumnReader(frame)
    event_ids = column.texts("event_id", None)
    event_names = column.texts("event_name", settings.event_name)
    seconds, time_missing = event_time_seconds(frame["event_time"], settings.timezone)
    cache = cache if cache is not None else PiiCache()
    hashed = _hashed_user_fields(frame, settings, cache)
    parts = _optional_parts(column, frame)
    part_reasons = [reasons for _, reasons in parts.values() if any(reasons)]
    pixel_objects, pixel_pii = split_pixel_pii(parts.pop("user_data", ([None] * rows, None))[0])
    joined_pii = {} if pixel_pii is None else _joined_pixel_pii(hashed, pixel_pii, frame, settings, cache)
    pixel_ids = {name: column.texts(name, None) for name in PIXEL_ID_FIELDS if name in frame.columns}
    user_data = _user_data(rows, _UserFields(hashed, joined_pii, pixel_ids), pixel_objects)
    # Each column of fragments is let go once joined: a chunk holds its events' bytes about twice, not once a field.
    hashed_drops, unencodable = hashed.drops, set(user_data.unencodable)
    del hashed, joined_pii, pixel_ids
    client_contexts = parts.pop("client_context", ([None] * rows, None))[0]
    # Keys in canonical order: by the key sent, custom_ prefix removed (custom_store_id goes after order_id).
    custom_fragments = [
        value_fragments(key, values)
        for key, values in sorted((name.removeprefix(CUSTOM_PREFIX), values) for name, (values, _) in parts.items())
    ]
    del parts
    custom_data = joined_objects(custom_fragments, rows)
    unencodable |= unencodable_rows(custom_fragments)
    del custom_fragments
    reasons = _row_reasons(column, event_ids, event_names, seconds, time_missing, settings, now)
    _add_value_reasons(reasons, part_reasons, user_data, settings.require_match_key)
    top = [
        column.fragments("action_source", settings.action_source),
        value_fragments("client_context", client_contexts, by_identity=True),
        object_fragments("custom_data", custom_data),
        text_fragments("event_id", event_ids),
        column.fragments("event_name", settings.event_name, event_names),
        column.fragments("event_source_url", settings.event_source_url),
        Fragments(_event_time_texts(seconds, reasons), [], '"event_time":'),
        object_fragments("user_data", user_data.objects),
    ]
    del custom_data, client_contexts
    coverage = user_data.coverage
    del user_data
    for row in unencodable | unencodable_rows(top):
        if reasons[row] is None:
            reasons[row] = UNENCODABLE
    joined = joined_objects(top, rows)
    del top
    encoded = joined.to_pylist()
    del joined
    if reasons.count(None) != rows:  # some row is refused
        for row in (row for row, reason in enumerate(reasons) if reason is not None):
            encoded[row], coverage[row] = None, 0
    return BuiltChunk(encoded, reasons, event_names, event_ids, coverage, _field_drops(hashed_drops, column))


def _optional_parts(column: _ColumnReader, frame: pd.DataFrame) -> dict[str, tuple[Sequence[Any], list[Any]]]:
    """Each optional column present, converted: ``(cells, reasons)``; custom_data keys keep their column names."""
    rows = len(frame)
    parts = {
        "user_data": column.converted("user_data", per_cell, lambda v: fields.json_object(v, "bad_user_data")),
        "client_context": column.converted(
            "client_context", per_cell, lambda v: fields.json_object(v, "bad_client_context")
        ),
        "value": column.converted("value", lambda series, _: fields.money_column(series), None),
        "currency": column.converted("currency", per_distinct_value, fields.currency_code),
        "order_id": column.converted(
            "order_id", lambda series, _: (column.texts("order_id", None), [None] * rows), None
        ),
        "contents": column.converted("contents", per_cell, fields.contents),
    }
    for name in frame.columns:
        if name.startswith(CUSTOM_PREFIX):
            parts[name] = column.converted(name, per_cell, fields.custom_value)
    return {name: part for name, part in parts.items() if part is not None}


def _row_reasons(
    column: _ColumnReader,
    event_ids: list[str | None],
    event_names: list[str | None],
    seconds: np.ndarray,
    time_missing: np.ndarray,
    settings: EventSettings,
    now: float,
) -> list[str | None]:
    """Each row's reason to be refused for its identity (id, name, time), ``None`` for a row that passes."""
    oldest = None if settings.max_event_age_seconds is None else now - settings.max_event_age_seconds
    latest = now + settings.future_tolerance_seconds
    unreadable_ids, unreadable_names = column.unreadable.get("event_id"), column.unreadable.get("event_name")
    suspects = _suspect_rows(event_ids, event_names, seconds, time_missing, oldest, latest)
    for flags in (unreadable_ids, unreadable_names):
        if flags is not None:
            suspects |= np.asarray(flags, dtype=bool)
    reasons: list[str | None] = [None] * len(event_ids)
    for i in np.flatnonzero(suspects).tolist():  # every other row passes each check
        if unreadable_ids is not None and unreadable_ids[i]:
            reasons[i] = "bad_event_id"
        elif unreadable_names is not None and unreadable_names[i]:
            reasons[i] = "bad_event_name"
        else:
            reasons[i] = _identity_reason(event_ids[i], event_names[i], seconds[i], time_missing[i], oldest, latest)
    return reasons


def _add_value_reasons(
    reasons: list[str | None], part_reasons: list[list[str | None]], user_data: _UserData, require_match_key: bool
) -> None:
    """Give rows that passed the identity checks the first reason of their values, then ``no_match_keys``."""
    if part_reasons:  # some value was refused
        for i, reason in enumerate(_first_reasons(len(reasons), part_reasons)):
            if reason is not None and reasons[i] is None:
                reasons[i] = reason
    if require_match_key:
        for i, matched in enumerate(user_data.has_match_key):
            if not matched and reasons[i] is None:
                reasons[i] = "no_match_keys"


def _field_drops(hashed_drops: dict[str, int], column: _ColumnReader) -> Counter[str]:
    drops = Counter(hashed_drops)
    for name, flags in column.unreadable.items():
        if name not in ("event_id", "event_name"):
            drops[f"unreadable_{name}"] += sum(flags)
    return +drops


def _joined_pixel_pii(
    hashed: HashedUserFields, pixel_pii: pd.DataFrame, frame: pd.DataFrame, settings: EventSettings, cache: PiiCache
) -> dict[str, list[Any]]:
    """
    Hash the PII the pixel's objects held, by the columns' rules (the row's ``country`` included), and join
    it to the columns' fields: ``em`` and ``ph`` lists are unioned; for ``fn`` and ``ln`` the column wins.

    :return: the joined fields, as values per row; their drops are added to ``hashed``.
    """
    if "country" in frame.columns:
        pixel_pii["country"] = frame["country"].to_numpy(dtype=object)
    from_pixel = _hashed_user_fields(pixel_pii, settings, cache)
    for reason, count in from_pixel.drops.items():
        if reason not in ("invalid_country", UNREADABLE_DROP_REASONS["country"]):  # counted with the columns
            hashed.drops[reason] = hashed.drops.get(reason, 0) + count
    joined: dict[str, list[Any]] = {}
    for name, pixel_values in from_pixel.fields.items():
        if name not in hashed.texts:
            joined[name] = pixel_values
            continue
        column_values = hashed.fields[name]
        if name in ("em", "ph"):
            joined[name] = [
                list(dict.fromkeys([*(ours or ()), *(theirs or ())])) or None
                for ours, theirs in zip(column_values, pixel_values, strict=True)
            ]
        else:
            joined[name] = [
                theirs if ours is None else ours for ours, theirs in zip(column_values, pixel_values, strict=True)
            ]
    return joined


def _hashed_user_fields(frame: pd.DataFrame, settings: EventSettings, cache: PiiCache) -> HashedUserFields:
    return hash_user_fields(
        frame,
        default_region=settings.default_region,
        phone_with_plus=settings.phone_with_plus,
        phone_backend=settings.phone_backend,
        cache=cache,
    )


class _ColumnReader:
    """Columns of a chunk converted whole, with a stand-in for absent columns; remembers unreadable cells."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.rows = len(frame)
        self.unreadable: dict[str, list[bool]] = {}

    def texts(self, name: str, default: str | None) -> list[str | None]:
        if name not in self.frame.columns:
            return [default] * self.rows
        texts, unreadable = text_column(self.frame[name])
        if any(unreadable):
            self.unreadable[name] = unreadable
        if default is None:
            return texts
        return [default if t is None else t for t in texts]

    def fragments(self, name: str, default: str | None, texts: list[str | None] | None = None) -> Fragments:
        """Return the JSON fragments of a text column (its ``texts`` when read already), or ``default``'s."""
        if name not in self.frame.columns:
            return constant_fragments(name, default, self.rows)
        return text_fragments(name, self.texts(name, default) if texts is None else texts)

    def converted(
        self, name: str, how: Callable[[pd.Series, Any], tuple[Sequence[Any], list[Any]]], convert: Any
    ) -> tuple[Sequence[Any], list[Any]] | None:
        if name not in self.frame.columns:
            return None
        return how(self.frame[name], convert)


def _suspect_rows(
    event_ids: list[str | None],
    event_names: list[str | None],
    seconds: np.ndarray,
    time_missing: np.ndarray,
    oldest: float | None,
    latest: float,
) -> np.ndarray:
    """
    Return the rows :func:`_identity_reason` might refuse, found with whole-column checks; a clean chunk has none,
    and costs no call per row.
    """
    with np.errstate(invalid="ignore"):
        suspects: np.ndarray = np.asarray(time_missing, dtype=bool) | np.isnan(seconds) | (seconds > latest)
        if oldest is not None:
            suspects |= seconds < oldest
    for texts in (event_ids, event_names):
        if not _keys_fine(texts):
            suspects |= np.fromiter(
                (text is None or len(text) > MAX_KEY_LENGTH or bool(_CONTROL_CHARACTER.search(text)) for text in texts),
                dtype=bool,
                count=len(texts),
            )
    return suspects


def _keys_fine(texts: list[str | None]) -> bool:
    """Whether every key is present, at most :data:`MAX_KEY_LENGTH` long and free of control characters."""
    if texts and texts.count(texts[0]) == len(texts):  # one key on every row: an event_name given as an argument
        texts = texts[:1]
    if None in texts:
        return False
    present = cast("list[str]", texts)
    if max(map(len, present), default=0) > MAX_KEY_LENGTH:
        return False
    joined = "".join(present)
    # Printable ASCII holds no control character: two scans in C, three times faster than the regex.
    return (joined.isascii() and joined.isprintable()) or not _CONTROL_CHARACTER.search(joined)


def _identity_reason(
    event_id: str | None,
    event_name: str | None,
    seconds: float,
    time_missing: bool,
    oldest: float | None,
    latest: float,
) -> str | None:
    if event_id is None:
        return "missing_event_id"
    if len(event_id) > MAX_KEY_LENGTH:
        return "event_id_too_long"
    if _CONTROL_CHARACTER.search(event_id):
        return "bad_event_id"
    if event_name is None:
        return "missing_event_name"
    if len(event_name) > MAX_KEY_LENGTH:
        return "event_name_too_long"
    if _CONTROL_CHARACTER.search(event_name):
        return "bad_event_name"
    if time_missing:
        return "missing_event_time"
    if np.isnan(seconds):
        return "bad_event_time"
    if seconds > latest:
        return "event_time_in_future"
    if oldest is not None and seconds < oldest:
        return "event_too_old"
    return None


class _UserData(NamedTuple):
    """Each row's ``user_data``: its JSON object (or ``None``), and what the run counts and checks of it."""

    objects: list[str | None] | pa.Array
    #: Rows with a value that could not be written.
    unencodable: list[int]
    has_match_key: list[bool]
    coverage: list[int]


class _UserFields(NamedTuple):
    """
    The fields of ``user_data`` of a chunk, by where they come from.

    :param hashed: our hashed columns, as JSON texts.
    :param joined: fields joined with the PII of the pixel's objects, as values (they win over ``hashed``).
    :param pixel_ids: the pixel's ids (``click_id``, ...), as text.
    """

    hashed: HashedUserFields
    joined: dict[str, list[Any]]
    pixel_ids: dict[str, list[Any]]

    def keys(self) -> list[str]:
        return sorted({*self.hashed.texts, *self.joined, *self.pixel_ids})

    def fragments(self, key: str) -> Fragments:
        if key in self.pixel_ids:
            return text_fragments(key, self.pixel_ids[key])  # the pixel's ids, as they came
        if key in self.joined:
            return value_fragments(key, self.joined[key], by_identity=True)
        return written_fragments(key, self.hashed.texts[key], sorted(self.hashed.unwritable.get(key, ())))

    def present(self, key: str, fragments: Fragments) -> np.ndarray:
        """Which rows have a value of the field (a value that could not be written counts as present)."""
        values = self.pixel_ids.get(key, self.joined.get(key))
        if values is not None:
            return ~np.fromiter(map(_is_missing, values), dtype=bool, count=len(values))
        present = np.asarray(self.hashed.texts[key].is_valid())
        present[fragments.unencodable] = True
        return present

    def value(self, key: str, row: int) -> Any:
        values = self.pixel_ids.get(key, self.joined.get(key))
        return self.hashed.value(key, row) if values is None else values[row]


def _user_data(rows: int, fields: _UserFields, pixel_objects: list[dict[Any, Any] | None]) -> _UserData:
    """
    Each row's ``user_data``: the pixel's object, then its ids, then our hashed fields, later keys winning.
    Rows without a pixel object (nearly all) are written column by column; the others as one dict each.
    """
    keys = fields.keys()
    fragments = [fields.fragments(key) for key in keys]
    joined = joined_objects(fragments, rows)
    present = {key: fields.present(key, fragment) for key, fragment in zip(keys, fragments, strict=True)}
    unencodable = sorted(unencodable_rows(fragments))
    del fragments
    coverage_bits = np.zeros(rows, dtype=np.int64)
    matched = np.zeros(rows, dtype=bool)
    for match_key, coverage_keys in MATCH_KEYS.items():
        if all(key in present for key in coverage_keys):
            # A value present is never empty (no empty list, no empty text): present is also a match key.
            found = np.logical_and.reduce([present[key] for key in coverage_keys])
            coverage_bits |= found.astype(np.int64) * MATCH_KEY_BITS[match_key]
            matched |= found
    coverage, has_match_key = coverage_bits.tolist(), matched.tolist()
    if not any(pixel_objects):
        return _UserData(joined, unencodable, has_match_key, coverage)
    objects = joined.to_pylist()
    for row, pixel in enumerate(pixel_objects):
        if pixel:
            merged = dict(pixel)
            merged.update((key, value) for key in keys if (value := fields.value(key, row)) is not None)
            objects[row] = _pixel_user_data_json(merged, unencodable, row)
            coverage[row] = _coverage(merged)
            has_match_key[row] = _has_match_key(merged)
    return _UserData(objects, unencodable, has_match_key, coverage)


def _is_missing(value: object) -> bool:
    return value is None


def _pixel_user_data_json(merged: dict[Any, Any], unencodable: list[int], row: int) -> str | None:
    try:
        return canonical_json(merged)
    except (ValueError, TypeError):
        unencodable.append(row)
        return None


def _coverage(user_data: dict[Any, Any]) -> int:
    return sum(MATCH_KEY_BITS[match_key] for match_key, keys in MATCH_KEYS.items() if all(k in user_data for k in keys))


def _event_time_texts(seconds: np.ndarray, reasons: list[str | None]) -> pa.Array:
    """Return the whole seconds of each valid row (its time is finite) as JSON text, null for the others."""
    if reasons.count(None) == len(reasons):  # every row valid, nearly always: no object array to compare
        valid = np.ones(len(reasons), dtype=bool)
    else:
        valid = np.equal(np.asarray(reasons, dtype=object), None)  # type: ignore[call-overload]  # None: object
    whole = np.trunc(np.where(valid, seconds, 0.0)).astype(np.int64)  # as int() does: toward zero
    return pc.cast(pa.array(whole, mask=~valid), pa.string())


def _first_reasons(rows: int, reason_columns: list[list[str | None]]) -> list[str | None]:
    """For each row, the first reason found in the columns, in their order; ``None`` where none is."""
    first: list[str | None] = [None] * rows
    for column in reversed(reason_columns):
        for i, reason in enumerate(column):
            if reason is not None:
                first[i] = reason
    return first


def _has_match_key(user_data: dict[Any, Any]) -> bool:
    if any(user_data.get(key) for key in ("em", "ph", "external_id", "click_id")):
        return True
    return bool(user_data.get("fn") and user_data.get("ln"))
