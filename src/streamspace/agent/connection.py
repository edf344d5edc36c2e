"""One agent WebSocket: the single writer, the read/heartbeat/monitor loops, backoff, URLs.

Everything here lives for one connection only; :mod:`streamspace.agent.runtime` owns what
outlives it (commands in flight, remembered sessions, the reconnect loop).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from streamspace.agent.commands import SessionBook
from streamspace.agent.platforms.base import Platform
from streamspace.logs import RedactTokens
from streamspace.protocol import (
    CloseCode,
    Command,
    CommandPayload,
    Error,
    Heartbeat,
    HeartbeatPayload,
    ProtocolError,
    ServerMessage,
    Status,
    StatusPayload,
    Tunnel,
    TunnelPayload,
    Welcome,
    encode,
    parse_server_message,
)
from streamspace.wire import AGENT_CONNECT_PATH

log = logging.getLogger(__name__)

T = TypeVar("T")

websocket_log = logging.getLogger("streamspace.agent.websocket")
"""Logger handed to the websockets client, with the Authorization header redacted (also
where ``logs.configure`` did not run, e.g. the agent as a library)."""
websocket_log.addFilter(RedactTokens())


def base_urls(control_plane_url: str) -> list[str]:
    """The comma-separated ``CONTROL_PLANE_URL`` as a list of base URLs without a trailing /."""
    urls = [part.strip().rstrip("/") for part in control_plane_url.split(",")]
    urls = [url for url in urls if url]
    if not urls:
        raise ValueError("CONTROL_PLANE_URL is empty")
    return urls


def ws_url(base: str) -> str:
    """``http(s)://host`` -> ``ws(s)://host/api/v1/agents/connect``."""
    for plain, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(plain):
            base = ws + base[len(plain) :]
            break
    return base + AGENT_CONNECT_PATH


def http_url(base: str, path: str) -> str:
    """``ws(s)://host`` (or http) -> ``http(s)://host`` + ``path``."""
    for ws, plain in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws):
            base = plain + base[len(ws) :]
            break
    return base + path


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential delays between connection attempts."""

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.5
    """Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
    reset_after: float = 30.0
    """A connection that lasted this long starts the sequence over."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``attempt`` (0-based)."""
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return self.jittered(base, rng)

    def jittered(self, base: float, rng: random.Random | None = None) -> float:
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, base * spread)


class AgentConnection:
    """An open WebSocket to one control-plane replica; sends are serialised by a lock."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self._send_lock = asyncio.Lock()

    async def send(self, message: BaseModel) -> None:
        """Send one message as one frame; raises ``ConnectionClosed`` if the socket is gone."""
        frame = encode(message)
        async with self._send_lock:
            await self.ws.send(frame)


CommandHandler = Callable[[CommandPayload, AgentConnection], Awaitable[None]]
TunnelHandler = Callable[[TunnelPayload, AgentConnection], None]
"""Starts a tunnel in its own task (must not block the read loop)."""


async def handle_frame(
    frame: str | bytes,
    conn: AgentConnection,
    on_command: CommandHandler,
    on_tunnel: TunnelHandler | None = None,
) -> None:
    """Parse and dispatch one server frame; malformed ones are logged and dropped."""
    try:
        message = parse_server_message(frame)
    except ProtocolError as exc:
        log.warning("ignoring malformed frame from %s: %s", conn.url, exc)
        return
    await dispatch(message, conn, on_command, on_tunnel)


async def dispatch(
    message: ServerMessage,
    conn: AgentConnection,
    on_command: CommandHandler,
    on_tunnel: TunnelHandler | None = None,
) -> None:
    """Act on one parsed server message."""
    if isinstance(message, Command):
        await on_command(message.payload, conn)
    elif isinstance(message, Tunnel):
        if on_tunnel is None:
            log.warning("tunnel %s requested, but this agent has no tunnels", message.payload)
        else:
            on_tunnel(message.payload, conn)
    elif isinstance(message, Error):
        error = message.payload
        log.warning("control plane error %s: %s (ref %s)", error.code, error.message, error.ref)
    elif isinstance(message, Welcome):
        log.info("unexpected second welcome from %s ignored", conn.url)


async def read_loop(
    conn: AgentConnection, on_command: CommandHandler, on_tunnel: TunnelHandler | None = None
) -> None:
    """Read frames until the socket closes (then ``ConnectionClosed`` propagates)."""
    while True:
        frame = await conn.ws.recv()
        await handle_frame(frame, conn, on_command, on_tunnel)


async def heartbeat_loop(
    conn: AgentConnection, *, interval: float, book: SessionBook, capacity: int
) -> None:
    """Tell the control plane every ``interval`` seconds that this agent is alive."""
    while True:
        await asyncio.sleep(interval)
        payload = HeartbeatPayload(active_sessions=len(book.running), capacity=capacity)
        await conn.send(Heartbeat(payload=payload))


async def monitor_loop(
    conn: AgentConnection,
    *,
    platform: Platform,
    book: SessionBook,
    interval: float,
    poll_timeout: float = 30.0,
) -> None:
    """Poll every running session; report each one that exited once, then forget it."""
    while True:
        await asyncio.sleep(interval)
        for session_id, state in list(book.pollable()):
            try:
                async with asyncio.timeout(poll_timeout):
                    exited = await platform.poll(state)
            except Exception:
                log.warning("polling session %s failed", session_id, exc_info=True)
                continue
            # A command may have started on this session while we awaited poll().
            if exited is None or session_id not in book.running or book.busy[session_id]:
                continue
            log.info("session %s exited: %s", session_id, exited.reason)
            payload = StatusPayload(
                session_id=session_id, state="exited", reason=exited.reason[:4000]
            )
            await conn.send(Status(payload=payload))
            # Forget only once reported: if the send failed, the next hello tells the truth.
            book.forget(session_id)


class Ended(enum.Enum):
    """How one connection attempt ended; decides the next delay and URL."""

    STOPPED = "stopped"
    REFUSED = "refused"  # auth, approval or protocol version: retry slowly
    FAILED = "failed"  # never got a welcome
    DROPPED = "dropped"  # was connected


# Close codes after which retrying soon cannot help: wait the longest backoff.
_REFUSALS = {
    CloseCode.UNAUTHORIZED: "API key rejected",
    CloseCode.FORBIDDEN: "agent pending approval",
    CloseCode.UNSUPPORTED_VERSION: "protocol version not supported by the control plane",
    CloseCode.STALE_LEADER: "a newer leader of this agent is connected",
}


def refusal_for_status(status: int) -> str | None:
    """Why an HTTP status refusing the upgrade means "retry slowly", if it does."""
    return {401: _REFUSALS[CloseCode.UNAUTHORIZED], 403: _REFUSALS[CloseCode.FORBIDDEN]}.get(status)


def closed(url: str, exc: ConnectionClosed, *, welcomed: bool) -> Ended:
    """Classify (and log) a connection the control plane or the network closed."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    if code in _REFUSALS:
        log.error(
            "%s closed the connection (%s): %s %s", url, code, _REFUSALS[CloseCode(code)], reason
        )
        return Ended.REFUSED
    log.warning("connection to %s closed (code %s %s)", url, code, reason)
    return Ended.DROPPED if welcomed else Ended.FAILED
