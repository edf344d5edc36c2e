"""The CommandDispatcher in process on SQLite: ``drain()`` delivers what is waiting to a
fake agent socket, hand-offs ride the doorbell to the agent's replica."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket, WebSocketState

from streamspace.config import ApiSettings
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.commands.dispatcher import CommandDispatcher
from streamspace.controlplane.hub import AgentHub
from streamspace.db.engine import SessionFactory
from streamspace.db.models import AgentCommand
from streamspace.db.repo import commands as command_repo
from streamspace.protocol import Action
from streamspace.states import CommandStatus
from streamspace.testing import FakeHubRegistry

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class FakeWebSocket:
    """Just enough of a Starlette WebSocket for ConnectedAgent: the frames sent."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.application_state = WebSocketState.DISCONNECTED

    def command_ids(self) -> list[str]:
        return [frame["payload"]["command_id"] for frame in self.frames]


async def connect(hub: AgentHub, agent_id: str, *, welcomed: bool = True) -> FakeWebSocket:
    socket = FakeWebSocket()
    connection = ConnectedAgent(cast(WebSocket, socket), agent_id=agent_id, platform="local")
    if welcomed:
        connection.welcomed.set()
    await hub.register(connection)
    return socket


async def add_commands(
    db: SessionFactory, agent_id: str, count: int, *, sent: bool = False
) -> list[AgentCommand]:
    commands = [
        command_repo.new(
            agent_id=agent_id,
            session_id=f"s{n}",
            action=Action.START_SESSION,
            payload={"n": n},
            sent=sent,
        )
        for n in range(count)
    ]
    async with db() as session, session.begin():
        await command_repo.insert_new(session, commands)
    return commands


async def status_of(db: SessionFactory, command: AgentCommand) -> str:
    async with db() as session:
        row = await command_repo.get(session, command.command_id)
    assert row is not None
    return row.status


def dispatcher(db: SessionFactory, hub: AgentHub, **settings: Any) -> CommandDispatcher:
    return CommandDispatcher(db=db, hub=hub, settings=ApiSettings(**settings))


async def test_drain_sends_pending_commands_in_order(migrated_db: SessionFactory) -> None:
    hub = AgentHub(replica="pod-1")
    socket = await connect(hub, "a1")
    commands = await add_commands(migrated_db, "a1", 5)
    await dispatcher(migrated_db, hub).drain()
    assert socket.command_ids() == [command.command_id for command in commands]
    assert [frame["payload"]["payload"] for frame in socket.frames] == [{"n": n} for n in range(5)]
    assert {await status_of(migrated_db, c) for c in commands} == {CommandStatus.SENT.value}


async def test_drain_answers_doorbells_and_keeps_the_window(migrated_db: SessionFactory) -> None:
    hub = AgentHub(replica="pod-1")
    socket = await connect(hub, "a1")
    commands = await add_commands(migrated_db, "a1", 3)
    assert await hub.ring("a1")
    await dispatcher(migrated_db, hub, command_window=2).drain()
    assert socket.command_ids() == [command.command_id for command in commands[:2]]
    assert await status_of(migrated_db, commands[2]) == CommandStatus.PENDING.value


async def test_nothing_goes_to_an_agent_before_its_welcome(migrated_db: SessionFactory) -> None:
    hub = AgentHub(replica="pod-1")
    socket = await connect(hub, "a1", welcomed=False)
    (command,) = await add_commands(migrated_db, "a1", 1)
    await dispatcher(migrated_db, hub).drain()
    assert socket.frames == []
    assert await status_of(migrated_db, command) == CommandStatus.PENDING.value


async def test_a_hand_off_rides_the_doorbell_to_the_agents_replica(
    migrated_db: SessionFactory,
) -> None:
    shared = FakeHubRegistry()
    hub1 = AgentHub(replica="pod-1", registry=shared.replica("pod-1"))
    hub2 = AgentHub(replica="pod-2", registry=shared.replica("pod-2"))
    shared.listeners["pod-2"] = hub2  # as if hub2.run() were subscribed
    socket = await connect(hub2, "a1")
    (command,) = await add_commands(migrated_db, "a1", 1, sent=True)
    await dispatcher(migrated_db, hub1).hand_off("a1", command)
    assert socket.frames == []  # on its way, in hub2's doorbell queue
    await dispatcher(migrated_db, hub2).drain()
    assert socket.command_ids() == [command.command_id]
    assert socket.frames[0]["payload"]["session_id"] == command.session_id
    assert await status_of(migrated_db, command) == CommandStatus.SENT.value


async def test_a_hand_off_nobody_takes_goes_back_to_pending(migrated_db: SessionFactory) -> None:
    hub = AgentHub(replica="pod-1")
    (command,) = await add_commands(migrated_db, "a1", 1, sent=True)
    await dispatcher(migrated_db, hub).hand_off("a1", command)
    assert await status_of(migrated_db, command) == CommandStatus.PENDING.value
