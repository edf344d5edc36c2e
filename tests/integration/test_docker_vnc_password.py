"""A Docker session's VNC password (``DOCKER_VNC_PASSWORD``) against the real Xvnc of the
session image: whoever reaches the port without it gets nothing, and the agent's handshake
(``vnc_auth.authenticate``) over a real WebSocket hands any RFB viewer (3.3, 3.7, 3.8) a
desktop without authentication."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from streamspace.agent.platforms.docker import DockerPlatform
from streamspace.agent.platforms.docker_client import DockerClient
from streamspace.agent.vnc_auth import VNC_AUTH, VncAuthError, authenticate, log_in
from streamspace.protocol import SessionSpec
from tests.docker_env import DockerScope
from tests.integration.test_docker_platform import DOCKER_HOST, make_spec
from tests.rfb import RfbClient

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
async def session(
    docker_scope: DockerScope, docker_image: str
) -> AsyncIterator[tuple[DockerPlatform, SessionSpec, int]]:
    """A running session with a VNC password: its platform, spec and VNC port."""
    platform = DockerPlatform(
        client=DockerClient(DOCKER_HOST),
        agent_id=docker_scope.agent_id,
        image=docker_image,
        vnc_password=True,
    )
    spec = make_spec(docker_scope)
    try:
        started = await platform.start(spec)
        yield platform, spec, started.vnc.port
        await platform.stop(started.state)
    finally:
        await platform.close()


@contextlib.asynccontextmanager
async def vnc_socket(port: int) -> AsyncIterator[socket.socket]:
    sock = socket.socket()
    sock.setblocking(False)
    with sock:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        yield sock


async def test_the_port_asks_for_a_password_and_refuses_a_wrong_one(
    session: tuple[DockerPlatform, SessionSpec, int],
) -> None:
    platform, spec, port = session
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.write(b"RFB 003.008\n")
    count = (await reader.readexactly(1))[0]
    assert list(await reader.readexactly(count)) == [VNC_AUTH]  # no None: a password or nothing
    writer.close()

    password = await platform.vnc_password(spec.session_id)
    assert password is not None and len(password) == 8
    async with vnc_socket(port) as sock:
        with pytest.raises(VncAuthError, match="refused the session's password"):
            await log_in(sock, bytes(b ^ 1 for b in password))
    async with vnc_socket(port) as sock:
        await log_in(sock, password)


async def view(ws: ClientConnection, minor: int) -> str:
    """An RFB 3.``minor`` viewer up to ServerInit; returns the desktop's name."""
    rfb = RfbClient(ws)
    none, shared = b"\x01", b"\x01"
    assert await rfb.read(12) == b"RFB 003.008\n"
    await rfb.send(f"RFB 003.00{minor}\n".encode())
    if minor == 3:  # the server names the type
        assert struct.unpack(">I", await rfb.read(4)) == (1,)
        await rfb.send(shared)
    elif minor == 7:  # no SecurityResult for None: ClientInit in the same message as the choice
        count = (await rfb.read(1))[0]
        assert list(await rfb.read(count)) == [1]
        await rfb.send(none + shared)
    else:
        count = (await rfb.read(1))[0]
        assert list(await rfb.read(count)) == [1]
        await rfb.send(none)
        assert await rfb.read(4) == b"\0\0\0\0"
        await rfb.send(shared)
    await rfb.read(20)  # width, height, pixel format
    (length,) = struct.unpack(">I", await rfb.read(4))
    return (await rfb.read(length)).decode()


@pytest.mark.parametrize("minor", [3, 7, 8])
async def test_the_agent_answers_and_the_viewer_sees_no_authentication(
    session: tuple[DockerPlatform, SessionSpec, int], minor: int
) -> None:
    platform, spec, port = session
    password = await platform.vnc_password(spec.session_id)
    assert password is not None

    async def agent(ws: ServerConnection) -> None:  # the tunnel's part, after its connect
        async with vnc_socket(port) as sock:
            await authenticate(ws, sock, password)
            loop = asyncio.get_running_loop()

            async def to_viewer() -> None:
                while chunk := await loop.sock_recv(sock, 65536):
                    await ws.send(chunk)

            forward = asyncio.create_task(to_viewer())
            try:
                async for message in ws:
                    assert isinstance(message, bytes)
                    await loop.sock_sendall(sock, message)
            finally:
                forward.cancel()

    async with serve(agent, "127.0.0.1", 0) as server:
        host, server_port = server.sockets[0].getsockname()[:2]
        async with connect(f"ws://{host}:{server_port}") as ws:
            assert await view(ws, minor) == spec.session_id
