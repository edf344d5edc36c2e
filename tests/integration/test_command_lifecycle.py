"""The durable command lifecycle against a real API replica and PostgreSQL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.database import Database
from tests.helpers import eventually, logged_in, wait_for_agent, wait_for_state
from tests.manual_agent import ManualAgent
from tests.processes import AgentProcess, ApiProcess


async def _status(database: Database, session_id: str, action: str) -> str | None:
    for command in await database.commands(session_id=session_id):
        if command.action == action:
            return command.status
    return None


async def test_every_status_transition(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-1")
    await agent.connect()
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    session_id = created.json()["id"]
    assert created.json()["state"] == "pending"

    command = await agent.receive()
    command_id = command.payload.command_id  # type: ignore[union-attr]
    row = await database.command(command_id)
    assert (row.status, row.attempts, row.action) == ("sent", 1, "start_session")
    assert row.sent_at is not None and row.updated_at >= row.created_at

    await agent.send("ack", {"command_id": command_id})

    async def acknowledged() -> bool:
        return await _status(database, session_id, "start_session") == "acknowledged"

    await eventually(acknowledged, message="command acknowledged")

    vnc = {"host": "127.0.0.1", "port": 5999}
    await agent.send(
        "complete", {"command_id": command_id, "result": {"vnc": vnc, "state": {"pid": 1}}}
    )
    running = await wait_for_state(admin, session_id, "running")
    assert running["vnc"] == vnc
    done = await database.command(command_id)
    assert done.status == "completed" and done.result is not None
    assert done.acknowledged_at is not None and done.completed_at is not None

    # A duplicate report changes nothing.
    await agent.send("failed", {"command_id": command_id, "error": "late", "retryable": False})
    assert (await wait_for_state(admin, session_id, "running"))["vnc"] == vnc

    stopping = await admin.delete(f"/api/v1/sessions/{session_id}")
    assert stopping.json()["state"] == "stopping"
    stop = await agent.receive()
    assert stop.payload.payload["state"] == {"pid": 1}  # type: ignore[union-attr]
    await agent.send(
        "failed",
        {
            "command_id": stop.payload.command_id,  # type: ignore[union-attr]
            "error": "boom",
            "retryable": False,
        },
    )
    failed = await wait_for_state(admin, session_id, "failed")
    assert failed["termination_reason"] == "stop_session failed: boom"
    history = await admin.get("/api/v1/commands", params={"session_id": session_id})
    assert [c["status"] for c in history.json()] == ["failed", "completed"]
    events = await admin.get(f"/api/v1/sessions/{session_id}/events")
    assert [e["to_state"] for e in events.json()] == ["pending", "running", "stopping", "failed"]


async def test_unacknowledged_command_is_resent_and_runs_once(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    # Heartbeats are slow here so the frozen agent is not dropped before the re-send.
    api = ApiProcess(
        tmp_path / "api",
        database_url=pg_url,
        env={"AGENT_AUTO_APPROVE": "true", "HEARTBEAT_INTERVAL": "10", "COMMAND_ACK_TIMEOUT": "1"},
    )
    api.start()
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-2")
    agent.start()
    database = Database(pg_url)
    async with logged_in(api.url) as admin:
        await wait_for_agent(admin, "agent-2")
        os.kill(agent.pid, signal.SIGSTOP)  # frozen: receives nothing, acks nothing
        try:
            created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
            session_id = created.json()["id"]

            async def resent() -> bool:
                commands = await database.commands(session_id=session_id)
                return bool(commands) and commands[0].attempts >= 2

            await eventually(resent, message="command re-sent after the ack timeout")
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        await wait_for_state(admin, session_id, "running")
    (command,) = await database.commands(session_id=session_id)
    assert command.status == "completed"
    assert agent.executions(session_id) == ["start_session"]
    await database.close()


async def test_command_for_offline_agent_waits_and_is_delivered_on_connect(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database, tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-3")
    agent.start()
    await wait_for_agent(admin, "agent-3")
    created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    session_id = created.json()["id"]
    await wait_for_state(admin, session_id, "running")
    assert agent.stop() == 0

    stopping = await admin.delete(f"/api/v1/sessions/{session_id}")
    assert stopping.json()["state"] == "stopping"
    # Several poll and reconcile rounds pass (0.5 s / 0.2 s here): the row must stay pending.
    for _ in range(20):
        assert await _status(database, session_id, "stop_session") == "pending"
        await wait_for_state(admin, session_id, "stopping")

    restarted = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-3")
    restarted.start()
    await wait_for_state(admin, session_id, "terminated")
    assert await _status(database, session_id, "stop_session") == "completed"
    assert restarted.executions(session_id) == ["start_session", "stop_session"]


async def test_deadline_fails_command_and_session_with_reason(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    api = ApiProcess(
        tmp_path / "api",
        database_url=pg_url,
        env={"AGENT_AUTO_APPROVE": "true", "COMMAND_DEADLINE": "2"},
    )
    api.start()
    agent = AgentProcess(
        tmp_path / "agent", control_plane_url=api.url, agent_id="agent-4", behaviour="never"
    )
    agent.start()
    database = Database(pg_url)
    async with logged_in(api.url) as admin:
        await wait_for_agent(admin, "agent-4")
        created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        failed = await wait_for_state(admin, created.json()["id"], "failed")
    assert failed["termination_reason"] == (
        "start_session failed: deadline exceeded: the agent did not finish the command in time"
    )
    (command,) = await database.commands(session_id=created.json()["id"])
    assert command.status == "failed" and command.acknowledged_at is not None
    await database.close()


async def test_undelivered_command_expires(processes: None, tmp_path: Path, pg_url: str) -> None:
    api = ApiProcess(
        tmp_path / "api",
        database_url=pg_url,
        env={"AGENT_AUTO_APPROVE": "true", "COMMAND_PENDING_TIMEOUT": "1"},
    )
    api.start()
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-5")
    agent.start()
    async with logged_in(api.url) as admin:
        await wait_for_agent(admin, "agent-5")
        created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        await wait_for_state(admin, created.json()["id"], "running")
        agent.stop()
        await admin.post(f"/api/v1/sessions/{created.json()['id']}/hibernate")
        failed = await wait_for_state(admin, created.json()["id"], "failed")
    assert failed["termination_reason"] == (
        "hibernate_session failed: expired: no agent took the command in time"
    )


async def test_a_stream_of_reports_is_applied_in_arrival_order(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    """Reports sent back to back (applied in bursts, runs of completes together) keep their
    order and per-report meaning: a session that exits after its start completed fails and
    is cleaned up, a duplicate is ignored, a stranger's command is answered with an error."""
    agent = await ManualAgent.registered(api.url, "agent-burst")
    await agent.connect()
    sessions = [
        (await admin.post("/api/v1/sessions", json={"template": "xterm"})).json()["id"]
        for _ in range(3)
    ]
    commands = {}
    for _ in sessions:
        command = await agent.receive()
        commands[command.payload.session_id] = command.payload.command_id  # type: ignore[union-attr]
    first, second, third = (commands[session_id] for session_id in sessions)

    def complete(command_id: str, port: int) -> dict[str, object]:
        return {"command_id": command_id, "result": {"vnc": {"host": "127.0.0.1", "port": port}}}

    for command_id in (first, second, third):
        await agent.send("ack", {"command_id": command_id})
    await agent.send("complete", complete(first, 5901))
    await agent.send("complete", complete(second, 5902))
    await agent.send("status", {"session_id": sessions[0], "state": "exited", "reason": "gone"})
    await agent.send("complete", complete(third, 5903))
    await agent.send("complete", complete(second, 5999))  # duplicate: changes nothing
    await agent.send("complete", complete("cmd-of-nobody", 5904))

    replies = {message.type: message for message in [await agent.receive(), await agent.receive()]}
    assert "cmd-of-nobody" in replies["error"].payload.message  # type: ignore[union-attr]
    cleanup = replies["command"].payload  # the exited session's leftovers are removed
    assert (cleanup.action, cleanup.session_id) == ("stop_session", sessions[0])  # type: ignore[union-attr]

    failed = await wait_for_state(admin, sessions[0], "failed")
    assert failed["termination_reason"] == "session exited: gone"
    assert (await wait_for_state(admin, sessions[1], "running"))["vnc"]["port"] == 5902
    assert (await wait_for_state(admin, sessions[2], "running"))["vnc"]["port"] == 5903
    for command_id in (first, second, third):
        row = await database.command(command_id)
        assert row.status == "completed" and row.acknowledged_at is not None
    events = await admin.get(f"/api/v1/sessions/{sessions[0]}/events")
    assert [e["to_state"] for e in events.json()] == ["pending", "running", "failed"]


async def test_a_start_completed_after_its_command_failed_is_cleaned_up(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    """The agent ran a start the control plane had given up on (no ack in time): its late
    complete must not leave the session's processes running unaccounted for."""
    api = ApiProcess(
        tmp_path / "api",
        database_url=pg_url,
        env={
            "AGENT_AUTO_APPROVE": "true",
            "COMMAND_ACK_TIMEOUT": "0.5",
            "COMMAND_MAX_ATTEMPTS": "1",
        },
    )
    api.start()
    agent = await ManualAgent.registered(api.url, "agent-late")
    await agent.connect()
    async with logged_in(api.url) as admin:
        session_id = (await admin.post("/api/v1/sessions", json={"template": "xterm"})).json()["id"]
        start = await agent.receive()
        failed = await wait_for_state(admin, session_id, "failed")
        assert "not acknowledged" in failed["termination_reason"]

        state = {"pid": 4242}
        await agent.send(
            "complete",
            {
                "command_id": start.payload.command_id,  # type: ignore[union-attr]
                "result": {"vnc": {"host": "127.0.0.1", "port": 5901}, "state": state},
            },
        )
        cleanup = await agent.receive()
        assert cleanup.type == "command"
        assert cleanup.payload.action == "stop_session"  # type: ignore[union-attr]
        assert cleanup.payload.session_id == session_id  # type: ignore[union-attr]
        assert cleanup.payload.payload["state"] == state  # type: ignore[union-attr]
        assert (await wait_for_state(admin, session_id, "failed"))["vnc"] is None


async def test_no_more_than_the_window_is_in_flight_to_an_agent(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    """Commands beyond COMMAND_WINDOW unanswered ones wait as pending rows; each answer
    lets the next one go (so an overloaded replica never lets acks go stale)."""
    api = ApiProcess(
        tmp_path / "api",
        database_url=pg_url,
        env={"AGENT_AUTO_APPROVE": "true", "COMMAND_WINDOW": "2", "COMMAND_ACK_TIMEOUT": "30"},
    )
    api.start()
    agent = await ManualAgent.registered(api.url, "agent-window")
    await agent.connect()
    database = Database(pg_url)
    async with logged_in(api.url) as admin:
        for _ in range(4):
            created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
            assert created.status_code == 201, created.text
        first, second = await agent.receive(), await agent.receive()
        with pytest.raises(TimeoutError):
            await agent.receive(timeout=1.5)  # the window is full: the rest wait
        statuses = sorted(command.status for command in await database.commands())
        assert statuses == ["pending", "pending", "sent", "sent"]

        await agent.send("ack", {"command_id": first.payload.command_id})  # type: ignore[union-attr]
        third = await agent.receive()  # one answer, one more in flight
        await agent.send("ack", {"command_id": second.payload.command_id})  # type: ignore[union-attr]
        fourth = await agent.receive()
        received = {m.payload.command_id for m in (first, second, third, fourth)}  # type: ignore[union-attr]
        assert received == {command.command_id for command in await database.commands()}
    await database.close()
