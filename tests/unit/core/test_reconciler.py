"""Every check of the reconciler: rows in a broken state → the clock moved on → reconcile →
the rows as they should be (and, just short of the timeout, as they were)."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.commands.reconciler import Reconciler
from streamspace.controlplane.hub import AgentHub
from streamspace.db.models import IdempotencyKey
from streamspace.db.repo.idempotency import KEEP
from streamspace.protocol import Action, CloseCode
from streamspace.states import CommandStatus, SessionState
from streamspace.testing import FakeAgentSocket
from tests.unit.core.conftest import (
    ACK,
    AGENT,
    DEADLINE,
    HEARTBEAT,
    MAX_ATTEMPTS,
    PENDING,
    REPLICA,
    REPLICA_TTL,
    Clock,
    HubProbe,
    Rows,
)

SILENCE = 3 * HEARTBEAT
"""Three heartbeat intervals: an agent silent longer is dropped."""


async def _connect(hub: AgentHub, agent_id: str) -> tuple[ConnectedAgent, FakeAgentSocket]:
    socket = FakeAgentSocket()
    connection = ConnectedAgent(socket, agent_id=agent_id, platform="local")
    await hub.register(connection)
    return connection, socket


async def test_a_connection_silent_for_three_heartbeats_is_closed(
    reconciler: Reconciler, hub: AgentHub
) -> None:
    silent, silent_socket = await _connect(hub, "agent-silent")
    quiet, quiet_socket = await _connect(hub, "agent-quiet")
    silent.last_seen = time.monotonic() - SILENCE - 1
    quiet.last_seen = time.monotonic() - SILENCE + 5

    await reconciler.check_silent_connections()

    assert silent.closed.is_set()
    assert (silent_socket.close_code, silent_socket.close_reason) == (
        CloseCode.HEARTBEAT_TIMEOUT,
        "missed heartbeats",
    )
    assert not quiet.closed.is_set()
    assert quiet_socket.close_code is None


async def test_an_unacknowledged_command_is_sent_again_after_the_ack_timeout(
    reconciler: Reconciler, rows: Rows, clock: Clock, probe: HubProbe
) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.SENT)

    clock.advance(ACK - 1)
    await reconciler.check_unacknowledged()
    assert (await rows.get_command(command_id)).status == CommandStatus.SENT
    assert probe.rings == []

    clock.advance(2)
    await reconciler.check_unacknowledged()
    command = await rows.get_command(command_id)
    assert (command.status, command.attempts) == (CommandStatus.PENDING, 1)
    assert probe.rings == [AGENT]
    assert (await rows.get_session(session_id)).state == SessionState.PENDING


async def test_an_unacknowledged_command_out_of_attempts_fails_with_its_session(
    reconciler: Reconciler, rows: Rows, clock: Clock, probe: HubProbe
) -> None:
    session_id, command_id = await rows.during(Action.START_SESSION, CommandStatus.SENT, attempts=3)

    clock.advance(ACK + 1)
    await reconciler.check_unacknowledged()

    command = await rows.get_command(command_id)
    error = f"not acknowledged by the agent after {MAX_ATTEMPTS} attempts"
    assert (command.status, command.error_message) == (CommandStatus.FAILED, error)
    assert command.completed_at is not None
    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        f"start_session failed: {error}",
    )
    assert probe.rings == []


async def test_an_acknowledged_command_past_its_deadline_fails_with_its_session(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    session_id, command_id = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    running = await rows.session(SessionState.RUNNING)
    still_sent = await rows.command(running, CommandStatus.SENT, Action.STOP_SESSION)

    clock.advance(DEADLINE - 1)
    await reconciler.check_deadlines()
    assert (await rows.get_command(command_id)).status == CommandStatus.ACKNOWLEDGED

    clock.advance(2)
    await reconciler.check_deadlines()
    error = "deadline exceeded: the agent did not finish the command in time"
    command = await rows.get_command(command_id)
    assert (command.status, command.error_message) == (CommandStatus.FAILED, error)
    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        f"stop_session failed: {error}",
    )
    assert (await rows.get_command(still_sent)).status == CommandStatus.SENT  # not acknowledged


async def test_a_pending_command_past_the_pending_timeout_expires_with_its_session(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    session_id, command_id = await rows.during(Action.WAKE_SESSION, CommandStatus.PENDING)

    clock.advance(PENDING - 1)
    await reconciler.check_expired()
    assert (await rows.get_command(command_id)).status == CommandStatus.PENDING

    clock.advance(2)
    await reconciler.check_expired()
    error = "expired: no agent took the command in time"
    command = await rows.get_command(command_id)
    assert (command.status, command.error_message) == (CommandStatus.EXPIRED, error)
    session = await rows.get_session(session_id)
    assert (session.state, session.termination_reason) == (
        SessionState.FAILED,
        f"wake_session failed: {error}",
    )


async def test_an_ended_session_stays_as_it_ended_when_its_command_times_out(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    session_id = await rows.session(SessionState.TERMINATED)
    command_id = await rows.command(session_id, CommandStatus.PENDING, Action.STOP_SESSION)

    clock.advance(PENDING + 1)
    await reconciler.check_expired()

    assert (await rows.get_command(command_id)).status == CommandStatus.EXPIRED
    assert (await rows.get_session(session_id)).state == SessionState.TERMINATED


async def test_an_agent_online_whose_heartbeats_stopped_is_marked_offline(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    await rows.agent("agent-stale")
    clock.advance(SILENCE - 5)
    await rows.agent("agent-fresh")  # beat 25 s after the other

    clock.advance(6)
    await reconciler.check_silent_agents()

    assert (await rows.get_agent("agent-stale")).status == "offline"
    assert (await rows.get_agent("agent-fresh")).status == "online"


async def test_a_stuck_session_with_no_open_command_is_failed(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    stuck = await rows.session(SessionState.STOPPING)
    moving, _ = await rows.during(Action.HIBERNATE_SESSION, CommandStatus.ACKNOWLEDGED)
    cancelled = await rows.session(SessionState.PENDING)
    await rows.command(cancelled, CommandStatus.CANCELLED)
    running = await rows.session(SessionState.RUNNING)

    clock.advance(ACK - 1)
    await reconciler.check_stuck_sessions()
    assert (await rows.get_session(stuck)).state == SessionState.STOPPING

    clock.advance(2)
    await reconciler.check_stuck_sessions()
    expected = {
        stuck: (SessionState.FAILED, "stuck in stopping: no command in progress"),
        moving: (SessionState.HIBERNATING, None),
        cancelled: (SessionState.FAILED, "stuck in pending: no command in progress"),
        running: (SessionState.RUNNING, None),
    }
    for session_id, state in expected.items():
        session = await rows.get_session(session_id)
        assert (session.state, session.termination_reason) == state


async def test_a_replica_gone_for_a_full_ttl_loses_its_agents_and_viewers(
    reconciler: Reconciler, rows: Rows, clock: Clock, probe: HubProbe
) -> None:
    await rows.agent("agent-b1", replica="replica-b")
    await rows.agent("agent-b2", replica="replica-b")
    await rows.agent("agent-c", replica="replica-c")
    await rows.agent("agent-a", replica=REPLICA)
    session_id = await rows.session(SessionState.RUNNING, agent_id="agent-c", viewers=3)
    await rows.viewer(session_id, replica="replica-b")
    await rows.viewer(session_id, replica="replica-b")
    await rows.viewer(session_id, replica="replica-c")
    probe.gone = {"replica-b", REPLICA}  # this replica's own liveness is never doubted

    await reconciler.check_dead_replicas()  # first seen missing: maybe a Redis failover
    clock.advance(REPLICA_TTL - 1)
    await reconciler.check_dead_replicas()
    assert (await rows.get_agent("agent-b1")).status == "online"

    clock.advance(1)
    await reconciler.check_dead_replicas()
    statuses = {
        name: (await rows.get_agent(f"agent-{name}")).status for name in ("b1", "b2", "c", "a")
    }
    assert statuses == {"b1": "offline", "b2": "offline", "c": "online", "a": "online"}
    assert (await rows.get_session(session_id)).active_viewers == 1


async def test_a_replica_whose_liveness_came_back_starts_its_ttl_anew(
    reconciler: Reconciler, rows: Rows, clock: Clock, probe: HubProbe
) -> None:
    await rows.agent(replica="replica-b")
    probe.gone = {"replica-b"}
    await reconciler.check_dead_replicas()
    clock.advance(REPLICA_TTL - 2)
    probe.gone = set()
    await reconciler.check_dead_replicas()  # re-created its key: alive after all
    probe.gone = {"replica-b"}
    clock.advance(1)
    await reconciler.check_dead_replicas()

    clock.advance(REPLICA_TTL - 1)
    await reconciler.check_dead_replicas()
    assert (await rows.get_agent()).status == "online"
    clock.advance(1)
    await reconciler.check_dead_replicas()
    assert (await rows.get_agent()).status == "offline"


async def test_run_once_runs_every_check(
    reconciler: Reconciler, rows: Rows, clock: Clock, hub: AgentHub, probe: HubProbe
) -> None:
    _, undelivered = await rows.during(Action.WAKE_SESSION, CommandStatus.PENDING)
    clock.advance(PENDING - DEADLINE)
    connection, _ = await _connect(hub, "agent-connected")
    connection.last_seen = time.monotonic() - SILENCE - 1
    await rows.agent("agent-silent")
    watched = await rows.session(SessionState.RUNNING, viewers=1)
    await rows.viewer(watched, replica="replica-b")
    probe.gone = {"replica-b"}
    _, unacknowledged = await rows.during(Action.START_SESSION, CommandStatus.SENT)
    _, overdue = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    stuck = await rows.session(SessionState.HIBERNATING)

    await reconciler.run_once()  # replica-b first seen missing
    clock.advance(DEADLINE + 1)
    await reconciler.run_once()

    assert connection.closed.is_set()
    assert (await rows.get_agent("agent-silent")).status == "offline"
    assert (await rows.get_session(watched)).active_viewers == 0
    assert (await rows.get_command(unacknowledged)).status == CommandStatus.PENDING
    assert probe.rings == [AGENT]
    assert (await rows.get_command(overdue)).status == CommandStatus.FAILED
    assert (await rows.get_command(undelivered)).status == CommandStatus.EXPIRED
    assert (await rows.get_session(stuck)).state == SessionState.FAILED


async def test_a_failing_check_is_logged_and_the_others_still_run(
    reconciler: Reconciler,
    rows: Rows,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check_deadlines() -> None:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(reconciler, "check_deadlines", check_deadlines)
    _, overdue = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    _, undelivered = await rows.during(Action.START_SESSION, CommandStatus.PENDING)

    clock.advance(PENDING + 1)
    await reconciler.run_once()

    assert "reconciler check check_deadlines failed; will retry" in caplog.text
    assert (await rows.get_command(overdue)).status == CommandStatus.ACKNOWLEDGED
    assert (await rows.get_command(undelivered)).status == CommandStatus.EXPIRED


async def test_run_passes_until_stopped(
    reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()
    passes = 0

    async def run_once() -> None:
        nonlocal passes
        passes += 1
        if passes == 2:
            stop.set()

    monkeypatch.setattr(reconciler, "run_once", run_once)
    await asyncio.wait_for(reconciler.run(stop), timeout=5)
    assert passes == 2


async def test_idempotency_keys_are_forgotten_after_a_day(
    reconciler: Reconciler, rows: Rows, clock: Clock
) -> None:
    session_id = await rows.session()
    owner = (await rows.get_session(session_id)).owner_id
    async with rows.db() as db, db.begin():
        db.add(IdempotencyKey(user_id=owner, key="k", request_hash="h", resource_id=session_id))
    clock.advance(KEEP.total_seconds() - 60)
    await reconciler.check_idempotency_keys()
    assert await rows.count(IdempotencyKey) == 1
    clock.advance(120)
    await reconciler.check_idempotency_keys()
    assert await rows.count(IdempotencyKey) == 0
