"""Applying what an agent reports (heartbeat, ack, complete, failed, status, progress) to the
database.

Reports arrive in bursts under load; a burst is applied in ONE transaction, in arrival
order, so an agent's stream costs one commit per burst instead of one per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamspace.config import ApiSettings
from streamspace.controlplane.commands.outcomes import (
    apply_completions,
    apply_outcome,
    fail_and_clean_up,
)
from streamspace.db.engine import DbSession, SessionFactory, transaction
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.protocol import (
    Ack,
    Complete,
    Error,
    ErrorPayload,
    Failed,
    Progress,
    Status,
)
from streamspace.states import CommandStatus, SessionState

Report = Ack | Complete | Failed | Status | Progress
"""What goes to the database with the burst (heartbeats are batched separately)."""


@dataclass
class Applied:
    """What the caller does after the commit: answer errors, wake the dispatcher."""

    errors: list[Error] = field(default_factory=list)
    wake: bool = False


class ReportRecorder:
    """Applies the bursts of reports agents send."""

    def __init__(self, *, db: SessionFactory, settings: ApiSettings) -> None:
        self._db = db
        self._settings = settings

    async def apply(self, agent_id: str, reports: Sequence[Report]) -> Applied:
        """Apply reports of one agent in order, in one transaction."""
        async with transaction(self._db) as db:
            return await _apply(db, self._settings, agent_id, reports)


async def _apply(
    db: DbSession, settings: ApiSettings, agent_id: str, reports: Sequence[Report]
) -> Applied:
    """Apply reports of one agent in order, in the caller's transaction.

    An ack whose outcome is in the same burst needs no statement: recording the outcome
    also records the acknowledgement.
    """
    applied = Applied()
    finished = {
        report.payload.command_id for report in reports if isinstance(report, Complete | Failed)
    }
    acks = [
        report
        for report in reports
        if isinstance(report, Ack) and report.payload.command_id not in finished
    ]
    if acks:  # acknowledgements commute with everything else: one statement for all
        await _acknowledge(db, agent_id, acks, applied)
    completes: list[Complete] = []
    for report in reports:  # in order; a run of completes is applied together
        if isinstance(report, Complete):
            completes.append(report)
            continue
        await _complete(db, agent_id, completes, applied)
        completes = []
        if isinstance(report, Failed):
            await _failed(db, settings, agent_id, report, applied)
        elif isinstance(report, Status):
            await _status_report(db, agent_id, report, applied)
        elif isinstance(report, Progress):
            await _progress_report(db, agent_id, report, applied)
    await _complete(db, agent_id, completes, applied)
    return applied


async def _acknowledge(db: DbSession, agent_id: str, acks: list[Ack], applied: Applied) -> None:
    ids = {ack.payload.command_id for ack in acks}
    unexpected = ids - await command_repo.acknowledge(db, agent_id=agent_id, command_ids=ids)
    if unexpected:
        known = await command_repo.of_agent(db, agent_id=agent_id, command_ids=unexpected)
        _answer_strangers(applied, agent_id, acks, unexpected - {c.command_id for c in known})


async def _complete(
    db: DbSession, agent_id: str, completes: list[Complete], applied: Applied
) -> None:
    """A run of completes costs the same few statements however long it is.

    A complete for a command that had ended otherwise meanwhile (failed on a deadline,
    cancelled after a re-send) still moves its session: a start that succeeded after its
    session was given up is cleaned up instead of left running.
    """
    if not completes:
        return
    results = {report.payload.command_id: report.payload.result for report in completes}
    succeeded = await command_repo.complete_for_agent(db, agent_id=agent_id, results=results)
    late = results.keys() - {command.command_id for command in succeeded}
    if late:
        known = await command_repo.of_agent(db, agent_id=agent_id, command_ids=late)
        succeeded += [c for c in known if c.status != CommandStatus.COMPLETED]  # not duplicates
        _answer_strangers(applied, agent_id, completes, late - {c.command_id for c in known})
    order = {command_id: index for index, command_id in enumerate(results)}
    succeeded.sort(key=lambda command: order[command.command_id])
    await apply_completions(db, [(c, results[c.command_id]) for c in succeeded])


def _answer_strangers(
    applied: Applied, agent_id: str, reports: Sequence[Ack | Complete], strangers: set[str]
) -> None:
    """An error for each report about a command not addressed to this agent."""
    for report in reports:
        if report.payload.command_id in strangers:
            _unknown_command(applied, report, agent_id)


async def _failed(
    db: DbSession, settings: ApiSettings, agent_id: str, report: Failed, applied: Applied
) -> None:
    command = await command_repo.get_for_agent(
        db, agent_id=agent_id, command_id=report.payload.command_id
    )
    if command is None:
        _unknown_command(applied, report, agent_id)
    elif report.payload.retryable and command.attempts < settings.command_max_attempts:
        applied.wake |= await command_repo.retry(db, command, error=report.payload.error)
    else:
        await apply_outcome(db, command, status=CommandStatus.FAILED, error=report.payload.error)


def _unknown_command(applied: Applied, report: Report, agent_id: str) -> None:
    command_id = getattr(report.payload, "command_id", "")
    _error(
        applied,
        report,
        "unknown_command",
        f"command {command_id!r} is not addressed to agent {agent_id!r}",
    )


async def _status_report(db: DbSession, agent_id: str, report: Status, applied: Applied) -> None:
    """A session ended by itself: fail it with the agent's reason and clean up after it."""
    status = report.payload
    session = await session_repo.get(db, status.session_id, for_update=True)
    if session is None or session.agent_id != agent_id:
        _error(
            applied,
            report,
            "unknown_session",
            f"session {status.session_id!r} does not run on agent {agent_id!r}",
        )
    elif session.state in (SessionState.RUNNING, SessionState.WAKING):
        await fail_and_clean_up(db, session, reason=f"session exited: {status.reason}")


async def _progress_report(
    db: DbSession, agent_id: str, report: Progress, applied: Applied
) -> None:
    """How far a start or wake got: shown with the session while it is not running yet."""
    progress = report.payload
    shown = await session_repo.set_status_message(
        db, progress.session_id, agent_id=agent_id, message=progress.message
    )
    if shown:
        return
    session = await session_repo.get(db, progress.session_id)
    if session is None or session.agent_id != agent_id:  # else it is past starting: ignored
        _error(
            applied,
            report,
            "unknown_session",
            f"session {progress.session_id!r} does not run on agent {agent_id!r}",
        )


def _error(applied: Applied, report: Report, code: str, text: str) -> None:
    applied.errors.append(Error(payload=ErrorPayload(code=code, message=text, ref=report.id)))
