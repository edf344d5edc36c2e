"""An agent's arrival reconciles the database with what it runs: lost sessions failed,
strays stopped, unfinished commands sent again; its departure marks it offline."""

from __future__ import annotations

import asyncio

import pytest

from streamspace.controlplane.agents.arrivals import LOST
from streamspace.protocol import Action, RunningSession
from streamspace.states import CommandStatus, SessionState
from tests.unit.core.conftest import AGENT, REPLICA, Arrivals, Rows


async def test_an_arriving_agent_is_online_here(rows: Rows, arrival: Arrivals) -> None:
    await rows.agent(status="offline", replica="replica-b", heartbeat_ago=3600)

    await arrival.connected()

    agent = await rows.get_agent()
    assert (agent.status, agent.replica, agent.capacity, agent.version) == (
        "online",
        REPLICA,
        9,
        "t",
    )
    assert agent.last_heartbeat is not None
    assert agent.last_heartbeat >= agent.created_at  # not an hour ago any more


async def test_an_agent_unknown_to_the_database_is_refused(arrival: Arrivals) -> None:
    with pytest.raises(LookupError, match="vanished"):
        await arrival.connected()


async def test_commands_in_flight_are_sent_again_on_arrival(rows: Rows, arrival: Arrivals) -> None:
    await rows.agent(status="offline")
    _, sent = await rows.during(Action.START_SESSION, CommandStatus.SENT)
    _, acknowledged = await rows.during(Action.STOP_SESSION, CommandStatus.ACKNOWLEDGED)
    _, completed = await rows.during(Action.WAKE_SESSION, CommandStatus.COMPLETED)
    _, elsewhere = await rows.during(Action.START_SESSION, CommandStatus.SENT, agent_id="agent-2")

    await arrival.connected()

    statuses = {
        command_id: (await rows.get_command(command_id)).status
        for command_id in (sent, acknowledged, completed, elsewhere)
    }
    assert statuses == {
        sent: CommandStatus.PENDING,
        acknowledged: CommandStatus.PENDING,
        completed: CommandStatus.COMPLETED,
        elsewhere: CommandStatus.SENT,
    }


async def test_agents_arriving_together_each_get_their_own_outcome(
    rows: Rows, arrival: Arrivals
) -> None:
    """A reconnect storm: arrivals that share a transaction are reconciled each on its own,
    and the one agent the database does not know is refused without failing the others."""
    await rows.agent("agent-a", status="offline", replica=None)
    await rows.agent("agent-b", status="offline", replica=None)
    lost = await rows.session(SessionState.RUNNING, agent_id="agent-a")
    kept = await rows.session(SessionState.RUNNING, agent_id="agent-b")
    _, sent = await rows.during(Action.START_SESSION, CommandStatus.SENT, agent_id="agent-b")

    outcomes = await asyncio.gather(
        arrival.connected(agent_id="agent-a"),
        arrival.connected([RunningSession(session_id=kept)], agent_id="agent-b"),
        arrival.connected(agent_id="agent-unknown"),
        return_exceptions=True,
    )

    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], LookupError) and "agent-unknown" in str(outcomes[2])
    for agent_id in ("agent-a", "agent-b"):
        agent = await rows.get_agent(agent_id)
        assert (agent.status, agent.replica) == ("online", REPLICA)
    assert (await rows.get_session(lost)).state == SessionState.FAILED
    assert (await rows.get_session(kept)).state == SessionState.RUNNING
    assert (await rows.get_command(sent)).status == CommandStatus.PENDING


async def test_running_sessions_the_agent_no_longer_runs_are_failed_and_stopped(
    rows: Rows, arrival: Arrivals
) -> None:
    await rows.agent(status="offline")
    lost = await rows.session(SessionState.RUNNING, platform_state={"pid": 5})
    kept = await rows.session(SessionState.RUNNING)
    starting = await rows.session(SessionState.PENDING)  # its start command decides
    theirs = await rows.session(SessionState.RUNNING, agent_id="agent-2")

    await arrival.connected([RunningSession(session_id=kept)])

    failed = await rows.get_session(lost)
    assert (failed.state, failed.termination_reason, failed.vnc_host) == (
        SessionState.FAILED,
        LOST,
        None,
    )
    [cleanup] = await rows.stops_of(lost)
    assert (cleanup.agent_id, cleanup.payload) == (AGENT, {"state": {"pid": 5}, "keep_home": False})
    for session_id, state in (
        (kept, SessionState.RUNNING),
        (starting, SessionState.PENDING),
        (theirs, SessionState.RUNNING),
    ):
        assert (await rows.get_session(session_id)).state == state
        assert await rows.stops_of(session_id) == []


async def test_sessions_the_agent_runs_that_ended_or_never_existed_are_stopped(
    rows: Rows, arrival: Arrivals
) -> None:
    await rows.agent(status="offline")
    ended = await rows.session(SessionState.TERMINATED)
    starting = await rows.session(SessionState.PENDING)
    inventory = [
        RunningSession(session_id=ended, state={"pid": 1}),
        RunningSession(session_id="s-unknown", state={"pid": 2}),
        RunningSession(session_id=starting, state={"pid": 3}),
    ]

    await arrival.connected(inventory)

    stops = {
        session_id: [command.payload for command in await rows.stops_of(session_id)]
        for session_id in (ended, "s-unknown", starting)
    }
    assert stops == {
        ended: [{"state": {"pid": 1}, "keep_home": False}],
        "s-unknown": [{"state": {"pid": 2}, "keep_home": False}],
        starting: [],
    }
    assert (await rows.get_session(ended)).state == SessionState.TERMINATED


async def test_a_departing_agent_is_offline_unless_it_reconnected_elsewhere(
    rows: Rows, arrival: Arrivals
) -> None:
    await rows.agent("agent-here")
    await rows.agent("agent-moved", replica="replica-b")

    await arrival.disconnected("agent-here")
    await arrival.disconnected("agent-moved")

    assert (await rows.get_agent("agent-here")).status == "offline"
    assert (await rows.get_agent("agent-moved")).status == "online"
