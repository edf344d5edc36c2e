"""Reading agents' credentials when they connect: connections that arrive together share
one query (a replica died and its agents re-home here at once)."""

from __future__ import annotations

from streamspace.batching import Coalescer
from streamspace.db.engine import SessionFactory, reading
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo.agents import Credentials

CREDENTIALS_BATCH = 500
"""Agents whose credentials at most one query reads."""


class CredentialReader:
    """An agent's key hash, approval and leader epoch, read in batches."""

    def __init__(self, *, db: SessionFactory) -> None:
        self._db = db
        self._batches: Coalescer[str, Credentials | None] = Coalescer(
            self._read, max_batch=CREDENTIALS_BATCH, name="agent-credentials"
        )

    async def get(self, agent_id: str) -> Credentials | None:
        """The agent's credentials; ``None`` if it is not registered."""
        return await self._batches.submit(agent_id)

    async def _read(self, agent_ids: list[str]) -> list[Credentials | None]:
        async with reading(self._db) as db:
            found = await agent_repo.credentials(db, set(agent_ids))
        return [found.get(agent_id) for agent_id in agent_ids]
