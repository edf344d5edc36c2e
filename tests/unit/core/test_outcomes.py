"""What a command's outcome does to its session: the command row and the session change
together, once, whoever reports the outcome."""

from __future__ import annotations

from typing import Any

from streamspace.controlplane.commands.outcomes import (
    apply_completions,
    apply_outcome,
    fail_and_clean_up,
)
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo.commands import EndedCommand
from streamspace.protocol import Action
from streamspace.states import CommandStatus, SessionState
from tests.unit.core.conftest import Rows


async def _outcome(rows: Rows, command_id: str, status: CommandStatus, **outcome: Any) -> bool:
    async with rows.db() as db, db.begin():
        command = await command_repo.get(db, command_id)
        assert command is not None
        return await apply_outcome(db, command, status=status, **outcome)


async def test_a_failure_is_recorded_once_and_fails_the_session(rows: Rows) -> None:
    session_id, command_id = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)

    assert await _outcome(rows, command_id, CommandStatus.FAILED, error="disk full")
    assert not await _outcome(rows, command_id, CommandStatus.COMPLETED)  # a duplicate

    command = await rows.get_command(command_id)
    assert (command.status, command.error_message) == (CommandStatus.FAILED, "disk full")
    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        "stop_session failed: disk full",
    )


async def test_a_failure_without_a_reason_names_the_action(rows: Rows) -> None:
    session_id, command_id = await rows.during(Action.HIBERNATE_SESSION, CommandStatus.SENT)

    await _outcome(rows, command_id, CommandStatus.EXPIRED)

    session = await rows.get_session(session_id)
    assert session.termination_reason == "hibernate_session failed"


async def test_a_failure_leaves_an_ended_session_as_it_ended(rows: Rows) -> None:
    session_id = await rows.session(SessionState.TERMINATED)
    command_id = await rows.command(session_id, CommandStatus.SENT, Action.STOP_SESSION)

    assert await _outcome(rows, command_id, CommandStatus.FAILED, error="late")

    assert (await rows.get_session(session_id)).state == SessionState.TERMINATED


async def test_an_outcome_without_a_session_only_ends_the_command(rows: Rows) -> None:
    sessionless = await rows.command(None, CommandStatus.ACKNOWLEDGED)
    orphan = await rows.command("s-deleted", CommandStatus.ACKNOWLEDGED)

    assert await _outcome(rows, sessionless, CommandStatus.COMPLETED)
    assert await _outcome(rows, orphan, CommandStatus.FAILED, error="gone")

    assert (await rows.get_command(sessionless)).status == CommandStatus.COMPLETED
    assert (await rows.get_command(orphan)).status == CommandStatus.FAILED


async def test_an_outcome_recorded_by_a_sweep_still_moves_the_session(rows: Rows) -> None:
    session_id, command_id = await rows.during(Action.WAKE_SESSION, CommandStatus.ACKNOWLEDGED)

    assert await _outcome(
        rows, command_id, CommandStatus.FAILED, error="deadline", already_recorded=True
    )

    assert (await rows.get_command(command_id)).status == CommandStatus.ACKNOWLEDGED  # untouched
    assert (await rows.get_session(session_id)).state == SessionState.FAILED


async def test_a_wake_completed_on_a_unix_socket_runs_the_session(rows: Rows) -> None:
    session_id, command_id = await rows.during(Action.WAKE_SESSION, CommandStatus.ACKNOWLEDGED)
    result = {"vnc": {"unix": "/run/vnc/s.sock"}, "state": {"woken": True}}

    await _outcome(rows, command_id, CommandStatus.COMPLETED, result=result)

    session = await rows.get_session(session_id)
    assert (session.state, session.vnc_host, session.vnc_port, session.platform_state) == (
        SessionState.RUNNING,
        "unix:/run/vnc/s.sock",
        None,
        {"woken": True},
    )
    assert (await rows.get_command(command_id)).result == result


async def test_completions_move_each_session_their_command_names(rows: Rows) -> None:
    starting = await rows.session(SessionState.PENDING)
    stopping = await rows.session(SessionState.STOPPING)
    completed = [
        (EndedCommand("c1", starting, Action.START_SESSION.value, "completed"), {"vnc": {}}),
        (EndedCommand("c2", stopping, Action.STOP_SESSION.value, "completed"), {}),
        (EndedCommand("c3", "s-deleted", Action.STOP_SESSION.value, "completed"), {}),
        (EndedCommand("c4", None, Action.STOP_SESSION.value, "completed"), {}),
    ]

    async with rows.db() as db, db.begin():
        await apply_completions(db, completed)

    failed = await rows.get_session(starting)
    assert (failed.state, failed.termination_reason) == (
        SessionState.FAILED,
        "start_session reported no valid VNC endpoint",
    )
    assert (await rows.get_session(stopping)).state == SessionState.TERMINATED


async def test_failing_a_session_that_ended_by_itself_queues_its_cleanup(rows: Rows) -> None:
    on_agent = await rows.session(SessionState.RUNNING, platform_state={"pid": 1})
    unplaced = await rows.session(SessionState.WAKING, agent_id=None)

    async with rows.db() as db, db.begin():
        for session_id in (on_agent, unplaced):
            session = await session_repo.get(db, session_id, for_update=True)
            assert session is not None
            await fail_and_clean_up(db, session, reason="exited")

    for session_id in (on_agent, unplaced):
        session = await rows.get_session(session_id)
        assert (session.state, session.termination_reason) == (SessionState.FAILED, "exited")
    [cleanup] = await rows.stops_of(on_agent)
    assert (cleanup.agent_id, cleanup.payload) == (
        "agent-1",
        {"state": {"pid": 1}, "keep_home": False},
    )
    assert await rows.stops_of(unplaced) == []
