"""Fencing: the control plane refuses a stale leader's hello (4412), and a runtime whose term
is over takes no command even while its socket is still open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from streamspace.agent.executed import ExecutedCommands
from streamspace.agent.leader.base import Term
from streamspace.agent.runtime import AgentRuntime
from streamspace.config import AgentSettings
from streamspace.protocol import CloseCode
from streamspace.testing import NoopPlatform
from tests.database import Database
from tests.helpers import eventually
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess

STALE = "leader epoch 4 is stale: a newer leader of this agent has connected"


async def test_stale_epoch_is_refused_and_a_higher_one_replaces_the_leader(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    leader = await ManualAgent.registered(api.url, "ha-a")
    await leader.connect(leader_epoch=5)

    stale = ManualAgent(api.url, "ha-a", leader.api_key)
    await stale.hello(leader_epoch=4)
    code, reason, frames = await stale.closed_with()
    assert (code, reason) == (CloseCode.STALE_LEADER, STALE)
    assert json.loads(frames[-1])["payload"]["code"] == "stale_leader"
    # The leader was not disturbed: still online with its epoch, still sent commands.
    row = await database.agent("ha-a")
    assert row is not None and (row.status, row.leader_epoch) == ("online", 5)
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert created.status_code == 201
    assert (await leader.receive()).type == "command"

    newer = ManualAgent(api.url, "ha-a", leader.api_key)
    await newer.connect(leader_epoch=6)
    code, reason, _ = await leader.closed_with()
    assert (code, reason) == (CloseCode.REPLACED, "replaced by a newer connection")
    assert (await newer.receive()).type == "command"  # the unfinished command moved over
    row = await database.agent("ha-a")
    assert row is not None and (row.status, row.leader_epoch) == ("online", 6)


async def test_same_epoch_may_reconnect_but_no_epoch_is_refused(
    api: ApiProcess, database: Database
) -> None:
    agent = await ManualAgent.registered(api.url, "ha-b")
    await agent.connect(leader_epoch=3)
    await agent.close()
    await agent.connect(leader_epoch=3)  # the same leader after a network blip
    await agent.close()

    await agent.hello()  # an un-fenced second replica of an agent under leader election
    code, reason, _ = await agent.closed_with()
    assert code == CloseCode.STALE_LEADER
    assert reason == "hello without leader_epoch (agent runs under leader election, epoch 3)"
    row = await database.agent("ha-b")
    assert row is not None and row.leader_epoch == 3


async def test_racing_replicas_only_the_higher_epoch_stays(
    api: ApiProcess, database: Database
) -> None:
    older = await ManualAgent.registered(api.url, "ha-c")
    newer = ManualAgent(api.url, "ha-c", older.api_key)
    await asyncio.gather(older.hello(leader_epoch=7), newer.hello(leader_epoch=8))

    assert (await newer.receive()).type == "welcome"
    code, _, _ = await older.closed_with()
    # Refused when it came second; replaced by the newer one when it came first.
    assert code in (CloseCode.STALE_LEADER, CloseCode.REPLACED)
    row = await database.agent("ha-c")
    assert row is not None and row.leader_epoch == 8


async def test_runtime_takes_no_command_once_its_term_is_over(
    api: ApiProcess,
    admin: httpx.AsyncClient,
    database: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = (await ManualAgent.registered(api.url, "ha-d")).api_key
    now = [0.0]
    term = Term(9, deadline=10.0, clock=lambda: now[0])
    settings = AgentSettings(control_plane_url=api.url, agent_id="ha-d", agent_data_dir=tmp_path)
    platform = NoopPlatform()
    executed = ExecutedCommands.in_data_dir(tmp_path)
    runtime = AgentRuntime(settings, platform, executed, key, leader=term)
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.connected.wait(), 10)
        row = await database.agent("ha-d")
        assert row is not None and row.leader_epoch == 9

        now[0] = 10.0  # the lease ran out (say the renewals hung); the socket is still open
        created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201
        (command,) = await database.commands(session_id=created.json()["id"])

        async def ignored() -> bool:
            return f"ignoring command {command.command_id}" in caplog.text

        await eventually(ignored, message="the command ignored")
        assert runtime.connected.is_set() and platform.calls == []
        assert (await database.command(command.command_id)).acknowledged_at is None
    finally:
        stop.set()
        await running
        executed.close()
