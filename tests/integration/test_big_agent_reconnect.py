"""An agent with 5,000 running sessions loses its replica (kill -9) and gets back in on the
other one: its inventory travels in pages, its sessions stay running, and stops sent right
after the reconnect run exactly once. Real processes: two replicas, PostgreSQL, Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from streamspace.db.models import Agent, Session
from streamspace.testing import finished_executions
from tests.cluster import Cluster
from tests.helpers import eventually, logged_in
from tests.running_sessions import seed_running_sessions
from tests.services import RedisServer

pytestmark = pytest.mark.slow

AGENT = "big-agent"
SESSIONS = 5000
STOPS = 200


@pytest.fixture
async def cluster(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=2)
    try:
        yield made
    finally:
        made.kill()  # before pg_url drops the database under the replicas
        await made.close()


async def _states(cluster: Cluster) -> Counter[str]:
    async with cluster.database.session() as db:
        rows = await db.execute(select(Session.state, func.count()).group_by(Session.state))
        return Counter({state: count for state, count in rows})


async def _online_at(cluster: Cluster, pod: str) -> Agent | None:
    row = (await cluster.agent_rows()).get(AGENT)
    return row if row is not None and row.status == "online" and row.replica == pod else None


@pytest.mark.timeout(300)
async def test_agent_with_5000_sessions_reconnects_to_the_survivor(cluster: Cluster) -> None:
    await cluster.start()
    state = cluster.directory / f"{AGENT}.state.json"
    args = ["--state", str(state)]
    first = cluster.add_agent(AGENT, extra_args=args)  # registers it: its row and key
    await cluster.wait_online()
    first.stop()
    ids = await seed_running_sessions(cluster.database, state, agent_id=AGENT, count=SESSIONS)
    agent = cluster.add_agent(AGENT, extra_args=args, name=f"{AGENT}-2")
    await eventually(lambda: _online_at(cluster, "pod-1"), timeout=60, message="agent on pod-1")
    assert await _states(cluster) == {"running": SESSIONS}

    cluster.replica("pod-1").kill()
    killed = time.monotonic()
    await eventually(lambda: _online_at(cluster, "pod-2"), timeout=10, message="agent on pod-2")
    print(f"\n{SESSIONS} sessions: back on pod-2 {time.monotonic() - killed:.1f} s after the kill")
    assert await _states(cluster) == {"running": SESSIONS}

    stopped = ids[:STOPS]
    async with logged_in(cluster.urls[1]) as admin:
        answers = await asyncio.gather(*(admin.delete(f"/api/v1/sessions/{s}") for s in stopped))
    assert [answer.status_code for answer in answers] == [202] * STOPS

    async def all_stopped() -> Counter[str] | None:
        states = await _states(cluster)
        return states if states["terminated"] == STOPS else None

    states = await eventually(all_stopped, timeout=60, message=f"{STOPS} sessions terminated")
    assert states == {"running": SESSIONS - STOPS, "terminated": STOPS}
    runs = Counter(
        (str(line["action"]), str(line["session_id"]))
        for line in finished_executions(agent.execution_log)
    )
    assert runs == Counter({("stop_session", s): 1 for s in stopped}), "each stop once, no other"
    assert "exceeds the" not in cluster.logs(200), "a frame was refused as too large"
