"""The VNC token and viewer-count queries on SQLite (``streamspace up``) and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from streamspace.db.engine import SessionFactory
from streamspace.db.models import Session, User, utcnow
from streamspace.db.repo import viewers, vnc_tokens


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    async with migrated_db() as session, session.begin():
        session.add(User(id="u1", username="ann", password_hash="x", role="user"))
        session.add(User(id="u2", username="root", password_hash="x", role="admin"))
        session.add(Session(id="s1", owner_id="u1", template_name="xterm", platform_state={}))
    return migrated_db


async def test_a_token_is_consumed_once_and_only_before_it_expires(db: SessionFactory) -> None:
    now = utcnow()
    async with db() as session, session.begin():
        for name, user, ttl in (("t-ok", "u1", 60), ("t-old", "u1", -1), ("t-admin", "u2", 60)):
            vnc_tokens.issue(
                session,
                token_hash=name,
                session_id="s1",
                user_id=user,
                now=now,
                expires_at=now + timedelta(seconds=ttl),
            )
    async with db() as session, session.begin():
        ticket = await vnc_tokens.consume(session, "t-ok", now=utcnow())
        assert ticket == vnc_tokens.Ticket(session_id="s1", user_id="u1", is_admin=False)
        assert await vnc_tokens.consume(session, "t-ok", now=utcnow()) is None
        assert await vnc_tokens.consume(session, "t-old", now=utcnow()) is None
        assert await vnc_tokens.consume(session, "t-missing", now=utcnow()) is None
        admin = await vnc_tokens.consume(session, "t-admin", now=utcnow())
        assert admin is not None and admin.is_admin
    async with db() as session, session.begin():
        await vnc_tokens.purge_expired(session, now=utcnow() + timedelta(seconds=120))
        assert await vnc_tokens.consume(session, "t-admin", now=utcnow()) is None


async def test_viewer_count_and_activity(db: SessionFactory) -> None:
    async with db() as session:
        before = await session.get(Session, "s1")
        assert before is not None and before.active_viewers == 0
        updated_at = before.updated_at
    later = utcnow() + timedelta(seconds=5)
    async with db() as session, session.begin():
        first = await viewers.viewer_joined(session, "s1", replica="pod-1", now=later)
        second = await viewers.viewer_joined(session, "s1", replica="pod-1", now=later)
        await viewers.viewer_left(session, first, "s1", now=later)
    assert await _viewers_and_activity(db) == (1, later)
    async with db() as session:
        row = await session.get(Session, "s1")
        assert row is not None and row.updated_at == updated_at  # activity is no state change
    async with db() as session, session.begin():
        for _ in range(3):  # the same viewer reported gone again: counted once
            await viewers.viewer_left(session, first, "s1", now=later)
    assert await _viewers_and_activity(db) == (1, later)
    async with db() as session, session.begin():
        await viewers.viewer_left(session, second, "s1", now=later)
        await viewers.viewer_active(session, "s1", now=later + timedelta(seconds=1))
    assert await _viewers_and_activity(db) == (0, later + timedelta(seconds=1))


async def test_a_dead_replicas_viewers_are_uncounted_together(db: SessionFactory) -> None:
    now = utcnow()
    async with db() as session, session.begin():
        on_1 = [await viewers.viewer_joined(session, "s1", replica="pod-1", now=now) for _ in "ab"]
        await viewers.viewer_joined(session, "s1", replica="pod-2", now=now)
        assert await viewers.replicas_with_viewers(session) == {"pod-1", "pod-2"}
    async with db() as session, session.begin():
        assert await viewers.forget_replica(session, "pod-1") == 2
        assert await viewers.replicas_with_viewers(session) == {"pod-2"}
    assert (await _viewers_and_activity(db))[0] == 1
    async with db() as session, session.begin():
        # pod-1's own close arriving after the cleanup changes nothing more.
        await viewers.viewer_left(session, on_1[0], "s1", now=now)
        assert await viewers.forget_replica(session, "pod-1") == 0
    assert (await _viewers_and_activity(db))[0] == 1


async def _viewers_and_activity(db: SessionFactory) -> tuple[int, datetime | None]:
    async with db() as session:
        row = await session.get(Session, "s1")
        assert row is not None
        return row.active_viewers, row.last_activity
