"""A short-lived, per-replica cache of tokens (login and API), so most requests skip a
database query.

It never lets a dead token through: an entry lasts ``ttl`` seconds but never past the token's
``expires_at``, and a logout or revocation drops it at once everywhere: here directly, on
other replicas through the hub's broadcast (Redis pub/sub, ``tokens:revoked``). A change to a
user (disabled, deleted, role or password changed) drops every cached token of that user the
same way (the message ``user:<id>``). While that channel is not known to work (Redis down, not
yet subscribed) other replicas' revocations could be missed, so the shared cache is bypassed
and every request asks the database.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from streamspace import names
from streamspace.config import ApiSettings
from streamspace.controlplane.hub import AgentHub, SharedStateUnavailable
from streamspace.db.models import User, utcnow
from streamspace.db.repo.users import detached_user

log = logging.getLogger(__name__)

_COLUMNS = (
    "id",
    "username",
    "password_hash",
    "role",
    "created_at",
    "disabled_at",
    "must_change_password",
)


class TokenCache:
    """The in-process cache (one replica: every logout happens here)."""

    def __init__(
        self,
        *,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._revocations = 0
        """Counts forgets: a lookup that overlapped one must not cache what it read."""

    @property
    def usable(self) -> bool:
        """Whether cached entries may be trusted now."""
        return True

    def get(self, token_digest: str) -> User | None:
        """A fresh detached ``User`` for a cached token (each caller gets its own object)."""
        if not self.usable:
            return None
        entry = self._entries.get(token_digest)
        if entry is None:
            return None
        deadline, values = entry
        if self._clock() >= deadline:
            del self._entries[token_digest]
            return None
        return detached_user(values)

    def ticket(self) -> int:
        """Taken before reading a token from the database, handed back to :meth:`put`."""
        return self._revocations

    def put(self, token_digest: str, user: User, *, expires_at: datetime, ticket: int) -> None:
        """Cache ``user`` for ``ttl`` seconds, but not past the token's ``expires_at``.

        Skipped when a revocation arrived since ``ticket`` was taken: the row read may be the
        one a logout deleted just after.
        """
        if not self.usable or ticket != self._revocations:
            return
        left = (expires_at - utcnow()).total_seconds()
        deadline = self._clock() + min(self._ttl, left)
        self._entries[token_digest] = (deadline, {c: getattr(user, c) for c in _COLUMNS})
        self._entries.move_to_end(token_digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, token_digest: str) -> None:
        self._revocations += 1
        self._entries.pop(token_digest, None)

    def forget_user(self, user_id: str) -> None:
        """Drop every cached token of one user (a scan: user changes are rare)."""
        self._revocations += 1
        for token_digest in [d for d, (_, v) in self._entries.items() if v["id"] == user_id]:
            del self._entries[token_digest]

    def clear(self) -> None:
        self._revocations += 1
        self._entries.clear()

    async def revoke(self, token_digest: str) -> None:
        """The token was deleted from the database (logout): drop every cached copy."""
        self.forget(token_digest)

    async def revoke_user(self, user_id: str) -> None:
        """The user changed in the database: drop every cached token of theirs, everywhere."""
        self.forget_user(user_id)


class SharedTokenCache(TokenCache):
    """The cache of one of several replicas: revocations travel through the hub's broadcast
    (a :class:`~streamspace.controlplane.hub.Topic` of it)."""

    def __init__(self, *, hub: AgentHub, ttl: float = 5.0) -> None:
        super().__init__(ttl=ttl)
        self._hub = hub
        """Its view of Redis counts too (it notices an outage on its own connections)."""
        self._listening = False
        hub.subscribe(names.TOKENS_REVOKED_CHANNEL, self)

    @property
    def usable(self) -> bool:
        return self._listening and self._hub.shared_state_up is not False

    async def revoke(self, token_digest: str) -> None:
        self.forget(token_digest)
        await self._announce(token_digest)

    async def revoke_user(self, user_id: str) -> None:
        self.forget_user(user_id)
        await self._announce(names.revoked_user_message(user_id))

    async def _announce(self, message: str) -> None:
        try:
            await self._hub.publish(names.TOKENS_REVOKED_CHANNEL, message)
        except SharedStateUnavailable as exc:
            # The others' subscriptions broke too (or soon will): they stop trusting caches.
            log.warning("could not announce a revocation to other replicas: %s", exc)
            self._stop_listening()

    def heard(self, message: str) -> None:
        user_id = names.revoked_user(message)
        if user_id is None:
            self.forget(message)
        else:
            self.forget_user(user_id)

    def listening(self, on: bool) -> None:
        if on:
            self.clear()  # whatever was revoked while we were deaf is gone
            self._listening = True
        else:
            self._stop_listening()

    def _stop_listening(self) -> None:
        self._listening = False
        self.clear()  # revocations may be missed from now on


def create_token_cache(settings: ApiSettings, hub: AgentHub) -> TokenCache:
    """The shared cache with the Redis hub, the in-process one otherwise."""
    if not settings.agenthub_redis_enabled:
        return TokenCache()
    return SharedTokenCache(hub=hub)
