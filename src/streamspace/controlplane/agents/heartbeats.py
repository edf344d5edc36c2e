"""Heartbeats are written to the database in batches, not one transaction each.

With thousands of agents a transaction per heartbeat would be most of a replica's work.
The agent socket notes each agent's latest heartbeat here; a flusher writes all of them in one
executemany every ``flush_interval`` seconds (well inside the 3-interval freshness window
that agent selection uses).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from streamspace.aio import wait_or_stop
from streamspace.db.engine import SessionFactory, transaction
from streamspace.db.errors import unreachable
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
        """Write every noted heartbeat; returns how many were written.

        All in one executemany; if the database refuses that, halves apart until the rows
        it refuses stand alone: those are dropped (logged), so one agent's bad row never
        fails the others' heartbeats. If the database is unreachable, what was not written
        is kept for the next try and the error raised.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        written = 0
        parts = [list(batch.items())]
        while parts:
            part = parts.pop()
            try:
                await self._write(dict(part))
            except Exception as exc:
                if unreachable(exc):
                    for agent_id, beat in itertools.chain(part, *parts):
                        self._pending.setdefault(agent_id, beat)  # newer notes win
                    raise
                if len(part) == 1:
                    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
                    log.warning(
                        "dropped the heartbeat of agent %s: the database refuses it (%s: %s)",
                        part[0][0],
                        type(exc).__name__,
                        first_line,
                    )
                else:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                continue
            written += len(part)
        return written

    async def _write(self, beats: dict[str, HeartbeatPayload]) -> None:
        async with transaction(self._db) as db:
            await agent_repo.record_heartbeats(db, replica=self._replica, beats=beats, at=utcnow())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_or_stop(stop, self._interval)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("could not record heartbeats (will retry): %s", exc)
