"""Open a tunnel to an agent connected to THIS replica and wait for its data socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket

from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.endpoints import AsgiEndpoint, Endpoint, TunnelRefused
from streamspace.protocol import CloseCode, Tunnel, TunnelPayload, VncEndpoint

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_local(
    tunnels: Tunnels, agent_id: str, session_id: str, vnc: VncEndpoint
) -> AsyncIterator[Endpoint]:
    """Send the agent a ``tunnel`` message; yield its data socket once it dialed back.

    The agent's socket is closed (and its handler released) when the block ends.
    """
    connection = tunnels.hub.local(agent_id)
    if connection is None:
        raise TunnelRefused(CloseCode.TUNNEL_FAILED, "agent is not connected")
    timeout = tunnels.settings.tunnel_open_timeout
    with tunnels.registry.open(agent_id=agent_id, session_id=session_id) as tunnel:
        payload = TunnelPayload(tunnel_id=tunnel.tunnel_id, session_id=session_id, vnc=vnc)
        try:
            await connection.send(Tunnel(payload=payload))
        except Exception as exc:
            log.info("could not ask agent %s for a tunnel: %s", agent_id, exc)
            raise TunnelRefused(CloseCode.TUNNEL_FAILED, "agent unreachable") from None
        try:
            websocket: WebSocket = await asyncio.wait_for(asyncio.shield(tunnel.socket), timeout)
        except TimeoutError:
            raise TunnelRefused(
                CloseCode.TUNNEL_FAILED, f"the agent did not open the tunnel within {timeout:g} s"
            ) from None
        agent = AsgiEndpoint(websocket)
        try:
            yield agent
        finally:
            await agent.close(CloseCode.NORMAL, "tunnel closed")
