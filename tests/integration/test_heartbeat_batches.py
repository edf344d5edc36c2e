"""Heartbeats are flushed in batches: one row the database refuses never sinks the others."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from streamspace.controlplane.agents.heartbeats import HeartbeatRecorder
from streamspace.db.engine import SessionFactory, create_engine, create_session_factory
from streamspace.db.migrations import runner
from streamspace.db.models import Agent
from streamspace.db.repo import agents as agent_repo
from streamspace.protocol import HeartbeatPayload
from tests.services import PostgresServer


async def _agents(db: SessionFactory, names: list[str]) -> None:
    async with db() as session, session.begin():
        for name in names:
            agent_repo.create(
                session,
                agent_id=name,
                platform="local",
                approval="approved",
                api_key_hash="x",
                capacity=1,
            )


async def _rows(db: SessionFactory) -> dict[str, tuple[str, int]]:
    async with db() as session:
        agents = (await session.scalars(select(Agent))).all()
    return {agent.agent_id: (agent.status, agent.active_sessions) for agent in agents}


async def test_a_row_the_database_refuses_does_not_fail_the_batch(
    migrated_db: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"agent-{index}" for index in range(5)]
    await _agents(migrated_db, names)
    recorder = HeartbeatRecorder(db=migrated_db, replica="pod-1", flush_interval=1)
    for index, name in enumerate(names):
        recorder.note(name, HeartbeatPayload(active_sessions=index, capacity=10))
    # The protocol refuses such a heartbeat now; a row the database refuses for any other
    # reason must be just as harmless to the batch.
    recorder.note("agent-2", HeartbeatPayload.model_construct(active_sessions=10**30, capacity=1))

    assert await recorder.flush() == 4

    rows = await _rows(migrated_db)
    assert {name: rows[name] for name in names if name != "agent-2"} == {
        name: ("online", index) for index, name in enumerate(names) if name != "agent-2"
    }
    assert rows["agent-2"] == ("offline", 0)
    assert "dropped the heartbeat of agent agent-2" in caplog.text
    assert await recorder.flush() == 0  # the refused row is not retried forever

    recorder.note("agent-2", HeartbeatPayload(active_sessions=1, capacity=10))
    assert await recorder.flush() == 1
    assert (await _rows(migrated_db))["agent-2"] == ("online", 1)


async def test_heartbeats_are_kept_while_the_database_is_down(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    await asyncio.to_thread(runner.upgrade, pg_url, "head")
    engine = create_engine(pg_url)
    db = create_session_factory(engine)
    try:
        await _agents(db, ["agent-a", "agent-b"])
        recorder = HeartbeatRecorder(db=db, replica="pod-1", flush_interval=1)
        recorder.note("agent-a", HeartbeatPayload(active_sessions=1, capacity=10))
        recorder.note("agent-b", HeartbeatPayload(active_sessions=2, capacity=10))
        postgres_server.stop()
        await engine.dispose()  # no pooled connection survives the restart
        with pytest.raises(Exception, match=r"(?i)connect|refused"):
            await recorder.flush()
        postgres_server.start()
        assert await recorder.flush() == 2
        assert await _rows(db) == {"agent-a": ("online", 1), "agent-b": ("online", 2)}
    finally:
        postgres_server.start()
        await engine.dispose()
