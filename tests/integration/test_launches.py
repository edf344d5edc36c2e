"""Launches written in batches, against SQLite (``streamspace up``) and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from streamspace.config import ApiSettings
from streamspace.controlplane.errors import NotFound, Unavailable
from streamspace.controlplane.sessions.launches import Launched, LaunchWriter
from streamspace.db.engine import SessionFactory
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import Agent, AgentCommand, Session, Template, User, utcnow

ANN = User(id="u1", username="ann", password_hash="x", role="user")


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    async with migrated_db() as session, session.begin():
        session.add(User(id=ANN.id, username=ANN.username, password_hash="x", role="user"))
        session.add(Template(name="xterm", display_name="XTerm", command=["xterm"]))
        session.add(
            Agent(
                agent_id="a1",
                platform="local",
                status="online",
                approval="approved",
                api_key_hash="x",
                capacity=10,
                last_heartbeat=utcnow(),
            )
        )
    return migrated_db


async def test_one_bad_launch_does_not_spoil_its_batch(
    db: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A launch that violates a constraint (its user is gone) fails alone; the launches
    written in the same transaction are written again without it."""
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10))
    ghost = User(id="ghost", username="ghost", password_hash="x", role="user")
    # Queued before the writer first runs: one batch.
    results = await asyncio.gather(
        writer.launch(ANN, "xterm"),
        writer.launch(ghost, "xterm"),
        writer.launch(ANN, "nope"),
        writer.launch(ANN, "xterm"),
        return_exceptions=True,
    )
    assert "4 launches together violated a constraint" in caplog.text  # one batch
    first, bad, unknown, second = results
    assert isinstance(first, Launched) and isinstance(second, Launched)
    assert isinstance(bad, ConstraintViolation)
    assert isinstance(unknown, NotFound)
    async with db() as session:
        sessions = set((await session.scalars(select(Session.id))).all())
        commands = (await session.scalars(select(AgentCommand))).all()
    assert sessions == {first.session.id, second.session.id}
    assert {(c.session_id, c.status, c.attempts) for c in commands} == {
        (first.session.id, "sent", 1),
        (second.session.id, "sent", 1),
    }


async def test_launches_beyond_the_queue_limit_are_refused(db: SessionFactory) -> None:
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), max_waiting=3)
    results = await asyncio.gather(
        *(writer.launch(ANN, "xterm") for _ in range(5)), return_exceptions=True
    )
    assert [type(result) for result in results] == [Launched] * 3 + [Unavailable] * 2
    assert "3 launches are waiting on this replica" in str(results[3])
    async with db() as session:
        assert len((await session.scalars(select(Session.id))).all()) == 3
    assert isinstance(await writer.launch(ANN, "xterm"), Launched)  # room again
