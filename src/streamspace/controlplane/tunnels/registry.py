"""Tunnels of this replica: those waiting for their agent to dial the data socket back, and
those open (relaying), so that revoking an agent or stopping a session closes them at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamspace.controlplane.hub import Cut
from streamspace.controlplane.tunnels.endpoints import Closed

S = TypeVar("S")


@dataclass(eq=False)
class PendingTunnel(Generic[S]):
    """One tunnel: the viewer side waits on ``socket``; the agent side, once it handed
    its socket over, waits on ``finished`` (its handler must outlive the relay)."""

    tunnel_id: str
    agent_id: str
    session_id: str
    socket: asyncio.Future[S] = field(default_factory=asyncio.Future)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self, sock: S) -> bool:
        """Hand the agent's socket to the waiting viewer; ``False`` if it gave up already."""
        if self.socket.done():
            return False
        self.socket.set_result(sock)
        return True


@dataclass(eq=False)
class LiveTunnel:
    """An open tunnel's relay; it ends with ``cut``'s close as soon as that is set."""

    agent_id: str
    session_id: str
    cut: asyncio.Future[Closed] = field(default_factory=asyncio.Future)


class TunnelRegistry(Generic[S]):
    """Per replica: ``tunnel_id`` → the tunnel waiting for its agent's data socket.

    A tunnel id is claimable once, only by the agent it was sent to, and only while its
    viewer still waits; ids are random (unguessable), so they need no other secret.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, PendingTunnel[S]] = {}
        self._live: set[LiveTunnel] = set()
        self.open_tunnels = 0

    def __len__(self) -> int:
        return len(self._waiting)

    @contextmanager
    def open(self, *, agent_id: str, session_id: str) -> Iterator[PendingTunnel[S]]:
        """Register a tunnel for the duration of the block; on exit it is forgotten, an
        agent socket that arrives later is refused and the agent's handler released."""
        tunnel: PendingTunnel[S] = PendingTunnel(
            tunnel_id=secrets.token_hex(16), agent_id=agent_id, session_id=session_id
        )
        self._waiting[tunnel.tunnel_id] = tunnel
        self.open_tunnels += 1
        try:
            yield tunnel
        finally:
            self.open_tunnels -= 1
            self._waiting.pop(tunnel.tunnel_id, None)
            if not tunnel.socket.done():
                tunnel.socket.cancel()
            tunnel.finished.set()

    def waiting(self, tunnel_id: str) -> bool:
        """Whether ``tunnel_id`` waits here for its data socket."""
        return tunnel_id in self._waiting

    def claim(self, tunnel_id: str, agent_id: str) -> PendingTunnel[S] | None:
        """The waiting tunnel ``tunnel_id`` if it was sent to ``agent_id`` (once)."""
        tunnel = self._waiting.get(tunnel_id)
        if tunnel is None or tunnel.agent_id != agent_id:
            return None
        del self._waiting[tunnel_id]
        return tunnel

    @contextmanager
    def live(self, *, agent_id: str, session_id: str) -> Iterator[asyncio.Future[Closed]]:
        """Hold a relay of this replica (a viewer's, or one relayed from another replica)
        for the duration of the block; the future is set when a cut names it."""
        tunnel = LiveTunnel(agent_id=agent_id, session_id=session_id)
        self._live.add(tunnel)
        try:
            yield tunnel.cut
        finally:
            self._live.discard(tunnel)

    def cut(self, cut: Cut) -> int:
        """End the live tunnels of ``cut``'s agent or session; returns how many."""
        ended = 0
        for tunnel in list(self._live):
            named = tunnel.agent_id == cut.agent_id or tunnel.session_id == cut.session_id
            if named and not tunnel.cut.done():
                tunnel.cut.set_result(Closed(cut.code, cut.reason))
                ended += 1
        return ended
