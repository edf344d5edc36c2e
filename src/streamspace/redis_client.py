"""Building a Redis client from settings (URL, host/port, or Sentinel): the control plane's hub
and the agent's leader election both connect through here. Also the login throttle's shared
counters (:class:`LoginCounters`), so that no other control-plane module speaks Redis."""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from streamspace import names
from streamspace.config import RedisSettings

SOCKET_TIMEOUT = 2.0


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """``"h1:26379,h2:26379"`` → ``[("h1", 26379), ("h2", 26379)]``."""
    addresses = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_SENTINELS entry {item!r} is not host:port")
        addresses.append((host, int(port)))
    return addresses


def create_redis(settings: RedisSettings) -> Redis:
    """A client for the configured Redis; with Sentinel it follows the master across failovers."""
    timeout = SOCKET_TIMEOUT
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            parse_sentinels(settings.redis_sentinels),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        master: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            db=settings.redis_db,
            password=settings.redis_password,
        )
        return master
    if settings.redis_url:
        return Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def describe(settings: RedisSettings) -> str:
    """Where Redis is, for logs (never includes the password)."""
    if settings.redis_sentinels:
        return f"sentinels {settings.redis_sentinels} master {settings.redis_sentinel_master}"
    if settings.redis_url:
        return settings.redis_url.split("@")[-1]
    return f"{settings.redis_host}:{settings.redis_port}/{settings.redis_db}"


class RedisUnavailable(Exception):
    """A Redis call failed (the message says why)."""


# KEYS: failures, lock. ARGV: allowed, base ms, cap ms, memory s. The lock's TTL is the
# lock, so every replica reads the same remaining time (Redis's clock, not ours).
_FAIL = """
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local allowed = tonumber(ARGV[1])
if failures >= allowed then
  local ms = tonumber(ARGV[2]) * 2 ^ math.min(failures - allowed, 64)
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(math.min(ms, tonumber(ARGV[3]))))
end
return failures
"""


class LoginCounters:
    """Failed logins per subject (``user:<name>``, ``address:<ip>``) and the locks they earn,
    shared by every replica. Every method raises :class:`RedisUnavailable` on failure."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._fail = redis.register_script(_FAIL)

    async def locked_for(self, subjects: Sequence[str]) -> list[float]:
        """Seconds each subject's lock has left (0 when it has none)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for subject in subjects:
                    pipe.pttl(names.login_lock_key(subject))
                remaining: list[int] = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc
        return [ms / 1000 if ms > 0 else 0.0 for ms in remaining]

    async def failed(self, subjects: Sequence[tuple[str, int]], *, base: float, cap: float) -> None:
        """One more failure for each ``(subject, allowed)``: past ``allowed`` failures it is
        locked for ``base`` seconds doubling per failure up to ``cap``; failures are
        forgotten ``cap`` seconds after the last one."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for subject, allowed in subjects:
                    await self._fail(
                        keys=_login_keys(subject),
                        args=[
                            allowed,
                            round(base * 1000),
                            round(cap * 1000),
                            max(1, math.ceil(cap)),
                        ],
                        client=pipe,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def forget(self, subject: str) -> None:
        """Drop the subject's failures and lock."""
        try:
            await self._redis.delete(*_login_keys(subject))
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _login_keys(subject: str) -> list[str]:
    return [names.login_failures_key(subject), names.login_lock_key(subject)]
