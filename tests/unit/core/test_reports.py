"""What an agent's reports do to the rows: a burst applied in one transaction → the
commands, the sessions and the errors answered as they should be."""

from __future__ import annotations

from typing import Any

from streamspace.config import ApiSettings
from streamspace.controlplane.agents.reports import Applied, Report, ReportRecorder
from streamspace.protocol import (
    Ack,
    AckPayload,
    Action,
    Complete,
    CompletePayload,
    Failed,
    FailedPayload,
    Progress,
    ProgressPayload,
    Status,
    StatusPayload,
)
from streamspace.states import CommandStatus, SessionState
from tests.unit.core.conftest import AGENT, MAX_ATTEMPTS, Rows

VNC = {"host": "10.0.0.7", "port": 5907}


def ack(command_id: str) -> Ack:
    return Ack(payload=AckPayload(command_id=command_id))


def complete(command_id: str, **result: Any) -> Complete:
    return Complete(payload=CompletePayload(command_id=command_id, result=result))


def failed(command_id: str, error: str = "boom", *, retryable: bool = False) -> Failed:
    return Failed(payload=FailedPayload(command_id=command_id, error=error, retryable=retryable))


def exited(session_id: str, reason: str = "the desktop quit") -> Status:
    return Status(payload=StatusPayload(session_id=session_id, state="exited", reason=reason))


def progress(session_id: str, message: str = "pulling image") -> Progress:
    return Progress(
        payload=ProgressPayload(session_id=session_id, stage="pulling image", message=message)
    )


async def _apply(
    rows: Rows, settings: ApiSettings, *reports: Report, agent_id: str = AGENT
) -> Applied:
    return await ReportRecorder(db=rows.db, settings=settings).apply(agent_id, reports)


def _errors(applied: Applied) -> list[tuple[str, str | None]]:
    return [(error.payload.code, error.payload.ref) for error in applied.errors]


async def test_an_ack_marks_the_command_acknowledged(rows: Rows, settings: ApiSettings) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.SENT)

    applied = await _apply(rows, settings, ack(command_id))

    command = await rows.get_command(command_id)
    assert command.status == CommandStatus.ACKNOWLEDGED
    assert command.acknowledged_at is not None
    assert (applied.errors, applied.wake) == ([], False)
    assert (await rows.get_session(session_id)).state == SessionState.PENDING


async def test_a_repeated_ack_changes_nothing_and_is_no_error(
    rows: Rows, settings: ApiSettings
) -> None:
    _, command_id = await rows.during(Action.START_SESSION, CommandStatus.ACKNOWLEDGED)
    before = (await rows.get_command(command_id)).acknowledged_at

    applied = await _apply(rows, settings, ack(command_id))

    command = await rows.get_command(command_id)
    assert (command.status, command.acknowledged_at) == (CommandStatus.ACKNOWLEDGED, before)
    assert applied.errors == []


async def test_reports_about_commands_of_other_agents_are_answered_with_errors(
    rows: Rows, settings: ApiSettings
) -> None:
    _, theirs = await rows.during(Action.START_SESSION, CommandStatus.SENT, agent_id="agent-2")
    acks = [ack(theirs), ack("cmd-nobody")]
    outcomes = [complete(theirs, vnc=VNC), failed(theirs)]

    answered = await _apply(rows, settings, *acks)
    answered.errors += (await _apply(rows, settings, *outcomes)).errors

    assert sorted(_errors(answered)) == sorted(
        ("unknown_command", report.id) for report in acks + outcomes
    )
    assert answered.errors[0].payload.message == (
        f"command {theirs!r} is not addressed to agent {AGENT!r}"
    )
    assert (await rows.get_command(theirs)).status == CommandStatus.SENT


async def test_an_ack_and_the_outcome_in_one_burst_complete_the_start(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.SENT)

    applied = await _apply(
        rows, settings, ack(command_id), complete(command_id, vnc=VNC, state={"pid": 7})
    )

    command = await rows.get_command(command_id)
    assert command.status == CommandStatus.COMPLETED
    assert command.acknowledged_at is not None
    assert command.completed_at is not None
    assert command.result == {"vnc": VNC, "state": {"pid": 7}}
    session = await rows.get_session(session_id)
    assert (session.state, session.vnc_host, session.vnc_port) == (
        SessionState.RUNNING,
        "10.0.0.7",
        5907,
    )
    assert session.platform_state == {"pid": 7}
    assert applied.errors == []


async def test_a_start_completed_without_a_vnc_endpoint_fails_its_session(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.ACKNOWLEDGED)

    await _apply(rows, settings, complete(command_id, vnc={"host": "10.0.0.7"}))

    assert (await rows.get_command(command_id)).status == CommandStatus.COMPLETED
    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        "start_session reported no valid VNC endpoint",
    )


async def test_a_completed_stop_terminates_and_a_hibernation_keeps_the_state(
    rows: Rows, settings: ApiSettings
) -> None:
    stopping, stop = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    hibernating, hibernate = await rows.during(Action.HIBERNATE_SESSION, CommandStatus.ACKNOWLEDGED)

    await _apply(rows, settings, complete(stop), complete(hibernate, state={"volume": "v1"}))

    stopped = await rows.get_session(stopping)
    assert (stopped.state, stopped.termination_reason) == (SessionState.TERMINATED, "stopped")
    assert stopped.terminated_at is not None
    asleep = await rows.get_session(hibernating)
    assert (asleep.state, asleep.vnc_host, asleep.platform_state) == (
        SessionState.HIBERNATED,
        None,
        {"volume": "v1"},
    )


async def test_a_start_completed_after_its_session_was_given_up_is_stopped(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id = await rows.session(SessionState.FAILED)
    command_id = await rows.command(session_id, CommandStatus.FAILED)  # its deadline passed

    applied = await _apply(rows, settings, complete(command_id, vnc=VNC, state={"pid": 9}))

    assert (await rows.get_session(session_id)).state == SessionState.FAILED
    assert (await rows.get_command(command_id)).status == CommandStatus.FAILED
    [cleanup] = await rows.stops_of(session_id)
    assert cleanup.payload == {"state": {"pid": 9}, "keep_home": False}
    assert applied.errors == []


async def test_a_repeated_complete_changes_nothing(rows: Rows, settings: ApiSettings) -> None:
    session_id, command_id = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    await _apply(rows, settings, complete(command_id))
    first = await rows.get_session(session_id)

    applied = await _apply(rows, settings, complete(command_id))

    again = await rows.get_session(session_id)
    assert (again.state, again.terminated_at) == (SessionState.TERMINATED, first.terminated_at)
    assert await rows.stops_of(session_id) == []
    assert applied.errors == []


async def test_a_start_completing_after_the_user_asked_to_stop_leaves_the_stop_in_charge(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id = await rows.session(SessionState.STOPPING)
    start = await rows.command(session_id, CommandStatus.ACKNOWLEDGED)
    await rows.command(session_id, CommandStatus.PENDING, Action.STOP_SESSION)

    await _apply(rows, settings, complete(start, vnc=VNC, state={"pid": 3}))

    session = await rows.get_session(session_id)
    assert (session.state, session.platform_state) == (SessionState.STOPPING, {"pid": 3})


async def test_a_retryable_failure_with_attempts_left_is_sent_again(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id, command_id = await rows.during(
        Action.START_SESSION, CommandStatus.ACKNOWLEDGED, attempts=MAX_ATTEMPTS - 1
    )

    applied = await _apply(rows, settings, failed(command_id, "image pull", retryable=True))

    command = await rows.get_command(command_id)
    assert (command.status, command.error_message) == (CommandStatus.PENDING, "image pull")
    assert applied.wake is True
    assert (await rows.get_session(session_id)).state == SessionState.PENDING


async def test_a_failure_without_retries_fails_the_command_and_its_session(
    rows: Rows, settings: ApiSettings
) -> None:
    spent, out_of_attempts = await rows.during(
        Action.START_SESSION, CommandStatus.ACKNOWLEDGED, attempts=MAX_ATTEMPTS
    )
    final, not_retryable = await rows.during(Action.WAKE_SESSION, CommandStatus.ACKNOWLEDGED)

    applied = await _apply(
        rows,
        settings,
        failed(out_of_attempts, "image pull", retryable=True),
        failed(not_retryable, "no such volume"),
    )

    assert applied.wake is False
    expected = {
        (spent, out_of_attempts): "start_session failed: image pull",
        (final, not_retryable): "wake_session failed: no such volume",
    }
    for (session_id, command_id), reason in expected.items():
        assert (await rows.get_command(command_id)).status == CommandStatus.FAILED
        session = await rows.get_session(session_id)
        assert (session.state, session.termination_reason) == (SessionState.FAILED, reason)


async def test_a_session_that_exited_is_failed_and_cleaned_up(
    rows: Rows, settings: ApiSettings
) -> None:
    session_id = await rows.session(SessionState.RUNNING, platform_state={"pid": 4})
    stopping = await rows.session(SessionState.STOPPING)

    applied = await _apply(rows, settings, exited(session_id), exited(stopping))

    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason, session.vnc_host) == (
        SessionState.FAILED,
        "session exited: the desktop quit",
        None,
    )
    [cleanup] = await rows.stops_of(session_id)
    assert cleanup.payload == {"state": {"pid": 4}, "keep_home": False}
    assert (await rows.get_session(stopping)).state == SessionState.STOPPING  # on its way
    assert applied.errors == []


async def test_progress_is_shown_while_a_session_starts(rows: Rows, settings: ApiSettings) -> None:
    starting, _ = await rows.during(Action.START_SESSION, CommandStatus.ACKNOWLEDGED)
    running = await rows.session(SessionState.RUNNING)

    applied = await _apply(rows, settings, progress(starting), progress(running, "ready"))

    assert (await rows.get_session(starting)).status_message == "pulling image"
    assert (await rows.get_session(running)).status_message is None
    assert applied.errors == []


async def test_reports_about_sessions_of_other_agents_are_answered_with_errors(
    rows: Rows, settings: ApiSettings
) -> None:
    theirs = await rows.session(SessionState.PENDING, agent_id="agent-2")
    reports = [exited(theirs), progress(theirs), progress("s-nowhere")]

    applied = await _apply(rows, settings, *reports)

    assert _errors(applied) == [("unknown_session", report.id) for report in reports]
    assert applied.errors[0].payload.message == (
        f"session {theirs!r} does not run on agent {AGENT!r}"
    )
    session = await rows.get_session(theirs)
    assert (session.state, session.status_message) == (SessionState.PENDING, None)


async def test_a_burst_is_applied_in_arrival_order(rows: Rows, settings: ApiSettings) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.ACKNOWLEDGED)

    await _apply(rows, settings, complete(command_id, vnc=VNC), exited(session_id, "crashed"))

    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        "session exited: crashed",
    )
    assert len(await rows.stops_of(session_id)) == 1
