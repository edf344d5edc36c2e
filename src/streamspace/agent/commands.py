"""Running one command against the platform: payload checks, deadlines, error mapping.

The runtime decides *whether* a command runs (dedupe); this module decides *how*: it turns a
``Command`` into platform calls under a per-action deadline and always returns an
:class:`~streamspace.agent.executed.Outcome` (cancellation is the only thing it lets through).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamspace.agent.executed import Outcome
from streamspace.agent.platforms.base import Platform, PlatformError, PlatformState, Started
from streamspace.protocol import (
    MAX_FRAME_BYTES,
    Action,
    CommandPayload,
    RunningSession,
    SessionSpec,
    VncEndpoint,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUTS: Mapping[Action, float] = {
    Action.START_SESSION: 90.0,
    Action.WAKE_SESSION: 90.0,
    Action.STOP_SESSION: 60.0,
    Action.HIBERNATE_SESSION: 60.0,
}
"""Seconds a command may take before the agent gives up on it and reports it failed."""

# Leaves room in the frame for the envelope around the result.
_MAX_RESULT_BYTES = MAX_FRAME_BYTES - 1024


class _Args(BaseModel):
    # Unknown keys are ignored so a newer control plane can add fields.
    model_config = ConfigDict(extra="ignore", frozen=True)


class StartArgs(_Args):
    spec: SessionSpec


class StopArgs(_Args):
    state: dict[str, Any] = Field(default_factory=dict)
    keep_home: bool = False


class HibernateArgs(_Args):
    state: dict[str, Any] = Field(default_factory=dict)


class WakeArgs(_Args):
    spec: SessionSpec
    state: dict[str, Any] = Field(default_factory=dict)


_ARGS: Mapping[Action, type[_Args]] = {
    Action.START_SESSION: StartArgs,
    Action.STOP_SESSION: StopArgs,
    Action.HIBERNATE_SESSION: HibernateArgs,
    Action.WAKE_SESSION: WakeArgs,
}


class InvalidCommand(ValueError):
    """The command's payload cannot be run; never worth retrying."""


@dataclass
class SessionBook:
    """What the agent remembers about its sessions: last known state, which ones run."""

    states: dict[str, PlatformState] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    endpoints: dict[str, VncEndpoint] = field(default_factory=dict)
    """Where each running session's VNC server listens, as its platform reported it."""
    busy: Counter[str] = field(default_factory=Counter)
    """Commands in flight per session; the monitor leaves those sessions alone."""

    def adopt(self, sessions: list[RunningSession]) -> None:
        """Take the platform's list as the truth about what runs (agent (re)connect)."""
        self.running = {s.session_id for s in sessions}
        self.endpoints = {s.session_id: s.vnc for s in sessions if s.vnc is not None}
        for s in sessions:
            self.states[s.session_id] = dict(s.state)

    def endpoint(self, session_id: str) -> VncEndpoint | None:
        """The recorded VNC endpoint of a running session (``None``: not running here)."""
        return self.endpoints.get(session_id) if session_id in self.running else None

    def state_for(self, session_id: str, given: PlatformState) -> PlatformState:
        """The state sent with the command, or the remembered one when that is empty."""
        return given if given else dict(self.states.get(session_id, {}))

    def forget(self, session_id: str) -> None:
        self.running.discard(session_id)
        self.endpoints.pop(session_id, None)
        self.states.pop(session_id, None)

    def pollable(self) -> Iterator[tuple[str, PlatformState]]:
        """Running sessions without a command in flight (a snapshot, safe across awaits)."""
        for session_id in sorted(self.running):
            if not self.busy[session_id]:
                yield session_id, dict(self.states.get(session_id, {}))


class SessionLocks:
    """One lock per session, so commands on the same session run one at a time, in the
    order they arrived (a stop sent while a start runs then stops what the start made)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]  # keep the map as small as the work in flight
            else:
                self._locks[session_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def parse_args(command: CommandPayload) -> _Args:
    """Validate the action's payload, or raise :class:`InvalidCommand`."""
    try:
        args = _ARGS[command.action].model_validate(command.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise InvalidCommand(
            f"invalid {command.action} payload at {where}: {first['msg']}"
        ) from None
    spec = getattr(args, "spec", None)
    if isinstance(spec, SessionSpec) and spec.session_id != command.session_id:
        raise InvalidCommand(
            f"spec.session_id {spec.session_id!r} does not match session {command.session_id!r}"
        )
    return args


def _started(started: Started) -> dict[str, Any]:
    return {"vnc": started.vnc.model_dump(exclude_none=True), "state": started.state}


async def _call(platform: Platform, book: SessionBook, cmd: CommandPayload) -> dict[str, Any]:
    """Run the platform call for ``cmd`` and keep ``book`` in step with its effect."""
    sid = cmd.session_id
    args = parse_args(cmd)
    if isinstance(args, StartArgs):
        started = await platform.start(args.spec)
    elif isinstance(args, WakeArgs):
        started = await platform.wake(args.spec, book.state_for(sid, args.state))
    elif isinstance(args, StopArgs):
        await platform.stop(book.state_for(sid, args.state), keep_home=args.keep_home)
        book.forget(sid)
        return {}
    elif isinstance(args, HibernateArgs):
        state = await platform.hibernate(book.state_for(sid, args.state))
        book.running.discard(sid)
        book.states[sid] = dict(state)
        return {"state": state}
    else:  # pragma: no cover - _ARGS covers every Action
        raise InvalidCommand(f"unsupported action {cmd.action}")
    book.states[sid] = dict(started.state)
    book.running.add(sid)
    book.endpoints[sid] = started.vnc
    return _started(started)


def _check_result(result: dict[str, Any]) -> Outcome:
    try:
        size = len(json.dumps(result).encode())
    except (TypeError, ValueError) as exc:
        return Outcome.fail(f"platform returned a result that is not JSON: {exc}")
    if size > _MAX_RESULT_BYTES:
        return Outcome.fail(f"result of {size} bytes is too large to report")
    return Outcome.complete(result)


async def execute(
    platform: Platform,
    book: SessionBook,
    command: CommandPayload,
    *,
    seconds: float,
) -> Outcome:
    """Run ``command`` within ``seconds`` and say how it ended. Never raises
    except :class:`asyncio.CancelledError` (the agent is shutting down)."""
    sid = command.session_id
    book.busy[sid] += 1
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            result = await _call(platform, book, command)
        return _check_result(result)
    except InvalidCommand as exc:
        return Outcome.fail(str(exc), retryable=False)
    except PlatformError as exc:
        return Outcome.fail(str(exc) or type(exc).__name__, retryable=exc.retryable)
    except TimeoutError as exc:
        if not deadline.expired():  # the platform's own timeout, not our deadline
            return _crashed(command, exc)
        log.warning(
            "command %s (%s) timed out after %g s", command.command_id, command.action, seconds
        )
        return Outcome.fail(f"timed out after {seconds:g} s", retryable=True)
    except Exception as exc:
        return _crashed(command, exc)
    finally:
        book.busy[sid] -= 1
        if book.busy[sid] <= 0:
            del book.busy[sid]


def _crashed(command: CommandPayload, exc: Exception) -> Outcome:
    log.error("command %s (%s) crashed", command.command_id, command.action, exc_info=exc)
    return Outcome.fail(f"internal agent error: {type(exc).__name__}: {exc}"[:500])
