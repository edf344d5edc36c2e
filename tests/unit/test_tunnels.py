"""Pure pieces of the VNC tunnel: the relay, the registry, URLs, the agent's tunnel task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamspace.agent.platforms.vnc_probe import unix_address
from streamspace.agent.tunnel import run_tunnel, tunnel_url
from streamspace.controlplane.hub import Cut
from streamspace.controlplane.tunnels.endpoints import Closed, Gone, clip
from streamspace.controlplane.tunnels.internal import agent_data_path, internal_url, session_path
from streamspace.controlplane.tunnels.registry import TunnelRegistry
from streamspace.controlplane.tunnels.relay import Traffic, relay, upstream_close
from streamspace.logs import RedactTokens
from streamspace.protocol import TunnelPayload, VncEndpoint, parse_server_message


class FakeEndpoint:
    """An in-memory socket: ``inbox`` feeds ``receive``; sends and the close are recorded."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.inbox: asyncio.Queue[bytes | str | Closed] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = stalled
        self.gone = False

    async def receive(self) -> bytes | str | Closed:
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        if self.gone:
            raise Gone("peer left")
        if self.stalled:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)


async def run_relay(
    viewer: FakeEndpoint, upstream: FakeEndpoint
) -> tuple[asyncio.Task[object], Traffic]:
    traffic = Traffic()
    return asyncio.create_task(relay(viewer, upstream, traffic)), traffic


async def test_relay_carries_bytes_both_ways_until_the_viewer_closes() -> None:
    viewer, upstream = FakeEndpoint(), FakeEndpoint()
    task, traffic = await run_relay(viewer, upstream)
    await upstream.inbox.put(b"RFB 003.008\n")
    await viewer.inbox.put(b"RFB 003.008\n")
    await viewer.inbox.put(b"\x01")
    await viewer.inbox.put(Closed(1000, "bye"))
    ending = await asyncio.wait_for(task, 5)
    assert viewer.sent == [b"RFB 003.008\n"]
    assert upstream.sent == [b"RFB 003.008\n", b"\x01"]
    assert (traffic.to_viewer, traffic.to_upstream) == (12, 13)
    assert upstream.closed == (1000, "viewer closed the tunnel")
    assert ending == type(ending)("viewer", 1000, "bye")


@pytest.mark.parametrize(
    ("agent_close", "viewer_close"),
    [
        (Closed(4502, "cannot reach the VNC server"), (4502, "cannot reach the VNC server")),
        (Closed(1000, ""), (1000, "the VNC server closed the connection")),
        (Closed(1006), (4502, "tunnel to the agent lost (code 1006)")),
        (Closed(1011, "boom"), (4502, "tunnel to the agent lost (code 1011: boom)")),
    ],
)
async def test_the_agents_close_reaches_the_viewer(
    agent_close: Closed, viewer_close: tuple[int, str]
) -> None:
    viewer, upstream = FakeEndpoint(), FakeEndpoint()
    task, _ = await run_relay(viewer, upstream)
    await upstream.inbox.put(agent_close)
    await asyncio.wait_for(task, 5)
    assert viewer.closed == viewer_close
    assert upstream_close(agent_close) == viewer_close


async def test_a_text_frame_from_the_viewer_closes_4400() -> None:
    viewer, upstream = FakeEndpoint(), FakeEndpoint()
    task, _ = await run_relay(viewer, upstream)
    await viewer.inbox.put("hello")
    ending = await asyncio.wait_for(task, 5)
    assert viewer.closed is not None and viewer.closed[0] == 4400
    assert upstream.closed == (1000, "viewer sent a malformed frame")
    assert ending.code == 4400 and upstream.sent == []


async def test_a_text_frame_from_the_agent_fails_the_tunnel() -> None:
    viewer, upstream = FakeEndpoint(), FakeEndpoint()
    task, _ = await run_relay(viewer, upstream)
    await upstream.inbox.put("oops")
    await asyncio.wait_for(task, 5)
    assert upstream.closed is not None and upstream.closed[0] == 4400
    assert viewer.closed is not None and viewer.closed[0] == 4502


async def test_a_stalled_viewer_blocks_only_its_own_direction() -> None:
    viewer, upstream = FakeEndpoint(stalled=True), FakeEndpoint()
    task, _ = await run_relay(viewer, upstream)
    await upstream.inbox.put(b"x" * 1000)
    await upstream.inbox.put(b"y" * 1000)
    await viewer.inbox.put(b"key press")
    for _ in range(100):
        if upstream.sent:
            break
        await asyncio.sleep(0.01)
    assert upstream.sent == [b"key press"]  # viewer → agent still flows
    assert upstream.inbox.qsize() == 1  # nothing read ahead of the stalled viewer
    await viewer.inbox.put(Closed(1001))  # the viewer gives up: everything is closed
    await asyncio.wait_for(task, 5)
    assert upstream.closed is not None


async def test_a_vanished_peer_ends_the_relay() -> None:
    viewer, upstream = FakeEndpoint(), FakeEndpoint()
    upstream.gone = True
    task, _ = await run_relay(viewer, upstream)
    await viewer.inbox.put(b"data")
    await asyncio.wait_for(task, 5)
    assert viewer.closed == (4502, "tunnel to the agent lost")


async def test_registry_hands_a_tunnel_to_its_own_agent_once() -> None:
    registry: TunnelRegistry[str] = TunnelRegistry()
    with registry.open(agent_id="a1", session_id="s1") as tunnel:
        assert len(registry) == 1 and registry.open_tunnels == 1
        assert registry.claim(tunnel.tunnel_id, "someone-else") is None
        assert registry.claim("no-such-tunnel", "a1") is None
        claimed = registry.claim(tunnel.tunnel_id, "a1")
        assert claimed is tunnel
        assert registry.claim(tunnel.tunnel_id, "a1") is None  # only once
        assert claimed.attach("socket")
        assert not claimed.attach("second socket")
        assert await tunnel.socket == "socket"
        assert not tunnel.finished.is_set()
    assert tunnel.finished.is_set() and registry.open_tunnels == 0


async def test_registry_refuses_sockets_after_the_viewer_gave_up() -> None:
    registry: TunnelRegistry[str] = TunnelRegistry()
    with registry.open(agent_id="a1", session_id="s1") as tunnel:
        pass
    assert registry.claim(tunnel.tunnel_id, "a1") is None
    assert not tunnel.attach("late socket") and tunnel.finished.is_set()
    assert len(registry) == 0


async def test_a_cut_ends_the_live_tunnels_it_names_and_the_relay_with_its_reason() -> None:
    registry: TunnelRegistry[str] = TunnelRegistry()
    with (
        registry.live(agent_id="a1", session_id="s1") as first,
        registry.live(agent_id="a1", session_id="s2") as second,
        registry.live(agent_id="a2", session_id="s3") as other,
    ):
        assert registry.cut(Cut(4409, "session stopped", session_id="s2")) == 1
        assert registry.cut(Cut(4403, "agent revoked", agent_id="a1")) == 1  # s2's is ended
        assert first.result() == Closed(4403, "agent revoked")
        assert second.result() == Closed(4409, "session stopped")
        assert not other.done()

        viewer, upstream = FakeEndpoint(), FakeEndpoint()
        ending = await asyncio.wait_for(relay(viewer, upstream, Traffic(), cut=first), 5)
    assert (ending.by, ending.code, ending.reason) == ("control plane", 4403, "agent revoked")
    assert viewer.closed == (4403, "agent revoked")
    assert upstream.closed is not None and upstream.closed[0] == 1000
    assert registry.cut(Cut(4403, "agent revoked", agent_id="a2")) == 0  # gone with its block


def test_cuts_travel_as_json_and_nothing_else_passes_for_one() -> None:
    cut = Cut(4403, "agent revoked", agent_id="a1")
    assert Cut.from_json(json.loads(json.dumps(cut.to_json()))) == cut
    for bad in (
        "a1",
        [],
        {"code": 4403},
        {**cut.to_json(), "code": "4403"},
        {**cut.to_json(), "x": 1},
    ):
        with pytest.raises(ValueError):
            Cut.from_json(bad)


def test_urls_and_reasons() -> None:
    connect = "wss://cp.example:8443/api/v1/agents/connect"
    assert tunnel_url(connect, "abc") == "wss://cp.example:8443/api/v1/agents/tunnels/abc"
    assert internal_url("http://10.0.0.5:8080/", session_path("s-1")) == (
        "ws://10.0.0.5:8080/api/v1/internal/tunnels/s-1"
    )
    assert internal_url("https://pod-1", session_path("s")) == (
        "wss://pod-1/api/v1/internal/tunnels/s"
    )
    assert internal_url("http://pod-1:80", agent_data_path("t1")) == (
        "ws://pod-1:80/api/v1/internal/agent-tunnels/t1"
    )
    assert len(clip("é" * 200).encode()) <= 120


def test_connect_tokens_are_not_logged() -> None:
    path = "/api/v1/sessions/s1/vnc?token=ssv_secret-Value_1&x=1"
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s"', ("peer", path), None
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == 'peer - "WebSocket /api/v1/sessions/s1/vnc?token=<redacted>&x=1"'


def test_tunnel_message_round_trip() -> None:
    frame = (
        '{"type":"tunnel","id":"1","ts":0,"payload":{"tunnel_id":"t1","session_id":"s1",'
        '"vnc":{"host":"127.0.0.1","port":5901}}}'
    )
    message = parse_server_message(frame)
    assert message.type == "tunnel"
    assert message.payload == TunnelPayload(
        tunnel_id="t1", session_id="s1", vnc=VncEndpoint(host="127.0.0.1", port=5901)
    )


# --- the agent's tunnel task against a stand-in control plane and VNC server -------------


@contextlib.asynccontextmanager
async def control_plane(
    handler: asyncio.Queue[ServerConnection],
) -> AsyncIterator[str]:
    """A WebSocket server handing each data socket to the test; yields its base ws:// URL."""

    async def accept(ws: ServerConnection) -> None:
        await handler.put(ws)
        await ws.wait_closed()

    async with serve(accept, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/api/v1/agents/connect"


async def no_password(_session_id: str) -> bytes | None:
    """A VNC server that asks for no password (the agent answers no challenge)."""
    return None


async def echo_vnc() -> tuple[asyncio.Server, int]:
    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        while data := await reader.read(1024):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_agent_tunnel_pumps_bytes_and_sends_credentials() -> None:
    sockets: asyncio.Queue[ServerConnection] = asyncio.Queue()
    vnc_server, port = await echo_vnc()
    vnc = VncEndpoint(host="127.0.0.1", port=port)
    payload = TunnelPayload(tunnel_id="t1", session_id="s1", vnc=vnc)
    async with vnc_server, control_plane(sockets) as url:
        headers = {"Authorization": "Bearer key", "X-Agent-ID": "a1"}
        task = asyncio.create_task(
            run_tunnel(
                tunnel_url(url, "t1"),
                headers,
                payload,
                endpoint=lambda sid: vnc if sid == "s1" else None,
                password=no_password,
            )
        )
        ws = await asyncio.wait_for(sockets.get(), 5)
        assert ws.request is not None
        assert ws.request.path == "/api/v1/agents/tunnels/t1"
        assert ws.request.headers["X-Agent-ID"] == "a1"
        assert await ws.recv() == b"RFB 003.008\n"
        await ws.send(b"hello")
        assert await ws.recv() == b"HELLO"
        await ws.close(1000, "viewer closed")
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("running", [True, False])
async def test_agent_tunnel_refusals_carry_a_reason(running: bool) -> None:
    sockets: asyncio.Queue[ServerConnection] = asyncio.Queue()
    vnc_server, port = await echo_vnc()
    vnc_server.close()  # nothing listens there any more
    await vnc_server.wait_closed()
    vnc = VncEndpoint(host="127.0.0.1", port=port)
    payload = TunnelPayload(tunnel_id="t1", session_id="s1", vnc=vnc)
    async with control_plane(sockets) as url:
        task = asyncio.create_task(
            run_tunnel(
                tunnel_url(url, "t1"),
                {},
                payload,
                endpoint=lambda _sid: vnc if running else None,
                password=no_password,
            )
        )
        ws = await asyncio.wait_for(sockets.get(), 5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(task, 5)
    assert ws.close_code == (4502 if running else 4404)
    reason = ws.close_reason or ""
    assert ("cannot reach the VNC server" if running else "not running") in reason, reason


async def test_agent_tunnel_opens_the_recorded_socket_not_the_one_it_is_sent(
    tmp_path: Path,
) -> None:
    """A control plane naming another socket (``/var/run/docker.sock``, a database port)
    in the tunnel request cannot make the agent open it: the agent's own record wins."""
    decoy_hits: list[bytes] = []

    async def decoy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoy_hits.append(b"connected")
        writer.close()

    async def serve_unix(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await writer.drain()
        await reader.read()
        writer.close()

    # A deep directory: the socket path is longer than the 108 bytes of sun_path.
    deep = tmp_path / ("d" * 100) / "vnc"
    deep.mkdir(parents=True)
    recorded = VncEndpoint(unix=str(deep / "rfb.sock"))
    sockets: asyncio.Queue[ServerConnection] = asyncio.Queue()
    decoy_server = await asyncio.start_server(decoy, "127.0.0.1", 0)
    decoy_port = decoy_server.sockets[0].getsockname()[1]
    with unix_address(str(recorded.unix)) as path:
        vnc_server = await asyncio.start_unix_server(serve_unix, path)
    payload = TunnelPayload(
        tunnel_id="t1", session_id="s1", vnc=VncEndpoint(host="127.0.0.1", port=decoy_port)
    )
    async with decoy_server, vnc_server, control_plane(sockets) as url:
        task = asyncio.create_task(
            run_tunnel(
                tunnel_url(url, "t1"),
                {},
                payload,
                endpoint=lambda _sid: recorded,
                password=no_password,
            )
        )
        ws = await asyncio.wait_for(sockets.get(), 5)
        assert await asyncio.wait_for(ws.recv(), 5) == b"RFB 003.008\n"
        await ws.close(1000, "viewer closed")
        await asyncio.wait_for(task, 5)
    assert decoy_hits == []


def test_vnc_endpoint_forms_and_their_columns() -> None:
    tcp = VncEndpoint.model_validate({"host": "127.0.0.1", "port": 5901})  # older agents
    unix = VncEndpoint(unix="/srv/agent/sessions/s1/vnc/rfb.sock")
    assert VncEndpoint.from_columns(*tcp.columns()) == tcp
    assert unix.columns() == ("unix:/srv/agent/sessions/s1/vnc/rfb.sock", None)
    assert VncEndpoint.from_columns(*unix.columns()) == unix
    assert VncEndpoint.from_columns(None, None) is None
    for bad in ({"host": "h"}, {"unix": "relative"}, {"unix": "/s", "host": "h", "port": 1}, {}):
        with pytest.raises(ValidationError):
            VncEndpoint.model_validate(bad)
