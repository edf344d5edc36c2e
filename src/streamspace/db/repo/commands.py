"""Queries on ``agent_commands``: the durable command queue and its lifecycle."""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate

from streamspace.db.models import AgentCommand, Base, utcnow
from streamspace.db.repo.lists import padded
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest
from streamspace.protocol import Action
from streamspace.states import OPEN_COMMAND_STATUSES, CommandStatus

IN_FLIGHT = (CommandStatus.SENT, CommandStatus.ACKNOWLEDGED)


_COMMANDS = Base.metadata.tables[AgentCommand.__tablename__]
"""The table, for Core statements whose rows need no ORM objects (cheaper on hot paths)."""


class EndedCommand(NamedTuple):
    """What applying a command's outcome to its session needs to know of the command."""

    command_id: str
    session_id: str | None
    action: str
    status: str
    reason: str | None = None
    """Why the control plane issued the command itself (a policy), if it did."""


_ENDED_COLUMNS = (
    _COMMANDS.c.command_id,
    _COMMANDS.c.session_id,
    _COMMANDS.c.action,
    _COMMANDS.c.status,
    _COMMANDS.c.reason,
)


def _outcome(*, result: Any) -> dict[str, Any]:
    """Column values recording an outcome, for statements built once: ``outcome_status``,
    ``error`` and ``now`` are bound at execution. The outcome implies the acknowledgement,
    which is not written separately when both arrive together."""
    now = bindparam("now", type_=_COMMANDS.c.completed_at.type)
    return {
        "status": bindparam("outcome_status", type_=_COMMANDS.c.status.type),
        "result": result,
        "error_message": bindparam("error", type_=_COMMANDS.c.error_message.type),
        "completed_at": now,
        "acknowledged_at": func.coalesce(_COMMANDS.c.acknowledged_at, now),
    }


_INSERT_COMMAND = insert(_COMMANDS)
"""Built once, values bound per call (building an INSERT costs more than running it)."""
_INSERTED = (
    "id",
    "command_id",
    "agent_id",
    "session_id",
    "action",
    "payload",
    "status",
    "attempts",
    "created_at",
    "sent_at",
    "reason",
)


def new(
    *,
    agent_id: str,
    session_id: str,
    action: Action,
    payload: dict[str, Any],
    sent: bool = False,
    reason: str | None = None,
) -> AgentCommand:
    """A command, ``pending`` (for the dispatcher to claim) or, when the caller sends it
    itself right after the commit, already ``sent``; not written yet (:func:`insert_new`).
    ``reason``: why the control plane issued it itself (a policy's ``idle 30 min``)."""
    now = utcnow()
    return AgentCommand(
        id=uuid.uuid4(),
        command_id=f"cmd-{uuid.uuid4().hex}",
        agent_id=agent_id,
        session_id=session_id,
        action=action.value,
        payload=payload,
        status=(CommandStatus.SENT if sent else CommandStatus.PENDING).value,
        attempts=1 if sent else 0,
        created_at=now,
        sent_at=now if sent else None,
        reason=reason,
    )


async def insert_new(db: AsyncSession, commands: Sequence[AgentCommand]) -> None:
    """Insert new commands with one statement in the caller's transaction; they are not
    attached to ``db``."""
    rows = [{name: getattr(command, name) for name in _INSERTED} for command in commands]
    await db.execute(_INSERT_COMMAND, rows)


async def create(
    db: AsyncSession, *, agent_id: str, session_id: str, action: Action, payload: dict[str, Any]
) -> AgentCommand:
    """Insert a ``pending`` command in the caller's transaction."""
    command = new(agent_id=agent_id, session_id=session_id, action=action, payload=payload)
    await insert_new(db, [command])
    return command


async def get(db: AsyncSession, command_id: str) -> AgentCommand | None:
    return await db.scalar(select(AgentCommand).where(AgentCommand.command_id == command_id))


async def get_for_agent(db: AsyncSession, *, agent_id: str, command_id: str) -> AgentCommand | None:
    """The command, only if it was addressed to this agent."""
    return await db.scalar(
        select(AgentCommand).where(
            AgentCommand.command_id == command_id, AgentCommand.agent_id == agent_id
        )
    )


_NEWEST_FIRST = Keyset(
    "commands",
    Key(AgentCommand.created_at, datetime),
    Key(AgentCommand.command_id, str),
    descending=True,
)


async def list_commands(
    db: AsyncSession, *, session_id: str | None, status: str | None, page: PageRequest
) -> Page[AgentCommand]:
    """A page of the commands (of one session, in one status), newest first."""
    query = select(AgentCommand)
    if session_id is not None:
        query = query.where(AgentCommand.session_id == session_id)
    if status is not None:
        query = query.where(AgentCommand.status == status)
    found = (await db.scalars(_NEWEST_FIRST.select(query, page))).all()
    return _NEWEST_FIRST.page(found, page, lambda c: (c.created_at, c.command_id))


def _claim_statement() -> ReturningUpdate[AgentCommand]:
    oldest = (
        select(AgentCommand.id)
        .where(
            AgentCommand.agent_id == bindparam("for_agent"),
            AgentCommand.status == CommandStatus.PENDING,
        )
        .order_by(AgentCommand.created_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(AgentCommand)
        .where(AgentCommand.id.in_(oldest))
        .values(
            status=CommandStatus.SENT,
            sent_at=bindparam("now", type_=AgentCommand.sent_at.type),
            attempts=AgentCommand.attempts + 1,
        )
        .returning(AgentCommand)
        .execution_options(synchronize_session=False)
    )


_CLAIM = _claim_statement()


async def claim_pending(db: AsyncSession, agent_id: str, *, limit: int = 100) -> list[AgentCommand]:
    """Mark up to ``limit`` pending commands of one agent ``sent`` and return them, oldest first.

    ``SKIP LOCKED`` (PostgreSQL) lets replicas claim concurrently without waiting on or
    double-claiming each other's rows.
    """
    claimed = await db.scalars(_CLAIM, {"for_agent": agent_id, "limit": limit, "now": utcnow()})
    return sorted(claimed.all(), key=lambda command: command.created_at)


_RELEASE = (
    update(AgentCommand)
    .where(
        AgentCommand.id.in_(bindparam("command_uuids", expanding=True)),
        AgentCommand.status == CommandStatus.SENT,
    )
    .values(status=CommandStatus.PENDING)
    .execution_options(synchronize_session=False)
)


async def release(db: AsyncSession, command_ids: Collection[uuid.UUID]) -> None:
    """Put claimed commands back to ``pending`` (they could not be sent)."""
    await db.execute(_RELEASE, {"command_uuids": padded(command_ids)})


_ACKNOWLEDGE = (
    update(AgentCommand)
    .where(
        AgentCommand.command_id.in_(bindparam("command_ids", expanding=True)),
        AgentCommand.agent_id == bindparam("for_agent"),
        AgentCommand.status.in_((CommandStatus.PENDING, CommandStatus.SENT)),
    )
    .values(
        status=CommandStatus.ACKNOWLEDGED,
        acknowledged_at=bindparam("now", type_=AgentCommand.acknowledged_at.type),
    )
    .returning(AgentCommand.command_id)
    .execution_options(synchronize_session=False)
)


async def acknowledge(db: AsyncSession, *, agent_id: str, command_ids: Collection[str]) -> set[str]:
    """Mark an agent's commands acknowledged (one statement for a whole burst of acks).

    Returns the ids that were waiting for an ack; the others were acknowledged or
    finished already, or are not this agent's.
    """
    parameters = {"command_ids": padded(command_ids), "for_agent": agent_id, "now": utcnow()}
    return set((await db.scalars(_ACKNOWLEDGE, parameters)).all())


_OF_AGENT = select(*_ENDED_COLUMNS).where(
    _COMMANDS.c.command_id.in_(bindparam("command_ids", expanding=True)),
    _COMMANDS.c.agent_id == bindparam("for_agent"),
)


async def of_agent(
    db: AsyncSession, *, agent_id: str, command_ids: Collection[str]
) -> list[EndedCommand]:
    """Those of these commands that were addressed to this agent."""
    found = await db.execute(_OF_AGENT, {"command_ids": padded(command_ids), "for_agent": agent_id})
    return [EndedCommand._make(row) for row in found]


@functools.lru_cache(maxsize=16)
def _complete_statement(count: int) -> ReturningUpdate[tuple[str, str | None, str, str]]:
    """The UPDATE recording ``count`` completes (built once per run length): command ids
    ``c0..``, their results ``r0..``."""
    result_of = case(
        {
            bindparam(f"c{n}", type_=_COMMANDS.c.command_id.type): bindparam(
                f"r{n}", type_=_COMMANDS.c.result.type
            )
            for n in range(count)
        },
        value=_COMMANDS.c.command_id,
    )
    return (
        update(_COMMANDS)
        .where(
            _COMMANDS.c.command_id.in_(bindparam("command_ids", expanding=True)),
            _COMMANDS.c.agent_id == bindparam("for_agent"),
            _COMMANDS.c.status.in_(OPEN_COMMAND_STATUSES),
        )
        .values(_outcome(result=result_of))
        .returning(*_ENDED_COLUMNS)
    )


async def complete_for_agent(
    db: AsyncSession, *, agent_id: str, results: Mapping[str, dict[str, Any]]
) -> list[EndedCommand]:
    """Record an agent's ``complete`` reports (command id -> result) in one statement.

    Returns the commands that were open; the others had an outcome already (duplicate
    reports) or are not this agent's.
    """
    command_ids = padded(results)  # the statement for a power-of-two run (a few texts)
    parameters: dict[str, Any] = {
        "command_ids": command_ids,
        "for_agent": agent_id,
        "now": utcnow(),
        "outcome_status": CommandStatus.COMPLETED.value,
        "error": None,
    }
    for n, command_id in enumerate(command_ids):
        parameters[f"c{n}"], parameters[f"r{n}"] = command_id, results[command_id]
    finished = await db.execute(_complete_statement(len(command_ids)), parameters)
    return [EndedCommand._make(row) for row in finished]


_FINISH = (
    update(AgentCommand)
    .where(
        AgentCommand.id == bindparam("command_uuid"),
        AgentCommand.status.in_(OPEN_COMMAND_STATUSES),
    )
    .values(_outcome(result=bindparam("outcome_result", type_=AgentCommand.result.type)))
)


async def finish(
    db: AsyncSession,
    command: AgentCommand,
    *,
    status: CommandStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record an outcome; ``False`` if the command already had one (a duplicate report)."""
    parameters = {
        "command_uuid": command.id,
        "outcome_status": status.value,
        "outcome_result": result,
        "error": error,
        "now": utcnow(),
    }
    outcome = await db.execute(_FINISH, parameters)
    return bool(getattr(outcome, "rowcount", 0))


async def retry(db: AsyncSession, command: AgentCommand, *, error: str) -> bool:
    """Put a command that failed retryably back to ``pending``; ``False`` if it had ended."""
    result = await db.execute(
        update(AgentCommand)
        .where(AgentCommand.id == command.id, AgentCommand.status.in_(OPEN_COMMAND_STATUSES))
        .values(status=CommandStatus.PENDING, error_message=error)
    )
    return bool(getattr(result, "rowcount", 0))


async def requeue_in_flight(db: AsyncSession, agent_ids: Collection[str]) -> Counter[str]:
    """Send again everything these agents had not finished (they reconnected; they dedupe
    by id), in one statement; returns how many commands each got back."""
    requeued = await db.scalars(
        update(AgentCommand)
        .where(AgentCommand.agent_id.in_(padded(agent_ids)), AgentCommand.status.in_(IN_FLIGHT))
        .values(status=CommandStatus.PENDING)
        .returning(AgentCommand.agent_id)
        .execution_options(synchronize_session=False)
    )
    return Counter(agent for agent in requeued.all() if agent is not None)


async def requeue_unacknowledged(
    db: AsyncSession, *, sent_before: datetime, max_attempts: int
) -> tuple[set[str], list[AgentCommand]]:
    """Sent but never acknowledged: back to pending, or failed once attempts run out.

    Returns the agents that have commands to send again, and the commands that failed.
    """
    stale = (AgentCommand.status == CommandStatus.SENT, AgentCommand.updated_at < sent_before)
    requeued = await db.scalars(
        update(AgentCommand)
        .where(AgentCommand.id.in_(_unlocked(*stale, AgentCommand.attempts < max_attempts)))
        .values(status=CommandStatus.PENDING)
        .returning(AgentCommand.agent_id)
    )
    agents = {agent for agent in requeued.all() if agent is not None}
    failed = await _finish_where(
        db,
        *stale,
        AgentCommand.attempts >= max_attempts,
        status=CommandStatus.FAILED,
        error=f"not acknowledged by the agent after {max_attempts} attempts",
    )
    return agents, failed


async def fail_overdue(db: AsyncSession, *, acknowledged_before: datetime) -> list[AgentCommand]:
    """Acknowledged but not finished within the deadline: failed."""
    return await _finish_where(
        db,
        AgentCommand.status == CommandStatus.ACKNOWLEDGED,
        AgentCommand.acknowledged_at < acknowledged_before,
        status=CommandStatus.FAILED,
        error="deadline exceeded: the agent did not finish the command in time",
    )


async def expire_pending(db: AsyncSession, *, created_before: datetime) -> list[AgentCommand]:
    """Never delivered within the pending timeout: expired."""
    return await _finish_where(
        db,
        AgentCommand.status == CommandStatus.PENDING,
        AgentCommand.created_at < created_before,
        status=CommandStatus.EXPIRED,
        error="expired: no agent took the command in time",
    )


async def cancel_open(db: AsyncSession, *, session_id: str, action: Action) -> bool:
    """Cancel a session's not-yet-sent command of one action; ``True`` if one was cancelled."""
    result = await db.execute(
        update(AgentCommand)
        .where(
            AgentCommand.session_id == session_id,
            AgentCommand.action == action,
            AgentCommand.status == CommandStatus.PENDING,
        )
        .values(status=CommandStatus.CANCELLED, completed_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


async def cancel_all_open(db: AsyncSession, *, session_id: str) -> int:
    """Cancel every unfinished command of a session (its agent is gone for good)."""
    result = await db.execute(
        update(AgentCommand)
        .where(
            AgentCommand.session_id == session_id, AgentCommand.status.in_(OPEN_COMMAND_STATUSES)
        )
        .values(status=CommandStatus.CANCELLED, completed_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0))


async def agents_with_pending(db: AsyncSession, agent_ids: Collection[str]) -> set[str]:
    """Which of these agents have pending commands."""
    if not agent_ids:
        return set()
    rows = await db.scalars(
        select(AgentCommand.agent_id)
        .where(AgentCommand.agent_id.in_(agent_ids), AgentCommand.status == CommandStatus.PENDING)
        .distinct()
    )
    return {agent for agent in rows.all() if agent is not None}


async def count_by_status(db: AsyncSession) -> dict[str, int]:
    rows = await db.execute(select(AgentCommand.status, func.count()).group_by(AgentCommand.status))
    return {status: count for status, count in rows.all()}


def _unlocked(*conditions: Any) -> Select[uuid.UUID]:
    """Ids of matching rows that no other transaction holds (PostgreSQL ``SKIP LOCKED``).

    The sweeps use it so they never wait for, or deadlock with, an agent's report on the
    same rows; what they skip is looked at again on their next round.
    """
    return select(AgentCommand.id).where(*conditions).with_for_update(skip_locked=True)


async def _finish_where(
    db: AsyncSession, *conditions: Any, status: CommandStatus, error: str
) -> list[AgentCommand]:
    finished = await db.scalars(
        update(AgentCommand)
        .where(AgentCommand.id.in_(_unlocked(*conditions)))
        .values(status=status, error_message=error, completed_at=utcnow())
        .returning(AgentCommand)
        .execution_options(synchronize_session=False)
    )
    return list(finished.all())
