"""An agent's inventory on connect, against a real replica (PostgreSQL): a hello of the old
size is reconciled as before, a paged one once its last page is in, and pages that do not
make an inventory are refused with a 4400 and their reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select

from streamspace.controlplane.agents.arrivals import LOST
from streamspace.db.models import Session
from streamspace.inventory import split_inventory
from streamspace.protocol import (
    PROTOCOL_VERSION,
    CloseCode,
    Hello,
    HelloPayload,
    PlatformName,
    RunningSession,
    encode,
)
from tests.database import Database
from tests.helpers import eventually, wait_for_state
from tests.integration.test_agent_protocol import _running_session
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess
from tests.running_sessions import seed_running_sessions

STRAY = "stray-session"
"""A session the agent runs that the database never knew."""


def _hello(agent: ManualAgent) -> HelloPayload:
    return HelloPayload(
        v=PROTOCOL_VERSION,
        agent_id=agent.agent_id,
        platform=PlatformName.LOCAL,
        version="test",
        capacity=agent.capacity,
    )


async def _two_running(admin: httpx.AsyncClient, api: ApiProcess) -> tuple[ManualAgent, str, str]:
    """An agent with two running sessions, disconnected again; returns it and their ids."""
    agent = await ManualAgent.registered(api.url, "inventory-agent")
    await agent.connect()
    kept, _ = await _running_session(admin, agent)
    lost, _ = await _running_session(admin, agent)
    await agent.close()
    return agent, kept, lost


async def _stops(agent: ManualAgent, count: int) -> set[str]:
    """The sessions of the next ``count`` commands, all of them stops."""
    sessions = set()
    for _ in range(count):
        command = await agent.receive()
        assert command.type == "command", command
        assert command.payload.action == "stop_session", command  # type: ignore[union-attr]
        sessions.add(command.payload.session_id)  # type: ignore[union-attr]
    return sessions


async def test_an_old_size_hello_is_reconciled_as_before(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    agent, kept, lost = await _two_running(admin, api)
    # Written as an agent from before inventories writes it: no "more".
    hello = {
        "type": "hello",
        "id": "h1",
        "ts": 0,
        "payload": {
            **json.loads(_hello(agent).model_dump_json()),
            "sessions": [{"session_id": kept}, {"session_id": STRAY, "state": {"k": "v"}}],
        },
    }
    await agent.open()
    await agent.send_raw(json.dumps(hello))
    assert (await agent.receive()).type == "welcome"
    assert await _stops(agent, 2) == {STRAY, lost}
    await wait_for_state(admin, lost, "failed")
    assert (await admin.get(f"/api/v1/sessions/{kept}")).json()["state"] == "running"
    stray = await database.commands(session_id=STRAY)
    assert [c.payload for c in stray] == [{"state": {"k": "v"}, "keep_home": False}]


async def test_a_paged_inventory_is_reconciled_once_complete(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    agent, kept, lost = await _two_running(admin, api)
    padding = [RunningSession(session_id=kept)] + [
        RunningSession(session_id=f"{STRAY}-{n}", state={"pad": "x" * 100}) for n in range(10)
    ]
    split = split_inventory(_hello(agent), padding, limit=600)
    assert len(split.messages) >= 4 and split.messages[-1].payload.sessions[-1].session_id.endswith(
        "-9"
    )
    await agent.open()
    for message in split.messages:
        await agent.send_raw(encode(message))
    assert (await agent.receive()).type == "welcome"
    assert await _stops(agent, 11) == {lost} | {f"{STRAY}-{n}" for n in range(10)}
    await wait_for_state(admin, lost, "failed")
    assert (await admin.get(f"/api/v1/sessions/{kept}")).json()["state"] == "running"


async def test_inventory_pages_out_of_order_are_refused(api: ApiProcess) -> None:
    agent = await ManualAgent.registered(api.url, "disorderly-agent")
    sessions = [RunningSession(session_id=f"s{n}", state={"pad": "x" * 100}) for n in range(8)]
    hello, _, second, *_ = split_inventory(_hello(agent), sessions, limit=600).messages
    assert isinstance(hello, Hello)
    await agent.open()
    await agent.send_raw(encode(hello))
    await agent.send_raw(encode(second))
    code, reason, seen = await agent.closed_with()
    assert (code, reason) == (CloseCode.BAD_MESSAGE, "inventory page 2 where 1 was due")
    assert all(json.loads(frame)["type"] == "error" for frame in seen)


async def test_an_inventory_after_the_handshake_is_refused(api: ApiProcess) -> None:
    agent = await ManualAgent.registered(api.url, "late-agent")
    await agent.connect()
    await agent.send("inventory", {"seq": 1, "sessions": [], "last": True})
    code, reason, _ = await agent.closed_with()
    assert (code, reason) == (CloseCode.BAD_MESSAGE, "inventory after the handshake")


async def test_thousands_of_sessions_missing_from_the_inventory_are_all_failed(
    api: ApiProcess, database: Database, tmp_path: Path
) -> None:
    """More lost sessions than one page: every one is failed and cleaned up, once."""
    agent = await ManualAgent.registered(api.url, "forgetful-agent")
    lost = await seed_running_sessions(
        database, tmp_path / "state.json", agent_id=agent.agent_id, count=2500
    )
    await agent.connect()  # an empty inventory: the agent runs none of them any more

    async def all_failed() -> bool:
        async with database.session() as db:
            query = select(Session.state, Session.termination_reason, Session.vnc_host)
            rows = await db.execute(query.where(Session.agent_id == agent.agent_id))
            return set(rows) == {("failed", LOST, None)}

    await eventually(all_failed, timeout=60, message="every lost session failed")
    stops = Counter(command.session_id for command in await database.commands())
    assert stops == Counter(lost)
