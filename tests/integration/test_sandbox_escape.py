"""Escaping a local session's sandbox: a real agent, real sessions of two different users.

The victim (admin) runs a session with a secret in its home. The probe (another user) runs
``tests/escape_probe.py`` as its template's command, from inside its own sandbox: it tries to
read the agent's key and the control plane's SQLite database, list /root and the victim's
home, connect to the victim's X display (path and abstract socket) and VNC socket, see the
victim's processes and reach the control plane over TCP (its template says ``network:
none``). Every attempt must fail. The same probe run as the agent's own account (root,
outside any sandbox) is the control: there each attempt succeeds, so the test can fail.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamspace.agent.platforms import local_sandbox
from tests import escape_probe
from tests.helpers import eventually, login
from tests.local_sessions import TIMEOUT, Cluster
from tests.processes import ApiProcess, create_user

PROBE = Path(escape_probe.__file__)
NOWHERE = {"victim_x_abstract"}
"""Xvnc runs with ``-nolisten local`` in a network namespace of its own: its abstract X
socket exists nowhere, not even for root (the pre-sandbox Xvnc had one: the old hole)."""


@pytest.fixture
def api(processes: None, tmp_path: Path, sqlite_url: str) -> Iterator[ApiProcess]:
    """The API on a SQLite file, the database the probe tries to read."""
    server = ApiProcess(
        tmp_path / "api", database_url=sqlite_url, env={"AGENT_AUTO_APPROVE": "true"}
    )
    server.start()
    yield server
    server.stop()


async def probe_results(path: Path, cluster: Cluster) -> dict[str, dict[str, Any]]:
    async def written() -> bool:
        return path.exists()

    try:
        await eventually(written, timeout=TIMEOUT, message=f"{path} written by the probe")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    results: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return results


async def test_a_session_cannot_reach_the_platform_or_another_session(
    cluster: Cluster, tmp_path: Path, sqlite_url: str
) -> None:
    data = cluster.agent_dir / "data"
    victim = await cluster.launch("xedit")  # admin's session, persistent home
    victim_dir = data / "sessions" / victim["id"]
    victim_home = data / "homes" / victim["owner"] / "xedit"
    (victim_home / "secret.txt").write_text("the victim's secret\n")

    create_user(sqlite_url, "mallory", "mallory-password")
    template = {
        "name": "escape-probe", "display_name": "Escape probe", "persistent_home": True,
        "network": "none",
    }  # fmt: skip
    targets = {
        "agent_key": str(data / "agent-key"),
        "database": sqlite_url.removeprefix("sqlite:///"),
        "victim_home": str(victim_home),
        "victim_file": "secret.txt",
        "victim_x_socket": str(victim_dir / "x11" / f"X{local_sandbox.DISPLAY}"),
        "victim_display": local_sandbox.DISPLAY,
        "victim_vnc": victim["vnc"]["unix"],
        "victim_session": victim["id"],
        "api_port": cluster.api.port,
    }
    inside = f"{local_sandbox.HOME}/probe.json"
    command = ["/usr/bin/python3", f"{local_sandbox.HOME}/probe.py", json.dumps(targets), inside]
    created = await cluster.client.post(
        "/api/v1/templates", json={**template, "command": [*command, "--stay"]}
    )
    assert created.status_code == 201, created.text
    # The probe's persistent home, prepared with the script before its first session.
    probe_home = data / "homes" / "mallory" / "escape-probe"
    probe_home.mkdir(parents=True)
    shutil.copy(PROBE, probe_home / "probe.py")

    mallory = await login(cluster.api.url, "mallory", "mallory-password")
    try:
        launched = await mallory.post("/api/v1/sessions", json={"template": "escape-probe"})
        assert launched.status_code == 201, launched.text
        cluster.sessions.append(launched.json()["id"])
        await cluster.state(launched.json()["id"], "running")
    finally:
        await mallory.aclose()
    from_inside = await probe_results(probe_home / "probe.json", cluster)

    got_in = {name: r["detail"] for name, r in from_inside.items() if r["ok"]}
    assert not got_in, f"escaped the sandbox: {got_in}"
    assert set(from_inside) == set(escape_probe.ATTEMPTS)

    # The control: the very same probe as the agent's account, outside any sandbox.
    control = tmp_path / "control.json"
    argv = ["/usr/bin/python3", str(PROBE), json.dumps(targets), str(control)]
    await asyncio.to_thread(subprocess.run, argv, check=True, timeout=60)
    outside = json.loads(control.read_text())
    refused = {name: r["detail"] for name, r in outside.items() if not r["ok"]}
    assert set(refused) == NOWHERE, f"the control probe should get in everywhere: {refused}"
    assert "secret" in outside["list_victim_home"]["detail"]

    # The victim's session was not disturbed.
    assert (await cluster.state(victim["id"], "running"))["vnc"] == victim["vnc"]
