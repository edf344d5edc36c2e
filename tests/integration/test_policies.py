"""Lifecycle policies end to end: a real replica on PostgreSQL enforcing templates' idle
timeouts and maximum ages on a fake agent's sessions, viewers through the real VNC tunnel
(a TCP server that keeps sending, as a desktop with a ticking clock does), and two replicas
racing over the same 50 idle sessions.

The policies are set in fractions of a minute (3 s, 6 s) so the tests see them act in
seconds; the enforcer and the activity refresh run every 0.2 s here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamspace.db.models import AgentCommand, Session, utcnow
from streamspace.states import SessionState
from streamspace.testing import finished_executions
from tests.cluster import Cluster
from tests.database import Database
from tests.helpers import eventually, logged_in, session_state, wait_for_agent, wait_for_state
from tests.processes import AgentProcess, ApiProcess, create_user
from tests.running_sessions import seed_running_sessions
from tests.services import PostgresServer, RedisServer

DATABASE = "test_policies"
AGENT = "policy-agent"
TIMEOUT = 20.0
FAST_POLICIES = {"VIEWER_ACTIVITY_INTERVAL": "0.2", "SESSION_POLICY_INTERVAL": "0.2"}
TEMPLATES = {
    "idle3": {"idle_timeout_minutes": 0.05},  # 3 s, then hibernate (the site default)
    "maxage6": {"max_age_minutes": 0.1},  # 6 s
}
HANDSHAKE = b"RFB 003.008\n\x01\x01"
UPDATE_REQUEST = struct.pack(">BBHHHH", 3, 1, 0, 0, 1280, 800)
POINTER = struct.pack(">BBHH", 5, 0, 10, 10)


class _Desktop(socketserver.BaseRequestHandler):
    """Sends a few bytes every 50 ms (screen updates) and reads whatever comes."""

    def handle(self) -> None:
        self.request.settimeout(0.05)
        with contextlib.suppress(OSError):
            while True:
                self.request.sendall(b"\x00" * 64)
                with contextlib.suppress(TimeoutError):
                    if self.request.recv(65536) == b"":
                        return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def desktop() -> Iterator[int]:
    """The fake sessions' VNC server; its port."""
    server = _Server(("127.0.0.1", 0), _Desktop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory, desktop: int
) -> Iterator[ApiProcess]:
    """One replica and a fake agent for the module, with the policy templates."""
    url = postgres_server.create_database(DATABASE)
    base = tmp_path_factory.mktemp("policies")
    env = {"AGENT_AUTO_APPROVE": "true", "SESSION_IDLE_WARNING_MINUTES": "0.02", **FAST_POLICIES}
    api = ApiProcess(base / "api", database_url=url, env=env)
    agent = AgentProcess(
        base / "agent",
        control_plane_url=api.url,
        agent_id=AGENT,
        extra_args=["--vnc-port", str(desktop)],
    )
    api.start()
    agent.start()
    try:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            login = {"username": "admin", "password": "admin-password"}
            token = client.post("/api/v1/auth/login", json=login).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            for name, policy in TEMPLATES.items():
                body = {"name": name, "display_name": name, "command": ["x"], **policy}
                created = client.post("/api/v1/templates", json=body)
                assert created.status_code == 201, created.text
        create_user(url, "bob", "bob-password")
        yield api
    finally:
        agent.stop()
        api.stop()
        postgres_server.drop_database(DATABASE)


@pytest.fixture
async def admin(site: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(site.url) as client:
        await wait_for_agent(client, AGENT, timeout=TIMEOUT)
        yield client


async def _launch(client: httpx.AsyncClient, template: str) -> dict[str, Any]:
    created = await client.post("/api/v1/sessions", json={"template": template})
    assert created.status_code == 201, created.text
    return await wait_for_state(client, created.json()["id"], "running", timeout=TIMEOUT)


async def _events(client: httpx.AsyncClient, session_id: str) -> list[tuple[str, str | None]]:
    response = await client.get(f"/api/v1/sessions/{session_id}/events")
    response.raise_for_status()
    return [(event["to_state"], event["detail"]) for event in response.json()]


async def _commands(client: httpx.AsyncClient, session_id: str) -> list[tuple[str, str | None]]:
    response = await client.get("/api/v1/commands", params={"session_id": session_id})
    response.raise_for_status()
    return sorted((c["action"], c["reason"]) for c in response.json())


@contextlib.asynccontextmanager
async def _viewer(
    api: ApiProcess, client: httpx.AsyncClient, session_id: str
) -> AsyncIterator[ClientConnection]:
    """The session's VNC tunnel, past the client's RFB handshake; reads what comes."""
    ticket = (await client.post(f"/api/v1/sessions/{session_id}/connect")).json()
    url = "ws://" + api.url.removeprefix("http://") + ticket["url"]
    async with connect(url, subprotocols=["binary"], open_timeout=10) as ws:
        await ws.send(HANDSHAKE + UPDATE_REQUEST)
        reader = asyncio.create_task(_drain(ws))
        try:
            yield ws
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def _use(ws: ClientConnection, seconds: float) -> None:
    """Move the pointer (and ask for updates) every 0.3 s, as a person at work."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await ws.send(UPDATE_REQUEST + POINTER)
        await asyncio.sleep(0.3)


async def test_a_session_without_viewers_is_hibernated_after_its_idle_timeout(
    admin: httpx.AsyncClient,
) -> None:
    session = await _launch(admin, "idle3")
    assert session["idle_action"] == "hibernate"
    assert session["idle_deadline"] is not None and session["stop_at"] is None

    await wait_for_state(admin, session["id"], "hibernated", timeout=TIMEOUT)

    assert ("hibernating", "idle 3 s") in await _events(admin, session["id"])
    assert ("hibernated", "idle 3 s") in await _events(admin, session["id"])
    assert await _commands(admin, session["id"]) == [
        ("hibernate_session", "idle 3 s"),
        ("start_session", None),
    ]


async def test_an_active_viewer_keeps_the_session_until_it_only_watches(
    site: ApiProcess, admin: httpx.AsyncClient
) -> None:
    """Input holds the idle timeout off; a viewer that only watches (the desktop keeps
    sending) is idle: hibernated, its tunnel closed with the reason."""
    sid = (await _launch(admin, "idle3"))["id"]
    async with _viewer(site, admin, sid) as ws:
        await _use(ws, 7)  # more than two idle timeouts
        state = await session_state(admin, sid)
        assert (state["state"], state["active_viewers"]) == ("running", 1)

        await wait_for_state(admin, sid, "hibernated", timeout=TIMEOUT)
        await eventually(lambda: _closed(ws), timeout=TIMEOUT, message="tunnel closed")
        assert (ws.close_code, ws.close_reason) == (4409, "session hibernated: idle 3 s")


async def _closed(ws: ClientConnection) -> bool:
    return ws.close_code is not None


async def test_max_age_stops_an_active_session(site: ApiProcess, admin: httpx.AsyncClient) -> None:
    session = await _launch(admin, "maxage6")
    assert session["stop_at"] is not None and session["idle_deadline"] is None
    async with _viewer(site, admin, session["id"]) as ws:
        using = asyncio.create_task(_use(ws, 60))
        try:
            ended = await wait_for_state(admin, session["id"], "terminated", timeout=TIMEOUT)
        finally:
            using.cancel()
            await asyncio.gather(using, return_exceptions=True)
    assert ended["termination_reason"] == "max age 6 s"
    assert ("stopping", "max age 6 s") in await _events(admin, session["id"])
    assert ("stop_session", "max age 6 s") in await _commands(admin, session["id"])


async def test_keep_puts_the_idle_timeout_off_for_the_owner_only(
    site: ApiProcess, admin: httpx.AsyncClient
) -> None:
    async with logged_in(site.url, "bob", "bob-password") as bob:
        session = await _launch(bob, "idle3")
        sid = session["id"]
        assert session["idle_warning_at"] < session["idle_deadline"]
        for _ in range(6):  # 6 s: twice the timeout
            kept = await bob.post(f"/api/v1/sessions/{sid}/keep")
            assert kept.status_code == 200, kept.text
            assert kept.json()["state"] == "running"
            await asyncio.sleep(1)
        assert kept.json()["idle_deadline"] > session["idle_deadline"]

        others = await admin.post(f"/api/v1/sessions/{sid}/keep")
        assert others.status_code == 403, others.text

        await wait_for_state(bob, sid, "hibernated", timeout=TIMEOUT)
        late = await bob.post(f"/api/v1/sessions/{sid}/keep")
        assert late.status_code == 409, late.text
        assert "hibernated" in late.json()["detail"]
    kept_rows = await admin.get("/api/v1/audit", params={"action": "session.keep"})
    assert {(r["actor"], r["target_id"]) for r in kept_rows.json()} == {("bob", sid)}
    assert len(kept_rows.json()) == 6  # the refused ones (403, 409) are not recorded
    by_policy = await admin.get("/api/v1/audit", params={"target_id": sid, "actor": "system"})
    assert {"to": "hibernated", "from": "hibernating"}.items() <= by_policy.json()[0][
        "detail"
    ].items()


@pytest.fixture
async def replicas(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> AsyncIterator[Cluster]:
    made = Cluster(
        tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=2, env=FAST_POLICIES
    )
    try:
        yield made
    finally:
        made.kill()  # before pg_url drops the database under the replicas
        await made.close()


async def test_two_replicas_hibernate_each_idle_session_once(replicas: Cluster) -> None:
    await replicas.start()
    state = replicas.directory / f"{AGENT}.state.json"
    args = ["--state", str(state)]
    first = replicas.add_agent(AGENT, extra_args=args)
    await replicas.wait_online()
    first.stop()  # the sessions appear in its inventory when it is back
    ids = await seed_running_sessions(replicas.database, state, agent_id=AGENT, count=50)
    agent = replicas.add_agent(AGENT, extra_args=args, name=f"{AGENT}-2")
    await replicas.wait_online()

    async with replicas.database.session() as db, db.begin():  # all idle at once
        await db.execute(
            update(Session)
            .where(Session.id.in_(ids))
            .values(
                idle_timeout=60,
                idle_action="hibernate",
                last_activity=utcnow() - timedelta(hours=1),
            )
        )

    async def hibernated() -> Counter[str] | None:
        states = Counter(s.state for s in await replicas.database.sessions())
        return states if states[SessionState.HIBERNATED] == 50 else None

    await eventually(hibernated, timeout=60, message="50 sessions hibernated")
    hibernates = await _hibernates(replicas.database)
    assert hibernates == Counter({session_id: 1 for session_id in ids})
    logs = "".join(replica.output() for replica in replicas.replicas)
    assert logs.count("hibernate by policy (idle 1 min)") == 50
    runs = Counter(
        str(line["session_id"])
        for line in finished_executions(agent.execution_log)
        if line["action"] == "hibernate_session"
    )
    assert runs == Counter(dict.fromkeys(ids, 1))  # the agent hibernated each once


async def _hibernates(database: Database) -> Counter[str]:
    async with database.session() as db:
        rows = await db.scalars(
            select(AgentCommand.session_id).where(
                AgentCommand.action == "hibernate_session", AgentCommand.reason == "idle 1 min"
            )
        )
        return Counter(session_id for session_id in rows if session_id is not None)
