"""A real local-platform agent (Xvnc sessions) behind one API replica, for tests.

``session_processes`` finds a session's processes by the marker variable the local platform
puts in their environment; ``Cluster`` bundles the replica, its admin client and the agent.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.helpers import eventually, wait_for_state
from tests.processes import AgentProcess, ApiProcess
from tests.rfb import RfbClient

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


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (``None`` once it has gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the field after the state


def app_pid(session_id: str, name: str) -> int:
    """The pid of the session's application process called ``name``.

    A child it has forked but not yet exec'd (xterm starting its shell) carries the same
    name for a moment: only a process whose parent has another name counts.
    """
    processes = session_processes(session_id)
    matches = [
        pid
        for pid, comm in processes.items()
        if comm == name and processes.get(parent_pid(pid) or 0) != name
    ]
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


async def view(cluster: Cluster, session_id: str, *, desktop_name: str | None = None) -> None:
    """Through the control plane's tunnel: RFB handshake (the desktop named ``desktop_name``
    when given, 1280x800) and one framebuffer update."""
    response = await cluster.client.post(f"/api/v1/sessions/{session_id}/connect")
    assert response.status_code == 200, response.text
    url = "ws://" + cluster.api.url.removeprefix("http://") + response.json()["url"]
    async with connect(url, subprotocols=["binary"], open_timeout=10) as ws:
        rfb = RfbClient(ws)
        init = await rfb.handshake()
        assert (init.width, init.height) == (1280, 800)
        if desktop_name is not None:
            assert init.name == desktop_name
        await rfb.request_update()
        assert await rfb.read_update() > 0
