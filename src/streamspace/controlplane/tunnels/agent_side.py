"""``WS /api/v1/agents/tunnels/{tunnel_id}``: an agent's data socket for one tunnel.

The agent authenticates like on its control socket (``Authorization: Bearer <key>``,
``X-Agent-ID``); the tunnel must have been sent to that agent. It waits on the replica
holding the agent's control socket; a data socket that a load balancer sent to another
replica is forwarded there (``WS /api/v1/internal/agent-tunnels/{tunnel_id}``, shared
``INTERNAL_SECRET``). The socket is handed to the viewer's relay and the handler waits
until the relay is done with it (the ASGI server closes a socket once its handler returns).
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.websockets import WebSocket

from streamspace.controlplane.auth.hashing import matches
from streamspace.controlplane.tunnels import internal
from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.endpoints import (
    AsgiEndpoint,
    TunnelRefused,
    closed_on_failure,
)
from streamspace.controlplane.tunnels.relay import Traffic, relay
from streamspace.db.engine import reading
from streamspace.db.repo import agents as agent_repo
from streamspace.protocol import CloseCode
from streamspace.states import AgentApproval
from streamspace.wire import AGENT_ID_HEADER, agent_credentials

log = logging.getLogger(__name__)

NOT_WAITING = "no such tunnel waiting (expired or not yours)"


async def serve_agent_data(tunnels: Tunnels, websocket: WebSocket, tunnel_id: str) -> None:
    await websocket.accept()
    endpoint = AsgiEndpoint(websocket)
    try:
        agent_id = await authenticate_agent(tunnels, websocket.headers)
    except TunnelRefused as refused:
        log.warning("tunnel data socket refused: %s", refused.reason)
        await endpoint.close(refused.code, refused.reason)
        return
    async with closed_on_failure(endpoint, f"data socket of tunnel {tunnel_id}"):
        if tunnels.registry.waiting(tunnel_id) or tunnels.hub.local(agent_id) is not None:
            await _hand_over(tunnels, websocket, tunnel_id, agent_id)
        else:
            await _forward(tunnels, endpoint, tunnel_id, agent_id)


async def serve_forwarded_agent_data(
    tunnels: Tunnels, websocket: WebSocket, tunnel_id: str
) -> None:
    """The agent's replica taking a data socket that reached another replica first."""
    await websocket.accept()
    endpoint = AsgiEndpoint(websocket)
    async with closed_on_failure(endpoint, f"forwarded data socket of tunnel {tunnel_id}"):
        internal.check_secret(tunnels, websocket.headers)
        agent_id = websocket.headers.get(AGENT_ID_HEADER.lower(), "")
        await _hand_over(tunnels, websocket, tunnel_id, agent_id)


async def _hand_over(tunnels: Tunnels, websocket: WebSocket, tunnel_id: str, agent_id: str) -> None:
    tunnel = tunnels.registry.claim(tunnel_id, agent_id)
    if tunnel is None or not tunnel.attach(websocket):
        log.info("agent %s dialed tunnel %s, which is not waiting here", agent_id, tunnel_id)
        raise TunnelRefused(CloseCode.NOT_FOUND, NOT_WAITING)
    await tunnel.finished.wait()


async def _forward(tunnels: Tunnels, agent: AsgiEndpoint, tunnel_id: str, agent_id: str) -> None:
    """Relay the agent's data socket to the replica holding its control socket."""
    address = await internal.owner_address(tunnels, agent_id)
    path = internal.agent_data_path(tunnel_id)
    headers = {AGENT_ID_HEADER: agent_id}
    async with internal.open_remote(tunnels, address, path, headers) as owner:
        ending = await relay(owner, agent, Traffic())
    log.info(
        "data socket of tunnel %s (agent %s) forwarded to %s, closed by the %s (%s %s)",
        tunnel_id,
        agent_id,
        address,
        "agent" if ending.by == "upstream" else "agent's replica",
        ending.code,
        ending.reason,
    )


async def authenticate_agent(tunnels: Tunnels, headers: Headers) -> str:
    """The id of an approved agent presenting its own key; else :class:`TunnelRefused`."""
    agent_id, key = agent_credentials(headers)
    async with reading(tunnels.db) as db:
        agent = await agent_repo.get(db, agent_id) if agent_id else None
    if agent is None or key is None or not matches(key, agent.api_key_hash):
        raise TunnelRefused(CloseCode.UNAUTHORIZED, "invalid agent credentials")
    if agent.approval != AgentApproval.APPROVED:
        raise TunnelRefused(CloseCode.FORBIDDEN, f"agent {agent.approval}")
    return agent.agent_id
