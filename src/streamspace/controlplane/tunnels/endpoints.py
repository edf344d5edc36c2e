"""One end of a relay: a WebSocket that carries binary frames, whatever library serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from streamspace.db.models import Session
from streamspace.protocol import SESSION_NOT_RUNNING, CloseCode, VncEndpoint
from streamspace.protocol import close_reason as clip
from streamspace.states import SessionState

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
"""A close waits at most this long for a peer that does not read (a stalled viewer)."""


@dataclass(frozen=True)
class Closed:
    """The peer closed (or lost) the socket with this code and reason."""

    code: int
    reason: str = ""


class Gone(Exception):
    """Sending failed: the peer is no longer there."""


class TunnelRefused(Exception):
    """A tunnel that cannot be opened; the viewer's socket is closed with ``code`` + reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Endpoint(Protocol):
    async def receive(self) -> bytes | str | Closed:
        """The next message (bytes or text), or :class:`Closed` once the peer is gone."""

    async def send(self, data: bytes) -> None:
        """Send one binary message; raises :class:`Gone` if the peer is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason; idempotent, never raises, bounded in time."""


@contextlib.asynccontextmanager
async def closed_on_failure(peer: Endpoint, what: str) -> AsyncIterator[None]:
    """Serve a tunnel's peer: a refusal closes it with its code and reason, anything else
    with 1011; ``what`` names the tunnel in the log."""
    try:
        yield
    except TunnelRefused as refused:
        log.info("%s refused: %s", what, refused.reason)
        await peer.close(refused.code, refused.reason)
    except Exception:
        log.exception("%s failed", what)
        await peer.close(CloseCode.INTERNAL_ERROR, "internal error")


class AsgiEndpoint:
    """A WebSocket this replica accepted (a browser, an agent's data socket, a peer replica)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def receive(self) -> bytes | str | Closed:
        try:
            message = await self.websocket.receive()
        except (RuntimeError, WebSocketDisconnect):
            return Closed(1006)
        if message["type"] == "websocket.disconnect":
            return Closed(int(message.get("code", 1005)), str(message.get("reason") or ""))
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        return str(message.get("text") or "")

    async def send(self, data: bytes) -> None:
        try:
            await self.websocket.send({"type": "websocket.send", "bytes": data})
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise Gone(str(exc)) from exc

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.websocket.close(code=code, reason=clip(reason))


class ClientEndpoint:
    """A WebSocket this process dialed (``websockets`` client)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def receive(self) -> bytes | str | Closed:
        try:
            return await self.connection.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return Closed(1006)
            return Closed(exc.rcvd.code, exc.rcvd.reason)

    async def send(self, data: bytes) -> None:
        try:
            await self.connection.send(data)
        except ConnectionClosed as exc:
            raise Gone(str(exc)) from exc

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.connection.close(code, clip(reason))


def viewable_endpoint(session: Session) -> VncEndpoint:
    """Where a session's VNC server listens, if it can be viewed now (else TunnelRefused)."""
    if session.state != SessionState.RUNNING:
        raise TunnelRefused(
            SESSION_NOT_RUNNING,
            f"session is {session.state}; only a running session can be viewed",
        )
    vnc = VncEndpoint.from_columns(session.vnc_host, session.vnc_port)
    if session.agent_id is None or vnc is None:
        raise TunnelRefused(CloseCode.TUNNEL_FAILED, "session has no VNC endpoint")
    return vnc
