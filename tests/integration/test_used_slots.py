"""``agents.used_slots``: kept by the triggers on every path, repaired by the reconciler."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from streamspace.db.engine import SessionFactory
from streamspace.db.models import Agent, Session, Template, User
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.states import ACTIVE_SESSION_STATES, SessionState
from tests.database import Database
from tests.helpers import eventually
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess

ANN = User(id="u1", username="ann", password_hash="x", role="user")
XTERM = Template(name="xterm", display_name="XTerm", command=["xterm"], persistent_home=False)


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    async with migrated_db() as session, session.begin():
        session.add(User(id=ANN.id, username=ANN.username, password_hash="x", role="user"))
        for name in ("a1", "a2"):
            agent_repo.create(
                session,
                agent_id=name,
                platform="local",
                approval="approved",
                api_key_hash="x",
                capacity=10,
            )
    return migrated_db


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
