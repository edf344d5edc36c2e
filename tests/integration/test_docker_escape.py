"""Escape attempts from inside a Docker session, through the real control plane and agent.

A victim session runs xterm; a probe session's template command (tests/docker_escape_probe.sh)
tries, from inside its container: the victim's VNC server by container address and by name,
the victim's VNC port as the host publishes it (through the probe's gateway, the host's
address on its network), host paths (the agent's data dir and key, the control plane's
database, the victim's home and X display socket), the victim's processes, root,
capabilities and setuid (no_new_privs). Every attempt must fail. The same probe run on the
host as the agent's account (root) must succeed, so the test fails when isolation is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from streamspace.agent.credentials import KEY_FILE
from streamspace.agent.platforms.docker import container_name
from streamspace.images import recipe
from tests.docker_env import docker
from tests.helpers import eventually
from tests.local_sessions import TIMEOUT, Cluster
from tests.services import PostgresServer

pytestmark = pytest.mark.timeout(400)

PROBE = (Path(__file__).parents[1] / "docker_escape_probe.sh").read_text()
MARK = "ESCAPE-PROBE "
NO_CAPABILITIES = "0000000000000000"


def secrets(cluster: Cluster, postgres: PostgresServer, victim: dict[str, Any]) -> list[str]:
    """Host paths no session may read: the agent's data dir and key, the database's files,
    the victim's home (its volume) and its X display's socket (in its own /tmp)."""
    data = cluster.agent_dir / "data"
    (home,) = [m["Source"] for m in victim["Mounts"] if m["Destination"] == recipe.HOME]
    display = f"/proc/{victim['State']['Pid']}/root/tmp/.X11-unix/X0"
    return [str(data), str(data / KEY_FILE), str(postgres.data_dir), home, display]


def probe_env(victim: dict[str, Any], published: int, paths: list[str]) -> dict[str, str]:
    (network,) = victim["NetworkSettings"]["Networks"].values()
    return {
        "VICTIM_IP": network["IPAddress"],
        "VICTIM_NAME": victim["Name"].lstrip("/"),
        "VICTIM_SESSION": victim["Config"]["Labels"]["streamspace.session"],
        "HOST_PORT": str(published),
        "SECRETS": " ".join(paths),
    }


def parse(output: str) -> dict[str, Any] | None:
    for line in output.splitlines():
        if line.startswith(MARK):
            found: dict[str, Any] = json.loads(line.removeprefix(MARK))
            return found
    return None


async def probe_on_host(env: dict[str, str]) -> dict[str, Any]:
    """The probe from the agent's position: this process's account, on the host."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        PROBE,
        env={**os.environ, **env, "HOST_ADDR": "127.0.0.1"},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    found = parse(out.decode())
    assert found is not None, out
    return found


async def test_a_session_reaches_nothing_of_another_session_nor_of_the_host(
    docker_cluster: Cluster, postgres_server: PostgresServer
) -> None:
    victim_session = await docker_cluster.launch("xterm")
    victim_name = container_name(victim_session["id"])
    (victim,) = json.loads(await docker("inspect", victim_name))
    published = victim_session["vnc"]["port"]
    paths = secrets(docker_cluster, postgres_server, victim)
    env = probe_env(victim, published, paths)

    template = {
        "name": "escape-probe",
        "display_name": "Escape probe",
        "platform": "docker",
        "command": ["bash", "-c", PROBE, "escape-probe", "sleep", "infinity"],
        "env": env,
    }
    created = await docker_cluster.client.post("/api/v1/templates", json=template)
    assert created.status_code == 201, created.text
    probe_session = await docker_cluster.launch("escape-probe")
    probe_name = container_name(probe_session["id"])

    async def probed() -> dict[str, Any] | None:
        return parse(await docker("logs", probe_name))

    inside = await eventually(probed, timeout=TIMEOUT, message="the probe's results")
    (probe,) = json.loads(await docker("inspect", probe_name))
    (probe_network,) = probe["NetworkSettings"]["Networks"].values()
    assert inside == {
        "uid": 1000,
        "cap_eff": NO_CAPABILITIES,
        "cap_bnd": NO_CAPABILITIES,
        "no_new_privs": 1,
        "vnc_by_ip": False,
        "vnc_by_name": False,
        "host": probe_network["Gateway"],
        "vnc_via_host": False,
        "readable": [],
        "victim_processes": 0,
    }, inside

    # The same probe as the agent's account on the host: the attempts can succeed.
    outside = await probe_on_host(env)
    assert outside["uid"] == 0 and outside["cap_eff"] != NO_CAPABILITIES, outside
    assert outside["no_new_privs"] == 0, outside
    assert outside["vnc_by_ip"] and outside["vnc_via_host"], outside
    assert outside["readable"] == paths, outside
    assert outside["victim_processes"] > 0, outside

    for session in (victim_session, probe_session):
        await docker_cluster.action(session["id"], "stop")
    for session in (victim_session, probe_session):
        await docker_cluster.state(session["id"], "terminated")

    async def removed() -> bool:
        names = (await docker("ps", "-a", "--format", "{{.Names}}")).split()
        return victim_name not in names and probe_name not in names

    await eventually(removed, timeout=TIMEOUT, message="session containers removed")
