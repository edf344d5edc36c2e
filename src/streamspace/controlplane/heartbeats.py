"""Heartbeats are written to the database in batches, not one transaction each.

With thousands of agents a transaction per heartbeat would be most of a replica's work.
The gateway notes each agent's latest heartbeat here; a flusher writes all of them in one
executemany every ``flush_interval`` seconds (well inside the 3-interval freshness window
that agent selection uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from streamspace.db.engine import SessionFactory
from streamspace.db.models import utcnow
from streamspace.db.repo import agents as agent_repo
from streamspace.protocol import HeartbeatPayload

log = logging.getLogger(__name__)


class HeartbeatRecorder:
    """The newest unwritten heartbeat of each agent connected to this replica."""

    def __init__(self, *, db: SessionFactory, replica: str, flush_interval: float) -> None:
        self._db = db
        self._replica = replica
        self._interval = flush_interval
        self._pending: dict[str, HeartbeatPayload] = {}

    def note(self, agent_id: str, beat: HeartbeatPayload) -> None:
        self._pending[agent_id] = beat

    def forget(self, agent_id: str) -> None:
        """The agent disconnected: its last heartbeat must not mark it online again."""
        self._pending.pop(agent_id, None)

    async def flush(self) -> int:
        """Write every noted heartbeat; returns how many. Kept for the next try on failure."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            async with self._db() as db, db.begin():
                await agent_repo.record_heartbeats(
                    db, replica=self._replica, beats=batch, at=utcnow()
                )
        except Exception:
            for agent_id, beat in batch.items():  # newer notes win over the failed batch
                self._pending.setdefault(agent_id, beat)
            raise
        return len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("could not record heartbeats (will retry): %s", exc)
