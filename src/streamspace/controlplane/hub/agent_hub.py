"""The AgentHub: which agents are connected where, and how to reach them.

It joins this replica's :class:`LocalConnections` with a cross-replica :class:`Registry`
(:class:`NoRegistry` for a single replica). Doorbells for agents connected here land in
:attr:`AgentHub.doorbells`, the queue the dispatcher awaits. A doorbell is only a hint:
losing one delays a command until the dispatcher's poll, never loses it (the database row
is the truth).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Protocol

from pydantic import ValidationError

from streamspace import names
from streamspace.aio import unless_stopped
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.hub.connections import LocalConnections
from streamspace.controlplane.hub.messages import Cut, Ring
from streamspace.controlplane.hub.registry import NoRegistry, Registry, SharedStateUnavailable
from streamspace.protocol import Parcel

log = logging.getLogger(__name__)

CutHandler = Callable[[Cut], object]
"""Closes this replica's open VNC tunnels that a :class:`Cut` names."""


class Topic(Protocol):
    """A consumer of one broadcast channel (e.g. the login-token cache's revocations)."""

    def heard(self, message: str) -> None: ...

    def listening(self, on: bool) -> None:
        """Messages arrive from now on (``True``), or may be missed from now on (``False``)."""


class AgentHub:
    """Presence of agents across replicas (the facade routes, services and the dispatcher use).

    Registrations are keyed by connection: when an agent connects twice, the newer
    connection replaces the older, and the older one's later ``unregister`` is a no-op.
    """

    def __init__(self, *, replica: str, registry: Registry | None = None) -> None:
        self.replica = replica
        self.connections = LocalConnections()
        self.doorbells: asyncio.Queue[Ring] = asyncio.Queue()
        """Doorbells for agents connected here, for the dispatcher."""
        self._registry: Registry = registry or NoRegistry()
        self._doorbell_channel = names.pod_commands_channel(replica)
        self._on_cut: CutHandler | None = None
        self._topics: dict[str, Topic] = {}

    def on_cut(self, handler: CutHandler) -> None:
        """Set what closes this replica's tunnels for a cut (before :meth:`run`)."""
        self._on_cut = handler

    def subscribe(self, channel: str, topic: Topic) -> None:
        """Hand every broadcast on ``channel`` to ``topic`` (before :meth:`run`)."""
        self._topics[channel] = topic

    @property
    def shared_state_up(self) -> bool | None:
        """Whether the shared registry (Redis) is reachable; ``None`` without one."""
        return self._registry.up

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the shared registry, if any."""
        await self._registry.start()

    async def run(self, stop: asyncio.Event) -> None:
        """The registry's background work (subscription, keep-alive) until ``stop``."""
        await unless_stopped(stop, self._registry.run(self))

    async def close(self) -> None:
        """Withdraw this replica from the shared registry, if any."""
        await self._registry.close()

    # --- connections ------------------------------------------------------------------

    def local(self, agent_id: str) -> ConnectedAgent | None:
        """The connection of an agent if it is connected to this replica."""
        return self.connections.get(agent_id)

    def local_connections(self) -> list[ConnectedAgent]:
        return self.connections.all()

    async def register(self, connection: ConnectedAgent) -> ConnectedAgent | None:
        """Make ``connection`` the agent's current one; returns the one it replaced."""
        replaced = self.connections.register(connection)
        await self._registry.register(connection.agent_id, connection.connection_id)
        return replaced

    async def unregister(self, connection: ConnectedAgent) -> bool:
        """Forget ``connection`` if it is still current; ``True`` if it was."""
        current = self.connections.unregister(connection)
        await self._registry.release(connection.agent_id, connection.connection_id)
        return current

    async def refresh(self, connection: ConnectedAgent) -> bool:
        """Renew the registration on a heartbeat; ``False`` if a newer connection of the
        agent (on any replica) has taken over, so this one must close."""
        if not self.connections.is_current(connection):
            return False
        return await self._registry.renew(connection.agent_id, connection.connection_id)

    # --- reaching agents and replicas -------------------------------------------------

    async def ring(self, agent_id: str, parcel: Parcel | None = None) -> bool:
        """Tell the replica holding ``agent_id`` that it has commands; ``True`` if one heard.

        ``parcel`` travels with the doorbell: a command the ringer already marked ``sent``,
        for the holder to send without claiming it.
        """
        if agent_id in self.connections:
            self.doorbells.put_nowait(Ring(agent_id, parcel))
            return True
        message = agent_id if parcel is None else parcel.model_dump_json()
        return await self._registry.ring(agent_id, message)

    async def cut(self, cut: Cut) -> None:
        """Apply ``cut`` here at once and on every other replica (a broadcast, for hubs that
        share state); a replica that misses it still refuses new tunnels and connections,
        which check the database."""
        await self._cut_here(cut)  # here at once, even while Redis is down
        up = self._registry.up
        if up is None:
            return
        if not up:
            log.warning("Redis unavailable: other replicas keep their tunnels of %s open", cut)
            return
        try:
            await self._registry.broadcast(names.TUNNEL_CUTS_CHANNEL, json.dumps(cut.to_json()))
        except SharedStateUnavailable as exc:
            log.warning("could not tell the other replicas to close %s: %s", cut, exc)

    async def publish(self, channel: str, message: str) -> None:
        """Broadcast to the other replicas' :meth:`subscribe` topics; raises
        :class:`SharedStateUnavailable`."""
        await self._registry.broadcast(channel, message)

    async def owner_of(self, agent_id: str) -> str | None:
        """The replica (POD_NAME) the agent is connected to, if known."""
        if agent_id in self.connections:
            return self.replica
        return await self._registry.owner_of(agent_id)

    async def address_of(self, replica: str) -> str | None:
        """The internal base URL a replica advertises (for tunnel relays), if known."""
        return await self._registry.address_of(replica)

    async def replica_alive(self, replica: str) -> bool | None:
        """Whether a replica is running; ``None`` when this hub cannot tell."""
        if replica == self.replica:
            return True
        return await self._registry.replica_alive(replica)

    # --- what the registry feeds (registry.Listener) ------------------------------------

    def channels(self) -> list[str]:
        return [self._doorbell_channel, names.TUNNEL_CUTS_CHANNEL, *self._topics]

    async def heard(self, channel: str, message: str) -> None:
        if channel == self._doorbell_channel:
            self._heard_doorbell(message)
        elif channel == names.TUNNEL_CUTS_CHANNEL:
            await self._heard_cut(message)
        elif topic := self._topics.get(channel):
            topic.heard(message)

    def listening(self, on: bool) -> None:
        for topic in self._topics.values():
            topic.listening(on)

    def _heard_doorbell(self, message: str) -> None:
        """An agent id, or a parcel (a JSON object naming its agent)."""
        if not message.startswith("{"):
            self._ring_here(message)
            return
        try:
            data = json.loads(message)
            agent_id = data["agent_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed parcel on %s", self._doorbell_channel)
            return
        if not isinstance(agent_id, str):
            return
        try:
            parcel = Parcel.model_validate(data)
        except ValidationError as exc:
            log.warning("ignoring a malformed parcel for agent %s: %s", agent_id, exc)
            return  # still ``sent``: the ack timeout sends it again
        self._ring_here(agent_id, parcel)

    def _ring_here(self, agent_id: str, parcel: Parcel | None = None) -> None:
        if agent_id in self.connections:
            self.doorbells.put_nowait(Ring(agent_id, parcel))

    async def _heard_cut(self, message: str) -> None:
        """A cut another replica (or this one) broadcast; applying it twice is harmless."""
        try:
            cut = Cut.from_json(json.loads(message))
        except ValueError:
            log.warning("ignoring a malformed cut on %s", names.TUNNEL_CUTS_CHANNEL)
            return
        try:
            await self._cut_here(cut)
        except Exception:  # never the subscriber's end (nor a reason to think Redis is down)
            log.exception("could not apply %s", cut)

    async def _cut_here(self, cut: Cut) -> None:
        if self._on_cut is not None:
            self._on_cut(cut)
        if cut.agent_id is not None and (connection := self.connections.get(cut.agent_id)):
            await connection.close(cut.code, cut.reason)
