"""The fakes of ``streamspace.testing`` behave as what they stand in for: the agent socket
under a ``ConnectedAgent``, the lease as the Redis and file backends do."""

from __future__ import annotations

import asyncio

import pytest
from starlette.websockets import WebSocketDisconnect

from streamspace.agent.leader.base import LeaseUnavailable, Term
from streamspace.agent.leader.election import Serve, lead
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.protocol import (
    Ack,
    AckPayload,
    Action,
    CloseCode,
    Command,
    CommandPayload,
    Welcome,
    WelcomePayload,
    parse_agent_message,
)
from streamspace.testing import FakeAgentSocket, FakeLease, SharedLease


def _command(command_id: str) -> Command:
    return Command(
        payload=CommandPayload(command_id=command_id, action=Action.STOP_SESSION, session_id="s-1")
    )


async def test_the_socket_keeps_what_the_connection_sent_and_how_it_closed() -> None:
    socket = FakeAgentSocket()
    connection = ConnectedAgent(socket, agent_id="agent-1", platform="local")
    welcome = Welcome(payload=WelcomePayload(replica="replica-a", heartbeat_interval=10))
    command = _command("cmd-1")

    await connection.send(welcome)
    await connection.send(command)
    await connection.close(CloseCode.REPLACED, "replaced by a newer connection")
    await connection.close(CloseCode.NORMAL, "again")  # a no-op once closed

    assert socket.sent == [welcome, command]
    assert (socket.close_code, socket.close_reason) == (
        CloseCode.REPLACED,
        "replaced by a newer connection",
    )
    with pytest.raises(RuntimeError):
        await connection.send(_command("cmd-2"))


async def test_the_socket_delivers_the_agents_frames_until_it_hangs_up() -> None:
    socket = FakeAgentSocket()
    connection = ConnectedAgent(socket, agent_id="agent-1", platform="local")
    frame = Ack(payload=AckPayload(command_id="cmd-1"))

    socket.feed(frame)
    assert parse_agent_message(await socket.receive_text()) == frame
    socket.hang_up()
    with pytest.raises(WebSocketDisconnect):
        await socket.receive_text()
    with pytest.raises(WebSocketDisconnect):
        await connection.send(_command("cmd-1"))
    await connection.close(CloseCode.NORMAL, "bye")  # the peer is gone: nothing to close
    assert socket.close_code is None


async def test_leases_on_one_shared_lease_exclude_each_other_and_epochs_increase() -> None:
    shared = SharedLease()
    first, second = FakeLease(shared), FakeLease(shared)

    assert await first.acquire() == 1
    assert await second.acquire() is None
    assert await first.renew()
    await first.release()
    assert await second.acquire() == 2
    assert not await first.renew()
    await first.release()  # no longer ours: changes nothing
    assert await second.renew()
    assert await FakeLease(shared).acquire() is None


async def test_a_shared_lease_with_a_period_expires_unless_renewed() -> None:
    now = 0.0
    shared = SharedLease(lease_seconds=3, clock=lambda: now)
    first, second = FakeLease(shared), FakeLease(shared)
    await first.acquire()

    now = 2.5
    assert await first.renew()  # until 5.5
    now = 5
    assert await second.acquire() is None
    now = 6
    assert await second.acquire() == 2
    assert not await first.renew()  # a renewal never takes back a lost lease

    shared.expire()
    assert not await second.renew()


async def test_an_unavailable_shared_lease_refuses_every_call() -> None:
    shared = SharedLease()
    lease = FakeLease(shared)
    await lease.acquire()
    shared.available = False

    for call in (lease.acquire, lease.renew, lease.release):
        with pytest.raises(LeaseUnavailable):
            await call()
    shared.available = True
    assert not await lease.renew()  # the failed release still gave up our term


async def test_electors_on_one_shared_lease_lead_one_after_the_other() -> None:
    shared = SharedLease(lease_seconds=0.3)
    stops = {name: asyncio.Event() for name in ("a", "b")}
    terms: list[tuple[str, int]] = []

    def serve(name: str) -> Serve:
        async def serving(term: Term) -> None:
            terms.append((name, term.epoch))
            stops[name].set()  # the first leader shuts down after its first term
            await term.ended.wait()

        return serving

    electors = [
        asyncio.create_task(
            lead(FakeLease(shared), serve(name), agent_id="agent-1", lease_seconds=0.3, stop=stop)
        )
        for name, stop in stops.items()
    ]
    await asyncio.wait_for(asyncio.gather(*electors), timeout=5)

    assert [epoch for _, epoch in terms] == [1, 2]
    assert {name for name, _ in terms} == {"a", "b"}
