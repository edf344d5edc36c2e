"""Disabling a user on two replicas sharing Redis: the agent on pod-1, the user's viewer on
pod-2, the administrator on pod-1. The user's login token and API token, cached on both
replicas a moment before, are refused on both right away; their session gets its
``stop_session`` row and ends; their open viewer (on the other replica) closes. A disable
from the command line reaches both replicas the same way, through Redis."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.database import Database
from tests.helpers import eventually, logged_in, login, running_session, wait_for_state
from tests.integration.test_cli import STREAMSPACE, clean_env
from tests.integration.test_vnc_tunnel import FakeVnc, connect_token, cut_off, ws_url
from tests.integration.test_vnc_tunnel_replicas import SECRET, TIMEOUT, fake_vnc_agent
from tests.processes import replica_processes
from tests.services import RedisServer

AGENT = "agent-on-pod-1"


async def status_everywhere(urls: list[str], token: str) -> list[int]:
    """``GET auth/me`` with ``token`` on each replica, in order."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        return [(await client.get(f"{url}/api/v1/auth/me")).status_code for url in urls]


async def test_a_disabled_user_is_refused_on_both_replicas_at_once(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    vnc = FakeVnc()
    port = await vnc.start()
    pods = replica_processes(
        tmp_path, database_url=pg_url, redis_server=redis_server, env={"INTERNAL_SECRET": SECRET}
    )
    for pod in pods:
        pod.start()
    urls = [pod.url for pod in pods]
    agent = fake_vnc_agent(tmp_path, pods[0].url, AGENT, vnc_port=port)
    database = Database(pg_url)
    try:
        async with logged_in(pods[0].url) as admin:
            for name in ("alice", "bob"):
                made = await admin.post(
                    "/api/v1/users", json={"username": name, "password": f"{name}-password"}
                )
                assert made.status_code == 201, made.text
            await wait_for_agent_online(admin)
            alice = await login(pods[1].url, "alice", "alice-password")
            try:
                login_token = alice.headers["Authorization"].removeprefix("Bearer ")
                made = await alice.post("/api/v1/auth/tokens", json={"name": "automation"})
                api_token = made.json()["token"]
                session_id = await running_session(alice, timeout=TIMEOUT)
                for token in (login_token, api_token):  # cached on both replicas now
                    assert await status_everywhere(urls, token) == [200, 200]

                ticket = await connect_token(alice, session_id)
                async with connect(ws_url(pods[1], ticket["url"]), subprotocols=["binary"]) as ws:
                    code, reason, took = await cut_off(
                        ws, lambda: admin.post("/api/v1/users/alice/disable")
                    )
                    for token in (login_token, api_token):  # at once, not after the cache TTL
                        assert await status_everywhere(urls, token) == [401, 401]
                assert (code, reason) == (4409, "account disabled")
                assert took < 1.5, f"the viewer closed {took:.2f} s after the disable"
            finally:
                await alice.aclose()

            commands = [c.action for c in await database.commands(session_id=session_id)]
            assert commands == ["start_session", "stop_session"], commands
            await wait_for_state(admin, session_id, "terminated", timeout=TIMEOUT)
            events = (await admin.get(f"/api/v1/sessions/{session_id}/events")).json()
            assert {"to_state": "stopping", "detail": "account disabled"}.items() <= next(
                e for e in events if e["to_state"] == "stopping"
            ).items()
            assert "stop_session" in agent.executions(session_id)

            # The command line, on the same database and Redis: as immediate.
            bob = await login(pods[0].url, "bob", "bob-password")
            bob_token = bob.headers["Authorization"].removeprefix("Bearer ")
            await bob.aclose()
            assert await status_everywhere(urls, bob_token) == [200, 200]
            env = clean_env(
                DATABASE_URL=pg_url,
                AGENTHUB_REDIS_ENABLED="true",
                REDIS_HOST="127.0.0.1",
                REDIS_PORT=str(redis_server.port),
                POD_NAME="pod-1",  # as inside a replica's pod: the CLI must not take its name
            )
            done = await asyncio.to_thread(
                subprocess.run,
                [STREAMSPACE, "users", "disable", "bob"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert await status_everywhere(urls, bob_token) == [401, 401]
            readyz = [(await admin.get(f"{url}/readyz")).status_code for url in urls]
            assert readyz == [200, 200]
            assert await pods_alive(redis_server) == {"pod-1", "pod-2"}
    finally:
        await database.close()
        vnc.stop()


async def wait_for_agent_online(admin: httpx.AsyncClient) -> None:
    async def online() -> bool:
        agents = (await admin.get("/api/v1/agents")).json()
        return any(a["agent_id"] == AGENT and a["status"] == "online" for a in agents)

    await eventually(online, timeout=TIMEOUT, message=f"{AGENT} online")


async def pods_alive(redis_server: RedisServer) -> set[str]:
    """The replicas whose liveness key is in Redis (the CLI withdrew only its own)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
    try:
        keys = await client.keys("pod:*:alive")
    finally:
        await client.aclose()
    return {key.split(":")[1] for key in keys}
