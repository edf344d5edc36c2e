"""Building a Redis client from settings (URL, host/port, or Sentinel): the control plane's hub
and the agent's leader election both connect through here."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

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
