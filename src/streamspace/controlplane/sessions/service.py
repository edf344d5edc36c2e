"""Session lifecycle requests: each writes the session change and its command in ONE transaction."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from streamspace.config import ApiSettings
from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.errors import Conflict, Forbidden, NotFound
from streamspace.controlplane.hub import Cut
from streamspace.controlplane.idempotency import Idempotency, recall
from streamspace.controlplane.sessions.launches import LaunchWriter, Repeated
from streamspace.controlplane.sessions.quotas import quota_of, site_limits
from streamspace.controlplane.sessions.specs import session_spec
from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.models import AgentCommand, Session, SessionEvent, User, utcnow
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import policies as policy_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import templates as template_repo
from streamspace.db.repo.pages import Page, PageRequest
from streamspace.protocol import SESSION_NOT_RUNNING, Action
from streamspace.states import (
    ACTIVE_SESSION_STATES,
    FINAL_SESSION_STATES,
    STATE_DURING,
    SessionState,
    UserRole,
)

_FIRST = PageRequest()

Doorbell = Callable[[str], Awaitable[object]]
"""Tells the replica holding an agent that it has a command waiting."""


class HandOff(Protocol):
    """Delivers a new session's first command, written already ``sent``, without a claim."""

    async def hand_off(self, agent_id: str, command: AgentCommand) -> None: ...


_Method = Callable[["SessionService", User, str, str | None], Awaitable[Session]]


def _admitted(method: _Method) -> _Method:
    """Run a session change only when the service's admission semaphore allows it."""

    @functools.wraps(method)
    async def admitted(
        self: SessionService, user: User, argument: str, address: str | None = None
    ) -> Session:
        async with self._admission:
            return await method(self, user, argument, address)

    return admitted


class SessionService:
    """Create, stop, hibernate and wake sessions on behalf of users."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        settings: ApiSettings,
        ring: Doorbell,
        direct: HandOff,
        cut: Callable[[Cut], Awaitable[None]],
        audit: AuditLog,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._ring = ring
        self._cut = cut
        self._direct = direct
        self._admission = asyncio.Semaphore(settings.session_request_concurrency)
        self._launches = LaunchWriter(db=db, settings=settings, audit=audit)
        self._site = site_limits(settings)

    async def get(self, user: User, session_id: str) -> Session:
        async with reading(self._db) as db:
            return self._visible(user, await session_repo.get(db, session_id, with_owner=True))

    async def events(
        self, user: User, session_id: str, page: PageRequest = _FIRST
    ) -> Page[SessionEvent]:
        """A page of the session's state transitions, oldest first."""
        session = await self.get(user, session_id)
        async with reading(self._db) as db:
            return await session_repo.events(db, session.id, page)

    async def list(
        self, user: User, page: PageRequest = _FIRST, *, mine: bool = False
    ) -> Page[Session]:
        """A page of the user's sessions (an administrator's: everybody's, unless ``mine``),
        newest first."""
        owner = None if user.role == UserRole.ADMIN and not mine else user.id
        async with reading(self._db) as db:
            return await session_repo.list_sessions(db, owner_id=owner, page=page)

    async def create(
        self,
        user: User,
        template_name: str,
        *,
        idempotency_key: str | None = None,
        address: str | None = None,
    ) -> Session:
        """Pick an agent and queue ``start_session``; nothing is written if none is available.

        With ``idempotency_key``, a launch the user already made with that key (within
        :data:`~streamspace.db.repo.idempotency.KEEP`) is answered with its session instead
        (:class:`Invalid` if that launch asked for something else).
        """
        idempotency = None
        if idempotency_key is not None:
            asked = hashlib.sha256(f"launch\n{template_name}".encode()).hexdigest()
            idempotency = Idempotency(idempotency_key, asked)
        actor = Actor.of(user, address)
        launched = await self._launches.launch(user, template_name, idempotency, actor=actor)
        if isinstance(launched, Repeated):
            assert idempotency is not None
            return await self._launched_before(user, idempotency)
        await self._direct.hand_off(launched.agent_id, launched.command)
        return launched.session

    async def _launched_before(self, user: User, idempotency: Idempotency) -> Session:
        """The session an earlier launch with the same key made."""
        async with reading(self._db) as db:
            # (Conflict when the other launch with this key, in the same batch, failed.)
            made = await recall(db, user.id, idempotency, resource="session")
            session = await session_repo.get(db, made, with_owner=True)
        return self._visible(user, session)

    @_admitted
    async def stop(self, user: User, session_id: str, address: str | None) -> Session:
        """Stop for good (idempotent); a session whose start was not sent yet ends at once."""
        return await self._stop(
            user, session_id, why="session stopped", requested=True, address=address
        )

    async def stop_all_of(self, owner: User, *, why: str, hibernated: bool = False) -> int:
        """Stop the owner's active sessions (``hibernated`` ones too, with their homes, if
        asked), each as :meth:`stop` would, recording ``why``; returns how many."""
        states = ACTIVE_SESSION_STATES | ({SessionState.HIBERNATED} if hibernated else set())
        async with reading(self._db) as db:
            session_ids = await session_repo.ids_of_owner(db, owner.id, frozenset(states))
        for session_id in sorted(session_ids):
            async with self._admission:
                await self._stop(owner, session_id, why=why)
        return len(session_ids)

    async def _stop(
        self,
        user: User,
        session_id: str,
        *,
        why: str,
        requested: bool = False,
        address: str | None = None,
    ) -> Session:
        """A stop ``requested`` by ``user`` (from ``address``) is recorded as
        ``session.stop``; those the system makes for its own reasons (``why``) show as
        their transitions."""
        async with transaction(self._db) as db:
            session = await self._locked(db, user, session_id)
            if session.state in FINAL_SESSION_STATES or session.state == SessionState.STOPPING:
                return session
            if requested:
                await self._record(db, user, address, "session.stop", session)
            if session.state == SessionState.PENDING and await command_repo.cancel_open(
                db, session_id=session.id, action=Action.START_SESSION
            ):
                detail = f"{why} before it started"
                session_repo.transition(db, session, SessionState.TERMINATED, detail=detail)
                return session
            await _queue(
                db,
                session,
                Action.STOP_SESSION,
                {"state": session.platform_state, "keep_home": False},
                detail=why,
            )
        await self._cut(Cut(SESSION_NOT_RUNNING, why, session_id=session.id))
        await self._ring_agent(session)
        return session

    @_admitted
    async def hibernate(self, user: User, session_id: str, address: str | None) -> Session:
        """Keep the session's home and stop it; :class:`OverQuota` if its owner keeps as
        many hibernated sessions as their quota allows."""
        async with transaction(self._db) as db:
            session = await self._locked(db, user, session_id)
            _require(session, SessionState.RUNNING, "hibernated")
            quota = await quota_of(db, session.owner_id, self._site, lock=True)
            refused = quota.refuse_hibernated()
            if refused is not None:
                raise refused
            await self._record(db, user, address, "session.hibernate", session)
            await _queue(db, session, Action.HIBERNATE_SESSION, {"state": session.platform_state})
        await self._cut(Cut(SESSION_NOT_RUNNING, "session hibernated", session_id=session.id))
        await self._ring_agent(session)
        return session

    @_admitted
    async def wake(self, user: User, session_id: str, address: str | None) -> Session:
        """Start a hibernated session again, on the agent that keeps its home;
        :class:`OverQuota` if its owner runs as many sessions as their quota allows."""
        async with transaction(self._db) as db:
            session = await self._locked(db, user, session_id)
            _require(session, SessionState.HIBERNATED, "woken")
            quota = await quota_of(db, session.owner_id, self._site, lock=True)
            refused = quota.refuse_running()
            if refused is not None:
                raise refused
            await self._record(db, user, address, "session.wake", session)
            template = await template_repo.get(db, session.template_name)
            if template is None:
                raise Conflict(f"template {session.template_name!r} no longer exists")
            spec = session_spec(session, template, session.owner)
            payload = {"spec": spec.model_dump(), "state": session.platform_state}
            await _queue(db, session, Action.WAKE_SESSION, payload)
        await self._ring_agent(session)
        return session

    async def keep(self, user: User, session_id: str, address: str | None = None) -> Session:
        """The owner is still there: the session's idle time starts again (the viewer's
        *Keep session*). Only its owner may; only a running session can be kept."""
        async with transaction(self._db) as db:
            session = self._visible(user, await session_repo.get(db, session_id, with_owner=True))
            if session.owner_id != user.id:
                raise Forbidden("only the session's owner can keep it")
            if not await policy_repo.keep(db, session.id, now=utcnow()):
                _require(session, SessionState.RUNNING, "kept")
                raise Conflict("session is not running; only a running session can be kept")
            await self._record(db, user, address, "session.keep", session)
        return await self.get(user, session_id)

    @property
    def idle_warning(self) -> float:
        """Seconds before its idle action a viewer is warned (``SESSION_IDLE_WARNING_MINUTES``)."""
        return self._settings.session_idle_warning_minutes * 60

    async def end_agent_sessions(self, agent_id: str, *, reason: str) -> int:
        """End an agent's active sessions and their open commands (the agent is going away
        for good, e.g. ``streamspace up`` shutting down). Hibernated sessions keep their
        homes."""
        async with transaction(self._db) as db:
            active = await session_repo.list_for_agent(db, agent_id, ACTIVE_SESSION_STATES)
            for item in active:
                await command_repo.cancel_all_open(db, session_id=item.id)
                session_repo.transition(db, item, SessionState.TERMINATED, detail=reason)
            return len(active)

    async def _record(
        self, db: DbSession, user: User, address: str | None, action: str, session: Session
    ) -> None:
        detail = {"owner": session.owner.username, "template": session.template_name}
        actor = Actor.of(user, address)
        await self._audit.record(db, actor, action, target=("session", session.id), detail=detail)

    async def _ring_agent(self, session: Session) -> None:
        if session.agent_id is not None:
            await self._ring(session.agent_id)

    async def _locked(self, db: DbSession, user: User, session_id: str) -> Session:
        """The user's session, locked for this transaction (404 if it is not theirs)."""
        found = await session_repo.get(db, session_id, for_update=True, with_owner=True)
        return self._visible(user, found)

    @staticmethod
    def _visible(user: User, session: Session | None) -> Session:
        """Users see their own sessions; admins see all. Others' look exactly like missing."""
        if session is None or (user.role != UserRole.ADMIN and session.owner_id != user.id):
            raise NotFound("session not found")
        return session


async def _queue(
    db: DbSession,
    session: Session,
    action: Action,
    payload: dict[str, Any],
    *,
    detail: str | None = None,
) -> None:
    """Move the session to the action's in-between state and add the command for its agent."""
    if session.agent_id is None:
        raise Conflict("session has no agent")
    session_repo.transition(db, session, STATE_DURING[action], detail=detail)
    await command_repo.create(
        db, agent_id=session.agent_id, session_id=session.id, action=action, payload=payload
    )


def _require(session: Session, state: SessionState, verb: str) -> None:
    if session.state != state:
        raise Conflict(f"session is {session.state}; only a {state.value} session can be {verb}")
