"""Queries on ``session_viewers`` and the viewer counters of ``sessions`` they maintain.

Each open tunnel is a row naming the replica that holds it, and ``active_viewers`` moves
by one with each row added or removed (atomic increments: concurrent viewers never lose
a count). A row removed twice (the viewer's own close racing the cleanup of its dead
replica) counts once.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Session, SessionViewer, new_id


async def viewer_joined(db: AsyncSession, session_id: str, *, replica: str, now: datetime) -> str:
    """Count a new viewer held by ``replica`` and note the activity; returns its id."""
    viewer_id = new_id()
    await db.execute(
        insert(SessionViewer).values(
            id=viewer_id, session_id=session_id, replica=replica, opened_at=now
        )
    )
    await _note(db, session_id, now, active_viewers=Session.active_viewers + 1)
    return viewer_id


async def viewer_left(db: AsyncSession, viewer_id: str, session_id: str, *, now: datetime) -> None:
    """Uncount a viewer (once, however often it is reported) and note the activity."""
    removed = await db.execute(
        delete(SessionViewer).where(SessionViewer.id == viewer_id).returning(SessionViewer.id)
    )
    if removed.first() is None:
        await _note(db, session_id, now)
    else:
        await _note(db, session_id, now, active_viewers=_fewer(1))


async def viewer_active(db: AsyncSession, session_id: str, *, now: datetime) -> None:
    """The viewer sent input (a key, the pointer, the clipboard): the session is in use
    (the idle timeout counts from this)."""
    await _note(db, session_id, now)


async def forget_replica(db: AsyncSession, replica: str) -> int:
    """Uncount every viewer ``replica`` held (it died, or restarted and holds none now);
    returns how many."""
    removed = await db.execute(
        delete(SessionViewer)
        .where(SessionViewer.replica == replica)
        .returning(SessionViewer.session_id)
    )
    per_session = Counter(session_id for (session_id,) in removed)
    for session_id, count in per_session.items():
        await db.execute(
            update(Session)
            .where(Session.id == session_id)
            .values(active_viewers=_fewer(count), updated_at=Session.updated_at)
        )
    return sum(per_session.values())


async def replicas_with_viewers(db: AsyncSession) -> set[str]:
    """Replicas holding open tunnels, by the database."""
    rows = await db.scalars(
        SessionViewer.__table__.select().with_only_columns(SessionViewer.replica).distinct()
    )
    return set(rows.all())


def _fewer(count: int) -> Any:
    return case((Session.active_viewers > count, Session.active_viewers - count), else_=0)


async def _note(db: AsyncSession, session_id: str, now: datetime, **change: Any) -> None:
    """Note viewer activity (``updated_at`` is left alone: it tracks state changes, which
    the reconciler reads)."""
    await db.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(last_activity=now, updated_at=Session.updated_at, **change)
    )
