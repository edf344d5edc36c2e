"""What a command's outcome does to its session, in the caller's transaction.

Every path that ends a command (the agent's ``complete``/``failed``, the reconciler's
deadlines) goes through :func:`apply_outcome`, so the command row and the session always
change together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from streamspace.db.engine import DbSession
from streamspace.db.models import AgentCommand, Session, utcnow
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo.commands import EndedCommand
from streamspace.protocol import Action, VncEndpoint
from streamspace.states import (
    FINAL_SESSION_STATES,
    STATE_AFTER,
    STATE_DURING,
    CommandStatus,
    SessionState,
)

log = logging.getLogger(__name__)


async def apply_outcome(
    db: DbSession,
    command: AgentCommand,
    *,
    status: CommandStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    already_recorded: bool = False,
) -> bool:
    """Record a command outcome and move its session; ``False`` for a duplicate report.

    ``already_recorded`` is for outcomes the repository wrote in bulk (deadline sweeps).
    """
    if not already_recorded and not await command_repo.finish(
        db, command, status=status, result=result, error=error
    ):
        return False
    if command.session_id is None:
        return True
    session = await session_repo.get(db, command.session_id, for_update=True)
    if session is None:
        return True
    action = Action(command.action)
    if status is CommandStatus.COMPLETED:
        await _apply_success(db, session, action, result or {}, reason=command.reason)
    elif session.state not in FINAL_SESSION_STATES:
        reason = f"{action.value} failed: {error}" if error else f"{action.value} failed"
        session_repo.transition(db, session, SessionState.FAILED, detail=reason)
    return True


async def apply_completions(
    db: DbSession, completed: Sequence[tuple[EndedCommand, dict[str, Any]]]
) -> None:
    """Move the sessions of commands an agent reported completed (with their results),
    in the given order; their sessions are locked by one statement."""
    sessions = await session_repo.get_many(
        db, {command.session_id for command, _ in completed if command.session_id}, for_update=True
    )
    for command, result in completed:
        session = sessions.get(command.session_id or "")
        if session is not None:
            await _apply_success(db, session, Action(command.action), result, reason=command.reason)


async def _apply_success(
    db: DbSession,
    session: Session,
    action: Action,
    result: dict[str, Any],
    *,
    reason: str | None = None,
) -> None:
    """Move the session as the completed command says; ``reason`` (a policy's) becomes the
    detail of the event, and of the termination of a stop."""
    state = result.get("state")
    if isinstance(state, dict):
        session.platform_state = state
    if session.state in FINAL_SESSION_STATES:
        if action in (Action.START_SESSION, Action.WAKE_SESSION):
            # Finished after the session was given up on: don't leak what the agent started.
            log.warning("session %s started after it was given up; stopping it", session.id)
            await _queue_cleanup(db, session)
        return
    if session.state != STATE_DURING[action]:
        # The user asked for something else meanwhile (e.g. stop during start); that
        # newer command decides the final state. Keep the platform state it will need.
        return
    fields: dict[str, Any] = {}
    if action in (Action.START_SESSION, Action.WAKE_SESSION):
        try:
            vnc = VncEndpoint.model_validate(result.get("vnc"))
        except ValidationError:
            session_repo.transition(
                db,
                session,
                SessionState.FAILED,
                detail=f"{action.value} reported no valid VNC endpoint",
            )
            return
        fields = dict(zip(("vnc_host", "vnc_port"), vnc.columns(), strict=True))
        fields["last_activity"] = utcnow()  # the idle timeout counts from the (re)start
    elif action is Action.HIBERNATE_SESSION:
        fields = {"vnc_host": None, "vnc_port": None, "retain_until": _retained(session)}
    detail = reason or ("stopped" if action is Action.STOP_SESSION else None)
    session_repo.transition(db, session, STATE_AFTER[action], detail=detail, **fields)


def _retained(session: Session) -> datetime | None:
    """The end of a session's retention, once hibernated now."""
    if session.hibernated_retention is None:
        return None
    return utcnow() + timedelta(seconds=session.hibernated_retention)


async def fail_and_clean_up(db: DbSession, session: Session, *, reason: str) -> None:
    """Fail a session that ended on its own, and have its agent remove what is left of it
    (e.g. the VNC server of an application that exited)."""
    session_repo.transition(db, session, SessionState.FAILED, detail=reason)
    await _queue_cleanup(db, session)


async def _queue_cleanup(db: DbSession, session: Session) -> None:
    if session.agent_id is None:
        return
    await command_repo.create(
        db,
        agent_id=session.agent_id,
        session_id=session.id,
        action=Action.STOP_SESSION,
        payload={"state": session.platform_state, "keep_home": False},
    )
