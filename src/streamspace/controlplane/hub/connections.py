"""The agents connected to this replica, one current connection each."""

from __future__ import annotations

from streamspace.controlplane.agents.connection import ConnectedAgent


class LocalConnections:
    """Keyed by agent, holding connection objects: when an agent connects twice the newer
    connection replaces the older, and the older one's later ``unregister`` is a no-op."""

    def __init__(self) -> None:
        self._by_agent: dict[str, ConnectedAgent] = {}

    def register(self, connection: ConnectedAgent) -> ConnectedAgent | None:
        """Make ``connection`` the agent's current one; returns the one it replaced."""
        previous = self._by_agent.get(connection.agent_id)
        self._by_agent[connection.agent_id] = connection
        return previous if previous is not connection else None

    def unregister(self, connection: ConnectedAgent) -> bool:
        """Forget ``connection`` if it is still current; ``True`` if it was."""
        if not self.is_current(connection):
            return False
        del self._by_agent[connection.agent_id]
        return True

    def is_current(self, connection: ConnectedAgent) -> bool:
        return self._by_agent.get(connection.agent_id) is connection

    def get(self, agent_id: str) -> ConnectedAgent | None:
        return self._by_agent.get(agent_id)

    def all(self) -> list[ConnectedAgent]:
        return list(self._by_agent.values())

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._by_agent
