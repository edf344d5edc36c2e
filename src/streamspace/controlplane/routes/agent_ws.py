"""``WS /api/v1/agents/connect``: where agents dial in."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamspace.controlplane.deps import AgentSocketDep
from streamspace.wire import AGENT_CONNECT_PATH

router = APIRouter(tags=["agents"])


@router.websocket(AGENT_CONNECT_PATH)
async def agent_connect(websocket: WebSocket, socket: AgentSocketDep) -> None:
    """Agents authenticate with ``Authorization: Bearer <key>`` and ``X-Agent-ID``."""
    await socket.serve(websocket)
