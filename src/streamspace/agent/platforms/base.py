"""The Platform contract: how an agent runs sessions (local processes, containers, pods).

One Platform object serves every session of its agent, so each call receives that session's
state, the JSON-serialisable dict that ``start``/``wake`` returned. The platform never talks
to the control plane or its database; the agent runtime owns deadlines, retries and reports.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamspace.protocol import RunningSession, SessionSpec, VncEndpoint

PlatformState = dict[str, Any]
ProgressSink = Callable[[str, str, str], None]
"""``(session_id, stage, message)``: how far a start or wake got, in words (must not block)."""


class PlatformError(RuntimeError):
    """A session operation failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Started:
    """A session that is up: where its VNC server listens, and the state to hand back later."""

    vnc: VncEndpoint
    state: PlatformState


@dataclass(frozen=True)
class Exited:
    """``poll`` result for a session whose processes are gone; ``reason`` is for humans."""

    reason: str


class Platform(abc.ABC):
    """Runs sessions for one agent.

    Edge cases every implementation honours:

    - ``start`` returns only once the VNC server accepts connections; if it cannot, it
      cleans up whatever it created and raises :class:`PlatformError`.
    - ``stop`` is idempotent: stopping a session that already exited (or was never fully
      started) succeeds. Without ``keep_home`` the session's home is removed unless the
      spec asked for a persistent home.
    - ``hibernate`` stops the processes but keeps the home; it returns the state ``wake``
      needs. Hibernating an already exited session succeeds.
    - ``wake`` starts the session again on the kept home (the VNC endpoint may change).
    - ``poll`` returns ``None`` while the session runs, :class:`Exited` once it does not.
    - ``list_running`` reports sessions still running, also those started by an earlier
      run of the agent (so a restarted agent can re-adopt them).
    """

    name: str
    progress: ProgressSink | None = None
    """Set by the agent runtime: where ``report_progress`` goes (to the control plane)."""

    def report_progress(self, session_id: str, stage: str, message: str) -> None:
        """Say how far a slow start or wake got (``scheduled``, ``pulling image``, ...)."""
        if self.progress is not None:
            self.progress(session_id, stage, message)

    @abc.abstractmethod
    async def start(self, spec: SessionSpec) -> Started:
        """Start a session and wait until its VNC server is ready."""

    @abc.abstractmethod
    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        """Stop a session for good."""

    @abc.abstractmethod
    async def hibernate(self, state: PlatformState) -> PlatformState:
        """Stop a session's processes, keeping its home for ``wake``."""

    @abc.abstractmethod
    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        """Start a hibernated session again on its kept home."""

    @abc.abstractmethod
    async def poll(self, state: PlatformState) -> Exited | None:
        """``None`` while the session runs, else why it is gone."""

    @abc.abstractmethod
    async def list_running(self) -> list[RunningSession]:
        """Sessions this platform is running now."""

    async def vnc_password(self, session_id: str) -> bytes | None:
        """The password the agent answers the session's VNC server with when a tunnel
        opens (``streamspace.agent.vnc_auth``); ``None``: the server asks for none."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release resources held by the platform (not the sessions)."""
