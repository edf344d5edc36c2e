"""The agent's side of a VNC tunnel: a data WebSocket back to the control plane ⇄ the
session's VNC server (a Unix socket for local sessions, TCP for containers).

The VNC endpoint is the one the agent recorded when it started the session, never the
address in the control plane's request: a compromised control plane must not be able to
make the agent open other sockets (``/var/run/docker.sock``, a database port).

Each tunnel has its own socket and its own two pump tasks, off the control connection:
a viewer that stops reading stalls only its own tunnel (each side awaits its writes), and
commands keep flowing on the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from streamspace.agent import vnc_auth
from streamspace.agent.connection import websocket_log
from streamspace.agent.platforms.vnc_probe import unix_address
from streamspace.protocol import CloseCode, TunnelPayload, VncEndpoint
from streamspace.wire import AGENT_CONNECT_PATH, AGENT_TUNNEL_PATH

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
"""Largest read from the VNC server, sent as one binary message (smaller reads cost more
per byte, larger ones do not help)."""
MAX_VIEWER_MESSAGE = 4 * 1024 * 1024
"""Largest message accepted from the viewer (RFB client messages are small)."""
VNC_CONNECT_TIMEOUT = 5.0

EndpointOf = Callable[[str], VncEndpoint | None]
"""The VNC endpoint the agent recorded for a running session (``None``: not running here)."""

PasswordOf = Callable[[str], Awaitable[bytes | None]]
"""The VNC password of a session's server, which the agent answers for the viewer
(``None``: the server asks for none)."""


def tunnel_url(connect_url: str, tunnel_id: str) -> str:
    """``ws://host/api/v1/agents/connect`` → ``ws://host/api/v1/agents/tunnels/<id>``: the
    data socket goes to the replica that holds this agent's control socket."""
    base = connect_url.removesuffix(AGENT_CONNECT_PATH)
    return base + AGENT_TUNNEL_PATH.format(tunnel_id=tunnel_id)


class Tunnels:
    """The agent's open tunnels, each in its own task."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def open(
        self,
        tunnel: TunnelPayload,
        connect_url: str,
        headers: Mapping[str, str],
        *,
        endpoint: EndpointOf,
        password: PasswordOf,
    ) -> None:
        url = tunnel_url(connect_url, tunnel.tunnel_id)
        task = asyncio.create_task(
            run_tunnel(url, headers, tunnel, endpoint=endpoint, password=password),
            name=f"tunnel-{tunnel.tunnel_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_tunnel(
    url: str,
    headers: Mapping[str, str],
    tunnel: TunnelPayload,
    *,
    endpoint: EndpointOf,
    password: PasswordOf,
) -> None:
    """Serve one tunnel until either side ends; never raises (except cancellation)."""
    try:
        ws = await connect(
            url,
            additional_headers=dict(headers),
            compression=None,
            max_size=MAX_VIEWER_MESSAGE,
            open_timeout=10,
            logger=websocket_log,
        )
    except (OSError, TimeoutError, InvalidStatus, WebSocketException) as exc:
        log.warning("tunnel %s: cannot open the data socket: %s", tunnel.tunnel_id, exc)
        return
    try:
        await _serve(ws, tunnel, endpoint, password)
    except Exception:
        log.exception("tunnel %s failed", tunnel.tunnel_id)
        await _close(ws, CloseCode.TUNNEL_FAILED, "agent internal error")
    finally:
        await _close(ws, CloseCode.NORMAL, "tunnel closed")


async def _serve(
    ws: ClientConnection, tunnel: TunnelPayload, endpoint: EndpointOf, password: PasswordOf
) -> None:
    sid = tunnel.session_id
    vnc = endpoint(sid)
    if vnc is None:
        await _close(ws, CloseCode.NOT_FOUND, f"session {sid} is not running on this agent")
        return
    try:
        async with asyncio.timeout(VNC_CONNECT_TIMEOUT):
            vnc_socket = await _connect(vnc)
    except (OSError, TimeoutError) as exc:
        reason = f"cannot reach the VNC server at {vnc}: {exc or 'timeout'}"
        log.warning("tunnel %s: %s", tunnel.tunnel_id, reason)
        await _close(ws, CloseCode.TUNNEL_FAILED, reason)
        return
    log.info("tunnel %s open to session %s (%s)", tunnel.tunnel_id, sid, vnc)
    with vnc_socket:
        if (secret := await password(sid)) is not None:
            try:
                await vnc_auth.authenticate(ws, vnc_socket, secret)
            except (vnc_auth.VncAuthError, OSError, TimeoutError) as exc:
                log.warning("tunnel %s: VNC authentication failed: %s", tunnel.tunnel_id, exc)
                await _close(ws, CloseCode.TUNNEL_FAILED, f"VNC authentication failed: {exc}")
                return
        await _pump(ws, vnc_socket)
    log.info("tunnel %s to session %s closed", tunnel.tunnel_id, sid)


async def _connect(vnc: VncEndpoint) -> socket.socket:
    """A non-blocking socket connected to the VNC server: its Unix socket, or the first TCP
    address that answers.

    The pumps use the socket directly (``sock_recv``/``sock_sendall``): a stream reader
    would copy every byte twice more, which is most of this relay's CPU.
    """
    loop = asyncio.get_running_loop()
    if vnc.unix is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            with unix_address(vnc.unix) as path:
                await loop.sock_connect(sock, path)
        except BaseException:  # refused, or cancelled (timeout): do not leak the socket
            sock.close()
            raise
        return sock
    error: OSError = OSError(f"no address for {vnc.host}")
    for family, kind, proto, _, address in await loop.getaddrinfo(
        vnc.host, vnc.port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:  # cancelled (timeout): do not leak the socket
            sock.close()
            raise
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # RFB input is small
            return sock
    raise error


async def _pump(ws: ClientConnection, vnc: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    async def vnc_to_ws() -> None:
        while chunk := await loop.sock_recv(vnc, CHUNK):
            await ws.send(chunk)
        await _close(ws, CloseCode.NORMAL, "the VNC server closed the connection")

    async def ws_to_vnc() -> None:
        async for message in ws:
            if isinstance(message, str):
                await _close(ws, CloseCode.BAD_MESSAGE, "binary frames only")
                return
            await loop.sock_sendall(vnc, message)

    tasks = [asyncio.create_task(vnc_to_ws()), asyncio.create_task(ws_to_vnc())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, OSError):
            await _close(ws, CloseCode.TUNNEL_FAILED, f"VNC connection failed: {result}")


async def _close(ws: ClientConnection, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
        async with asyncio.timeout(5):
            await ws.close(code, reason.encode()[:120].decode(errors="ignore"))
