"""A short-lived, per-replica cache of login tokens, so most requests skip a database query.

Entries live ``ttl`` seconds: a logout on another replica, or a deleted user, takes effect
within that time everywhere (at once on the replica that handled the logout).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import make_transient_to_detached

from streamspace.db.models import User

_COLUMNS = ("id", "username", "password_hash", "role", "created_at")


class TokenCache:
    def __init__(self, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, token_digest: str) -> User | None:
        """A fresh detached ``User`` for a cached token (each caller gets its own object)."""
        entry = self._entries.get(token_digest)
        if entry is None:
            return None
        expires, values = entry
        if time.monotonic() > expires:
            del self._entries[token_digest]
            return None
        user = User(**values)
        make_transient_to_detached(user)
        return user

    def put(self, token_digest: str, user: User) -> None:
        values = {column: getattr(user, column) for column in _COLUMNS}
        self._entries[token_digest] = (time.monotonic() + self._ttl, values)
        self._entries.move_to_end(token_digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, token_digest: str) -> None:
        self._entries.pop(token_digest, None)
