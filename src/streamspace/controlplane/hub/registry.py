"""The cross-replica registry contract (who holds which agent, which replicas live) and its
single-replica implementation.

A registry only ever speeds things up: the database rows are the truth, so a lost doorbell
delays a command until the dispatcher's poll and a missed cut leaves a tunnel open that new
connections (which check the database) would refuse.
"""

from __future__ import annotations

from typing import Protocol

from streamspace.controlplane.agents.connection import ConnectedAgent


class SharedStateUnavailable(Exception):
    """The shared registry could not be reached (the message says why)."""


class Listener(Protocol):
    """What a registry feeds while it runs: the hub of this replica."""

    def channels(self) -> list[str]:
        """The broadcast channels to subscribe to."""
        ...

    def local_connections(self) -> list[ConnectedAgent]:
        """This replica's current connections, whose registrations are kept alive."""
        ...

    async def heard(self, channel: str, message: str) -> None:
        """A message arrived on one of :meth:`channels`."""

    def listening(self, on: bool) -> None:
        """The subscription started (``True``) or broke (``False``)."""


class Registry(Protocol):
    """Registrations keyed by connection id, so that removal is compare-and-delete: a replica
    never removes a registration that now names a newer connection elsewhere."""

    @property
    def up(self) -> bool | None:
        """Whether the shared registry is reachable; ``None`` for a single replica."""
        ...

    async def start(self) -> None:
        """Connect (failing to is logged, not raised: the hub works degraded)."""

    async def run(self, listener: Listener) -> None:
        """Subscribe and keep this replica's registrations alive until cancelled."""

    async def close(self) -> None:
        """Withdraw this replica and disconnect."""

    async def register(self, agent_id: str, connection_id: str) -> None:
        """Record that ``connection_id`` of ``agent_id`` is held here."""

    async def release(self, agent_id: str, connection_id: str) -> None:
        """Remove the registration if it still names ``connection_id``."""

    async def renew(self, agent_id: str, connection_id: str) -> bool:
        """Extend (or re-create) the registration; ``False`` if a newer connection of the
        agent has taken over (``True`` when that cannot be told now)."""
        ...

    async def owner_of(self, agent_id: str) -> str | None:
        """The replica the agent is registered at, if known."""
        ...

    async def address_of(self, replica: str) -> str | None:
        """The internal base URL a replica advertises (for tunnel relays), if known."""
        ...

    async def replica_alive(self, replica: str) -> bool | None:
        """Whether another replica is running; ``None`` when this registry cannot tell."""
        ...

    async def ring(self, agent_id: str, message: str) -> bool:
        """Deliver a doorbell ``message`` to the agent's replica; ``True`` if one heard."""
        ...

    async def broadcast(self, channel: str, message: str) -> None:
        """Publish ``message`` to every replica listening on ``channel``, or raise
        :class:`SharedStateUnavailable`."""


class NoRegistry:
    """A single replica: every agent that is connected at all is connected here."""

    @property
    def up(self) -> bool | None:
        return None

    async def start(self) -> None:
        pass

    async def run(self, listener: Listener) -> None:
        pass

    async def close(self) -> None:
        pass

    async def register(self, agent_id: str, connection_id: str) -> None:
        pass

    async def release(self, agent_id: str, connection_id: str) -> None:
        pass

    async def renew(self, agent_id: str, connection_id: str) -> bool:
        return True

    async def owner_of(self, agent_id: str) -> str | None:
        return None

    async def address_of(self, replica: str) -> str | None:
        return None

    async def replica_alive(self, replica: str) -> bool | None:
        return None

    async def ring(self, agent_id: str, message: str) -> bool:
        return False

    async def broadcast(self, channel: str, message: str) -> None:
        pass
