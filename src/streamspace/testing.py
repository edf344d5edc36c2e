"""Test doubles shipped with the package: fake platforms and a fake agent process.

``NoopPlatform`` does nothing instantly; ``SlowPlatform``, ``NeverPlatform`` and
``BadPlatform`` are its named failure variants, ``GatedPlatform`` holds every call until the
test releases it. All record every call in ``calls`` and, when
given ``log_path``, append one JSON line per execution, so a test or benchmark can prove that
no command ran twice even across agent processes.

A log line is ``{"action", "session_id", "ts", "pid"}``. The platforms whose operations take
time (``SlowPlatform``, ``GatedPlatform``) add ``"phase": "started"`` to it and append a second
line with ``"phase": "done"`` once the operation finished, so an execution interrupted by a
crash (a ``started`` line without its ``done``) can be told from one that finished; see
:func:`finished_executions`. Lines without a phase are instantaneous operations: they finish
in the same step that logs them.

Run a fake agent against a control plane (leader election through the usual
``LEADER_ELECTION`` settings; replicas of one agent share sessions through ``--state``)::

    python -m streamspace.testing fake-agent --behaviour slow --delay 2 --log calls.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from streamspace import logs, names
from streamspace.agent.leader.base import Lease, LeaseUnavailable
from streamspace.agent.platforms.base import Exited, Platform, PlatformError, PlatformState, Started
from streamspace.controlplane.hub.registry import Listener, SharedStateUnavailable
from streamspace.protocol import (
    Action,
    RunningSession,
    ServerMessage,
    SessionSpec,
    VncEndpoint,
    encode,
    parse_server_message,
)

PHASE_STARTED = "started"
PHASE_DONE = "done"


def finished_executions(log_path: Path | str) -> list[dict[str, object]]:
    """The lines of an execution log that stand for a finished operation, in order.

    An instantaneous line (no phase) counts as finished; a ``started`` line counts only
    through its ``done`` line (the one returned), so an operation cut short by a crash or a
    cancellation does not count.
    """
    path = Path(log_path)
    if not path.exists():
        return []
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    return [line for line in lines if line.get("phase") in (None, PHASE_DONE)]


class NoopPlatform(Platform):
    """Sessions that exist only in memory; every operation succeeds at once."""

    def __init__(
        self,
        log_path: Path | str | None = None,
        *,
        name: str = "local",
        vnc: VncEndpoint | None = None,
    ) -> None:
        self.name = name
        self.log_path = Path(log_path) if log_path is not None else None
        self.vnc = vnc or VncEndpoint(host="127.0.0.1", port=5900)
        self.calls: list[tuple[str, str]] = []
        """Every call as ``(action, session_id)``, in order (``poll`` excluded)."""
        self.sessions: dict[str, PlatformState] = {}
        """Running sessions by id; tests may seed it to fake sessions from an earlier run."""
        self.exit_reasons: dict[str, str] = {}
        self.state_path: Path | None = None
        """When set, ``sessions`` is kept in this JSON file: replicas of one agent on one host
        then see the same sessions, as they would see the same Docker daemon."""

    def _save(self) -> None:
        if self.state_path is not None:
            staged = self.state_path.with_name(f"{self.state_path.name}.{os.getpid()}.tmp")
            staged.write_text(json.dumps(self.sessions))
            os.replace(staged, self.state_path)  # atomic: a killed writer leaves no half file

    def _forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self._save()

    def _record(self, action: Action, session_id: str, *, phase: str | None = None) -> None:
        self.calls.append((action.value, session_id))
        self._log(action, session_id, phase)

    def _record_done(self, action: Action, session_id: str) -> None:
        """Log that an operation logged with ``phase="started"`` finished (not in ``calls``)."""
        self._log(action, session_id, PHASE_DONE)

    def _log(self, action: Action, session_id: str, phase: str | None) -> None:
        if self.log_path is not None:
            line: dict[str, object] = {
                "action": action.value,
                "session_id": session_id,
                "ts": time.time(),
                "pid": os.getpid(),
            }
            if phase is not None:
                line["phase"] = phase
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(line) + "\n")

    def mark_exited(self, session_id: str, reason: str = "process exited") -> None:
        """Make the session look like it died by itself (``poll`` reports it)."""
        self._forget(session_id)
        self.exit_reasons[session_id] = reason

    def _up(self, session_id: str, extra: PlatformState | None = None) -> Started:
        state: PlatformState = {"session_id": session_id, "fake": True, **(extra or {})}
        self.sessions[session_id] = state
        self._save()
        self.exit_reasons.pop(session_id, None)
        return Started(vnc=self.vnc, state=state)

    async def _act(self, action: Action, session_id: str) -> None:
        """Hook run before each operation takes effect (the variants slow it or fail it)."""
        self._record(action, session_id)

    async def start(self, spec: SessionSpec) -> Started:
        await self._act(Action.START_SESSION, spec.session_id)
        return self._up(spec.session_id)

    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        session_id = str(state.get("session_id", ""))
        await self._act(Action.STOP_SESSION, session_id)
        self._forget(session_id)

    async def hibernate(self, state: PlatformState) -> PlatformState:
        session_id = str(state.get("session_id", ""))
        await self._act(Action.HIBERNATE_SESSION, session_id)
        self._forget(session_id)
        return {**state, "hibernated": True}

    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        await self._act(Action.WAKE_SESSION, spec.session_id)
        return self._up(spec.session_id, {"woken": True})

    async def poll(self, state: PlatformState) -> Exited | None:
        session_id = str(state.get("session_id", ""))
        if session_id in self.sessions:
            return None
        return Exited(self.exit_reasons.get(session_id, "not running"))

    async def list_running(self) -> list[RunningSession]:
        if self.state_path is not None and self.state_path.exists():
            self.sessions = json.loads(self.state_path.read_text())
        return [
            RunningSession(session_id=sid, vnc=self.vnc, state=state)
            for sid, state in self.sessions.items()
        ]


class SlowPlatform(NoopPlatform):
    """Every operation takes ``delay`` seconds."""

    def __init__(
        self,
        delay: float,
        log_path: Path | str | None = None,
        *,
        name: str = "local",
        vnc: VncEndpoint | None = None,
    ) -> None:
        super().__init__(log_path, name=name, vnc=vnc)
        self.delay = delay

    async def _act(self, action: Action, session_id: str) -> None:
        self._record(action, session_id, phase=PHASE_STARTED)
        await asyncio.sleep(self.delay)
        self._record_done(action, session_id)


class GatedPlatform(NoopPlatform):
    """Every operation waits until :meth:`release`: holds a command in flight for a test."""

    def __init__(self, log_path: Path | str | None = None, *, name: str = "local") -> None:
        super().__init__(log_path, name=name)
        self.entered = asyncio.Event()
        """Set once an operation is waiting at the gate."""
        self.gate = asyncio.Event()

    def release(self) -> None:
        self.gate.set()

    async def _act(self, action: Action, session_id: str) -> None:
        self._record(action, session_id, phase=PHASE_STARTED)
        self.entered.set()
        await self.gate.wait()
        self._record_done(action, session_id)


class NeverPlatform(NoopPlatform):
    """``start`` and ``wake`` never return until cancelled (the agent's deadline fires)."""

    async def _act(self, action: Action, session_id: str) -> None:
        self._record(action, session_id)
        if action in (Action.START_SESSION, Action.WAKE_SESSION):
            await asyncio.Future()  # never completes


class BadPlatform(NoopPlatform):
    """Every operation fails with a non-retryable :class:`PlatformError`."""

    async def _act(self, action: Action, session_id: str) -> None:
        self._record(action, session_id)
        raise PlatformError(f"bad platform refuses {action.value}", retryable=False)


def make_platform(
    behaviour: str, *, delay: float = 1.0, log_path: Path | None = None, name: str = "local"
) -> NoopPlatform:
    """The fake platform called ``behaviour`` (noop, slow, never, bad)."""
    if behaviour == "noop":
        return NoopPlatform(log_path, name=name)
    if behaviour == "slow":
        return SlowPlatform(delay, log_path, name=name)
    if behaviour == "never":
        return NeverPlatform(log_path, name=name)
    if behaviour == "bad":
        return BadPlatform(log_path, name=name)
    raise ValueError(f"unknown behaviour {behaviour!r}")


async def run_fake_agent(args: argparse.Namespace) -> None:
    """Run an agent on a fake platform until SIGTERM or SIGINT."""
    from streamspace.agent.main import run_agent, until_signal
    from streamspace.config import AgentSettings

    overrides = {"agent_capacity": args.capacity} if args.capacity is not None else {}
    settings = AgentSettings(**overrides)
    platform = make_platform(
        args.behaviour, delay=args.delay, log_path=args.log, name=args.platform
    )
    if args.vnc_port is not None:
        platform.vnc = VncEndpoint(host="127.0.0.1", port=args.vnc_port)
    platform.state_path = args.state
    timeouts = {action: args.timeout for action in Action} if args.timeout else None
    await until_signal(
        lambda stop: run_agent(
            settings,
            platform,
            stop,
            command_timeouts=timeouts,
            poll_interval=args.poll_interval,
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamspace.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("fake-agent", help="run an agent with a fake platform")
    agent.add_argument("--behaviour", choices=["noop", "slow", "never", "bad"], default="noop")
    agent.add_argument("--delay", type=float, default=1.0, help="seconds per call (slow)")
    agent.add_argument("--log", type=Path, default=None, help="append a JSON line per call")
    agent.add_argument("--capacity", type=int, default=None, help="overrides AGENT_CAPACITY")
    agent.add_argument("--platform", choices=["local", "docker", "kubernetes"], default="local")
    agent.add_argument("--timeout", type=float, default=None, help="deadline for every action")
    agent.add_argument("--poll-interval", type=float, default=2.0)
    agent.add_argument("--vnc-port", type=int, default=None, help="sessions' VNC port")
    agent.add_argument(
        "--state", type=Path, default=None, help="keep sessions in this JSON file (replicas)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m streamspace.testing``."""
    args = _parser().parse_args(argv)
    logs.configure()  # LOG_LEVEL, as the real agent
    from streamspace.agent.credentials import AgentConfigError
    from streamspace.memory import tune_garbage_collection

    try:
        tune_garbage_collection()
        asyncio.run(run_fake_agent(args))
    except AgentConfigError as exc:
        raise SystemExit(f"fake-agent: {exc}") from None


# Fakes for in-process control-plane tests: agent socket and lease


class FakeAgentSocket(WebSocket):
    """An accepted agent WebSocket whose transport is memory, for a ``ConnectedAgent`` to wrap.

    What the control plane sends is kept, parsed, in ``sent``; its close in ``close_code`` and
    ``close_reason``. :meth:`feed` delivers a frame as from the agent; after :meth:`hang_up`
    sends fail as on a broken transport.
    """

    def __init__(self) -> None:
        super().__init__({"type": "websocket", "path": "/", "headers": []}, self._take, self._put)
        self.client_state = self.application_state = WebSocketState.CONNECTED  # accepted
        self.sent: list[ServerMessage] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._frames: asyncio.Queue[Message] = asyncio.Queue()
        self._hung_up = False

    def feed(self, message: BaseModel) -> None:
        """Deliver ``message`` to the control plane as the agent's next frame."""
        self._frames.put_nowait({"type": "websocket.receive", "text": encode(message)})

    def hang_up(self, code: int = 1006) -> None:
        """The agent went away: receiving ends with ``code``, sending fails."""
        self._hung_up = True
        self._frames.put_nowait({"type": "websocket.disconnect", "code": code})

    async def _take(self) -> Message:
        return await self._frames.get()

    async def _put(self, message: Message) -> None:
        if self._hung_up:
            raise OSError("the agent hung up")
        if message["type"] == "websocket.send":
            self.sent.append(parse_server_message(message["text"]))
        elif message["type"] == "websocket.close":
            self.close_code, self.close_reason = message["code"], message["reason"]


class SharedLease:
    """One lease in memory that several :class:`FakeLease` campaign for, as replicas share a
    Redis key: epochs rise with every acquisition.

    With ``lease_seconds`` a holder that stops renewing loses the lease that long after its
    last renewal by ``clock`` (as with Redis); without, it holds it until it releases (as with
    ``flock``).
    """

    def __init__(
        self, *, lease_seconds: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.epoch = 0
        """The epoch of the latest acquisition (0: never acquired)."""
        self.available = True
        """``False``: every call of a :class:`FakeLease` raises ``LeaseUnavailable``."""
        self._holder: object | None = None
        self._expires_at: float | None = None

    def held_by(self, token: object) -> bool:
        """Whether the term ``token`` still holds the lease."""
        unexpired = self._expires_at is None or self.clock() < self._expires_at
        return self._holder is not None and self._holder is token and unexpired

    def take(self, token: object) -> int | None:
        """Give the lease to the term ``token`` unless another holds it; its epoch if so."""
        if self._holder is not None and self.held_by(self._holder):
            return None
        self._holder = token
        self.epoch += 1
        self._extend()
        return self.epoch

    def extend(self, token: object) -> bool:
        """Renew the lease for the term ``token``; ``False`` if it no longer holds it."""
        if not self.held_by(token):
            return False
        self._extend()
        return True

    def give_up(self, token: object) -> None:
        """Free the lease if the term ``token`` holds it."""
        if self._holder is token:
            self._holder = None

    def expire(self) -> None:
        """End the current term now, as a lease that ran out before it was renewed."""
        self._holder = None

    def _extend(self) -> None:
        if self.lease_seconds is not None:
            self._expires_at = self.clock() + self.lease_seconds


class FakeLease(Lease):
    """One replica's handle on a :class:`SharedLease` (a new token per term, as Redis)."""

    def __init__(self, shared: SharedLease) -> None:
        self.shared = shared
        self.closed = False
        self._token: object | None = None

    async def acquire(self) -> int | None:
        self._reachable()
        token = object()
        epoch = self.shared.take(token)
        if epoch is not None:
            self._token = token
        return epoch

    async def renew(self) -> bool:
        self._reachable()
        return self._token is not None and self.shared.extend(self._token)

    async def release(self) -> None:
        token, self._token = self._token, None
        self._reachable()
        if token is not None:
            self.shared.give_up(token)

    async def close(self) -> None:
        self.closed = True

    def _reachable(self) -> None:
        if not self.shared.available:
            raise LeaseUnavailable("the fake lease is unavailable")


if __name__ == "__main__":
    main()


# Fakes for in-process control-plane tests: hub registry


class FakeHubRegistry:
    """What Redis holds for the hubs of several replicas, in memory: one instance shared by
    the hubs of a test, each through its own :meth:`replica` view. Messages are delivered at
    once, to the replicas whose hub :meth:`~FakeReplicaRegistry.run` is running. Set ``up``
    to ``False`` to play an outage (every call then fails, as with Redis unreachable)."""

    def __init__(self) -> None:
        self.up = True
        self.registrations: dict[str, tuple[str, str]] = {}
        """agent id -> (replica, connection id)."""
        self.addresses: dict[str, str] = {}
        self.alive: set[str] = set()
        self.listeners: dict[str, Listener] = {}
        """The running hubs, by replica."""

    def replica(self, name: str, *, address: str | None = None) -> FakeReplicaRegistry:
        """The registry as the hub of replica ``name`` sees it."""
        return FakeReplicaRegistry(self, name, address)


class FakeReplicaRegistry:
    """One replica's view of a :class:`FakeHubRegistry` (a hub registry)."""

    def __init__(self, shared: FakeHubRegistry, replica: str, address: str | None) -> None:
        self.shared = shared
        self.name = replica
        self._address = address

    @property
    def up(self) -> bool:
        return self.shared.up

    async def start(self) -> None:
        self.shared.alive.add(self.name)
        if self._address is not None:
            self.shared.addresses[self.name] = self._address

    async def run(self, listener: Listener) -> None:
        self.shared.listeners[self.name] = listener
        listener.listening(True)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            del self.shared.listeners[self.name]
            listener.listening(False)

    async def close(self) -> None:
        self.shared.alive.discard(self.name)
        self.shared.addresses.pop(self.name, None)

    async def register(self, agent_id: str, connection_id: str) -> None:
        if self.shared.up:  # else lost, as with Redis: renewals re-create it
            self.shared.registrations[agent_id] = (self.name, connection_id)

    async def release(self, agent_id: str, connection_id: str) -> None:
        if (
            self.shared.up
            and self.shared.registrations.get(agent_id, (None, None))[1] == connection_id
        ):
            del self.shared.registrations[agent_id]

    async def renew(self, agent_id: str, connection_id: str) -> bool:
        if not self.shared.up:
            return True  # cannot tell
        current = self.shared.registrations.get(agent_id)
        if current is not None and current[1] != connection_id:
            return False
        self.shared.registrations[agent_id] = (self.name, connection_id)
        return True

    async def owner_of(self, agent_id: str) -> str | None:
        if not self.shared.up:
            return None
        registration = self.shared.registrations.get(agent_id)
        return None if registration is None else registration[0]

    async def address_of(self, replica: str) -> str | None:
        return self.shared.addresses.get(replica) if self.shared.up else None

    async def replica_alive(self, replica: str) -> bool | None:
        return replica in self.shared.alive if self.shared.up else None

    async def ring(self, agent_id: str, message: str) -> bool:
        owner = await self.owner_of(agent_id)
        listener = self.shared.listeners.get(owner) if owner is not None else None
        if owner is None or listener is None:
            return False
        await listener.heard(names.pod_commands_channel(owner), message)
        return True

    async def broadcast(self, channel: str, message: str) -> None:
        self._check()
        for listener in list(self.shared.listeners.values()):
            if channel in listener.channels():
                await listener.heard(channel, message)

    def _check(self) -> None:
        if not self.shared.up:
            raise SharedStateUnavailable("the fake registry is down")
