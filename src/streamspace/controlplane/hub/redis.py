"""The Redis-backed AgentHub: many replicas, one registry, a doorbell channel per replica.

Keys (Redis DB 1 by default, names in :mod:`streamspace.names`): ``agent:<id>:pod`` holds
the POD_NAME of the agent's replica and ``agent:<id>:connected`` the id of its current
connection; both expire unless heartbeats renew them, and are re-created if Redis lost
them. Removal is compare-and-delete, so a replica never removes a mapping that now points
to a newer connection elsewhere. ``pod:<POD_NAME>:alive`` tells others this replica lives.

Redis is only ever a doorbell: while it is unreachable the hub keeps working locally and
commands still reach agents through the dispatcher's database poll (degraded, logged,
shown in ``/readyz`` and ``streamspace_redis_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamspace import names
from streamspace.controlplane import metrics
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.hub.base import AgentHub, Cut, Parcel
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


class RedisAgentHub(AgentHub):
    """AgentHub for several replicas sharing one Redis (``AGENTHUB_REDIS_ENABLED=true``)."""

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
        super().__init__(replica=replica)
        self._address = address
        """Advertised as ``pod:<POD_NAME>:address`` (other replicas relay VNC tunnels here)."""
        self._redis = redis
        self._key_ttl = max(1, round(key_ttl))
        self._alive_ttl = max(1, round(alive_ttl))
        self._where = where
        self._channel = names.pod_commands_channel(replica)
        self._up = False
        self._tasks: list[asyncio.Task[None]] = []
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def shared_state_up(self) -> bool:
        return self._up

    async def start(self) -> None:
        log.info("Initializing Redis for AgentHub multi-pod support... (%s)", self._where)
        try:
            await self._redis.ping()
            self._set_up(True)
            log.info("AgentHub Redis connected - multi-pod support enabled")
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
        log.info("[AgentHub] Redis enabled for pod: %s", self.replica)
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="agenthub-subscriber"),
            asyncio.create_task(self._keep_alive_forever(), name="agenthub-keepalive"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(
                names.pod_alive_key(self.replica), names.pod_address_key(self.replica)
            )
        await self._redis.aclose()

    async def register(self, connection: ConnectedAgent) -> ConnectedAgent | None:
        replaced = await super().register(connection)
        agent_id = connection.agent_id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(names.agent_pod_key(agent_id), self.replica, ex=self._key_ttl)
                pipe.set(
                    names.agent_connected_key(agent_id),
                    connection.connection_id,
                    ex=self._key_ttl,
                )
                await pipe.execute()
            log.info("[AgentHub] Stored agent %s → pod %s mapping in Redis", agent_id, self.replica)
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
        return replaced

    async def unregister(self, connection: ConnectedAgent) -> bool:
        current = await super().unregister(connection)
        try:
            await self._release(
                keys=self._keys(connection.agent_id), args=[connection.connection_id]
            )
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
        return current

    async def refresh(self, connection: ConnectedAgent) -> bool:
        if not await super().refresh(connection):
            return False
        if not self._up:
            # Known down: a heartbeat must not wait for Redis timeouts (it would hold up
            # the agent's acks behind it); the registration is re-created once it is back.
            return True
        try:
            renewed = await self._renew(
                keys=self._keys(connection.agent_id),
                args=[connection.connection_id, self.replica, self._key_ttl],
            )
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return True  # cannot tell; the registration is re-created once Redis is back
        return bool(renewed)

    async def ring(self, agent_id: str, parcel: Parcel | None = None) -> bool:
        if self._ring_local(agent_id, parcel):
            return True
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
            pod_name = pod.decode() if isinstance(pod, bytes) else str(pod)
            message = agent_id if parcel is None else json.dumps(parcel)
            heard = await self._redis.publish(names.pod_commands_channel(pod_name), message)
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            metrics.DOORBELLS.labels("error").inc()
            return False
        # Nobody listening is NOT delivery: the row stays (or, for a parcel, goes back to)
        # pending for the poll to find.
        metrics.DOORBELLS.labels("delivered" if heard else "lost").inc()
        return bool(heard)

    async def cut(self, cut: Cut) -> None:
        await self._cut_here(cut)  # here at once, even while Redis is down
        if not self._up:
            log.warning("Redis unavailable: other replicas keep their tunnels of %s open", cut)
            return
        try:
            await self._redis.publish(names.TUNNEL_CUTS_CHANNEL, json.dumps(cut.to_json()))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            log.warning("could not tell the other replicas to close %s: %s", cut, exc)

    async def owner_of(self, agent_id: str) -> str | None:
        if agent_id in self._local:
            return self.replica
        try:
            pod = await self._redis.get(names.agent_pod_key(agent_id))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None
        return None if pod is None else pod.decode() if isinstance(pod, bytes) else str(pod)

    async def address_of(self, replica: str) -> str | None:
        try:
            address = await self._redis.get(names.pod_address_key(replica))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None
        if address is None:
            return None
        return address.decode() if isinstance(address, bytes) else str(address)

    async def replica_alive(self, replica: str) -> bool | None:
        if replica == self.replica:
            return True
        try:
            return bool(await self._redis.exists(names.pod_alive_key(replica)))
        except (RedisError, OSError) as exc:
            self._set_up(False, exc)
            return None

    def _keys(self, agent_id: str) -> list[str]:
        return [names.agent_pod_key(agent_id), names.agent_connected_key(agent_id)]

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
        metrics.REDIS_UP.labels(self.replica).set(1 if up else 0)

    async def _subscribe_forever(self) -> None:
        """Listen on this replica's doorbell channel; resubscribe after any Redis failure."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel, names.TUNNEL_CUTS_CHANNEL)
                    log.info(
                        "[AgentHub] Successfully subscribed to Redis channel: %s", self._channel
                    )
                    self._set_up(True)
                    await self._renew_all()  # Redis may have lost our keys (restart)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        if _text(message["channel"]) == names.TUNNEL_CUTS_CHANNEL:
                            await self._heard_cut(message["data"])
                        else:
                            self._heard(message["data"])
            except (RedisError, OSError) as exc:
                self._set_up(False, exc)
            await asyncio.sleep(RECONNECT_DELAY)

    def _heard(self, data: bytes | str) -> None:
        """A doorbell on this replica's channel: an agent id, or a parcel (JSON object),
        decoded here once for the dispatcher."""
        text = data.decode() if isinstance(data, bytes) else data
        if not text.startswith("{"):
            self._ring_local(text)
            return
        try:
            parcel = json.loads(text)
            agent_id = parcel["agent_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed parcel on %s", self._channel)
            return
        if isinstance(agent_id, str):
            self._ring_local(agent_id, parcel)

    async def _heard_cut(self, data: bytes | str) -> None:
        """A cut another replica (or this one) broadcast; applying it twice is harmless."""
        try:
            cut = Cut.from_json(json.loads(_text(data)))
        except ValueError:
            log.warning("ignoring a malformed cut on %s", names.TUNNEL_CUTS_CHANNEL)
            return
        try:
            await self._cut_here(cut)
        except Exception:  # never the subscriber's end (nor a reason to think Redis is down)
            log.exception("could not apply %s", cut)

    async def _keep_alive_forever(self) -> None:
        """Renew the liveness key and every local registration (the reconcile loop of the
        registry: what should be is computed from this replica's live connections)."""
        while True:
            try:
                await self._redis.set(names.pod_alive_key(self.replica), "1", ex=self._alive_ttl)
                if self._address:
                    await self._redis.set(
                        names.pod_address_key(self.replica), self._address, ex=self._alive_ttl
                    )
                await self._renew_all()
            except (RedisError, OSError) as exc:
                self._set_up(False, exc)
            await asyncio.sleep(self._alive_ttl / 3)

    async def _renew_all(self) -> None:
        """Renew every local registration, pipelined (one round trip per batch, not per
        agent); close those a newer connection elsewhere has taken over."""
        current = []
        for connection in self.local_connections():
            if await super().refresh(connection):  # (no super() in a comprehension)
                current.append(connection)
        for start in range(0, len(current), RENEW_BATCH):
            batch = current[start : start + RENEW_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection in batch:
                    await self._renew(
                        keys=self._keys(connection.agent_id),
                        args=[connection.connection_id, self.replica, self._key_ttl],
                        client=pipe,
                    )
                renewed = await pipe.execute()
            for connection, kept in zip(batch, renewed, strict=True):
                if not kept:
                    log.info(
                        "agent %s connected elsewhere since; closing here", connection.agent_id
                    )
                    await connection.close(CloseCode.REPLACED, "replaced by a newer connection")


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data
