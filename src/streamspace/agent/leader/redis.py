"""The Redis lease: ``SET NX PX`` to acquire; renew and release only while the value is still
our token (Lua, atomic). The epoch is ``INCR``-ed in the same script as the acquisition."""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from streamspace import names
from streamspace.agent.leader.base import Lease, LeaseUnavailable

# A missing counter (first use, or Redis lost its data) starts at the server's time in ms:
# above every epoch handed out before, so the control plane does not refuse the next leader.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000)))
end
return redis.call('INCR', KEYS[2])
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease(Lease):
    """``agent:<id>:leader`` holds the leader's random token (expires after the lease);
    ``agent:<id>:leader:epoch`` counts acquisitions and never expires."""

    def __init__(self, redis: Redis, agent_id: str, *, lease_seconds: float) -> None:
        self._redis = redis
        self._key = names.agent_leader_key(agent_id)
        self._epoch_key = names.agent_leader_epoch_key(agent_id)
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._token: str | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> int | None:
        token = secrets.token_hex(16)  # new per term: an old term can never renew
        epoch = int(await self._run(self._acquire, [self._key, self._epoch_key], token))
        if not epoch:
            return None
        self._token = token
        return epoch

    async def renew(self) -> bool:
        if self._token is None:
            return False
        return bool(await self._run(self._renew, [self._key], self._token))

    async def release(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            await self._run(self._release, [self._key], token)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: AsyncScript, keys: list[str], token: str) -> Any:
        try:
            return await script(keys=keys, args=[token, self._lease_ms])
        except (RedisError, OSError, TimeoutError) as exc:
            raise LeaseUnavailable(f"Redis: {exc}") from exc
