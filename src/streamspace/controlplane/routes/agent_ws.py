"""``WS /api/v1/agents/connect``: where agents dial in."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamspace.controlplane.agents.socket import AgentSocket

router = APIRouter(tags=["agents"])


@router.websocket("/api/v1/agents/connect")
async def agent_connect(websocket: WebSocket) -> None:
    """Agents authenticate with ``Authorization: Bearer <key>`` and ``X-Agent-ID``."""
    await AgentSocket(websocket.app.state.replica).serve(websocket)
