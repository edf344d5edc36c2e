"""The browser side: ``WS /api/v1/sessions/{id}/vnc?token=…``.

Accept → consume the token → check the session → open the upstream (the agent's data
socket on this replica, or a relay to the replica holding the agent) → count the viewer →
relay → uncount. Refusals close the socket with a 44xx/4502 code and a reason in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from starlette.websockets import WebSocket

from streamspace.controlplane.auth.hashing import digest
from streamspace.controlplane.tunnels import internal, upstream
from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.endpoints import (
    AsgiEndpoint,
    Closed,
    Endpoint,
    TunnelRefused,
    closed_on_failure,
    viewable_endpoint,
)
from streamspace.controlplane.tunnels.input import InputWatch
from streamspace.controlplane.tunnels.relay import Traffic, relay
from streamspace.db.engine import DbSession, reading, transaction
from streamspace.db.models import utcnow
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import viewers, vnc_tokens
from streamspace.protocol import CloseCode, VncEndpoint

log = logging.getLogger(__name__)

T = TypeVar("T")

SUBPROTOCOL = "binary"
"""Offered back when the client asks for it (noVNC does)."""


@dataclass(frozen=True)
class Target:
    session_id: str
    agent_id: str
    vnc: VncEndpoint


async def serve_viewer(tunnels: Tunnels, websocket: WebSocket, session_id: str) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    viewer = AsgiEndpoint(websocket)
    async with closed_on_failure(viewer, f"VNC tunnel to session {session_id}"):
        target = await admit(tunnels, session_id, websocket.query_params.get("token", ""))
        with tunnels.registry.live(agent_id=target.agent_id, session_id=target.session_id) as cut:
            async with open_upstream(tunnels, target) as agent_side:
                await _view(tunnels, target, viewer, agent_side, cut)


async def admit(tunnels: Tunnels, session_id: str, token: str) -> Target:
    """Consume the token (once) and check the session it grants; else :class:`TunnelRefused`."""
    now = utcnow()
    async with transaction(tunnels.db) as db:
        ticket = await vnc_tokens.consume(db, digest(token), now=now) if token else None
    if ticket is None:
        raise TunnelRefused(
            CloseCode.UNAUTHORIZED,
            "invalid, expired or already used token: ask for a new one (POST …/connect)",
        )
    async with reading(tunnels.db) as db:
        session = await session_repo.get(db, session_id)
    if session is None or not (ticket.is_admin or session.owner_id == ticket.user_id):
        raise TunnelRefused(CloseCode.NOT_FOUND, "session not found")
    if ticket.session_id != session.id:
        raise TunnelRefused(CloseCode.UNAUTHORIZED, "token was issued for another session")
    vnc = viewable_endpoint(session)
    assert session.agent_id is not None  # checked by viewable_endpoint
    return Target(session_id=session.id, agent_id=session.agent_id, vnc=vnc)


@contextlib.asynccontextmanager
async def open_upstream(tunnels: Tunnels, target: Target) -> AsyncIterator[Endpoint]:
    """The agent's side of the tunnel: on this replica, or relayed from the one holding it."""
    if tunnels.hub.local(target.agent_id) is not None:
        async with upstream.open_local(
            tunnels, target.agent_id, target.session_id, target.vnc
        ) as local:
            yield local
        return
    address = await internal.owner_address(tunnels, target.agent_id)
    path = internal.session_path(target.session_id)
    async with internal.open_remote(tunnels, address, path) as remote:
        yield remote


async def _view(
    tunnels: Tunnels,
    target: Target,
    viewer: Endpoint,
    agent: Endpoint,
    cut: asyncio.Future[Closed],
) -> None:
    traffic = Traffic(input=InputWatch())
    began = time.monotonic()
    sid, here = target.session_id, tunnels.settings.pod_name
    viewer_id = await _record(
        tunnels, sid, lambda db, now: viewers.viewer_joined(db, sid, replica=here, now=now)
    )
    ticker = asyncio.create_task(_activity(tunnels, sid, traffic))
    try:
        ending = await relay(viewer, agent, traffic, cut=cut)
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        if viewer_id is not None:
            await _record(
                tunnels, sid, lambda db, now: viewers.viewer_left(db, viewer_id, sid, now=now)
            )
    log.info(
        "VNC tunnel to session %s closed by the %s (%s %s) after %.1f s: %d B to viewer, %d B up",
        target.session_id,
        ending.by,
        ending.code,
        ending.reason,
        time.monotonic() - began,
        traffic.to_viewer,
        traffic.to_upstream,
    )


async def _activity(tunnels: Tunnels, session_id: str, traffic: Traffic) -> None:
    """While the viewer sends input (keys, the pointer, the clipboard: what a person does;
    not the update requests a viewer sends by itself), refresh ``last_activity`` at most
    every ``VIEWER_ACTIVITY_INTERVAL``: one UPDATE per interval, not one per event."""
    interval = tunnels.settings.viewer_activity_interval
    noted = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        if traffic.last_input > noted:
            noted = time.monotonic()
            await _record(
                tunnels, session_id, lambda db, now: viewers.viewer_active(db, session_id, now=now)
            )


async def _record(
    tunnels: Tunnels, session_id: str, change: Callable[[DbSession, datetime], Awaitable[T]]
) -> T | None:
    """Apply a viewer-count/activity change; a database hiccup must not break the tunnel
    (``None`` then)."""
    try:
        async with transaction(tunnels.db) as db:
            return await change(db, utcnow())
    except Exception:
        log.warning("could not record viewer activity of session %s", session_id, exc_info=True)
        return None
