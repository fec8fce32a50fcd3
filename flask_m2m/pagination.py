"""Keyset pagination: opaque cursors naming the last row of a page, so pages stay stable."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidClientData


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows and the cursor of the next page (None on the last page)."""

    items: list[Any]
    next_cursor: str | None


def fetch_page(session: Any, query: Any, limit: int, cursor_of: Callable[[Any], list[Any]]) -> Page:
    """Run ``query`` (already ordered and filtered) for one page of ``limit`` rows.

    :param cursor_of: the sort key of a row, as the values of the next page's cursor.
    """
    rows = list(session.execute(query.limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(cursor_of(rows[-1])) if more else None)


def encode_cursor(values: list[Any]) -> str:
    """An opaque cursor holding ``values`` (the sort key of the last row shown)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The values of a cursor made by :func:`encode_cursor`.

    :raises InvalidClientData: (field ``cursor``) if it is not one.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidClientData("Not a cursor of this list.", field="cursor")
    if not all(
        (isinstance(v, str) and v.isprintable()) or (isinstance(v, int) and not isinstance(v, bool))
        for v in values
    ):
        raise InvalidClientData("Not a cursor of this list.", field="cursor")
    return values
