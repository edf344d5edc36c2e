"""``WS /api/v1/agents/tunnels/{tunnel_id}``: an agent's data socket for one tunnel.

The agent authenticates like on its control socket (``Authorization: Bearer <key>``,
``X-Agent-ID``); the tunnel must be waiting on this replica and have been sent to that
agent. The socket is handed to the viewer's relay and this handler waits until the relay
is done with it (the ASGI server closes a socket once its handler returns).
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.websockets import WebSocket

from streamspace.controlplane.secrets import matches
from streamspace.controlplane.state import Replica
from streamspace.controlplane.tunnels.endpoints import AsgiEndpoint, TunnelRefused
from streamspace.db.repo import agents as agent_repo
from streamspace.protocol import CloseCode

log = logging.getLogger(__name__)


async def serve_agent_data(replica: Replica, websocket: WebSocket, tunnel_id: str) -> None:
    await websocket.accept()
    endpoint = AsgiEndpoint(websocket)
    try:
        agent_id = await authenticate_agent(replica, websocket.headers)
    except TunnelRefused as refused:
        log.warning("tunnel data socket refused: %s", refused.reason)
        await endpoint.close(refused.code, refused.reason)
        return
    tunnel = replica.tunnels.claim(tunnel_id, agent_id)
    if tunnel is None or not tunnel.attach(websocket):
        log.info("agent %s dialed tunnel %s, which is not waiting here", agent_id, tunnel_id)
        await endpoint.close(CloseCode.NOT_FOUND, "no such tunnel waiting (expired or not yours)")
        return
    await tunnel.finished.wait()


async def authenticate_agent(replica: Replica, headers: Headers) -> str:
    """The id of an approved agent presenting its own key; else :class:`TunnelRefused`."""
    agent_id = headers.get("x-agent-id", "")
    scheme, _, key = headers.get("authorization", "").partition(" ")
    async with replica.db() as db:
        agent = await agent_repo.get(db, agent_id) if agent_id else None
    if agent is None or scheme.lower() != "bearer" or not matches(key, agent.api_key_hash):
        raise TunnelRefused(CloseCode.UNAUTHORIZED, "invalid agent credentials")
    if agent.approval != "approved":
        raise TunnelRefused(CloseCode.FORBIDDEN, f"agent {agent.approval}")
    return agent.agent_id
