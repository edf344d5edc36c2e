"""The VNC tunnel across replicas: the browser reaches pod-2, the agent is on pod-1.

pod-2 checks the token, finds the agent's replica (``agent:<id>:pod``) and its advertised
address (``pod:<POD_NAME>:address``) in Redis and relays over an internal WebSocket
authenticated with ``INTERNAL_SECRET``; pod-1 opens the tunnel to its agent.
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests.balancer import Balancer
from tests.helpers import (
    eventually,
    logged_in,
    running_session,
    session_state,
    wait_for_agent,
)
from tests.integration.test_vnc_tunnel import (
    FakeVnc,
    closed_with,
    connect_token,
    cut_off,
    viewed,
    ws_url,
)
from tests.local_sessions import kill_session_processes
from tests.processes import AgentProcess, replica_processes
from tests.services import RedisServer

TIMEOUT = 20.0
SECRET = "replicas-share-this"


def fake_vnc_agent(tmp_path: Path, url: str, agent_id: str, *, vnc_port: int) -> AgentProcess:
    """A started fake agent whose sessions' VNC servers are the ``FakeVnc`` at ``vnc_port``."""
    agent = AgentProcess(
        tmp_path / "agent",
        control_plane_url=url,
        agent_id=agent_id,
        extra_args=["--vnc-port", str(vnc_port)],
    )
    agent.start()
    return agent


async def test_browser_on_pod_2_agent_on_pod_1(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    pods = replica_processes(
        tmp_path, database_url=pg_url, redis_server=redis_server, env={"INTERNAL_SECRET": SECRET}
    )
    for pod in pods:
        pod.start()
    agent = AgentProcess(
        tmp_path / "agent", control_plane_url=pods[0].url, agent_id="agent-on-pod-1", behaviour=None
    )
    agent.start()
    redis = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
    sid = ""
    try:
        async with logged_in(pods[1].url) as admin:
            await wait_for_agent(admin, "agent-on-pod-1", timeout=TIMEOUT)

            async def advertised() -> str | None:
                return await redis.get("pod:pod-1:address")

            assert await eventually(advertised, timeout=TIMEOUT) == pods[0].url
            assert await redis.get("agent:agent-on-pod-1:pod") == "pod-1"

            sid = await running_session(admin, timeout=TIMEOUT)

            ticket = await connect_token(admin, sid)
            async with connect(ws_url(pods[1], ticket["url"]), subprotocols=["binary"]) as ws:
                rfb = await viewed(ws, sid)
                for _ in range(3):
                    await rfb.request_update()
                    assert await rfb.read_update() == 1280 * 800 * 4
                assert (await session_state(admin, sid))["active_viewers"] == 1

            async def no_viewers() -> bool:
                return (await session_state(admin, sid))["active_viewers"] == 0

            await eventually(no_viewers, timeout=TIMEOUT, message="viewer count back to 0")

            # The internal endpoint wants the shared secret.
            internal = ws_url(pods[0], f"/api/v1/internal/tunnels/{sid}")
            async with connect(internal, additional_headers={"X-Internal-Secret": "x"}) as ws:
                assert await closed_with(ws) == (4401, "invalid internal credentials")
    finally:
        await redis.aclose()
        agent.kill()
        if sid:
            kill_session_processes(sid)
    assert f"relayed tunnel to session {sid} failed" not in pods[0].output()
    assert f"VNC tunnel to session {sid} closed by the viewer" in pods[1].output()


async def test_viewers_of_a_dead_replica_are_uncounted(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    """kill -9 the replica the browser reached: the survivor uncounts its viewers once the
    dead replica's liveness key stays gone for a full TTL; a restart under the same name
    uncounts what its earlier run left."""
    vnc = FakeVnc()
    port = await vnc.start()
    fast = {"INTERNAL_SECRET": SECRET, "REPLICA_ALIVE_TTL": "2"}
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server, env=fast)
    for pod in pods:
        pod.start()
    agent = fake_vnc_agent(tmp_path, pods[0].url, "agent-on-pod-1", vnc_port=port)
    sockets: list[ClientConnection] = []
    try:
        async with logged_in(pods[0].url) as admin:
            await wait_for_agent(admin, "agent-on-pod-1", timeout=TIMEOUT)
            sid = await running_session(admin, timeout=TIMEOUT)

            async def viewers_are(count: int) -> bool:
                return (await session_state(admin, sid))["active_viewers"] == count

            for pod in pods:  # one viewer on each replica
                ticket = await connect_token(admin, sid)
                ws = await connect(ws_url(pod, ticket["url"]), subprotocols=["binary"])
                sockets.append(ws)
                assert isinstance(await ws.recv(), bytes)  # counted before bytes flow
            await eventually(lambda: viewers_are(2), timeout=TIMEOUT, message="2 viewers")

            pods[1].kill()
            await eventually(
                lambda: viewers_are(1), timeout=TIMEOUT, message="pod-2's viewer uncounted"
            )
            assert "replica pod-2 is gone; 0 agent(s) marked offline, 1 viewer(s)" in (
                pods[0].output()
            )

            pods[0].kill()  # pod-1 dies with its own viewer counted, and comes back
            pods[0].start()
            await eventually(lambda: viewers_are(0), timeout=TIMEOUT, message="count reset")
            assert "uncounted 1 viewer(s) left by an earlier run of replica pod-1" in (
                pods[0].output()
            )
    finally:
        for ws in sockets:  # their replicas are gone: nothing to say goodbye to
            ws.transport.abort()
        vnc.stop()
        agent.kill()


async def test_data_socket_landing_on_another_replica_is_forwarded(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    """Agents dial the control plane through a load balancer: the agent's control socket is
    on pod-1, its data sockets land on pod-2, which forwards them to pod-1; viewers on
    either replica get their session's screen."""
    vnc = FakeVnc()
    port = await vnc.start()
    pods = replica_processes(
        tmp_path, database_url=pg_url, redis_server=redis_server, env={"INTERNAL_SECRET": SECRET}
    )
    for pod in pods:
        pod.start()
    balancer = Balancer(pods)
    await balancer.start()
    agent = fake_vnc_agent(tmp_path, balancer.url, "agent-behind-lb", vnc_port=port)
    try:
        async with logged_in(pods[0].url) as admin:
            await wait_for_agent(admin, "agent-behind-lb", timeout=TIMEOUT)
            sid = await running_session(admin, timeout=TIMEOUT)
            balancer.send_to(1)  # from now on the balancer picks pod-2
            routed_before = len(balancer.routed)

            for index, pod in enumerate(pods):  # a viewer on the agent's replica, then pod-2
                ticket = await connect_token(admin, sid)
                async with connect(ws_url(pod, ticket["url"]), subprotocols=["binary"]) as ws:
                    down = await ws.recv()
                    assert isinstance(down, bytes) and down and set(down) == {1}
                    await ws.send(f"up-{index}".encode())

                    async def arrived(index: int = index) -> bool:
                        return f"up-{index}".encode() in vnc.received

                    await eventually(arrived, timeout=TIMEOUT, message="bytes up reach the VNC")

            assert balancer.routed[routed_before:] == [1, 1]  # both data sockets on pod-2
            forwarded = "(agent agent-behind-lb) forwarded to " + pods[0].url
            assert pods[1].output().count(forwarded) == 2
            assert "not waiting here" not in pods[0].output() + pods[1].output()
            assert len(vnc.sent) == 2

            # The forwarding replica dies mid-stream: the viewer gets a clear close, is
            # uncounted, and a new tunnel works once the balancer routes around the dead pod.
            ticket = await connect_token(admin, sid)
            async with connect(ws_url(pods[0], ticket["url"]), subprotocols=["binary"]) as ws:
                assert isinstance(await ws.recv(), bytes)
                pods[1].kill()
                code, reason = await closed_with(ws)
            assert code == 4502 and reason.startswith("tunnel to the agent lost"), reason

            async def uncounted() -> bool:
                return (await session_state(admin, sid))["active_viewers"] == 0

            await eventually(uncounted, timeout=TIMEOUT, message="viewer uncounted")
            balancer.send_to(0)
            ticket = await connect_token(admin, sid)
            async with connect(ws_url(pods[0], ticket["url"]), subprotocols=["binary"]) as ws:
                assert isinstance(await ws.recv(), bytes)
            assert balancer.routed[-1] == 0

            # The forwarding endpoint wants the shared secret and a tunnel waiting there.
            internal = ws_url(pods[0], "/api/v1/internal/agent-tunnels/no-such-tunnel")
            async with connect(internal, additional_headers={"X-Internal-Secret": "x"}) as ws:
                assert await closed_with(ws) == (4401, "invalid internal credentials")
            headers = {"X-Internal-Secret": SECRET, "X-Agent-ID": "agent-behind-lb"}
            async with connect(internal, additional_headers=headers) as ws:
                assert await closed_with(ws) == (
                    4404,
                    "no such tunnel waiting (expired or not yours)",
                )
    finally:
        agent.kill()
        await balancer.close()
        vnc.stop()


async def test_cuts_reach_the_viewers_replica(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    """Agent on pod-1, viewers on pod-2, the stop and the revoke sent to pod-3 (which holds
    neither): the viewers are closed at once all the same, and so is the agent's connection."""
    vnc = FakeVnc()
    port = await vnc.start()
    pods = replica_processes(
        tmp_path,
        database_url=pg_url,
        redis_server=redis_server,
        env={"INTERNAL_SECRET": SECRET},
        count=3,
    )
    for pod in pods:
        pod.start()
    agent = fake_vnc_agent(tmp_path, pods[0].url, "agent-on-pod-1", vnc_port=port)
    try:
        async with logged_in(pods[1].url) as viewing, logged_in(pods[2].url) as admin:
            await wait_for_agent(admin, "agent-on-pod-1", timeout=TIMEOUT)
            stopped, revoked = [await running_session(admin, timeout=TIMEOUT) for _ in range(2)]

            async def view(sid: str) -> ClientConnection:
                ticket = await connect_token(viewing, sid)
                return await connect(ws_url(pods[1], ticket["url"]), subprotocols=["binary"])

            async with await view(stopped) as ws:
                code, reason, took = await cut_off(
                    ws, lambda: admin.delete(f"/api/v1/sessions/{stopped}")
                )
            assert (code, reason) == (4409, "session stopped")
            assert took < 1.5, f"closed {took:.2f} s after the stop"

            async with await view(revoked) as ws:
                code, reason, took = await cut_off(
                    ws, lambda: admin.post("/api/v1/agents/agent-on-pod-1/revoke")
                )
            assert (code, reason) == (4403, "agent revoked")
            assert took < 1.5, f"closed {took:.2f} s after the revoke"

            async def agent_offline() -> bool:
                agents = (await admin.get("/api/v1/agents")).json()
                return any(
                    a["agent_id"] == "agent-on-pod-1" and a["status"] == "offline" for a in agents
                )

            await eventually(agent_offline, timeout=TIMEOUT, message="agent disconnected")
    finally:
        vnc.stop()
        agent.kill()
    assert "Unregistered agent: agent-on-pod-1" in pods[0].output()
