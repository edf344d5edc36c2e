"""Durable command routing under faults: several replicas, one PostgreSQL, one Redis, real
processes. Every test proves zero commands lost and none run twice: each session created
reaches ``running``, its one ``start_session`` row is ``completed``, and the agents'
execution logs show exactly one *finished* start for it (``tests/cluster.py``)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.services import RedisServer

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
REDIS_DEGRADED = "unavailable (degraded: database polling)"


@pytest.fixture
async def make_cluster(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> AsyncIterator[MakeCluster]:
    """``make_cluster(replicas=3, env={...})``; processes are killed, clients closed after."""
    made: list[Cluster] = []

    def make(replicas: int = 3, env: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(
            tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=replicas, env=env or {}
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.close()


def redis_up(scrape: str, pod: str) -> float | None:
    match = re.search(rf'^streamspace_redis_up\{{replica="{pod}"\}} (\S+)$', scrape, re.M)
    return float(match.group(1)) if match else None


async def test_thousand_commands_three_replicas_ten_agents(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(replicas=3)
    await cluster.start()
    cluster.add_agents(10)
    rows = await cluster.wait_online()
    # Agent i dialled replica i % 3 first: the agents are spread over all three.
    assert {rows[f"agent-{i}"].replica for i in range(10)} == {"pod-1", "pod-2", "pod-3"}

    async with await cluster.load(concurrency=10) as load:
        began = time.monotonic()
        await load.create(1000)
        created_in = time.monotonic() - began
        settled_in = await cluster.wait_settled(1000, timeout=90)
    total = time.monotonic() - began
    print(
        f"\n1000 commands over 3 replicas / 10 agents: created in {created_in:.1f} s, "
        f"all completed {total:.1f} s after the first request "
        f"({1000 / total:.0f} commands/s; settled {settled_in:.1f} s after the last)"
    )
    assert sorted(load.by_replica.values()) == [333, 333, 334], load.by_replica
    assert not load.refused, load.refused
    assert await cluster.assert_exactly_once(load.created) == 1000
