"""Keyset pages of long lists: the convention every paginated list endpoint follows.

A page is read ``WHERE key > last key seen ORDER BY key LIMIT limit + 1``: rows inserted
or deleted meanwhile never shift a page the way an ``OFFSET`` would, and a deep page costs
what the first one does (the key has an index). The one row past the limit only tells
whether a next page exists; the client gets the last key of this page as an opaque
``cursor`` (URL-safe base64 of a JSON array of the key's values) and hands it back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Key = list[str | int]

MAX_CURSOR = 1024
"""Characters a cursor may have (a route refuses longer ones before decoding)."""


class InvalidCursor(ValueError):
    """A cursor this server did not make (or made for another list)."""


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    next_cursor: str | None
    """Hand it back for the next page; ``None`` on the last page."""


def encode_cursor(key: Key) -> str:
    raw = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, arity: int) -> Key:
    """The key values of ``cursor``; :class:`InvalidCursor` unless it holds ``arity`` of them."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("the cursor is not one this server gave out") from None
    if (
        not isinstance(key, list)
        or len(key) != arity
        or not all(isinstance(value, str | int) and not isinstance(value, bool) for value in key)
    ):
        raise InvalidCursor("the cursor is not one this server gave out")
    return key


def page_of(rows: Sequence[Item], *, limit: int, key: Callable[[Item], Key]) -> Page[Item]:
    """The page from ``limit + 1`` rows read in key order."""
    items = list(rows[:limit])
    more = len(rows) > limit and items
    return Page(items, encode_cursor(key(items[-1])) if more else None)
