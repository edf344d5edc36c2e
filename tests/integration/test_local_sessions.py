"""Real sessions end to end: an API replica, the real local-platform agent, Xvnc and apps.

Every session process carries ``STREAMSPACE_SESSION_ID=<id>`` in its environment; the tests
find a session's processes by scanning ``/proc/*/environ`` and kill leftovers at teardown.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from streamspace.agent.platforms.vnc_probe import read_banner
from streamspace.protocol import VncEndpoint
from tests.helpers import eventually, wait_for_agent
from tests.local_sessions import (
    AGENT_ID,
    RFB,
    TIMEOUT,
    Cluster,
    app_pid,
    process_env,
    session_processes,
)
from tests.processes import AgentProcess


async def assert_rfb(session: dict[str, Any]) -> None:
    vnc = session["vnc"]
    assert vnc, f"running session without VNC endpoint: {session}"
    assert await read_banner(VncEndpoint.model_validate(vnc), 5.0) == RFB


def process_uid(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def seen_by(pid: int, path: str) -> str:
    """The file ``path`` as the sandboxed process ``pid`` sees it (through its root)."""
    return Path(f"/proc/{pid}/root{path}").read_text()


# --- tests ---------------------------------------------------------------------------------


async def test_xterm_session_runs_and_stops_without_leftovers(cluster: Cluster) -> None:
    running = await cluster.launch("xterm")
    sid = running["id"]
    await assert_rfb(running)
    names = set(session_processes(sid).values())
    assert {"Xvnc", "xterm"} <= names, names
    # Both run as the user's own account, never as the agent's; no TCP port, a Unix socket.
    assert {process_uid(app_pid(sid, n)) for n in ("Xvnc", "xterm")} != {os.geteuid()}
    assert len({process_uid(app_pid(sid, n)) for n in ("Xvnc", "xterm")}) == 1
    assert running["vnc"]["unix"] and set(running["vnc"]) == {"unix"}  # no TCP port

    await cluster.action(sid, "stop")
    stopped = await cluster.state(sid, "terminated")
    assert stopped["vnc"] is None
    await cluster.no_processes(sid)


async def test_hibernate_and_wake_keep_the_home(cluster: Cluster) -> None:
    running = await cluster.launch("xedit")  # a persistent_home template
    sid = running["id"]
    assert running["persistent_home"] is True
    pid = app_pid(sid, "xedit")
    assert process_env(pid)["HOME"] == "/home/user"  # the session's own view of its home
    home = cluster.agent_dir / "data" / "homes" / running["owner"] / "xedit"
    assert home.stat().st_uid == process_uid(pid) != os.geteuid()
    note = home / "notes.txt"
    note.write_text("kept across hibernation\n")
    assert seen_by(pid, "/home/user/notes.txt") == "kept across hibernation\n"

    await cluster.action(sid, "hibernate")
    await cluster.state(sid, "hibernated")
    await cluster.no_processes(sid)
    assert note.read_text() == "kept across hibernation\n"

    await cluster.action(sid, "wake")
    woken = await cluster.state(sid, "running")
    await assert_rfb(woken)
    assert seen_by(app_pid(sid, "xedit"), "/home/user/notes.txt") == "kept across hibernation\n"

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
    # Compare pids as a subset: xterm may start its shell after ``before`` was taken, and a
    # child forked before then still bore the name "xterm" until it became the shell.
    assert before.keys() <= session_processes(sid).keys(), "session died with the agent"
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
    assert before.keys() <= session_processes(sid).keys()
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


async def test_agent_that_cannot_sandbox_refuses_other_users_and_says_why(
    cluster: Cluster,
) -> None:
    cluster.agent.kill()
    cluster.agent = AgentProcess(
        cluster.agent_dir, control_plane_url=cluster.api.url, agent_id=AGENT_ID, behaviour=None,
        env={"LOCAL_SANDBOX": "none"},
    )  # fmt: skip
    cluster.agent.start()

    async def connected_and_said_why() -> bool:
        output = cluster.agent.output()
        return "connected to" in output and "local sessions are NOT sandboxed" in output

    await eventually(connected_and_said_why, timeout=TIMEOUT, message="agent up, unsandboxed")
    await wait_for_agent(cluster.client, AGENT_ID, timeout=TIMEOUT)
    assert "NOT sandboxed: LOCAL_SANDBOX=none turns the session sandbox off" in (
        cluster.agent.output()
    )

    failed = await cluster.launch("xterm", expect="failed")  # admin is not the agent's account

    reason = failed["termination_reason"] or ""
    assert "this agent cannot sandbox sessions (LOCAL_SANDBOX=none" in reason, reason
    assert "user 'admin' is refused" in reason, reason
    await cluster.no_processes(failed["id"])


async def test_template_network_is_none_unless_it_says_host(cluster: Cluster) -> None:
    bad = {"name": "net", "display_name": "Net", "command": ["xterm"], "network": "bridge"}
    refused = await cluster.client.post("/api/v1/templates", json=bad)
    assert refused.status_code == 422, refused.text
    assert (await cluster.client.get("/api/v1/templates/net")).status_code == 404

    created = await cluster.client.post("/api/v1/templates", json={**bad, "network": "host"})
    assert created.status_code == 201, created.text
    templates = {t["name"]: t for t in (await cluster.client.get("/api/v1/templates")).json()}
    assert templates["net"]["network"] == "host"
    assert {templates[n]["network"] for n in ("xterm", "xedit", "xcalc")} == {"none"}
