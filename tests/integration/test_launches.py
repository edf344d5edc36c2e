"""Launches written in batches, against SQLite (``streamspace up``) and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from streamspace.config import ApiSettings
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.errors import NotFound, Unavailable
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.sessions.launches import Launched, LaunchWriter, Repeated
from streamspace.db.engine import SessionFactory
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import (
    Agent,
    AgentCommand,
    IdempotencyKey,
    Session,
    Template,
    User,
    utcnow,
)
from streamspace.db.repo import idempotency as idempotency_repo
from streamspace.db.repo.idempotency import KEEP

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
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
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
    writer = LaunchWriter(
        db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db), max_waiting=3
    )
    results = await asyncio.gather(
        *(writer.launch(ANN, "xterm") for _ in range(5)), return_exceptions=True
    )
    assert [type(result) for result in results] == [Launched] * 3 + [Unavailable] * 2
    assert "3 launches are waiting on this replica" in str(results[3])
    async with db() as session:
        assert len((await session.scalars(select(Session.id))).all()) == 3
    assert isinstance(await writer.launch(ANN, "xterm"), Launched)  # room again


async def test_a_taken_key_repeats_instead_of_launching(db: SessionFactory) -> None:
    """In one batch or later, full agent or not: a key makes one session."""
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
    key = Idempotency("k1", "asked")
    together = await asyncio.gather(*(writer.launch(ANN, "xterm", key) for _ in range(3)))
    assert [type(result) for result in together] == [Launched, Repeated, Repeated]
    assert together[1] == Repeated(ANN.id, "k1")
    async with db() as session, session.begin():
        agent = await session.get(Agent, "a1")
        assert agent is not None
        agent.capacity = 1  # full now: a retry must still answer, not 503
    assert await writer.launch(ANN, "xterm", key) == Repeated(ANN.id, "k1")
    with pytest.raises(Unavailable):
        await writer.launch(ANN, "xterm", Idempotency("k2", "asked"))
    async with db() as session:
        keys = (await session.scalars(select(IdempotencyKey))).all()
        sessions = (await session.scalars(select(Session.id))).all()
    assert [(k.key, k.resource_id) for k in keys] == [("k1", together[0].session.id)]
    assert sessions == [together[0].session.id]  # the refused launch wrote no key either


async def test_a_key_older_than_a_day_launches_again(db: SessionFactory) -> None:
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
    key = Idempotency("k1", "asked")
    first = await writer.launch(ANN, "xterm", key)
    assert isinstance(first, Launched)
    async with db() as session, session.begin():
        row = await session.get(IdempotencyKey, (ANN.id, "k1"))
        assert row is not None
        row.created_at = utcnow() - KEEP - timedelta(seconds=1)
    again = await writer.launch(ANN, "xterm", key)
    assert isinstance(again, Launched) and again.session.id != first.session.id
    async with db() as session:
        row = await session.get(IdempotencyKey, (ANN.id, "k1"))
        assert row is not None and row.resource_id == again.session.id
        assert await idempotency_repo.forget_expired(session, now=utcnow()) == 0
        assert await idempotency_repo.forget_expired(session, now=utcnow() + KEEP * 2) == 1
