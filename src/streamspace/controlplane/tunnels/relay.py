"""Carry binary frames between a viewer and its upstream until either side ends.

Two tasks per tunnel, one per direction, each awaiting its own sockets: back-pressure is
the sockets' own (a send waits while the peer does not read), so nothing is buffered here
and a stalled viewer stalls exactly one tunnel. When one side ends, the other is closed
with a code and reason that say why (the agent's own 4502 reason reaches the browser).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from streamspace.controlplane.tunnels.endpoints import Closed, Endpoint, Gone
from streamspace.controlplane.tunnels.input import InputWatch
from streamspace.protocol import CloseCode

BINARY_ONLY = "binary frames only: a text frame is not part of the VNC tunnel"


@dataclass
class Traffic:
    """Bytes carried so far, and when the last ones went through (monotonic clock); with an
    ``input`` watch, also when the viewer last sent input (a key, the pointer, the clipboard)."""

    to_viewer: int = 0
    to_upstream: int = 0
    last_flow: float = field(default_factory=time.monotonic)
    input: InputWatch | None = None
    last_input: float = field(default_factory=time.monotonic)

    def carried(self, message: bytes, *, to_viewer: bool) -> None:
        now = time.monotonic()
        if to_viewer:
            self.to_viewer += len(message)
        else:
            self.to_upstream += len(message)
            if self.input is not None and self.input.feed(message):
                self.last_input = now
        self.last_flow = now


@dataclass(frozen=True)
class Ending:
    """How a relay ended: who ended it and the close it sent to the other side."""

    by: str
    """``viewer``, ``upstream`` or ``control plane`` (a cut: agent revoked, session stopped)."""
    code: int
    reason: str


@dataclass(frozen=True)
class _Stop:
    source_closed: Closed | None = None
    text_from_source: bool = False
    target_gone: bool = False


async def _pump(source: Endpoint, target: Endpoint, traffic: Traffic, *, to_viewer: bool) -> _Stop:
    while True:
        message = await source.receive()
        if isinstance(message, Closed):
            return _Stop(source_closed=message)
        if isinstance(message, str):
            return _Stop(text_from_source=True)
        try:
            await target.send(message)
        except Gone:
            return _Stop(target_gone=True)
        traffic.carried(message, to_viewer=to_viewer)


def upstream_close(closed: Closed) -> tuple[int, str]:
    """The close a viewer gets when the upstream (agent or peer replica) closed with
    ``closed``: a normal close or one of ours (4xxx) passes through, anything else is a
    failed tunnel (4502)."""
    if closed.code == CloseCode.NORMAL:
        return CloseCode.NORMAL, closed.reason or "the VNC server closed the connection"
    if 4000 <= closed.code <= 4999:
        return closed.code, closed.reason or "tunnel closed by the agent"
    detail = f": {closed.reason}" if closed.reason else ""
    return CloseCode.TUNNEL_FAILED, f"tunnel to the agent lost (code {closed.code}{detail})"


async def relay(
    viewer: Endpoint,
    upstream: Endpoint,
    traffic: Traffic,
    *,
    cut: asyncio.Future[Closed] | None = None,
) -> Ending:
    """Relay until one side ends, or ``cut`` is set; close the other (or, on a cut, both:
    the viewer with the cut's code and reason). Both sockets are closed on return."""
    down = asyncio.create_task(_pump(upstream, viewer, traffic, to_viewer=True))
    up = asyncio.create_task(_pump(viewer, upstream, traffic, to_viewer=False))
    waiting: set[asyncio.Future[Any]] = {down, up} if cut is None else {down, up, cut}
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    if cut is not None and cut in done:
        closed = cut.result()
        await viewer.close(closed.code, closed.reason)
        await upstream.close(CloseCode.NORMAL, closed.reason)
        return Ending("control plane", closed.code, closed.reason)
    if up in done:
        ending = await _viewer_ended(up.result(), viewer, upstream)
    else:
        ending = await _upstream_ended(down.result(), viewer, upstream)
    return ending


async def _viewer_ended(stop: _Stop, viewer: Endpoint, upstream: Endpoint) -> Ending:
    if stop.text_from_source:
        await viewer.close(CloseCode.BAD_MESSAGE, BINARY_ONLY)
        await upstream.close(CloseCode.NORMAL, "viewer sent a malformed frame")
        return Ending("viewer", CloseCode.BAD_MESSAGE, BINARY_ONLY)
    if stop.target_gone:
        lost = "tunnel to the agent lost"
        await viewer.close(CloseCode.TUNNEL_FAILED, lost)
        return Ending("upstream", CloseCode.TUNNEL_FAILED, lost)
    closed = stop.source_closed or Closed(1006)
    await upstream.close(CloseCode.NORMAL, "viewer closed the tunnel")
    return Ending("viewer", closed.code, closed.reason)


async def _upstream_ended(stop: _Stop, viewer: Endpoint, upstream: Endpoint) -> Ending:
    if stop.text_from_source:
        await upstream.close(CloseCode.BAD_MESSAGE, BINARY_ONLY)
        failed = "tunnel failed: the agent sent a text frame"
        await viewer.close(CloseCode.TUNNEL_FAILED, failed)
        return Ending("upstream", CloseCode.TUNNEL_FAILED, failed)
    if stop.target_gone:
        await upstream.close(CloseCode.NORMAL, "viewer left")
        return Ending("viewer", 1006, "viewer left")
    code, reason = upstream_close(stop.source_closed or Closed(1006))
    await viewer.close(code, reason)
    return Ending("upstream", code, reason)
