"""One agent's WebSocket connection on this replica: identity, liveness, a single writer."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from streamspace.protocol import close_reason, encode


class ConnectedAgent:
    """A connected agent. The hub keys registrations by this object, not by agent id."""

    def __init__(self, websocket: WebSocket, *, agent_id: str, platform: str) -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.platform = platform
        self.connection_id = uuid.uuid4().hex
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self._send_lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self._unanswered: dict[str, float] = {}
        self.window_full = False
        """Set when a command had to wait for room; the next answer wakes the dispatcher."""
        self.welcomed = asyncio.Event()
        """Set once ``welcome`` went out: commands sent before it would reach an agent
        that cannot answer them yet."""

    def note_sent(self, command_id: str) -> None:
        """A command went out on this connection; it is in flight until answered."""
        self._unanswered.pop(command_id, None)  # a re-send goes to the back: oldest first
        self._unanswered[command_id] = time.monotonic()

    def note_answered(self, command_ids: Iterable[str]) -> bool:
        """The agent answered these (ack or outcome); ``True`` if that opened a full window."""
        was_full, self.window_full = self.window_full, False
        for command_id in command_ids:
            self._unanswered.pop(command_id, None)
        return was_full

    def room(self, window: int, *, forget_after: float) -> int:
        """How many more commands may go out now: ``window`` minus those unanswered, not
        counting any older than ``forget_after`` seconds (the ack timeout sends those again)."""
        stale = time.monotonic() - forget_after
        while self._unanswered:  # oldest first: only the stale head is looked at
            command_id, sent = next(iter(self._unanswered.items()))
            if sent >= stale:
                break
            del self._unanswered[command_id]
        free = window - len(self._unanswered)
        if free <= 0:
            self.window_full = True
        return max(free, 0)

    def touch(self) -> None:
        """Note that the agent just spoke (any frame counts as a sign of life)."""
        self.last_seen = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last_seen

    async def send(self, message: BaseModel) -> None:
        """Send one frame; concurrent senders take turns (one writer per socket)."""
        async with self._send_lock:
            await self.websocket.send_text(encode(message))

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason; a no-op once closed."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self.websocket.application_state == WebSocketState.CONNECTED:
            # The peer already went away (RuntimeError, or WebSocketDisconnect when the
            # server reports the transport gone): there is nothing to close.
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.websocket.close(code=int(code), reason=close_reason(reason))

    def __repr__(self) -> str:
        return f"<ConnectedAgent {self.agent_id} {self.connection_id[:8]}>"
