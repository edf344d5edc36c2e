"""The seed report's multi-pod validation, as a test: two replicas, one PostgreSQL, one Redis."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from tests.helpers import eventually, logged_in, wait_for_agent, wait_for_state
from tests.processes import AgentProcess, replica_processes
from tests.services import RedisServer


async def test_seed_multi_pod_validation(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server)
    for pod in pods:
        pod.start()
    agent = AgentProcess(
        tmp_path / "agent", control_plane_url=pods[0].url, agent_id="k8s-prod-cluster"
    )
    agent.start()
    client = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
    try:
        async with logged_in(pods[1].url) as admin:
            await wait_for_agent(admin, "k8s-prod-cluster")

            async def mapped() -> str | None:
                return await client.get("agent:k8s-prod-cluster:pod")

            assert await eventually(mapped) == "pod-1"
            assert await client.exists("agent:k8s-prod-cluster:connected")
            channels = set(await client.pubsub_channels())
            assert {"pod:pod-1:commands", "pod:pod-2:commands"} <= channels

            created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
            assert created.status_code == 201, created.text
            await wait_for_state(admin, created.json()["id"], "running")
            # pod-2 rang pod-1's doorbell (not only the database poll found the row).
            scrape = (await admin.get("/metrics")).text
            assert 'streamspace_doorbells_total{result="delivered"} 1.0' in scrape
        assert agent.executions(created.json()["id"]) == ["start_session"]
    finally:
        await client.aclose()
    logs = pods[0].output()
    assert "AgentHub Redis connected - multi-pod support enabled" in logs
    assert "[AgentHub] Successfully subscribed to Redis channel: pod:pod-1:commands" in logs
    assert "[AgentHub] Registered agent: k8s-prod-cluster (platform: local)" in logs
    assert "[AgentHub] Stored agent k8s-prod-cluster → pod pod-1 mapping in Redis" in logs
    assert "[CommandDispatcher] Starting CommandDispatcher with 10 workers" in pods[1].output()
