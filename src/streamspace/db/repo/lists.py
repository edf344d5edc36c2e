"""Lists bound to ``IN (...)``: a few lengths, so a few statement texts.

An expanding parameter renders one placeholder per value, so every list length is a
different statement, which the driver prepares again on every pooled connection (and
evicts again from its cache). Padding a list to the next power of two (repeating its last
value, which changes nothing in an ``IN``) keeps that to a handful of texts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

Value = TypeVar("Value")


def padded(values: Collection[Value]) -> list[Value]:
    """``values`` as a list whose length is a power of two (the last value repeated)."""
    items = list(values)
    if not items:
        return items
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[-1]] * (size - len(items))
