"""The objects one replica wires together at start, shared by routes through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.websockets import WebSocket

from streamspace.config import ApiSettings
from streamspace.controlplane.agents.heartbeats import HeartbeatRecorder
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.throttle import LoginThrottle
from streamspace.controlplane.commands.dispatcher import CommandDispatcher
from streamspace.controlplane.hub import AgentHub
from streamspace.controlplane.sessions.service import SessionService
from streamspace.controlplane.tunnels.registry import TunnelRegistry
from streamspace.db.engine import SessionFactory


@dataclass
class Replica:
    settings: ApiSettings
    engine: AsyncEngine
    db: SessionFactory
    hub: AgentHub
    dispatcher: CommandDispatcher
    sessions: SessionService
    heartbeats: HeartbeatRecorder
    throttle: LoginThrottle
    tokens: TokenCache
    tunnels: TunnelRegistry[WebSocket] = field(default_factory=TunnelRegistry)
    """VNC tunnels waiting for their agent's data socket."""
    generated_admin_password: str | None = None
    """Set when this replica created the first admin with a generated password."""
