"""The VNC tunnel: connect tokens, the browser's socket, agents' and replicas' data sockets."""

from __future__ import annotations

from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel

from streamspace.controlplane.deps import ConnectTicketsDep, TunnelsDep, UserDep
from streamspace.controlplane.routes.responses import AUTHENTICATED, errors
from streamspace.controlplane.routes.text import storable_url
from streamspace.controlplane.tunnels.agent_side import (
    serve_agent_data,
    serve_forwarded_agent_data,
)
from streamspace.controlplane.tunnels.internal import serve_internal
from streamspace.controlplane.tunnels.viewer import serve_viewer
from streamspace.wire import (
    AGENT_TUNNEL_PATH,
    INTERNAL_AGENT_TUNNEL_PATH,
    INTERNAL_TUNNEL_PATH,
    VIEWER_TUNNEL_PATH,
)

router = APIRouter(tags=["vnc"])


class ConnectOut(BaseModel):
    token: str
    """Single use; only valid for this session and user."""
    expires_in: int
    """Seconds left to open the tunnel with it."""
    url: str
    """The tunnel's WebSocket path, token included."""


@router.post(
    "/api/v1/sessions/{session_id}/connect",
    responses=AUTHENTICATED | errors(404, 409),
    dependencies=[Depends(storable_url)],
)
async def connect(session_id: str, user: UserDep, tickets: ConnectTicketsDep) -> ConnectOut:
    """A short-lived token to open ``WS /api/v1/sessions/{id}/vnc`` once (409 unless the
    session is running)."""
    ticket = await tickets.issue(user, session_id)
    return ConnectOut(token=ticket.token, expires_in=ticket.expires_in, url=ticket.url)


@router.websocket(VIEWER_TUNNEL_PATH)
async def vnc(websocket: WebSocket, session_id: str, tunnels: TunnelsDep) -> None:
    """Binary RFB both ways. Close codes: 4400 text frame, 4401 bad token, 4404 no such
    session, 4409 not running, 4502 agent unreachable or tunnel failed, 1011 internal."""
    await serve_viewer(tunnels, websocket, session_id)


@router.websocket(AGENT_TUNNEL_PATH)
async def agent_tunnel(websocket: WebSocket, tunnel_id: str, tunnels: TunnelsDep) -> None:
    """An agent's data socket for one tunnel (agent credentials, like the control socket)."""
    await serve_agent_data(tunnels, websocket, tunnel_id)


@router.websocket(INTERNAL_TUNNEL_PATH)
async def internal_tunnel(websocket: WebSocket, session_id: str, tunnels: TunnelsDep) -> None:
    """Another replica relaying a viewer to an agent connected here (``INTERNAL_SECRET``)."""
    await serve_internal(tunnels, websocket, session_id)


@router.websocket(INTERNAL_AGENT_TUNNEL_PATH)
async def forwarded_agent_tunnel(websocket: WebSocket, tunnel_id: str, tunnels: TunnelsDep) -> None:
    """An agent's data socket that reached another replica, forwarded to the replica
    holding the agent's control socket (``INTERNAL_SECRET``)."""
    await serve_forwarded_agent_data(tunnels, websocket, tunnel_id)
