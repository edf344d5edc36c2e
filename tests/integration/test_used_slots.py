"""``agents.used_slots``: kept by the triggers on every path, repaired by the reconciler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete, func, select, text, update

from streamspace.config import ApiSettings
from streamspace.controlplane.services.launches import LaunchWriter
from streamspace.db.engine import SessionFactory, create_engine, create_session_factory
from streamspace.db.migrations import runner
from streamspace.db.models import Agent, Session, Template, User, utcnow
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.states import ACTIVE_SESSION_STATES, SessionState
from tests.database import Database
from tests.helpers import eventually
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess

ANN = User(id="u1", username="ann", password_hash="x", role="user")
XTERM = Template(name="xterm", display_name="XTerm", command=["xterm"], persistent_home=False)


async def _fill(db: SessionFactory, *, capacity: int) -> SessionFactory:
    """Ann, the xterm template and two approved agents, online now."""
    async with db() as session, session.begin():
        session.add(User(id=ANN.id, username=ANN.username, password_hash="x", role="user"))
        session.add(Template(name="xterm", display_name="XTerm", command=["xterm"]))
        for name in ("a1", "a2"):
            agent = agent_repo.create(
                session,
                agent_id=name,
                platform="local",
                approval="approved",
                api_key_hash="x",
                capacity=capacity,
            )
            agent.status, agent.last_heartbeat = "online", utcnow()
    return db


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    return await _fill(migrated_db, capacity=10)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[SessionFactory]:
    await asyncio.to_thread(runner.upgrade, pg_url, "head")
    engine = create_engine(pg_url)
    try:
        yield await _fill(create_session_factory(engine), capacity=1)
    finally:
        await engine.dispose()


async def _counts(db: SessionFactory) -> tuple[dict[str, int], dict[str, int]]:
    """Each agent's ``used_slots`` and its active sessions counted (the source of truth)."""
    async with db() as session:
        agents = await session.execute(select(Agent.agent_id, Agent.used_slots))
        used = {agent_id: slots for agent_id, slots in agents}
        sessions = await session.execute(
            select(Session.agent_id, func.count())
            .where(Session.state.in_(ACTIVE_SESSION_STATES))
            .group_by(Session.agent_id)
        )
        actual = {agent_id: n for agent_id, n in sessions}
    return used, {agent_id: actual.get(agent_id, 0) for agent_id in used}


async def _launch(db: SessionFactory, agent_id: str, n: int) -> list[str]:
    async with db() as session, session.begin():
        new = [session_repo.new(ANN, XTERM, agent_id=agent_id, idle_timeout=None) for _ in range(n)]
        await session_repo.insert_new(session, new)
    return [s.id for s in new]


async def test_count_follows_every_state_and_path(db: SessionFactory) -> None:
    """Inserts, every state (ORM and set-based), a move between agents, a delete: the count
    is the number of active sessions after each (``ACTIVE_SESSION_STATES`` decides)."""
    ids = await _launch(db, "a1", 3)
    assert await _counts(db) == ({"a1": 3, "a2": 0},) * 2
    for state in SessionState:
        async with db() as session, session.begin():  # one session through the ORM path
            found = await session_repo.get(session, ids[0], for_update=True)
            assert found is not None
            session_repo.transition(session, found, state, detail="test")
        expected = 2 + (state in ACTIVE_SESSION_STATES)
        used, actual = await _counts(db)
        assert used == actual == {"a1": expected, "a2": 0}, state
    async with db() as session, session.begin():  # set-based, several rows at once
        await session.execute(update(Session).values(state=SessionState.HIBERNATED.value))
    assert await _counts(db) == ({"a1": 0, "a2": 0},) * 2
    async with db() as session, session.begin():  # woken on the other agent
        await session.execute(
            update(Session).where(Session.id.in_(ids[1:])).values(state="waking", agent_id="a2")
        )
    assert await _counts(db) == ({"a1": 0, "a2": 2},) * 2
    async with db() as session, session.begin():  # an active session moved, state kept
        await session.execute(update(Session).where(Session.id == ids[1]).values(agent_id="a1"))
    assert await _counts(db) == ({"a1": 1, "a2": 1},) * 2
    async with db() as session, session.begin():
        await session.execute(update(Session).values(status_message="pulling image"))
        await session.execute(delete(Session).where(Session.id == ids[2]))
    assert await _counts(db) == ({"a1": 1, "a2": 0},) * 2


async def test_a_drifted_count_is_repaired(db: SessionFactory) -> None:
    await _launch(db, "a1", 2)
    async with db() as session, session.begin():
        await session.execute(update(Agent).values(used_slots=7))  # broken behind its back
    async with db() as session, session.begin():
        repaired = await agent_repo.repair_used_slots(session)
    assert repaired == {"a1": (7, 2), "a2": (7, 0)}
    assert await _counts(db) == ({"a1": 2, "a2": 0},) * 2
    async with db() as session, session.begin():
        assert await agent_repo.repair_used_slots(session) == {}  # nothing left to repair


async def test_a_launch_racing_another_replica_does_not_overfill(pg: SessionFactory) -> None:
    """Another replica takes a1's last slot while this one places there: this launch waits
    for a1's lock, finds it over capacity, and is placed again, on a2."""
    writer = LaunchWriter(db=pg, settings=ApiSettings(heartbeat_interval=10))
    async with pg() as other, other.begin():  # the other replica's launch, not committed yet
        await session_repo.insert_new(
            other, [session_repo.new(ANN, XTERM, agent_id="a1", idle_timeout=None)]
        )
        racing = asyncio.create_task(writer.launch(ANN, "xterm"))

        async def waiting_for_the_lock() -> bool:
            async with pg() as probe:
                waiting = await probe.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
            return bool(waiting)

        await eventually(waiting_for_the_lock, message="the launch waits for a1's lock")
    launched = await racing
    assert launched.agent_id == "a2"
    assert await _counts(pg) == ({"a1": 1, "a2": 1},) * 2


async def test_the_reconciler_repairs_a_drifted_count(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    """Break → reconcile → compare, on the running control plane."""
    agent = await ManualAgent.registered(api.url, "agent-1", capacity=2)
    await agent.connect()
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert created.status_code == 201, created.text
    async with database.session() as db, db.begin():
        await db.execute(update(Agent).values(used_slots=2))

    async def repaired() -> bool:
        row = await database.agent("agent-1")
        return row is not None and row.used_slots == 1

    await eventually(repaired, message="used_slots counted again")
    assert "agent agent-1 counted 2 active session(s) but has 1; repaired" in api.output()
