"""What the tunnel handlers of one replica work with, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from streamspace.config import ApiSettings
from streamspace.controlplane.hub import AgentHub
from streamspace.controlplane.tunnels.registry import TunnelRegistry
from streamspace.db.engine import SessionFactory


@dataclass(frozen=True)
class Tunnels:
    """The database, the hub (where each agent is connected) and this replica's tunnels."""

    settings: ApiSettings
    db: SessionFactory
    hub: AgentHub
    registry: TunnelRegistry[WebSocket] = field(default_factory=TunnelRegistry)
    """VNC tunnels waiting for their agent's data socket, and the live ones."""
