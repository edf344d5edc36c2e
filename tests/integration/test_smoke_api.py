"""Smoke: an API replica and a fake agent, a session through REST."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import wait_for_agent, wait_for_state
from tests.processes import AgentProcess, ApiProcess


async def test_session_round_trip_with_fake_agent(
    api: ApiProcess, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-1")
    agent.start()
    client = admin
    await wait_for_agent(client, "agent-1")
    created = await client.post("/api/v1/sessions", json={"template": "xterm"})
    assert created.status_code == 201, created.text
    running = await wait_for_state(client, created.json()["id"], "running")
    assert running["vnc"] == {"host": "127.0.0.1", "port": 5900}
