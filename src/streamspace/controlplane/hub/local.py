"""The in-memory AgentHub: one replica, no shared infrastructure."""

from __future__ import annotations

from streamspace.controlplane.hub.base import AgentHub, Parcel


class LocalAgentHub(AgentHub):
    """All agents connect to this one replica, so a doorbell is a local call."""

    async def ring(self, agent_id: str, parcel: Parcel | None = None) -> bool:
        return self._ring_local(agent_id, parcel)
