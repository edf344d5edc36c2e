"""The Redis registry: many replicas, one registry, a doorbell channel per replica.

Keys (Redis DB 1 by default, names in :mod:`streamspace.names`): ``agent:<id>:pod`` holds
the POD_NAME of the agent's replica and ``agent:<id>:connected`` the id of its current
connection; both expire unless heartbeats renew them, and are re-created if Redis lost
them. Removal is compare-and-delete, so a replica never removes a mapping that now points
to a newer connection elsewhere. ``pod:<POD_NAME>:alive`` tells others this replica lives.

Redis is only ever a doorbell: while it is unreachable the hub keeps working locally and
commands still reach agents through the dispatcher's database poll (degraded, logged,
shown in ``/readyz`` and ``streamspace_redis_up``).

Supervision: :meth:`RedisRegistry.run` is one task of the app's TaskGroup. Its two loops
(subscriber, keep-alive) restart themselves after a Redis or network failure, deliberately:
an outage is expected and only degrades the hub. Any other exception is logged and
re-raised, which ends the TaskGroup and so the replica: a crash is never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamspace import names
from streamspace.controlplane import metrics
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.hub.registry import Listener, SharedStateUnavailable
from streamspace.protocol import CloseCode

log = logging.getLogger(__name__)

# Renew (or re-create) the registration only while it is still ours.
_RENEW = """
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
"""
# Delete the registration only if it is still this connection's.
_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""
RECONNECT_DELAY = 1.0
RENEW_BATCH = 500
"""Registrations renewed per pipelined round trip."""


class RedisRegistry:
    """The registry of several replicas sharing one Redis (``AGENTHUB_REDIS_ENABLED=true``)."""

    def __init__(
        self,
        *,
        replica: str,
        redis: Redis,
        key_ttl: float,
        alive_ttl: float,
        where: str,
        address: str | None = None,
    ) -> None:
        self._replica = replica
        self._address = address
        """Advertised as ``pod:<POD_NAME>:address`` (other replicas relay VNC tunnels here)."""
        self._redis = redis
        self._key_ttl = max(1, round(key_ttl))
        self._alive_ttl = max(1, round(alive_ttl))
        self._where = where
        self._channel = names.pod_commands_channel(replica)
        self._up = False
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def up(self) -> bool:
        return self._up

    async def start(self) -> None:
        log.info("Initializing Redis for AgentHub multi-pod support... (%s)", self._where)
        try:
            await self._redis.ping()
            self._set_up(True)
            log.info("AgentHub Redis connected - multi-pod support enabled")
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
        log.info("[AgentHub] Redis enabled for pod: %s", self._replica)

    async def run(self, listener: Listener) -> None:
        async with asyncio.TaskGroup() as group:
            for name, loop in (
                ("subscriber", self._subscribe_forever),
                ("keepalive", self._keep_alive_forever),
            ):
                group.create_task(_loudly(name, loop, listener), name=f"agenthub-{name}")

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(
                names.pod_alive_key(self._replica), names.pod_address_key(self._replica)
            )
        await self._redis.aclose()

    async def register(self, agent_id: str, connection_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(names.agent_pod_key(agent_id), self._replica, ex=self._key_ttl)
                pipe.set(names.agent_connected_key(agent_id), connection_id, ex=self._key_ttl)
                await pipe.execute()
            log.info(
                "[AgentHub] Stored agent %s → pod %s mapping in Redis", agent_id, self._replica
            )
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)

    async def release(self, agent_id: str, connection_id: str) -> None:
        try:
            await self._release(keys=_keys(agent_id), args=[connection_id])
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)

    async def renew(self, agent_id: str, connection_id: str) -> bool:
        if not self._up:
            # Known down: a heartbeat must not wait for Redis timeouts (it would hold up
            # the agent's acks behind it); the registration is re-created once it is back.
            return True
        try:
            renewed = await self._renew(
                keys=_keys(agent_id), args=[connection_id, self._replica, self._key_ttl]
            )
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return True  # cannot tell; the registration is re-created once Redis is back
        return bool(renewed)

    async def ring(self, agent_id: str, message: str) -> bool:
        if not self._up:
            # Known down: don't make every request wait for Redis timeouts; the owner's
            # database poll delivers, and the subscriber loop notices when Redis is back.
            metrics.DOORBELLS.labels("error").inc()
            return False
        try:
            pod = await self._redis.get(names.agent_pod_key(agent_id))
            if pod is None:
                metrics.DOORBELLS.labels("no_owner").inc()
                return False
            heard = await self._redis.publish(names.pod_commands_channel(_text(pod)), message)
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            metrics.DOORBELLS.labels("error").inc()
            return False
        # Nobody listening is NOT delivery: the row stays (or, for a parcel, goes back to)
        # pending for the poll to find.
        metrics.DOORBELLS.labels("delivered" if heard else "lost").inc()
        return bool(heard)

    async def broadcast(self, channel: str, message: str) -> None:
        try:
            await self._redis.publish(channel, message)
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            raise SharedStateUnavailable(str(exc)) from exc

    async def owner_of(self, agent_id: str) -> str | None:
        try:
            pod = await self._redis.get(names.agent_pod_key(agent_id))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None
        return None if pod is None else _text(pod)

    async def address_of(self, replica: str) -> str | None:
        try:
            address = await self._redis.get(names.pod_address_key(replica))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None
        return None if address is None else _text(address)

    async def replica_alive(self, replica: str) -> bool | None:
        try:
            return bool(await self._redis.exists(names.pod_alive_key(replica)))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None

    def _set_up(self, up: bool, error: BaseException | None = None) -> None:
        if self._up and not up:
            log.warning(
                "AgentHub Redis unavailable (%s); degraded: commands reach agents by "
                "database polling until it is back",
                error,
            )
        elif up and not self._up:
            log.info("AgentHub Redis available")
        self._up = up
        metrics.REDIS_UP.labels(self._replica).set(1 if up else 0)

    async def _subscribe_forever(self, listener: Listener) -> None:
        """Listen on this replica's doorbell channel and the broadcasts; resubscribe after
        any Redis failure."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(*listener.channels())
                    log.info(
                        "[AgentHub] Successfully subscribed to Redis channel: %s", self._channel
                    )
                    self._set_up(True)
                    listener.listening(True)
                    # Redis may have lost our keys (restart).
                    await self._renew_all(listener.local_connections())
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await listener.heard(_text(message["channel"]), _text(message["data"]))
            except (RedisError, OSError) as exc:
                self._set_up(False, exc)
            listener.listening(False)
            await asyncio.sleep(RECONNECT_DELAY)

    async def _keep_alive_forever(self, listener: Listener) -> None:
        """Renew the liveness key and every local registration (the reconcile loop of the
        registry: what should be is computed from this replica's live connections)."""
        while True:
            try:
                await self._redis.set(names.pod_alive_key(self._replica), "1", ex=self._alive_ttl)
                if self._address:
                    await self._redis.set(
                        names.pod_address_key(self._replica), self._address, ex=self._alive_ttl
                    )
                await self._renew_all(listener.local_connections())
            except (RedisError, OSError) as exc:
                self._set_up(False, exc)
            await asyncio.sleep(self._alive_ttl / 3)

    async def _renew_all(self, connections: list[ConnectedAgent]) -> None:
        """Renew these registrations, pipelined (one round trip per batch, not per agent);
        close those a newer connection elsewhere has taken over."""
        for start in range(0, len(connections), RENEW_BATCH):
            batch = connections[start : start + RENEW_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection in batch:
                    await self._renew(
                        keys=_keys(connection.agent_id),
                        args=[connection.connection_id, self._replica, self._key_ttl],
                        client=pipe,
                    )
                renewed = await pipe.execute()
            for connection, kept in zip(batch, renewed, strict=True):
                if not kept:
                    log.info(
                        "agent %s connected elsewhere since; closing here", connection.agent_id
                    )
                    await connection.close(CloseCode.REPLACED, "replaced by a newer connection")


async def _loudly(
    name: str, loop: Callable[[Listener], Awaitable[None]], listener: Listener
) -> None:
    """Run one of the registry's loops; anything they do not handle is logged and re-raised."""
    try:
        await loop(listener)
    except Exception:
        log.exception("AgentHub %s crashed", name)
        raise


def _keys(agent_id: str) -> list[str]:
    return [names.agent_pod_key(agent_id), names.agent_connected_key(agent_id)]


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
