"""The VNC tunnel end to end: browser WebSocket → API replica → agent data socket → Xvnc.

Real processes: an API replica on PostgreSQL, the real local-platform agent running Xvnc
(``-desktop <session id>``, so each ServerInit names its own session), and a websockets
client speaking RFB (tests/rfb.py) in place of noVNC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import (
    eventually,
    logged_in,
    session_state,
    wait_for_agent,
    wait_for_state,
)
from tests.local_sessions import TIMEOUT, Cluster
from tests.processes import AgentProcess, ApiProcess, create_user
from tests.rfb import RfbClient


def ws_url(api: ApiProcess, path: str) -> str:
    return "ws://" + api.url.removeprefix("http://") + path


async def connect_token(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await client.post(f"/api/v1/sessions/{session_id}/connect")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextlib.asynccontextmanager
async def viewer(
    api: ApiProcess, client: httpx.AsyncClient, session_id: str, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A fresh token, then the tunnel's WebSocket (as noVNC opens it: subprotocol binary)."""
    ticket = await connect_token(client, session_id)
    async with connect(
        ws_url(api, ticket["url"]), subprotocols=["binary"], open_timeout=10, **options
    ) as ws:
        yield ws


async def closed_with(ws: ClientConnection, *, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for the server to close; return its code and reason (fails on data frames)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None, "no close frame received"
    return ws.close_code, ws.close_reason or ""


async def refused(api: ApiProcess, path: str) -> tuple[int, str]:
    async with connect(ws_url(api, path), open_timeout=10) as ws:
        return await closed_with(ws)


async def viewed(ws: ClientConnection, session_id: str) -> RfbClient:
    """Handshake, and one full non-incremental framebuffer update."""
    rfb = RfbClient(ws)
    init = await rfb.handshake()
    assert init.name == session_id, f"ServerInit of another session: {init}"
    assert (init.width, init.height) == (1280, 800)
    await rfb.request_update()
    assert await rfb.read_update() > 0
    return rfb


# --- tests ---------------------------------------------------------------------------------


async def test_rfb_through_the_tunnel(cluster: Cluster) -> None:
    session = await cluster.launch("xterm")
    sid = session["id"]
    ticket = await connect_token(cluster.client, sid)
    assert ticket["expires_in"] == 60
    assert ticket["url"] == f"/api/v1/sessions/{sid}/vnc?token={ticket['token']}"
    assert ticket["token"].startswith("ssv_")

    async with connect(ws_url(cluster.api, ticket["url"]), subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
        await viewed(ws, sid)
        state = await session_state(cluster.client, sid)
        assert state["active_viewers"] == 1
        assert state["last_activity"] > session["last_activity"]

    async def no_viewers() -> bool:
        return (await session_state(cluster.client, sid))["active_viewers"] == 0

    await eventually(no_viewers, timeout=TIMEOUT, message="viewer count back to 0")


async def test_bad_tokens_and_sessions(cluster: Cluster, pg_url: str) -> None:
    sid = (await cluster.launch("xterm"))["id"]
    api = cluster.api

    ticket = await connect_token(cluster.client, sid)
    async with connect(ws_url(api, ticket["url"])) as ws:
        await RfbClient(ws).handshake()
    code, reason = await refused(api, ticket["url"])  # the same token again
    assert code == 4401 and "already used" in reason, (code, reason)
    assert (await refused(api, f"/api/v1/sessions/{sid}/vnc?token=ssv_forged"))[0] == 4401
    assert (await refused(api, f"/api/v1/sessions/{sid}/vnc"))[0] == 4401

    # Another user: the REST call answers 404, and their token opens nothing of ours.
    create_user(pg_url, "bob", "bob-password")
    async with logged_in(api.url, "bob", "bob-password") as bob:
        assert (await bob.post(f"/api/v1/sessions/{sid}/connect")).status_code == 404
        created = await bob.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201, created.text
        bobs = created.json()["id"]
        cluster.sessions.append(bobs)
        await cluster.state(bobs, "running")
        token = (await connect_token(bob, bobs))["token"]
        assert await refused(api, f"/api/v1/sessions/{sid}/vnc?token={token}") == (
            4404,
            "session not found",
        )
        token = (await connect_token(bob, bobs))["token"]
        missing = "00000000-0000-0000-0000-000000000000"
        assert (await refused(api, f"/api/v1/sessions/{missing}/vnc?token={token}"))[0] == 4404
        # The admin may view anybody's session.
        async with viewer(api, cluster.client, bobs) as ws:
            await viewed(ws, bobs)

    # A session that is not running: 409 for a token, 4409 for a token taken before.
    ticket = await connect_token(cluster.client, sid)
    await cluster.action(sid, "hibernate")
    await cluster.state(sid, "hibernated")
    code, reason = await refused(api, ticket["url"])
    assert code == 4409 and "hibernated" in reason, (code, reason)
    conflict = await cluster.client.post(f"/api/v1/sessions/{sid}/connect")
    assert conflict.status_code == 409, conflict.text


async def test_text_frame_closes_only_its_own_tunnel(cluster: Cluster) -> None:
    sid = (await cluster.launch("xterm"))["id"]
    async with viewer(cluster.api, cluster.client, sid) as good:
        rfb = await viewed(good, sid)
        async with viewer(cluster.api, cluster.client, sid) as bad:
            assert (await RfbClient(bad).read(12)).startswith(b"RFB")
            await bad.send("this is not RFB")
            code, reason = await closed_with(bad)
            assert code == 4400 and "binary frames only" in reason, (code, reason)
        await rfb.request_update()
        assert await rfb.read_update() > 0


async def test_two_sessions_two_viewers_never_cross(cluster: Cluster) -> None:
    first = (await cluster.launch("xterm"))["id"]
    second = (await cluster.launch("xterm"))["id"]
    async with (
        viewer(cluster.api, cluster.client, first) as one,
        viewer(cluster.api, cluster.client, second) as two,
    ):
        rfb_one, rfb_two = await asyncio.gather(viewed(one, first), viewed(two, second))
        for _ in range(3):
            await asyncio.gather(rfb_one.request_update(), rfb_two.request_update())
            sizes = await asyncio.gather(rfb_one.read_update(), rfb_two.read_update())
            assert sizes == [1280 * 800 * 4] * 2


async def test_stalled_viewer_does_not_stall_others(cluster: Cluster) -> None:
    stalled_sid = (await cluster.launch("xterm"))["id"]
    other_sid = (await cluster.launch("xterm"))["id"]
    third_sid = (await cluster.launch("xterm"))["id"]

    async with viewer(cluster.api, cluster.client, stalled_sid, max_queue=2) as stalled:
        rfb_stalled = RfbClient(stalled)
        await rfb_stalled.handshake()
        for _ in range(60):  # ~240 MB of Raw updates asked for, none read
            await rfb_stalled.request_update()
        await asyncio.sleep(0.5)  # let the pipe fill up before measuring the others

        began = time.monotonic()
        async with viewer(cluster.api, cluster.client, other_sid) as other:
            rfb_other = await viewed(other, other_sid)
            for _ in range(5):
                await rfb_other.request_update()
                assert await rfb_other.read_update() == 1280 * 800 * 4
        viewing = time.monotonic() - began
        assert viewing < 3.0, f"the other viewer took {viewing:.2f} s"

        began = time.monotonic()
        await cluster.action(third_sid, "hibernate")
        await cluster.state(third_sid, "hibernated")
        created = await cluster.client.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201
        cluster.sessions.append(created.json()["id"])
        commanding = time.monotonic() - began
        assert commanding < 3.0, f"commands took {commanding:.2f} s"

        # The stalled viewer was only backed up: reading again, what Xvnc sent arrives
        # whole (Xvnc merges the requests of a congested client, so maybe only one or two
        # updates), and the tunnel still answers new requests.
        rfb_stalled.timeout = 3.0
        pending = 0
        with contextlib.suppress(TimeoutError):
            while True:
                assert await rfb_stalled.read_update() == 1280 * 800 * 4
                pending += 1
        assert pending >= 1
        rfb_stalled.timeout = 10.0
        await rfb_stalled.request_update()
        assert await rfb_stalled.read_update() == 1280 * 800 * 4


async def test_close_from_either_end_and_reopen(cluster: Cluster) -> None:
    sid = (await cluster.launch("xterm"))["id"]
    async with viewer(cluster.api, cluster.client, sid) as ws:
        await viewed(ws, sid)
    # Closed by the viewer; a new token opens a new tunnel.
    async with viewer(cluster.api, cluster.client, sid) as ws:
        rfb = await viewed(ws, sid)
        await rfb.send(b"\x64")  # an unknown RFB message type (100): Xvnc drops the client
        code, reason = await closed_with(ws)
        assert code == 1000 and "VNC server closed" in reason, (code, reason)
    async with viewer(cluster.api, cluster.client, sid) as ws:
        await viewed(ws, sid)
        await cluster.action(sid, "stop")  # the session ends under the viewer
        assert await closed_with(ws) == (4409, "session stopped")
    await cluster.state(sid, "terminated")

    async def no_viewers() -> bool:
        return (await session_state(cluster.client, sid))["active_viewers"] == 0

    await eventually(no_viewers, timeout=TIMEOUT, message="viewer count back to 0")


# --- a fake agent whose sessions' "VNC server" is a TCP server in this test ----------------


class FakeVnc:
    """Streams bytes as fast as each client takes them; records what it receives."""

    CHUNK = b"\x01" * 65536

    def __init__(self) -> None:
        self.received = bytearray()
        self.sent: list[int] = []
        """Bytes written so far, per connection, in connection order."""
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.sent)
        self.sent.append(0)

        async def feed() -> None:
            with contextlib.suppress(OSError):
                while True:
                    writer.write(self.CHUNK)
                    await writer.drain()  # blocks while the tunnel applies back-pressure
                    self.sent[index] += len(self.CHUNK)

        feeding = asyncio.create_task(feed())
        try:
            while data := await reader.read(65536):
                self.received += data
        finally:
            feeding.cancel()
            writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def fake(processes: None, tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    """An API with a 1 s token TTL and fast activity refresh; a fake agent on FakeVnc."""
    vnc = FakeVnc()
    port = await vnc.start()
    env = {"AGENT_AUTO_APPROVE": "true", "VNC_TOKEN_TTL": "1", "VIEWER_ACTIVITY_INTERVAL": "0.3"}
    api = ApiProcess(tmp_path / "api", database_url=pg_url, env=env)
    api.start()
    agent = AgentProcess(
        tmp_path / "agent",
        control_plane_url=api.url,
        agent_id="fake-vnc-agent",
        extra_args=["--vnc-port", str(port)],
    )
    agent.start()
    try:
        async with logged_in(api.url) as client:
            await wait_for_agent(client, "fake-vnc-agent", timeout=TIMEOUT)
            setup = Cluster(api, client, agent, tmp_path / "agent")
            setup.vnc = vnc  # type: ignore[attr-defined]
            yield setup
    finally:
        vnc.stop()
        agent.stop()
        api.stop()


async def test_expired_token(fake: Cluster) -> None:
    sid = (await fake.launch("xterm"))["id"]
    ticket = await connect_token(fake.client, sid)
    assert ticket["expires_in"] == 1
    deadline = time.monotonic() + 1.2

    async def expired() -> bool:
        return time.monotonic() > deadline

    await eventually(expired, timeout=5, message="token lifetime over")
    code, reason = await refused(fake.api, ticket["url"])
    assert code == 4401 and "expired" in reason, (code, reason)


async def test_viewer_input_keeps_the_session_active(fake: Cluster) -> None:
    """What the viewer types or points moves ``last_activity`` (the idle timeout's clock);
    bytes the VNC server sends, and the handshake, do not."""
    sid = (await fake.launch("xterm"))["id"]
    async with viewer(fake.api, fake.client, sid) as ws:
        await ws.send(b"RFB 003.008\n\x01\x01")  # version, security None, ClientInit
        assert isinstance(await ws.recv(), bytes)  # bytes flow once the viewer is counted
        joined = await session_state(fake.client, sid)
        assert joined["active_viewers"] == 1
        vnc: FakeVnc = fake.vnc  # type: ignore[attr-defined]

        async def arrived() -> bool:
            await ws.recv()
            return b"RFB 003.008" in vnc.received

        await eventually(arrived, timeout=5, message="viewer bytes at the VNC server")
        for _ in range(10):  # 3 s of server traffic: ten activity intervals, no input
            await ws.recv()
            await asyncio.sleep(0.3)
        assert (await session_state(fake.client, sid))["last_activity"] == joined["last_activity"]

        await ws.send(b"\x05\x00\x00\x10\x00\x10")  # PointerEvent

        async def refreshed() -> bool:
            await ws.recv()  # keep reading: bytes keep flowing
            state = await session_state(fake.client, sid)
            return bool(state["last_activity"] > joined["last_activity"])

        await eventually(refreshed, timeout=10, message="last_activity refreshed by input")


async def test_unreachable_vnc_server_reason_reaches_the_viewer(fake: Cluster) -> None:
    sid = (await fake.launch("xterm"))["id"]
    fake.vnc.stop()  # type: ignore[attr-defined]
    async with viewer(fake.api, fake.client, sid) as ws:
        code, reason = await closed_with(ws)
    assert code == 4502 and "cannot reach the VNC server" in reason, (code, reason)

    async def no_viewers() -> bool:
        return (await session_state(fake.client, sid))["active_viewers"] == 0

    await eventually(no_viewers, timeout=TIMEOUT, message="viewer count back to 0")


async def test_stalled_viewer_buffers_boundedly(fake: Cluster) -> None:
    """A source that never stops (unlike Xvnc, which paces a congested client) is held
    back by the tunnel's flow control, end to end, while another tunnel of the same agent
    and a REST command go on."""
    vnc: FakeVnc = fake.vnc  # type: ignore[attr-defined]
    stalled_sid = (await fake.launch("xterm"))["id"]
    other_sid = (await fake.launch("xterm"))["id"]
    # A client that is not reading cannot see the server's close frame behind the data in
    # flight (browsers discard it; the websockets client queues it): do not wait for it.
    flood = {"close_timeout": 0.5}
    async with viewer(fake.api, fake.client, stalled_sid, max_queue=1, **flood) as stalled:
        assert isinstance(await stalled.recv(), bytes)  # open, and then never read again
        samples: list[int] = []

        async def plateau() -> bool:
            samples.append(vnc.sent[0])
            return len(samples) > 5 and samples[-1] == samples[-6]

        await eventually(plateau, timeout=30, interval=0.2, message="source held back")
        assert samples[-1] < 64 * 1024 * 1024, f"{samples[-1]} bytes buffered"

        async with viewer(fake.api, fake.client, other_sid, **flood) as other:
            began = time.monotonic()
            got = 0
            while got < 32 * 1024 * 1024:
                got += len(await asyncio.wait_for(other.recv(), 5))
            took = time.monotonic() - began
            assert took < 3.0, f"32 MB on the other tunnel took {took:.2f} s"

            # Now both viewers stall; a command still goes through at once.
            began = time.monotonic()
            hibernated = await fake.client.post(f"/api/v1/sessions/{other_sid}/hibernate")
            assert hibernated.status_code == 202, hibernated.text
            await wait_for_state(fake.client, other_sid, "hibernated")
            took = time.monotonic() - began
            assert took < 3.0, f"hibernating took {took:.2f} s"

        held = vnc.sent[0]
        for _ in range(50):  # reading again: the stalled tunnel flows again
            await asyncio.wait_for(stalled.recv(), 5)
        await eventually(
            lambda: _grew(vnc, held), timeout=10, message="stalled tunnel flowing again"
        )


async def _grew(vnc: FakeVnc, held: int) -> bool:
    return vnc.sent[0] > held


async def cut_off(
    ws: ClientConnection, request: Callable[[], Awaitable[httpx.Response]]
) -> tuple[int, str, float]:
    """While the viewer streams, send ``request``; the close code and reason the viewer got,
    and the seconds from the request to the close."""
    assert isinstance(await ws.recv(), bytes)  # streaming
    reader = asyncio.create_task(closed_with(ws, timeout=10))
    began = time.monotonic()
    response = await request()
    assert response.status_code in (200, 202), response.text
    code, reason = await reader
    return code, reason, time.monotonic() - began


async def test_revoking_the_agent_closes_its_tunnels_at_once(fake: Cluster) -> None:
    sid = (await fake.launch("xterm"))["id"]
    async with viewer(fake.api, fake.client, sid) as ws:
        code, reason, took = await cut_off(
            ws, lambda: fake.client.post("/api/v1/agents/fake-vnc-agent/revoke")
        )
    assert (code, reason) == (4403, "agent revoked")
    assert took < 1.5, f"the viewer was closed {took:.2f} s after the revoke"

    async def no_viewers() -> bool:
        return (await session_state(fake.client, sid))["active_viewers"] == 0

    await eventually(no_viewers, timeout=TIMEOUT, message="viewer count back to 0")
    assert f"VNC tunnel to session {sid} closed by the control plane" in fake.api.output()


async def test_stopping_the_session_closes_its_tunnels_at_once(fake: Cluster) -> None:
    sid = (await fake.launch("xterm"))["id"]
    other = (await fake.launch("xterm"))["id"]
    async with (
        viewer(fake.api, fake.client, sid) as ws,
        viewer(fake.api, fake.client, other) as bystander,
    ):
        code, reason, took = await cut_off(
            ws, lambda: fake.client.delete(f"/api/v1/sessions/{sid}")
        )
        assert (code, reason) == (4409, "session stopped")
        assert took < 1.5, f"the viewer was closed {took:.2f} s after the stop"
        for _ in range(20):  # another session's viewer goes on streaming
            assert isinstance(await asyncio.wait_for(bystander.recv(), 5), bytes)
