"""Reconcile loops: break the derived state behind the system's back, let it repair, compare."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis.asyncio as aioredis
from sqlalchemy import update

from streamspace.db.models import AgentCommand
from tests.database import Database
from tests.helpers import eventually, logged_in, wait_for_agent, wait_for_state
from tests.manual_agent import ManualAgent
from tests.processes import AgentProcess, ApiProcess, replica_processes
from tests.services import RedisServer


async def test_session_without_an_open_command_is_failed(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    agent = await ManualAgent.registered(api.url, "agent-1")
    await agent.connect()
    created = (await admin.post("/api/v1/sessions", json={"template": "xterm"})).json()
    assert (await agent.receive()).type == "command"
    async with database.session() as db, db.begin():  # an operator cancels it by hand
        await db.execute(
            update(AgentCommand)
            .where(AgentCommand.session_id == created["id"])
            .values(status="cancelled")
        )
    failed = await wait_for_state(admin, created["id"], "failed")  # COMMAND_ACK_TIMEOUT=2 s
    assert failed["termination_reason"] == "stuck in pending: no command in progress"


async def test_registry_keys_are_recreated_and_dead_replicas_noticed(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    slow_beats = {"HEARTBEAT_INTERVAL": "10", "REPLICA_ALIVE_TTL": "2"}
    pods = replica_processes(
        tmp_path, database_url=pg_url, redis_server=redis_server, env=slow_beats
    )
    for pod in pods:
        pod.start()
    agent = AgentProcess(tmp_path / "agent", control_plane_url=pods[0].url, agent_id="agent-2")
    agent.start()
    client = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
    database = Database(pg_url)
    try:
        async with logged_in(pods[1].url) as admin:
            await wait_for_agent(admin, "agent-2")
            await client.delete("agent:agent-2:pod", "agent:agent-2:connected", "pod:pod-1:alive")

            async def repaired() -> bool:
                return (
                    await client.get("agent:agent-2:pod") == "pod-1"
                    and await client.exists("agent:agent-2:connected") == 1
                    and await client.exists("pod:pod-1:alive") == 1
                )

            await eventually(repaired, message="registry re-created by pod-1")

            pods[0].kill()  # its liveness key expires in 2 s; heartbeats would take 30 s

            async def offline() -> bool:
                row = await database.agent("agent-2")
                return row is not None and row.status == "offline"

            await eventually(offline, timeout=10, message="agent of the dead replica offline")
            assert "replica pod-1 is gone; 1 agent(s) marked offline" in pods[1].output()
    finally:
        await client.aclose()
        await database.close()
