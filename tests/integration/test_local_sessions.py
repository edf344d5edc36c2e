"""Real sessions end to end: an API replica, the real local-platform agent, Xvnc and apps.

Every session process carries ``STREAMSPACE_SESSION_ID=<id>`` in its environment; the tests
find a session's processes by scanning ``/proc/*/environ`` and kill leftovers at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamspace.agent.platforms.vnc_probe import read_rfb_banner
from tests.helpers import eventually, wait_for_agent, wait_for_state
from tests.processes import AgentProcess, ApiProcess

RFB = b"RFB 003.008\n"
TIMEOUT = 20.0
AGENT_ID = "local-agent-1"
MARKER = "STREAMSPACE_SESSION_ID"


# --- /proc ---------------------------------------------------------------------------------


def process_env(pid: int) -> dict[str, str]:
    """The environment of a live process (empty for zombies and vanished processes)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def session_processes(session_id: str) -> dict[int, str]:
    """``pid -> command name`` of every live process carrying the session's marker."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process_env(int(entry.name)).get(MARKER) == session_id:
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (entry / "comm").read_text().strip()
    return found


def app_pid(session_id: str, name: str) -> int:
    """The pid of the session's application process called ``name``."""
    matches = [pid for pid, comm in session_processes(session_id).items() if comm == name]
    assert len(matches) == 1, f"{name} of {session_id}: {session_processes(session_id)}"
    return matches[0]


def kill_session_processes(session_id: str) -> None:
    for pid in session_processes(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the setup -----------------------------------------------------------------------------


@dataclass
class Cluster:
    api: ApiProcess
    client: httpx.AsyncClient
    agent: AgentProcess
    agent_dir: Path
    sessions: list[str] = field(default_factory=list)

    def logs(self) -> str:
        return (
            f"--- agent log ---\n{self.agent.output()[-3000:]}\n--- api log ---\n"
            + (self.api.output()[-3000:])
        )

    async def state(self, session_id: str, state: str) -> dict[str, Any]:
        try:
            return await wait_for_state(self.client, session_id, state, timeout=TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    async def launch(self, template: str = "xterm", *, expect: str = "running") -> dict[str, Any]:
        created = await self.client.post("/api/v1/sessions", json={"template": template})
        assert created.status_code == 201, created.text
        self.sessions.append(created.json()["id"])
        return await self.state(created.json()["id"], expect)

    async def action(self, session_id: str, action: str) -> None:
        if action == "stop":
            response = await self.client.delete(f"/api/v1/sessions/{session_id}")
        else:
            response = await self.client.post(f"/api/v1/sessions/{session_id}/{action}")
        assert response.status_code == 202, response.text

    async def events(self, session_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/v1/sessions/{session_id}/events")
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()
        return events

    async def no_processes(self, session_id: str) -> None:
        async def gone() -> bool:
            return not session_processes(session_id)

        try:
            await eventually(gone, timeout=TIMEOUT, message=f"processes of {session_id} gone")
        except AssertionError as exc:
            left = session_processes(session_id)
            raise AssertionError(f"{exc}; left: {left}\n{self.logs()}") from None


@pytest.fixture
async def cluster(
    api: ApiProcess, admin: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Cluster]:
    agent_dir = tmp_path / "agent"
    agent = AgentProcess(agent_dir, control_plane_url=api.url, agent_id=AGENT_ID, behaviour=None)
    agent.start()
    setup = Cluster(api, admin, agent, agent_dir)
    try:
        await wait_for_agent(admin, AGENT_ID, timeout=TIMEOUT)
        yield setup
    finally:
        agent.kill()
        for session_id in setup.sessions:
            kill_session_processes(session_id)


async def assert_rfb(session: dict[str, Any]) -> None:
    vnc = session["vnc"]
    assert vnc, f"running session without VNC endpoint: {session}"
    assert await read_rfb_banner(vnc["host"], vnc["port"], 5.0) == RFB


# --- tests ---------------------------------------------------------------------------------


async def test_xterm_session_runs_and_stops_without_leftovers(cluster: Cluster) -> None:
    running = await cluster.launch("xterm")
    sid = running["id"]
    await assert_rfb(running)
    names = set(session_processes(sid).values())
    assert {"Xvnc", "xterm"} <= names, names

    await cluster.action(sid, "stop")
    stopped = await cluster.state(sid, "terminated")
    assert stopped["vnc"] is None
    await cluster.no_processes(sid)


async def test_hibernate_and_wake_keep_the_home(cluster: Cluster) -> None:
    running = await cluster.launch("xedit")  # a persistent_home template
    sid = running["id"]
    assert running["persistent_home"] is True
    home = Path(process_env(app_pid(sid, "xedit"))["HOME"])
    assert home.is_dir() and cluster.agent_dir in home.parents, home
    note = home / "notes.txt"
    note.write_text("kept across hibernation\n")

    await cluster.action(sid, "hibernate")
    await cluster.state(sid, "hibernated")
    await cluster.no_processes(sid)
    assert note.read_text() == "kept across hibernation\n"

    await cluster.action(sid, "wake")
    woken = await cluster.state(sid, "running")
    await assert_rfb(woken)
    assert process_env(app_pid(sid, "xedit"))["HOME"] == str(home)
    assert note.read_text() == "kept across hibernation\n"

    await cluster.action(sid, "stop")
    await cluster.state(sid, "terminated")
    await cluster.no_processes(sid)
    assert note.exists(), "a persistent home must outlive the session"


async def test_sessions_survive_an_agent_restart(cluster: Cluster) -> None:
    running = await cluster.launch("xterm")
    sid = running["id"]
    before = session_processes(sid)
    assert before

    cluster.agent.kill()  # SIGKILL: no chance to clean up
    assert not cluster.agent.running()
    # Compare as a subset: xterm may start its shell after ``before`` was taken.
    assert before.items() <= session_processes(sid).items(), "session died with the agent"
    await assert_rfb(running)

    connections = cluster.agent.output().count("connected to")
    cluster.agent = AgentProcess(
        cluster.agent_dir, control_plane_url=cluster.api.url, agent_id=AGENT_ID, behaviour=None
    )
    cluster.agent.start()

    async def reconnected() -> bool:
        return cluster.agent.output().count("connected to") > connections

    await eventually(reconnected, timeout=TIMEOUT, message="restarted agent connected")
    await wait_for_agent(cluster.client, AGENT_ID, timeout=TIMEOUT)
    assert "refused the agent" not in cluster.agent.output()

    after = await cluster.state(sid, "running")
    assert after["vnc"] == running["vnc"]
    await assert_rfb(after)
    assert before.items() <= session_processes(sid).items()
    assert all(e["to_state"] != "failed" for e in await cluster.events(sid))

    await cluster.action(sid, "stop")
    await cluster.state(sid, "terminated")
    await cluster.no_processes(sid)


async def test_session_whose_app_dies_becomes_failed(cluster: Cluster) -> None:
    running = await cluster.launch("xterm")
    sid = running["id"]
    os.kill(app_pid(sid, "xterm"), signal.SIGKILL)

    failed = await cluster.state(sid, "failed")
    reason = failed["termination_reason"] or ""
    assert "exit" in reason.lower(), reason
    assert any(e["to_state"] == "failed" for e in await cluster.events(sid))
    # The session is over: its VNC server must not be left running.
    await cluster.no_processes(sid)


async def test_template_with_missing_command_fails_cleanly(cluster: Cluster) -> None:
    created = await cluster.client.post(
        "/api/v1/templates",
        json={"name": "broken", "display_name": "Broken", "command": ["no-such-binary-xyz"]},
    )
    assert created.status_code == 201, created.text

    failed = await cluster.launch("broken", expect="failed")
    sid = failed["id"]
    assert "command not found" in (failed["termination_reason"] or ""), failed
    assert failed["vnc"] is None
    await cluster.no_processes(sid)
    assert not (cluster.agent_dir / "data" / "sessions" / sid).exists()
