"""The AgentHub: this replica's agent connections, the cross-replica registry behind them
(:mod:`.registry`, with Redis in :mod:`.redis_registry`), doorbells and cuts."""

from streamspace.controlplane.hub.agent_hub import AgentHub, Topic
from streamspace.controlplane.hub.messages import Cut, Ring
from streamspace.controlplane.hub.registry import Registry, SharedStateUnavailable

__all__ = ["AgentHub", "Cut", "Registry", "Ring", "SharedStateUnavailable", "Topic"]
