"""Queries on ``sessions``; every state change also writes a ``session_events`` row."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from streamspace.db.models import (
    AgentCommand,
    Base,
    Session,
    SessionEvent,
    Template,
    User,
    new_id,
    utcnow,
)
from streamspace.db.repo import audit as audit_repo
from streamspace.db.repo.lists import padded
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest
from streamspace.states import (
    FINAL_SESSION_STATES,
    OPEN_COMMAND_STATUSES,
    TRANSITIONAL_SESSION_STATES,
    IdleAction,
    RetentionHome,
    SessionState,
)

_SESSIONS = Base.metadata.tables[Session.__tablename__]
# Statements built once, values bound per call: building an INSERT with its values costs
# more CPU than running it.
_INSERT_SESSION = insert(_SESSIONS)
_INSERT_EVENT = insert(Base.metadata.tables[SessionEvent.__tablename__])


class Policy(NamedTuple):
    """A session's effective lifecycle policy, fixed at its launch (seconds; ``None`` =
    never). ``max_age`` is already the smaller of the template's (or the site's) and the
    owner's quota."""

    idle_timeout: int | None = None
    idle_action: IdleAction = IdleAction.HIBERNATE
    max_age: int | None = None
    hibernated_retention: int | None = None
    retention_home: RetentionHome = RetentionHome.KEEP


def new(owner: User, template: Template, *, agent_id: str, policy: Policy = Policy()) -> Session:
    """A pending session of ``template`` on ``agent_id`` under ``policy``, not written yet
    (:func:`insert_new`)."""
    now = utcnow()
    session = Session(
        id=new_id(),
        owner_id=owner.id,
        template_name=template.name,
        agent_id=agent_id,
        state=SessionState.PENDING.value,
        platform_state={},
        persistent_home=template.persistent_home,
        idle_timeout=policy.idle_timeout,
        idle_action=policy.idle_action.value,
        max_age_seconds=policy.max_age,
        stop_at=None if policy.max_age is None else now + timedelta(seconds=policy.max_age),
        hibernated_retention=policy.hibernated_retention,
        retention_home=policy.retention_home.value,
        retain_until=None,
        active_viewers=0,
        created_at=now,
        updated_at=now,
        last_activity=now,
    )
    # Shown with the session; set without the ORM's events (a cascade walk per launch).
    set_committed_value(session, "owner", owner)
    return session


async def insert_new(db: AsyncSession, sessions: Sequence[Session]) -> None:
    """Insert new sessions and their first events in the caller's transaction.

    One plain INSERT per table for all of them, not the ORM's unit of work (a third of a
    launch's CPU); the sessions are not attached to ``db``.
    """
    rows = [{c.key: getattr(session, c.key) for c in _SESSIONS.columns} for session in sessions]
    await db.execute(_INSERT_SESSION, rows)
    events = [
        {
            "session_id": session.id,
            "from_state": None,
            "to_state": session.state,
            "detail": "created",
            "created_at": session.created_at,
        }
        for session in sessions
    ]
    await db.execute(_INSERT_EVENT, events)
    audit_repo.log_transitions(db, events)


_GET_MANY = (
    select(Session)
    .where(Session.id.in_(bindparam("session_ids", expanding=True)))
    .order_by(Session.id)
)
_LOCK_MANY = _GET_MANY.with_for_update(of=Session)


async def get(
    db: AsyncSession, session_id: str, *, for_update: bool = False, with_owner: bool = False
) -> Session | None:
    """A session; ``with_owner`` also loads its owner (to show it), ``for_update`` locks it."""
    query = select(Session).where(Session.id == session_id)
    if with_owner:
        query = query.options(joinedload(Session.owner))
    if for_update:
        query = query.with_for_update(of=Session)
    return await db.scalar(query)


async def get_many(
    db: AsyncSession, session_ids: Collection[str], *, for_update: bool = False
) -> dict[str, Session]:
    """Sessions by id; ``for_update`` locks them (in id order, so lockers never cross)."""
    query = _LOCK_MANY if for_update else _GET_MANY
    found = await db.scalars(query, {"session_ids": padded(session_ids)})
    return {session.id: session for session in found}


_NEWEST_FIRST = Keyset(
    "sessions", Key(Session.created_at, datetime), Key(Session.id, str), descending=True
)
_EVENTS_IN_ORDER = Keyset("session-events", Key(SessionEvent.id, int))


async def list_sessions(
    db: AsyncSession, *, owner_id: str | None, page: PageRequest
) -> Page[Session]:
    """A page of the sessions of one owner (``None``: everybody's), newest first."""
    query = select(Session).options(joinedload(Session.owner))
    if owner_id is not None:
        query = query.where(Session.owner_id == owner_id)
    found = (await db.scalars(_NEWEST_FIRST.select(query, page))).all()
    return _NEWEST_FIRST.page(found, page, lambda s: (s.created_at, s.id))


_STATES_OF = select(Session.id, Session.state).where(
    Session.id.in_(bindparam("session_ids", expanding=True))
)


async def states_of(db: AsyncSession, session_ids: Collection[str]) -> dict[str, str]:
    """The states of those of ``session_ids`` that exist, in one statement."""
    rows = await db.execute(_STATES_OF, {"session_ids": padded(session_ids)})
    return {session_id: state for session_id, state in rows}


async def ids_by_agent(
    db: AsyncSession, agent_ids: Collection[str], states: frozenset[SessionState]
) -> dict[str, set[str]]:
    """The ids of these agents' sessions in ``states``, by agent, in one statement (ids
    only: cheap for thousands)."""
    rows = await db.execute(
        select(Session.agent_id, Session.id).where(
            Session.agent_id.in_(padded(agent_ids)), Session.state.in_(states)
        )
    )
    found: dict[str, set[str]] = {}
    for agent_id, session_id in rows:
        if agent_id is not None:  # (always: the query selects by agent)
            found.setdefault(agent_id, set()).add(session_id)
    return found


async def ids_of_owner(
    db: AsyncSession, owner_id: str, states: frozenset[SessionState]
) -> set[str]:
    """The ids of one owner's sessions in ``states``."""
    query = select(Session.id).where(Session.owner_id == owner_id, Session.state.in_(states))
    return set((await db.scalars(query)).all())


async def running_of_disabled_owners(db: AsyncSession) -> Sequence[Session]:
    """Running sessions whose owner is disabled, locked (those locked elsewhere skipped)."""
    query = (
        select(Session)
        .join(User, User.id == Session.owner_id)
        .where(User.disabled_at.is_not(None), Session.state == SessionState.RUNNING.value)
        .with_for_update(of=Session, skip_locked=True)
    )
    return (await db.scalars(query)).all()


async def fail_running(
    db: AsyncSession, agent_id: str, session_ids: Collection[str], *, reason: str
) -> dict[str, dict[str, Any]]:
    """Fail those of ``session_ids`` still ``running`` on ``agent_id``, recording why, in
    two statements (the rows, their events); returns their platform states by id."""
    now = utcnow()
    rows = await db.execute(
        update(Session)
        .where(
            Session.id.in_(list(session_ids)),
            Session.agent_id == agent_id,
            Session.state == SessionState.RUNNING.value,
        )
        .values(
            state=SessionState.FAILED.value,
            status_message=None,
            terminated_at=now,
            termination_reason=reason,
            vnc_host=None,
            vnc_port=None,
            updated_at=now,
        )
        .returning(Session.id, Session.platform_state)
        .execution_options(synchronize_session=False)
    )
    failed = {session_id: state for session_id, state in rows}
    if failed:
        events = [
            {
                "session_id": session_id,
                "from_state": SessionState.RUNNING.value,
                "to_state": SessionState.FAILED.value,
                "detail": reason,
                "created_at": now,
            }
            for session_id in failed
        ]
        await db.execute(_INSERT_EVENT, events)
        audit_repo.log_transitions(db, events)
    return failed


async def list_for_agent(
    db: AsyncSession, agent_id: str, states: frozenset[SessionState]
) -> Sequence[Session]:
    return (
        await db.scalars(
            select(Session).where(Session.agent_id == agent_id, Session.state.in_(states))
        )
    ).all()


def transition(
    db: AsyncSession,
    session: Session,
    to: SessionState,
    *,
    detail: str | None = None,
    **fields: Any,
) -> None:
    """Move a (loaded) session to a new state, recording why."""
    event = {
        "session_id": session.id,
        "from_state": session.state,
        "to_state": to.value,
        "detail": detail,
        "created_at": utcnow(),
    }
    db.add(SessionEvent(**event))
    audit_repo.log_transitions(db, [event])
    session.state = to.value
    session.status_message = None  # progress is about one start or wake: this one is over
    for name, value in fields.items():
        setattr(session, name, value)
    if to in FINAL_SESSION_STATES:
        session.terminated_at = utcnow()
        session.termination_reason = detail
        session.vnc_host = None
        session.vnc_port = None


PROGRESSING = (SessionState.PENDING, SessionState.WAKING)
"""States whose progress an agent reports (a start or a wake under way)."""


async def set_status_message(
    db: AsyncSession, session_id: str, *, agent_id: str, message: str
) -> bool:
    """Show ``message`` with the session, if it is starting or waking on ``agent_id``."""
    result = await db.execute(
        update(Session)
        .where(
            Session.id == session_id,
            Session.agent_id == agent_id,
            Session.state.in_(PROGRESSING),
        )
        .values(status_message=message)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def events(db: AsyncSession, session_id: str, page: PageRequest) -> Page[SessionEvent]:
    """A page of the session's state transitions, oldest first."""
    query = select(SessionEvent).where(SessionEvent.session_id == session_id)
    found = (await db.scalars(_EVENTS_IN_ORDER.select(query, page))).all()
    return _EVENTS_IN_ORDER.page(found, page, lambda event: (event.id,))


async def count_by_template_and_state(db: AsyncSession) -> dict[tuple[str, str], int]:
    """How many sessions each ``(template, state)`` has (one grouped scan)."""
    rows = await db.execute(
        select(Session.template_name, Session.state, func.count()).group_by(
            Session.template_name, Session.state
        )
    )
    return {(template, state): count for template, state, count in rows.all()}


async def stuck(db: AsyncSession, *, unchanged_since: datetime) -> Sequence[Session]:
    """Sessions in a transitional state with no open command to move them on (locked)."""
    moving = (
        select(AgentCommand.id)
        .where(
            AgentCommand.session_id == Session.id,
            AgentCommand.status.in_(OPEN_COMMAND_STATUSES),
        )
        .exists()
    )
    return (
        await db.scalars(
            select(Session)
            .where(
                Session.state.in_(TRANSITIONAL_SESSION_STATES),
                Session.updated_at < unchanged_since,
                ~moving,
            )
            .with_for_update(skip_locked=True)
        )
    ).all()
