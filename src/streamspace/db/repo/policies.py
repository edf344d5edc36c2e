"""The set-based queries of the lifecycle policies (``docs/policies.md``).

Each ``take_*`` function moves the sessions a policy has to act on with ONE conditional
UPDATE (``… WHERE state = 'running' AND <still idle> … RETURNING``) and writes their events,
in the caller's transaction, where the caller also inserts their commands. A session one
replica moved no longer matches for another, so two replicas enforcing at once act on each
session exactly once (PostgreSQL re-checks the conditions of a row another transaction
changed meanwhile; ``SKIP LOCKED`` passes over rows a user's request holds, until the next
run; SQLite has one writer at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Session, SessionEvent
from streamspace.states import IdleAction, PolicyReason, RetentionHome, SessionState

MAX_PER_RUN = 500
"""Sessions one ``take_*`` call moves at most; the next run takes the rest."""

Describe = Callable[[PolicyReason, int], str]
"""The reason written for a policy and its duration in seconds (``idle 30 min``)."""


class Taken(NamedTuple):
    """A session a policy moved: what its command needs."""

    session_id: str
    agent_id: str
    platform_state: dict[str, Any]
    from_state: SessionState
    to_state: SessionState
    reason: str
    keep_home: bool
    """For a stop: keep the session's home (a persistent home is always kept)."""


async def idle_policies(db: AsyncSession) -> set[tuple[int, str]]:
    """The distinct ``(idle timeout, idle action)`` pairs of running sessions: one
    :func:`take_idle` each (a handful: they come from the templates and the site default)."""
    rows = await db.execute(
        select(Session.idle_timeout, Session.idle_action)
        .where(
            Session.state == SessionState.RUNNING.value,
            Session.idle_timeout.is_not(None),
            Session.idle_action.is_not(None),
        )
        .distinct()
    )
    return {(timeout, action) for timeout, action in rows if timeout and action}


async def take_idle(
    db: AsyncSession,
    *,
    idle_timeout: int,
    action: IdleAction,
    now: datetime,
    describe: Describe,
    limit: int = MAX_PER_RUN,
) -> list[Taken]:
    """Running sessions of this timeout and action without input since ``timeout``
    seconds: ``hibernating`` or ``stopping`` now."""
    to = SessionState.HIBERNATING if action is IdleAction.HIBERNATE else SessionState.STOPPING
    rows = await _take(
        db,
        (
            Session.state == SessionState.RUNNING.value,
            Session.idle_timeout == idle_timeout,
            Session.idle_action == action.value,
            Session.last_activity < now - timedelta(seconds=idle_timeout),
        ),
        to=to,
        now=now,
        limit=limit,
    )
    reason = describe(PolicyReason.IDLE, idle_timeout)
    taken = [_taken(row, SessionState.RUNNING, to, reason, keep_home=False) for row in rows]
    await _record(db, taken, now)
    return taken


async def take_overdue(
    db: AsyncSession, *, now: datetime, describe: Describe, limit: int = MAX_PER_RUN
) -> list[Taken]:
    """Running and hibernated sessions past their maximum age (``stop_at``): ``stopping``
    now. A hibernated one keeps its home as its ``retention_home`` says."""
    taken: list[Taken] = []
    for state in (SessionState.RUNNING, SessionState.HIBERNATED):
        rows = await _take(
            db,
            (Session.state == state.value, Session.stop_at <= now),
            to=SessionState.STOPPING,
            now=now,
            limit=limit,
        )
        taken += [
            _taken(
                row,
                state,
                SessionState.STOPPING,
                describe(PolicyReason.MAX_AGE, _seconds(row.stop_at - row.created_at)),
                keep_home=state is SessionState.HIBERNATED
                and row.retention_home != RetentionHome.REMOVE.value,
            )
            for row in rows
        ]
    await _record(db, taken, now)
    return taken


async def take_unretained(
    db: AsyncSession, *, now: datetime, describe: Describe, limit: int = MAX_PER_RUN
) -> list[Taken]:
    """Hibernated sessions past their retention (``retain_until``): ``stopping`` now."""
    rows = await _take(
        db,
        (Session.state == SessionState.HIBERNATED.value, Session.retain_until <= now),
        to=SessionState.STOPPING,
        now=now,
        limit=limit,
    )
    taken = [
        _taken(
            row,
            SessionState.HIBERNATED,
            SessionState.STOPPING,
            describe(PolicyReason.RETENTION, row.hibernated_retention or 0),
            keep_home=row.retention_home != RetentionHome.REMOVE.value,
        )
        for row in rows
    ]
    await _record(db, taken, now)
    return taken


async def keep(db: AsyncSession, session_id: str, *, now: datetime) -> bool:
    """The owner asked to keep the session: its idle time starts again; ``False`` unless it
    is running."""
    result = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.state == SessionState.RUNNING.value)
        .values(last_activity=now, updated_at=Session.updated_at)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def _take(
    db: AsyncSession, conditions: tuple[Any, ...], *, to: SessionState, now: datetime, limit: int
) -> list[Any]:
    """Move the matching sessions (with an agent) to ``to``; their rows as they were taken."""
    matching = (*conditions, Session.agent_id.is_not(None))
    chosen = (
        select(Session.id)
        .where(*matching)
        .order_by(Session.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await db.execute(
        update(Session)
        .where(Session.id.in_(chosen), *matching)
        .values(state=to.value, status_message=None, updated_at=now)
        .returning(
            Session.id,
            Session.agent_id,
            Session.platform_state,
            Session.created_at,
            Session.stop_at,
            Session.hibernated_retention,
            Session.retention_home,
        )
        .execution_options(synchronize_session=False)
    )
    return list(rows)


def _taken(
    row: Any, from_state: SessionState, to: SessionState, reason: str, *, keep_home: bool
) -> Taken:
    return Taken(
        session_id=row.id,
        agent_id=row.agent_id,
        platform_state=row.platform_state or {},
        from_state=from_state,
        to_state=to,
        reason=reason,
        keep_home=keep_home,
    )


async def _record(db: AsyncSession, taken: list[Taken], now: datetime) -> None:
    if not taken:
        return
    await db.execute(
        insert(SessionEvent),
        [
            {
                "session_id": item.session_id,
                "from_state": item.from_state.value,
                "to_state": item.to_state.value,
                "detail": item.reason,
                "created_at": now,
            }
            for item in taken
        ],
    )


def _seconds(delta: timedelta | None) -> int:
    return 0 if delta is None else round(delta.total_seconds())
