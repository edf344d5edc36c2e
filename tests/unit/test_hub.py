"""The AgentHub in process: registrations, doorbells, cuts and broadcasts across replicas
that share one fake registry (``streamspace.testing.FakeHubRegistry``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from starlette.websockets import WebSocket, WebSocketState

from streamspace import names
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.auth.login_tokens import SharedTokenCache
from streamspace.controlplane.hub import AgentHub, Cut, Ring
from streamspace.controlplane.hub.connections import LocalConnections
from streamspace.db.models import User
from streamspace.protocol import SESSION_NOT_RUNNING, Action, CloseCode, Parcel
from streamspace.testing import FakeHubRegistry


class FakeWebSocket:
    """Just enough of a Starlette WebSocket for ConnectedAgent: sends and the close."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason or "")
        self.application_state = WebSocketState.DISCONNECTED


def connection(agent_id: str) -> ConnectedAgent:
    return ConnectedAgent(cast(WebSocket, FakeWebSocket()), agent_id=agent_id, platform="local")


def closed_with(conn: ConnectedAgent) -> tuple[int, str] | None:
    return cast(FakeWebSocket, conn.websocket).closed


@contextlib.asynccontextmanager
async def replicas(*names_: str) -> AsyncIterator[tuple[FakeHubRegistry, list[AgentHub]]]:
    """Started and running hubs of these replicas, sharing one registry."""
    shared = FakeHubRegistry()
    hubs = [AgentHub(replica=n, registry=shared.replica(n, address=f"http://{n}")) for n in names_]
    stop = asyncio.Event()
    for hub in hubs:
        await hub.start()
    tasks = [asyncio.create_task(hub.run(stop)) for hub in hubs]
    await subscribed(shared, len(hubs))
    try:
        yield shared, hubs
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for hub in hubs:
            await hub.close()


async def subscribed(shared: FakeHubRegistry, count: int) -> None:
    while len(shared.listeners) < count:
        await asyncio.sleep(0)


def parcel(agent_id: str = "a1") -> Parcel:
    return Parcel(
        agent_id=agent_id,
        id=uuid.uuid4(),
        command_id="cmd-1",
        session_id="s1",
        action=Action.START_SESSION,
        payload={"spec": {"image": "x"}},
        created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    )


def test_local_connections_replace_and_forget_only_the_current() -> None:
    local = LocalConnections()
    old, new = connection("a1"), connection("a1")
    assert local.register(old) is None
    assert local.register(new) is old
    assert local.register(new) is None  # the same connection again replaces nothing
    assert not local.unregister(old)  # the older one's late unregister is a no-op
    assert local.get("a1") is new and local.all() == [new] and "a1" in local
    assert local.unregister(new)
    assert local.get("a1") is None and local.all() == []


async def test_single_replica_hub_owns_only_what_is_connected_here() -> None:
    hub = AgentHub(replica="solo")
    conn = connection("a1")
    await hub.register(conn)
    assert await hub.owner_of("a1") == "solo"
    assert await hub.owner_of("a2") is None
    assert await hub.replica_alive("solo") is True
    assert await hub.replica_alive("other") is None
    assert await hub.address_of("solo") is None
    assert hub.shared_state_up is None
    assert await hub.refresh(conn)
    assert await hub.ring("a1") and not await hub.ring("a2")
    assert hub.doorbells.get_nowait() == Ring("a1")


async def test_registration_replaced_on_another_replica_and_released_by_compare() -> None:
    async with replicas("pod-1", "pod-2") as (shared, (hub1, hub2)):
        first = connection("a1")
        await hub1.register(first)
        assert await hub2.owner_of("a1") == "pod-1"
        assert await hub2.address_of("pod-1") == "http://pod-1"
        assert await hub2.replica_alive("pod-1") is True
        assert await hub2.replica_alive("pod-9") is False

        second = connection("a1")  # the agent reconnects through pod-2
        await hub2.register(second)
        assert await hub1.owner_of("a1") == "pod-1"  # still connected here, as far as it knows
        assert await hub1.refresh(first) is False  # its heartbeat finds it taken over
        assert await hub1.unregister(first)  # current here, but the release compares ...
        assert shared.registrations["a1"] == ("pod-2", second.connection_id)  # ... and keeps
        assert await hub1.owner_of("a1") == "pod-2"
        assert await hub2.refresh(second)


async def test_a_doorbell_reaches_the_queue_of_the_agents_replica() -> None:
    async with replicas("pod-1", "pod-2") as (_, (hub1, hub2)):
        await hub2.register(connection("a1"))
        assert await hub1.ring("a1")
        assert hub1.doorbells.empty()
        assert hub2.doorbells.get_nowait() == Ring("a1")
        assert not await hub1.ring("nobody")
        assert hub1.doorbells.empty() and hub2.doorbells.empty()


async def test_a_parcel_travels_with_the_doorbell_unchanged() -> None:
    async with replicas("pod-1", "pod-2") as (_, (hub1, hub2)):
        await hub2.register(connection("a1"))
        sent = parcel()
        assert await hub1.ring("a1", sent)
        assert hub2.doorbells.get_nowait() == Ring("a1", sent)


async def test_malformed_doorbells_are_ignored() -> None:
    async with replicas("pod-1") as (_, (hub,)):
        await hub.register(connection("a1"))
        channel = names.pod_commands_channel("pod-1")
        await hub.heard(channel, '{"agent_id": "a1", "id": "not a uuid"}')
        await hub.heard(channel, "{not json")
        await hub.heard(channel, "a2")  # not connected here
        assert hub.doorbells.empty()


def test_the_parcel_keeps_its_json_keys() -> None:
    sent = parcel()
    data = json.loads(sent.model_dump_json())
    assert list(data) == [
        "agent_id",
        "id",
        "command_id",
        "session_id",
        "action",
        "payload",
        "created_at",
    ]
    assert data["id"] == str(sent.id) and data["action"] == "start_session"
    assert data["created_at"] == sent.created_at.isoformat()
    # As a replica of the previous release writes it (json.dumps of a dict).
    assert Parcel.model_validate_json(json.dumps(data)) == sent


async def test_a_cut_closes_the_agent_and_tunnels_on_every_replica() -> None:
    async with replicas("pod-1", "pod-2") as (_, (hub1, hub2)):
        cuts: dict[str, list[Cut]] = {"pod-1": [], "pod-2": []}
        hub1.on_cut(cuts["pod-1"].append)
        hub2.on_cut(cuts["pod-2"].append)
        conn = connection("a1")
        await hub2.register(conn)
        cut = Cut(CloseCode.FORBIDDEN, "agent revoked", agent_id="a1")
        await hub1.cut(cut)
        assert cuts["pod-1"][0] == cut and cut in cuts["pod-2"]
        assert closed_with(conn) == (CloseCode.FORBIDDEN, "agent revoked")


async def test_a_cut_while_the_registry_is_down_is_applied_here_only() -> None:
    async with replicas("pod-1", "pod-2") as (shared, (hub1, hub2)):
        seen: list[Cut] = []
        hub2.on_cut(seen.append)
        shared.up = False
        await hub1.cut(Cut(SESSION_NOT_RUNNING, "session stopped", session_id="s1"))
        assert seen == []
        assert hub1.shared_state_up is False


async def test_logouts_reach_the_token_caches_of_other_replicas() -> None:
    shared = FakeHubRegistry()
    hubs = [AgentHub(replica=n, registry=shared.replica(n)) for n in ("pod-1", "pod-2")]
    caches = [SharedTokenCache(hub=hub) for hub in hubs]
    user = User(id="u1", username="alice", password_hash="x", role="user", created_at=None)
    expires = datetime(2999, 1, 1, tzinfo=UTC)
    assert not caches[1].usable  # not subscribed yet: every request asks the database
    stop = asyncio.Event()
    tasks = [asyncio.create_task(hub.run(stop)) for hub in hubs]
    await subscribed(shared, len(hubs))
    assert caches[1].usable
    caches[1].put("digest", user, expires_at=expires, ticket=caches[1].ticket())
    assert caches[1].get("digest") is not None
    await caches[0].revoke("digest")
    assert caches[1].get("digest") is None
    stop.set()
    await asyncio.gather(*tasks)
    assert not caches[1].usable
