"""Replica-to-replica relay: the browser reached one replica, the agent is on another.

The browser's replica checks the token and the session, finds the agent's replica
(``agent:<id>:pod``) and that replica's advertised address (``pod:<POD_NAME>:address``),
and dials ``WS <address>/api/v1/internal/tunnels/{session_id}`` with the shared
``INTERNAL_SECRET``. The owner opens the tunnel to its agent and relays; close codes and
reasons travel back unchanged.

The other way round, an agent's data socket can reach a replica that is not the one
waiting for it (agents dial the control plane's public address, and a load balancer picks
the replica per connection): that replica forwards it to the agent's replica over
``WS <address>/api/v1/internal/agent-tunnels/{tunnel_id}`` (see ``agent_side``).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.endpoints import (
    AsgiEndpoint,
    ClientEndpoint,
    Endpoint,
    TunnelRefused,
    closed_on_failure,
    viewable_endpoint,
)
from streamspace.controlplane.tunnels.relay import Traffic, relay
from streamspace.controlplane.tunnels.upstream import open_local
from streamspace.db.engine import reading
from streamspace.db.repo import sessions as session_repo
from streamspace.protocol import CloseCode
from streamspace.wire import (
    INTERNAL_AGENT_TUNNEL_PATH,
    INTERNAL_SECRET_HEADER,
    INTERNAL_TUNNEL_PATH,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024


async def owner_address(tunnels: Tunnels, agent_id: str) -> str:
    """The base URL of the replica holding ``agent_id``; else :class:`TunnelRefused`."""
    pod = await tunnels.hub.owner_of(agent_id)
    if pod is None or pod == tunnels.hub.replica:
        raise TunnelRefused(CloseCode.TUNNEL_FAILED, "agent is not connected")
    if not tunnels.settings.internal_secret:
        raise TunnelRefused(
            CloseCode.TUNNEL_FAILED,
            f"agent connected to another replica ({pod}); relaying needs INTERNAL_SECRET",
        )
    address = await tunnels.hub.address_of(pod)
    if address is None:
        raise TunnelRefused(
            CloseCode.TUNNEL_FAILED, f"agent connected to replica {pod}, whose address is unknown"
        )
    return address


def internal_url(address: str, path: str) -> str:
    """``http(s)://host:port`` + ``path`` → ``ws(s)://host:port<path>``."""
    for plain, ws in (("https://", "wss://"), ("http://", "ws://")):
        if address.startswith(plain):
            address = ws + address[len(plain) :]
            break
    return address.rstrip("/") + path


def session_path(session_id: str) -> str:
    """Where the owner replica serves a viewer relayed to one of its sessions."""
    return INTERNAL_TUNNEL_PATH.format(session_id=quote(session_id))


def agent_data_path(tunnel_id: str) -> str:
    """Where the owner replica takes a data socket that reached another replica."""
    return INTERNAL_AGENT_TUNNEL_PATH.format(tunnel_id=quote(tunnel_id))


@contextlib.asynccontextmanager
async def open_remote(
    tunnels: Tunnels, address: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Endpoint]:
    """Dial ``path`` on the owner replica; yield the relay socket (closed when the block
    ends)."""
    secret = tunnels.settings.internal_secret or ""
    try:
        connection = await connect(
            internal_url(address, path),
            additional_headers={INTERNAL_SECRET_HEADER: secret, **(headers or {})},
            compression=None,
            max_size=MAX_MESSAGE,
            # Stop reading once a frame waits for the relay, as the ASGI side does: with the
            # default 16 frames queued, the receive buffer's copies cost this hop ~0.6 ms
            # of CPU per MB more (bench.tunnel (d): pod-2 1.34 → 0.75 ms/MB).
            max_queue=1,
            open_timeout=tunnels.settings.tunnel_open_timeout,
        )
    except (OSError, TimeoutError, InvalidStatus, WebSocketException) as exc:
        log.warning("cannot reach replica at %s for a tunnel: %s", address, exc)
        raise TunnelRefused(CloseCode.TUNNEL_FAILED, "the agent's replica is unreachable") from None
    remote = ClientEndpoint(connection)
    try:
        yield remote
    finally:
        await remote.close(CloseCode.NORMAL, "tunnel closed")


async def serve_internal(tunnels: Tunnels, websocket: WebSocket, session_id: str) -> None:
    """The owner's side: check the secret and the session, open the local tunnel, relay."""
    await websocket.accept()
    peer = AsgiEndpoint(websocket)
    async with closed_on_failure(peer, f"relayed tunnel to session {session_id}"):
        check_secret(tunnels, websocket.headers)
        async with reading(tunnels.db) as db:
            session = await session_repo.get(db, session_id)
        if session is None:
            raise TunnelRefused(CloseCode.NOT_FOUND, "session not found")
        vnc = viewable_endpoint(session)
        assert session.agent_id is not None  # checked by viewable_endpoint
        with tunnels.registry.live(agent_id=session.agent_id, session_id=session.id) as cut:
            async with open_local(tunnels, session.agent_id, session.id, vnc) as agent:
                await relay(peer, agent, Traffic(), cut=cut)


def check_secret(tunnels: Tunnels, headers: Headers) -> None:
    """Refuse (4401) a peer that does not present this deployment's ``INTERNAL_SECRET``."""
    presented = headers.get(INTERNAL_SECRET_HEADER.lower(), "")
    expected = tunnels.settings.internal_secret
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise TunnelRefused(CloseCode.UNAUTHORIZED, "invalid internal credentials")
