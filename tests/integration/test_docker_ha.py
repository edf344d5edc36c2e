"""Two replicas of ONE docker-platform agent under leader election, as real processes
sharing the agent's data dir (lock file, key, executed-commands record) and one dockerd.

Kill -9 the leader at an arbitrary moment while session starts are in flight (no waiting for
a safe one): the follower takes over within 2x the lease, every session runs, and each has
exactly one container, created and started once, serving VNC where the control plane says.
A start whose effect landed unrecorded is run again by the follower, and the platform
carries on with the container the dead leader made.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from streamspace.agent.platforms.docker import AGENT_LABEL
from streamspace.agent.platforms.vnc_probe import read_rfb_banner
from streamspace.db.models import Session
from tests.database import Database
from tests.docker_env import DockerScope, container_events, container_ids, session_containers
from tests.helpers import eventually
from tests.local_sessions import RFB
from tests.processes import AgentProcess, ApiProcess, leader_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LEASE = 1.5
SESSIONS = 6
KILL_AFTER = 2
"""Sessions running when the leader is killed (the others are being started)."""


def add_replica(
    api: ApiProcess, scope: DockerScope, directory: Path, name: str, env: dict[str, str]
) -> AgentProcess:
    agent = AgentProcess(
        directory,
        control_plane_url=api.url,
        agent_id=scope.agent_id,
        behaviour=None,
        platform="docker",
        name=name,
        env=env,
    )
    agent.start()
    return agent


class Containers:
    """The container id each session had when it was first seen running (in the database)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.first: dict[str, str] = {}

    async def running(self, count: int) -> bool:
        """Note newly running sessions; whether ``count`` of them run (fails on a failed one)."""
        sessions = await self.database.sessions()
        failed = {s.id: s.termination_reason for s in sessions if s.state == "failed"}
        assert not failed, f"sessions failed: {failed}"
        for session in sessions:
            if session.state == "running":
                self.first.setdefault(session.id, session.platform_state["container"])
        return len(self.first) >= count


async def assert_one_container_serving(session: Session, first_id: str) -> None:
    """One container for the session: the one it first ran in, running, answering RFB on
    the endpoint the control plane recorded."""
    containers = await session_containers(session.id)
    assert [c["Id"] for c in containers] == [first_id], (session.id, containers)
    (container,) = containers
    assert container["State"]["Running"], container["State"]
    assert session.platform_state["container"] == first_id
    assert session.vnc_host is not None and session.vnc_port is not None
    ports = container["NetworkSettings"]["Ports"].values()
    published = {int(binding["HostPort"]) for bindings in ports for binding in bindings or ()}
    assert session.vnc_port in published
    assert await read_rfb_banner(session.vnc_host, session.vnc_port, 5.0) == RFB


@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_killed_docker_leader_follower_takes_over_one_container_per_session(
    api: ApiProcess,
    admin: httpx.AsyncClient,
    database: Database,
    docker_scope: DockerScope,
    tmp_path: Path,
    redis_url: str,
    backend: str,
) -> None:
    began = time.time()
    agent_id = docker_scope.agent_id
    env = leader_env(backend, LEASE, redis_url)
    leader = add_replica(api, docker_scope, tmp_path / "agent", "replica-a", env)
    first = await database.wait_leader(agent_id)
    follower = add_replica(api, docker_scope, tmp_path / "agent", "replica-b", env)
    await follower.wait_following()

    async def create() -> str:
        response = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    creating = asyncio.gather(*(create() for _ in range(SESSIONS)))
    containers = Containers(database)
    await eventually(
        lambda: containers.running(KILL_AFTER), timeout=30, interval=0.02, message="first starts"
    )
    leader.kill()
    killed = time.monotonic()
    in_flight = SESSIONS - len(containers.first)
    epoch = await database.wait_leader(agent_id, above=first, timeout=10)
    took = time.monotonic() - killed
    created = set(await creating)
    rerun = follower.output().count(": start_session ")
    print(
        f"\n{backend}: takeover {took:.2f} s after the kill (lease {LEASE} s); "
        f"{in_flight} start(s) in flight, {rerun} re-delivered to the follower"
    )
    assert took <= 2 * LEASE
    assert epoch == first + 1, "one handover, not a leader losing its lease under load"
    assert f"leading agent {agent_id} (epoch {epoch})" in follower.output()
    assert not leader.survivors(), "the killed leader left processes behind"

    await eventually(
        lambda: containers.running(SESSIONS), timeout=40, interval=0.1, message="all running"
    )
    sessions = {s.id: s for s in await database.sessions()}
    assert set(sessions) == created
    for session_id, session in sessions.items():
        await assert_one_container_serving(session, containers.first[session_id])
    once = {session_id: 1 for session_id in created}
    assert await container_events(agent_id, "create", since=began) == once
    assert await container_events(agent_id, "start", since=began) == once

    for session_id in created:
        response = await admin.delete(f"/api/v1/sessions/{session_id}")
        assert response.status_code == 202, response.text

    async def removed() -> bool:
        states = {s.state for s in await database.sessions()}
        return states == {"terminated"} and not await container_ids(f"{AGENT_LABEL}={agent_id}")

    await eventually(removed, timeout=30, interval=0.2, message="stopped, containers removed")
    assert await container_events(agent_id, "destroy", since=began) == once
