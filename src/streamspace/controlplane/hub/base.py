"""The AgentHub contract: which agents are connected where, and how to reach them."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from streamspace.controlplane.agents.connection import ConnectedAgent

Parcel = dict[str, Any]
"""A command handed over with a doorbell (a JSON object naming its ``agent_id``)."""
DoorbellHandler = Callable[[str, Parcel | None], None]
"""Called when an agent connected HERE has commands waiting: with the agent id and, when
the ringer handed a command over with the doorbell, that command (the ringer's parcel)."""


@dataclass(frozen=True)
class Cut:
    """End, on every replica, what an agent or a session has open: an agent's control
    connection and VNC tunnels (``agent_id``), or a session's VNC tunnels (``session_id``);
    each is closed with ``code`` and ``reason``."""

    code: int
    reason: str
    agent_id: str | None = None
    session_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Cut:
        """Raises ValueError for anything but a cut as ``to_json`` writes it."""
        if not isinstance(data, dict) or set(data) != {"code", "reason", "agent_id", "session_id"}:
            raise ValueError("not a cut")
        names = (data["agent_id"], data["session_id"])
        if (
            not isinstance(data["code"], int)
            or not isinstance(data["reason"], str)
            or not all(name is None or isinstance(name, str) for name in names)
        ):
            raise ValueError("not a cut")
        return cls(**data)


CutHandler = Callable[[Cut], object]
"""Closes this replica's open VNC tunnels that a :class:`Cut` names."""


class AgentHub(abc.ABC):
    """Presence of agents across replicas.

    Registrations are keyed by connection: when an agent connects twice, the newer
    connection replaces the older, and the older one's later ``unregister`` is a no-op.
    A doorbell is only a hint: losing one delays a command until the dispatcher's poll,
    never loses it (the database row is the truth).
    """

    def __init__(self, *, replica: str) -> None:
        self.replica = replica
        self._local: dict[str, ConnectedAgent] = {}
        self._on_doorbell: DoorbellHandler | None = None
        self._on_cut: CutHandler | None = None

    def on_doorbell(self, handler: DoorbellHandler) -> None:
        self._on_doorbell = handler

    def on_cut(self, handler: CutHandler) -> None:
        self._on_cut = handler

    async def cut(self, cut: Cut) -> None:
        """Apply ``cut`` here at once and on every other replica (a broadcast, for hubs that
        share state); a replica that misses it still refuses new tunnels and connections,
        which check the database."""
        await self._cut_here(cut)

    async def _cut_here(self, cut: Cut) -> None:
        if self._on_cut is not None:
            self._on_cut(cut)
        if cut.agent_id is not None and (connection := self._local.get(cut.agent_id)):
            await connection.close(cut.code, cut.reason)

    def local(self, agent_id: str) -> ConnectedAgent | None:
        """The connection of an agent if it is connected to this replica."""
        return self._local.get(agent_id)

    def local_connections(self) -> list[ConnectedAgent]:
        return list(self._local.values())

    async def register(self, connection: ConnectedAgent) -> ConnectedAgent | None:
        """Make ``connection`` the agent's current one; returns the one it replaced."""
        previous = self._local.get(connection.agent_id)
        self._local[connection.agent_id] = connection
        return previous if previous is not connection else None

    async def unregister(self, connection: ConnectedAgent) -> bool:
        """Forget ``connection`` if it is still current; ``True`` if it was."""
        if self._local.get(connection.agent_id) is not connection:
            return False
        del self._local[connection.agent_id]
        return True

    def _ring_local(self, agent_id: str, parcel: Parcel | None = None) -> bool:
        if agent_id not in self._local or self._on_doorbell is None:
            return False
        self._on_doorbell(agent_id, parcel)
        return True

    @abc.abstractmethod
    async def ring(self, agent_id: str, parcel: Parcel | None = None) -> bool:
        """Tell the replica holding ``agent_id`` that it has commands; ``True`` if one heard.

        ``parcel`` (a JSON-able object naming ``agent_id``) travels with the doorbell: a command
        the ringer already marked ``sent``, for the holder to send without claiming it.
        """

    async def refresh(self, connection: ConnectedAgent) -> bool:
        """Renew the registration on a heartbeat; ``False`` if a newer connection of the
        agent (on any replica) has taken over, so this one must close."""
        return self._local.get(connection.agent_id) is connection

    async def owner_of(self, agent_id: str) -> str | None:
        """The replica (POD_NAME) the agent is connected to, if known."""
        return self.replica if agent_id in self._local else None

    async def address_of(self, replica: str) -> str | None:
        """The internal base URL a replica advertises (for tunnel relays), if known."""
        return None

    async def replica_alive(self, replica: str) -> bool | None:
        """Whether a replica is running; ``None`` when this hub cannot tell."""
        return True if replica == self.replica else None

    @property
    def shared_state_up(self) -> bool | None:
        """Whether the shared registry (Redis) is reachable; ``None`` without one."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to shared infrastructure, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release shared infrastructure, if any."""
