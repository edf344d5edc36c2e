"""Two replicas of ONE agent identity under leader election, as real processes sharing the
agent's data dir (key, executed-commands record, execution log) and its sessions (the fake
platform's ``--state`` file, as two replicas would share one Docker daemon).

Kill -9 the leader while commands flow: the follower takes over within 2x the lease, and no
command is lost or run twice (``Cluster.assert_exactly_once`` over the shared log).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from streamspace.agent.executed import FILE_NAME
from streamspace.testing import PHASE_DONE, PHASE_STARTED, finished_executions
from tests.cluster import START, Cluster, Load
from tests.helpers import eventually
from tests.k8s.emulator import running_emulator
from tests.processes import AgentProcess, leader_env
from tests.services import RedisServer

pytestmark = pytest.mark.slow

AGENT = "agent-ha"
LEASE = 1.0
SESSIONS = 40
PACE = 0.08


@pytest.fixture
async def cluster(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> AsyncIterator[Cluster]:
    """One ``streamspace api`` replica (the fencing is what matters here, not the hub)."""
    made = Cluster(tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=1)
    try:
        await made.start()
        yield made
    finally:
        made.kill()
        await made.close()


def add_replica(
    cluster: Cluster, name: str, *, backend: str, redis_url: str, env: Mapping[str, str]
) -> AgentProcess:
    """A replica named ``name`` (its ``POD_NAME`` too); ``env`` adds to its environment."""
    home = cluster.directory / "agents" / AGENT
    return cluster.add_agent(
        AGENT,
        name=name,
        behaviour="slow",
        extra_args=["--delay", "0.3", "--state", str(home / "platform.json")],
        env={**leader_env(backend, LEASE, redis_url), "POD_NAME": name, **env},
    )


async def kill_mid_command(cluster: Cluster, leader: AgentProcess, *, after: int) -> None:
    """SIGKILL the leader once it finished ``after`` commands, while another of its runs,
    but not between a command's effect and its record: a crash there is at-least-once
    delivery's one gap, which only an idempotent platform closes. The leader is frozen
    (SIGSTOP) while its log and record are compared, and only once a look at them while it
    runs says the moment may have come: frozen at every probe, a leader on a busy machine
    spent most of its time stopped and lost its lease before any moment came."""

    async def safe_moment() -> bool:
        if not await _between_commands(cluster, leader, after=after):
            return False
        leader.signal(signal.SIGSTOP)
        safe = False
        try:
            safe = await _between_commands(cluster, leader, after=after)
        finally:
            if not safe:
                leader.signal(signal.SIGCONT)
        return safe

    await eventually(safe_moment, timeout=30, interval=0.02, message="a command in flight")
    leader.kill()


async def _between_commands(cluster: Cluster, leader: AgentProcess, *, after: int) -> bool:
    lines = [
        line
        for line in _log_lines(leader.execution_log)
        if line["pid"] == leader.pid and line["action"] == START
    ]
    started = {line["session_id"] for line in lines if line.get("phase") == PHASE_STARTED}
    done = {line["session_id"] for line in lines if line.get("phase") == PHASE_DONE}
    if len(done) < after or not started - done:
        return False
    commands = {c.session_id: c.command_id for c in await cluster.start_commands()}
    store = leader.directory / "data" / FILE_NAME
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        recorded = {row[0] for row in db.execute("SELECT command_id FROM executed")}
    return all(commands[sid] in recorded for sid in done)


async def paced(load: Load, count: int) -> list[str]:
    """Launch ``count`` sessions one every ``PACE`` s, so starts run staggered (launched at
    once, they would all finish together and leave no moment with one in flight)."""
    created: list[str] = []
    for _ in range(count):
        created += await load.create(1)
        await asyncio.sleep(PACE)  # load shaping, not a wait for a condition
    return created


def _log_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(params=["redis", "file", "kubernetes"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each lease backend in turn."""
    name: str = request.param
    return name


@pytest.fixture
def backend_env(backend: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment the lease backend needs (``kubernetes``: an emulated API server
    holding the Lease)."""
    if backend != "kubernetes":
        yield {}
        return
    with running_emulator(tmp_path) as kube:
        yield kube.agent_env()


@pytest.mark.timeout(180)
async def test_killed_leader_follower_takes_over_nothing_lost_or_run_twice(
    cluster: Cluster, redis_url: str, backend: str, backend_env: dict[str, str]
) -> None:
    replica = functools.partial(add_replica, backend=backend, redis_url=redis_url, env=backend_env)
    leader = replica(cluster, f"{AGENT}-a")
    first = (await cluster.wait_online())[AGENT].leader_epoch
    assert first is not None
    follower = replica(cluster, f"{AGENT}-b")
    await follower.wait_following()

    async with await cluster.load(concurrency=4) as load:
        creating = asyncio.create_task(paced(load, SESSIONS))

        await kill_mid_command(cluster, leader, after=SESSIONS // 4)
        killed = time.monotonic()
        epoch = await cluster.database.wait_leader(AGENT, above=first, timeout=10)
        took = time.monotonic() - killed
        await creating
    print(f"\n{backend}: takeover {took:.2f} s after the kill (lease {LEASE} s)")
    assert took <= 2 * LEASE
    assert f"leading agent {AGENT} (epoch {epoch})" in follower.output()

    await cluster.wait_settled(SESSIONS, timeout=60)
    assert await cluster.assert_exactly_once(load.created) == SESSIONS
    finished = finished_executions(leader.execution_log)
    assert {line["pid"] for line in finished} == {leader.pid, follower.pid}
