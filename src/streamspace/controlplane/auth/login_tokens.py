"""A short-lived, per-replica cache of login tokens, so most requests skip a database query.

It never lets a dead token through: an entry lasts ``ttl`` seconds but never past the token's
``expires_at``, and a logout drops it at once everywhere: here directly, on other replicas
through Redis pub/sub (``tokens:revoked``). While that channel is not known to work (Redis
down, not yet subscribed) other replicas' logouts could be missed, so the shared cache is
bypassed and every request asks the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import make_transient_to_detached

from streamspace import names
from streamspace.config import ApiSettings
from streamspace.controlplane.hub.base import AgentHub
from streamspace.db.models import User, utcnow
from streamspace.redis_client import create_redis

log = logging.getLogger(__name__)

_COLUMNS = ("id", "username", "password_hash", "role", "created_at")
RESUBSCRIBE_DELAY = 1.0


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
        user = User(**values)
        make_transient_to_detached(user)
        return user

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

    def clear(self) -> None:
        self._revocations += 1
        self._entries.clear()

    async def revoke(self, token_digest: str) -> None:
        """The token was deleted from the database (logout): drop every cached copy."""
        self.forget(token_digest)

    async def start(self) -> None:
        """Connect to shared infrastructure, if any."""

    async def close(self) -> None:
        """Release shared infrastructure, if any."""


class SharedTokenCache(TokenCache):
    """The cache of one of several replicas: revocations travel through Redis pub/sub."""

    def __init__(
        self, *, redis: Redis, available: Callable[[], bool | None], ttl: float = 5.0
    ) -> None:
        super().__init__(ttl=ttl)
        self._redis = redis
        self._available = available
        """The hub's view of Redis (it notices an outage on its own connections too)."""
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return self._listening and self._available() is not False

    async def revoke(self, token_digest: str) -> None:
        self.forget(token_digest)
        try:
            await self._redis.publish(names.TOKENS_REVOKED_CHANNEL, token_digest)
        except (RedisError, OSError) as exc:
            # The others' subscriptions broke too (or soon will): they stop trusting caches.
            log.warning("could not announce a logout to other replicas: %s", exc)
            self._stop_listening()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="token-revocations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    def _stop_listening(self) -> None:
        self._listening = False
        self.clear()  # revocations may be missed from now on

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(names.TOKENS_REVOKED_CHANNEL)
                    self.clear()  # whatever was revoked while we were deaf is gone
                    self._listening = True
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self.forget(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisError, OSError):
                pass  # the hub logs Redis outages; here they only switch the cache off
            self._stop_listening()
            await asyncio.sleep(RESUBSCRIBE_DELAY)


def create_token_cache(settings: ApiSettings, hub: AgentHub) -> TokenCache:
    """The shared cache with the Redis hub, the in-process one otherwise."""
    if not settings.agenthub_redis_enabled:
        return TokenCache()
    return SharedTokenCache(redis=create_redis(settings), available=lambda: hub.shared_state_up)
