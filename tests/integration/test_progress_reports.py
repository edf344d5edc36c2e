"""``progress``: how far an agent's start got, shown on the session while it starts, from
its own agent only, and gone once the start is over."""

from __future__ import annotations

import httpx

from tests.helpers import session_state, wait_for_state
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess


async def test_progress_shows_on_the_starting_session_of_its_own_agent_only(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-progress")
    await agent.connect()
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    sid = created.json()["id"]
    command = (await agent.receive()).payload
    await agent.send("ack", {"command_id": command.command_id})  # type: ignore[union-attr]

    pulling = "pulling image streamspace/session:bookworm on node-1"
    await agent.send("progress", {"session_id": sid, "stage": "pulling image", "message": pulling})
    stranger = await ManualAgent.registered(api.url, "agent-stranger", capacity=0)
    await stranger.connect()
    await stranger.send("progress", {"session_id": sid, "stage": "ready", "message": "lies"})
    error = await stranger.receive()
    assert error.type == "error" and error.payload.code == "unknown_session"  # type: ignore[union-attr]
    assert (await session_state(admin, sid))["status_message"] == pulling

    result = {"vnc": {"host": "127.0.0.1", "port": 5901}}
    await agent.send("complete", {"command_id": command.command_id, "result": result})  # type: ignore[union-attr]
    running = await wait_for_state(admin, sid, "running")
    assert running["status_message"] is None
    await agent.send("progress", {"session_id": sid, "stage": "ready", "message": "late"})
    await agent.send("ack", {"command_id": "cmd-of-nobody"})  # answered once all is applied
    answer = await agent.receive()
    assert answer.type == "error" and "cmd-of-nobody" in answer.payload.message  # type: ignore[union-attr]
    assert (await session_state(admin, sid))["status_message"] is None  # a start is over
