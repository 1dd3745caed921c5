"""The pixel's ``user_data`` object: its PII keys are hashed by the columns' rules, its other keys pass unchanged."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import pandas as pd

from airflow_provider_gravity.conversions.cells import LIST_TYPES

#: Keys of the pixel's object that may hold plaintext PII; matched whatever their case or padding.
PII_KEYS = ("em", "ph", "fn", "ln")


def split_pixel_pii(
    objects: Sequence[dict[Any, Any] | None],
) -> tuple[list[dict[Any, Any] | None], pd.DataFrame | None]:
    """
    Take the PII keys out of each row's pixel object.

    :param objects: each row's ``user_data`` object (already parsed), or ``None``.
    :return: the objects without their PII keys, and a frame with one column per PII key found (each cell as
        the pixel gave it: a value or a list; several spellings of ``em`` or ``ph`` are joined in a list), or ``None``
        when no object holds a PII key. Neither is ever logged: the frame holds plaintext.
    """
    if not any(objects):  # no pixel object on any row, nearly always: nothing to take out
        return list(objects), None
    found: dict[str, list[Any]] = {}
    rest: list[dict[Any, Any] | None] = []
    for row, pixel in enumerate(objects):
        if not pixel:
            rest.append(pixel)
            continue
        kept: dict[Any, Any] = {}
        for key, value in pixel.items():
            name = _key_name(key)
            if name not in PII_KEYS:
                kept[key] = value
                continue
            column = found.setdefault(name, [None] * len(objects))
            if column[row] is None:
                column[row] = value
            elif name in ("em", "ph"):  # list keys: every spelling counts; a name keeps its first spelling
                column[row] = [*_as_list(column[row]), *_as_list(value)]
        rest.append(kept)
    if not found:
        return rest, None
    return rest, pd.DataFrame({name: pd.Series(cells, dtype=object) for name, cells in found.items()})


def _key_name(key: Any) -> Any:
    """Return a key as Gravity would read it: case, padding and invisible format characters do not hide a PII key."""
    if not isinstance(key, str):
        return key
    return "".join(c for c in key if unicodedata.category(c) != "Cf" and not c.isspace()).lower()


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, LIST_TYPES) else [value]
