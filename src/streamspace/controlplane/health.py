"""Whether this replica is ready to serve, and its metrics."""

from __future__ import annotations

from streamspace.controlplane.hub import AgentHub
from streamspace.controlplane.metrics_server import exposition
from streamspace.db.engine import SessionFactory, ping


class HealthService:
    """Readiness (the database answers) and the Prometheus exposition."""

    def __init__(self, *, db: SessionFactory, hub: AgentHub) -> None:
        self._db = db
        self._hub = hub

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether the replica is ready, and the state of each part it depends on."""
        checks = {"database": "ok"}
        ready = True
        try:
            await ping(self._db)
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
            ready = False
        redis_up = self._hub.shared_state_up
        if redis_up is not None:
            # Still ready without Redis: commands then reach agents by database polling.
            checks["redis"] = "ok" if redis_up else "unavailable (degraded: database polling)"
        return ready, checks

    async def metrics(self) -> bytes:
        return await exposition(hub=self._hub, db=self._db)
