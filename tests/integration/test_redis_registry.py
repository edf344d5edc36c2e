"""The AgentHub on the real Redis registry (a throwaway redis-server): the scenarios of
``tests/unit/test_hub.py``, which run on the in-process fake, hold on Redis too, so the
fake the core tests use behaves like the registry replicas run with."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from streamspace import names
from streamspace.controlplane.hub import AgentHub, Ring
from streamspace.controlplane.hub.redis_registry import RedisRegistry
from tests.helpers import eventually
from tests.unit.test_hub import connection, parcel


@contextlib.asynccontextmanager
async def replicas(redis_url: str, *pods: str) -> AsyncIterator[list[AgentHub]]:
    """Started and running hubs of these replicas, each with its own Redis client."""
    hubs = [
        AgentHub(
            replica=pod,
            registry=RedisRegistry(
                replica=pod,
                redis=aioredis.Redis.from_url(redis_url),
                key_ttl=30,
                alive_ttl=30,
                where=redis_url,
                address=f"http://{pod}",
            ),
        )
        for pod in pods
    ]
    stop = asyncio.Event()
    for hub in hubs:
        await hub.start()
    tasks = [asyncio.create_task(hub.run(stop)) for hub in hubs]
    probe = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def subscribed() -> bool:
        counts = dict(await probe.pubsub_numsub(*(names.pod_commands_channel(p) for p in pods)))
        return all(counts.get(names.pod_commands_channel(p)) == 1 for p in pods)

    try:
        await eventually(subscribed, timeout=10, message="every hub subscribed")
        await eventually(lambda: _all_alive(probe, pods), timeout=10, message="every replica alive")
        yield hubs
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for hub in hubs:
            await hub.close()
        await probe.aclose()


async def _all_alive(probe: aioredis.Redis, pods: tuple[str, ...]) -> bool:
    return all([await probe.exists(names.pod_alive_key(pod)) for pod in pods])


async def test_registration_replaced_on_another_replica_and_released_by_compare(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with replicas(redis_url, "pod-1", "pod-2") as (hub1, hub2):
        first = connection("a1")
        await hub1.register(first)
        assert await hub2.owner_of("a1") == "pod-1"
        assert await hub2.address_of("pod-1") == "http://pod-1"
        assert await hub2.replica_alive("pod-1") is True
        assert await hub2.replica_alive("pod-9") is False

        second = connection("a1")  # the agent reconnects through pod-2
        await hub2.register(second)
        assert await hub1.refresh(first) is False  # its heartbeat finds it taken over
        assert await hub1.unregister(first)  # current here, but the release compares ...
        assert await redis_client.get(names.agent_pod_key("a1")) == "pod-2"  # ... and keeps
        assert await redis_client.get(names.agent_connected_key("a1")) == second.connection_id
        assert await hub1.owner_of("a1") == "pod-2"
        assert await hub2.refresh(second)
        assert await hub2.unregister(second)
        assert await hub1.owner_of("a1") is None
    # A replica that closed withdrew its liveness.
    assert not await redis_client.exists(names.pod_alive_key("pod-1"))


async def test_doorbells_and_parcels_reach_the_queue_of_the_agents_replica(
    redis_url: str,
) -> None:
    async with replicas(redis_url, "pod-1", "pod-2") as (hub1, hub2):
        await hub2.register(connection("a1"))
        assert await hub1.ring("a1")
        assert await asyncio.wait_for(hub2.doorbells.get(), 5) == Ring("a1")
        sent = parcel()
        assert await hub1.ring("a1", sent)
        assert await asyncio.wait_for(hub2.doorbells.get(), 5) == Ring("a1", sent)
        assert not await hub1.ring("nobody")
        assert hub1.doorbells.empty() and hub2.doorbells.empty()
