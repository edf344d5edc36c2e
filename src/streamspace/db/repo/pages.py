"""Keyset pagination of every list: pages of ``limit`` rows after an opaque cursor.

A list is ordered by a unique key (``(created_at, id)`` newest first, a name, an id); the
cursor holds the key of the last row handed out, and the next page is the rows strictly
after it in that order. Unlike ``OFFSET``, rows inserted meanwhile neither shift a page nor
appear twice, and a deep page costs what the first one does (the key's index is walked from
the cursor). A cursor is the list's name and key values as base64url JSON: opaque to
clients, checked on the way back in (:class:`BadCursor`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_

MAX_LIMIT = 500
"""Rows per page at most."""
DEFAULT_LIMIT = 100
MAX_CURSOR = 512
"""Characters in a cursor at most (the longest key, a 255-character id, fits)."""

Row = TypeVar("Row")
KeyValue = datetime | int | str
Kind = type[datetime] | type[int] | type[str]


class BadCursor(ValueError):
    """A cursor this list did not hand out (another list's, or spoilt): answered with 422."""


@dataclass(frozen=True)
class PageRequest:
    """Which page a client asked for: up to ``limit`` rows after ``cursor`` (none: the first)."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of a list, and the cursor of the next (``None``: this was the last)."""

    items: list[Row]
    next: str | None = None


def encode(name: str, values: Sequence[KeyValue]) -> str:
    """The cursor after the row whose key is ``values`` in the list ``name``."""
    plain = [name, *(v.isoformat() if isinstance(v, datetime) else v for v in values)]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(name: str, cursor: str, kinds: Sequence[Kind]) -> tuple[KeyValue, ...]:
    """The key values in a cursor of the list ``name``; :class:`BadCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        plain = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor("not a cursor: pass on the one from the Link header") from None
    if not isinstance(plain, list) or len(plain) != len(kinds) + 1 or plain[0] != name:
        raise BadCursor("a cursor of another list: pass on the one from this list's Link header")
    return tuple(_value(value, kind) for value, kind in zip(plain[1:], kinds, strict=True))


def _value(value: Any, kind: Kind) -> KeyValue:
    if kind is datetime and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    integer = isinstance(value, int) and not isinstance(value, bool)
    if (kind is int and integer) or (kind is str and isinstance(value, str)):
        return value  # type: ignore[no-any-return]
    raise BadCursor("a spoilt cursor: pass on the one from the Link header unchanged")


@dataclass(frozen=True)
class Key:
    """One column of a list's order and the Python type of its values."""

    column: Any
    """A mapped column (``Session.created_at``)."""
    kind: Kind


class Keyset:
    """The order of one list (all keys ascending, or all descending) and its pages."""

    def __init__(self, name: str, *keys: Key, descending: bool = False) -> None:
        self.name = name
        self.keys = keys
        self.descending = descending

    def order_by(self) -> list[Any]:
        return [k.column.desc() if self.descending else k.column.asc() for k in self.keys]

    def after(self, values: Sequence[KeyValue]) -> ColumnElement[bool]:
        """Rows strictly after the key ``values`` in this order.

        Spelt ``a <= x AND (a < x OR (a = x AND b < y))`` (for descending): the first
        comparison bounds the index scan, so a deep page starts where the cursor is.
        """
        columns = [key.column for key in self.keys]

        def beyond(column: Any, value: KeyValue) -> ColumnElement[bool]:
            return column < value if self.descending else column > value  # type: ignore[no-any-return]

        clause = beyond(columns[-1], values[-1])
        for column, value in zip(reversed(columns[:-1]), reversed(values[:-1]), strict=True):
            clause = or_(beyond(column, value), and_(column == value, clause))
        first, start = columns[0], values[0]
        bound = first <= start if self.descending else first >= start
        return and_(bound, clause)

    def decode(self, cursor: str) -> tuple[KeyValue, ...]:
        return decode(self.name, cursor, [key.kind for key in self.keys])

    def select(self, query: Select[Any], page: PageRequest) -> Select[Any]:
        """``query`` limited to the requested page (plus one row, to tell if more follow)."""
        if page.cursor is not None:
            query = query.where(self.after(self.decode(page.cursor)))
        return query.order_by(*self.order_by()).limit(page.limit + 1)

    def page(
        self, rows: Sequence[Row], page: PageRequest, key: Callable[[Row], Sequence[KeyValue]]
    ) -> Page[Row]:
        """The page from the rows of :meth:`select`; ``key`` gives a row's key values."""
        items = list(rows[: page.limit])
        if len(rows) <= page.limit:
            return Page(items)
        return Page(items, encode(self.name, key(items[-1])))
