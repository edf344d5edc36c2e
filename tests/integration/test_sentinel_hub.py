"""Redis Sentinel failover: the hub follows the new master and routing keeps working."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from tests.helpers import eventually, logged_in, wait_for_agent, wait_for_state
from tests.processes import AgentProcess, ApiProcess
from tests.services import RedisSentinelGroup


async def test_hub_follows_the_new_master(
    processes: None, tmp_path: Path, pg_url: str, sentinel_group: RedisSentinelGroup
) -> None:
    def env(pod: str) -> dict[str, str]:
        return {
            "AGENTHUB_REDIS_ENABLED": "true",
            "REDIS_SENTINELS": sentinel_group.sentinels_env,
            "REDIS_SENTINEL_MASTER": "streamspace",
            "POD_NAME": pod,
            "AGENT_AUTO_APPROVE": "true",
            "REPLICA_ALIVE_TTL": "3",
        }

    pods = [
        ApiProcess(tmp_path / p, database_url=pg_url, env=env(p), name=p)
        for p in ("pod-1", "pod-2")
    ]
    for pod in pods:
        pod.start()
    agent = AgentProcess(tmp_path / "agent", control_plane_url=pods[0].url, agent_id="agent-s")
    agent.start()

    async def registry_on(address: tuple[str, int]) -> bool:
        client = aioredis.Redis(host=address[0], port=address[1], db=1, decode_responses=True)
        try:
            channels = set(await client.pubsub_channels())
            return (
                await client.get("agent:agent-s:pod") == "pod-1"
                and await client.exists("pod:pod-1:alive") == 1
                and {"pod:pod-1:commands", "pod:pod-2:commands"} <= channels
            )
        finally:
            await client.aclose()

    async with logged_in(pods[1].url) as admin:
        await wait_for_agent(admin, "agent-s")
        old = sentinel_group.master_address()
        await eventually(lambda: registry_on(old), message="registry on the first master")

        sentinel_group.kill_master()
        new = sentinel_group.wait_for_failover(old)
        await eventually(
            lambda: registry_on(new),
            timeout=20,
            message="registry and subscriptions on the new master",
        )

        created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201, created.text
        await wait_for_state(admin, created.json()["id"], "running")
        ready = (await admin.get("/readyz")).json()
        assert ready["redis"] == "ok"
    assert agent.executions(created.json()["id"]) == ["start_session"]
