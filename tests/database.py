"""Read the control plane's database from a test (the rows are the truth)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.models import Agent, AgentCommand, Session
from tests.helpers import eventually


class Database:
    """A small read helper over one database URL."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=2)
        self.factory = create_session_factory(self.engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.factory() as db:
            yield db

    async def commands(self, *, session_id: str | None = None) -> list[AgentCommand]:
        query = select(AgentCommand).order_by(AgentCommand.created_at)
        if session_id is not None:
            query = query.where(AgentCommand.session_id == session_id)
        async with self.session() as db:
            return list((await db.scalars(query)).all())

    async def command(self, command_id: str) -> AgentCommand:
        async with self.session() as db:
            found = await db.scalar(
                select(AgentCommand).where(AgentCommand.command_id == command_id)
            )
        assert found is not None, command_id
        return found

    async def sessions(self) -> list[Session]:
        async with self.session() as db:
            return list((await db.scalars(select(Session))).all())

    async def agent(self, agent_id: str) -> Agent | None:
        async with self.session() as db:
            return await db.get(Agent, agent_id)

    async def wait_leader(self, agent_id: str, *, above: int = 0, timeout: float = 30.0) -> int:
        """Until ``agent_id`` is online under a leader epoch above ``above`` (after a kill: a
        new leader took over); returns that epoch."""

        async def leading() -> int:
            row = await self.agent(agent_id)
            if row is None or row.status != "online" or (row.leader_epoch or 0) <= above:
                return 0
            return row.leader_epoch or 0

        message = f"agent {agent_id} online with a leader epoch above {above}"
        return await eventually(leading, timeout=timeout, interval=0.02, message=message)

    async def close(self) -> None:
        await self.engine.dispose()
