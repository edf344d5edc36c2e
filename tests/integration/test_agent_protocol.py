"""Bad input on the agent WebSocket: a clear error, a 44xx close, and nothing changed."""

from __future__ import annotations

import json

import httpx

from streamspace.protocol import MAX_FRAME_BYTES, CloseCode
from tests.database import Database
from tests.helpers import eventually, wait_for_agent, wait_for_state
from tests.manual_agent import ManualAgent, register
from tests.processes import ApiProcess


async def _running_session(admin: httpx.AsyncClient, agent: ManualAgent) -> tuple[str, str]:
    """Create a session and complete its start by hand; returns (session id, command id)."""
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert created.status_code == 201, created.text
    command = await agent.receive()
    assert command.type == "command"
    command_id = command.payload.command_id  # type: ignore[union-attr]
    await agent.send("ack", {"command_id": command_id})
    await agent.send(
        "complete",
        {"command_id": command_id, "result": {"vnc": {"host": "127.0.0.1", "port": 5999}}},
    )
    await wait_for_state(admin, created.json()["id"], "running")
    return created.json()["id"], command_id


async def test_malformed_json_gets_error_and_4400_without_changes(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-a")
    await agent.connect()
    session_id, _ = await _running_session(admin, agent)
    before = [(c.command_id, c.status) for c in await database.commands()]

    await agent.send_raw('{"type": "complete", "payload": ')
    code, reason, frames = await agent.closed_with()

    assert code == CloseCode.BAD_MESSAGE
    assert reason == "frame is not valid JSON"
    assert json.loads(frames[-1])["payload"]["code"] == "bad_message"
    assert [(c.command_id, c.status) for c in await database.commands()] == before
    assert (await wait_for_state(admin, session_id, "running"))["vnc"]["port"] == 5999


async def test_unknown_type_and_invalid_payload_are_refused(api: ApiProcess) -> None:
    agent = await ManualAgent.registered(api.url, "agent-b")
    await agent.connect()
    await agent.send("launch_missiles", {})
    code, reason, _ = await agent.closed_with()
    assert (code, reason) == (CloseCode.BAD_MESSAGE, "unknown message type: 'launch_missiles'")

    await agent.connect()
    await agent.send("heartbeat", {"active_sessions": -1, "capacity": 1})
    code, reason, _ = await agent.closed_with()
    assert code == CloseCode.BAD_MESSAGE
    assert reason is not None and "payload.active_sessions" in reason


async def test_oversized_frame_closes_4413(api: ApiProcess) -> None:
    agent = await ManualAgent.registered(api.url, "agent-c")
    await agent.connect()
    await agent.send(
        "status", {"session_id": "x", "state": "exited", "reason": "x" * (MAX_FRAME_BYTES + 1)}
    )
    code, reason, _ = await agent.closed_with()
    assert code == CloseCode.TOO_LARGE
    assert reason is not None and "exceeds" in reason


async def test_credentials_are_checked(api: ApiProcess, admin: httpx.AsyncClient) -> None:
    agent = await ManualAgent.registered(api.url, "agent-d")

    await agent.open(api_key="ssa_wrong")
    assert (await agent.closed_with())[:2] == (CloseCode.UNAUTHORIZED, "invalid agent credentials")
    await agent.open(agent_id="nobody")
    assert (await agent.closed_with())[:2] == (CloseCode.UNAUTHORIZED, "invalid agent credentials")

    revoked = await admin.post("/api/v1/agents/agent-d/revoke")
    assert revoked.json()["approval"] == "revoked"
    await agent.open()
    assert (await agent.closed_with())[:2] == (CloseCode.FORBIDDEN, "agent revoked")


async def test_bootstrap_key_cannot_touch_an_approved_agent(api: ApiProcess) -> None:
    first = await register(api.url, "agent-e")
    assert first.status_code == 201 and first.json()["status"] == "approved"

    again = await register(api.url, "agent-e")
    assert again.status_code == 409
    assert "already registered" in again.json()["detail"]
    wrong = await register(api.url, "agent-f", bootstrap_key="guess")
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "invalid bootstrap key")

    # The original key still works: nothing was rotated by the refused attempts.
    agent = ManualAgent(api.url, "agent-e", first.json()["api_key"])
    assert (await agent.connect()).type == "welcome"


async def test_pending_agent_is_refused_until_approved(
    processes: None, tmp_path, pg_url: str
) -> None:
    api = ApiProcess(tmp_path / "api", database_url=pg_url)  # AGENT_AUTO_APPROVE off
    api.start()
    response = await register(api.url, "agent-g")
    assert response.json()["status"] == "pending"
    agent = ManualAgent(api.url, "agent-g", response.json()["api_key"])
    await agent.open()
    assert (await agent.closed_with())[:2] == (CloseCode.FORBIDDEN, "agent pending approval")

    async with httpx.AsyncClient(base_url=api.url) as client:
        token = (
            await client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": "admin-password"}
            )
        ).json()["access_token"]
        approved = await client.post(
            "/api/v1/agents/agent-g/approve", headers={"Authorization": f"Bearer {token}"}
        )
    assert approved.json()["approval"] == "approved"
    assert (await agent.connect()).type == "welcome"


async def test_ack_for_another_agents_command_is_an_error(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    owner = await ManualAgent.registered(api.url, "agent-h")
    await owner.connect()
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    command = await owner.receive()
    command_id = command.payload.command_id  # type: ignore[union-attr]
    await owner.close()

    intruder = await ManualAgent.registered(api.url, "agent-i")
    await intruder.connect()
    await intruder.send("ack", {"command_id": command_id})
    error = await intruder.receive()
    assert error.type == "error"
    assert error.payload.code == "unknown_command"  # type: ignore[union-attr]
    await intruder.send("complete", {"command_id": command_id, "result": {}})
    assert (await intruder.receive()).type == "error"

    row = await database.command(command_id)
    assert row.status == "sent" and row.acknowledged_at is None and row.completed_at is None
    assert (await admin.get(f"/api/v1/sessions/{created.json()['id']}")).json()["state"] == (
        "pending"
    )


async def test_newer_connection_replaces_older_without_losing_registration(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    first = await ManualAgent.registered(api.url, "agent-j")
    await first.connect()
    second = ManualAgent(api.url, "agent-j", first.api_key)
    await second.connect()

    code, reason, _ = await first.closed_with()
    assert (code, reason) == (CloseCode.REPLACED, "replaced by a newer connection")
    # The old connection's cleanup ran; the agent must still be online and reachable.
    agent = await database.agent("agent-j")
    assert agent is not None and agent.status == "online"
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert created.status_code == 201
    assert (await second.receive()).type == "command"


async def test_silent_agent_is_dropped_after_three_missed_heartbeats(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-k")
    await agent.connect()
    await wait_for_agent(admin, "agent-k")
    code, reason, _ = await agent.closed_with(timeout=10)  # HEARTBEAT_INTERVAL is 1 s here
    assert (code, reason) == (CloseCode.HEARTBEAT_TIMEOUT, "missed heartbeats")

    async def offline() -> bool:
        row = await database.agent("agent-k")
        return row is not None and row.status == "offline"

    await eventually(offline, message="agent marked offline")


async def test_heartbeat_out_of_range_is_refused_and_others_keep_beating(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    good = await ManualAgent.registered(api.url, "agent-good")
    await good.connect()
    liar = await ManualAgent.registered(api.url, "agent-liar")
    await liar.connect()

    await liar.send("heartbeat", {"active_sessions": 10**30, "capacity": 1})
    await good.send("heartbeat", {"active_sessions": 3, "capacity": 10})

    code, reason, _ = await liar.closed_with()
    assert code == CloseCode.BAD_MESSAGE
    assert reason == (
        "invalid message at heartbeat.payload.active_sessions: Input should be less than or"
        " equal to 100000"
    )

    async def recorded() -> bool:
        row = await database.agent("agent-good")
        return row is not None and row.active_sessions == 3

    await eventually(recorded, message="the other agent's heartbeat recorded")
    assert "could not record heartbeats" not in api.output()


async def test_agent_leaving_before_its_hello_leaves_no_traceback(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-shy")
    for _ in range(3):
        await agent.open()
        await agent.close()
        await agent.open(api_key="ssa_wrong")
        await agent.close()

    async def handled() -> bool:
        log = api.output()
        return (
            log.count("closed by the agent before its hello") == 3
            and log.count("rejecting agent connection: invalid agent credentials") == 3
        )

    await eventually(handled, message="every departure handled")
    assert (await agent.connect()).type == "welcome"
    assert "Traceback" not in api.output(), api.output()[-3000:]
