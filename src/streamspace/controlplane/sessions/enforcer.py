"""The lifecycle-policy enforcer: a supervised loop on every replica that hibernates or
stops the sessions whose idle timeout, maximum age or hibernated retention ran out.

Each run moves the sessions with set-based conditional UPDATEs (``db/repo/policies.py``)
and inserts their commands, with the reason, in the same transaction: when two replicas
run at once, every session gets exactly one command. Then it cuts the sessions' viewer
tunnels and rings their agents, as a user's hibernate or stop does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from streamspace.aio import wait_or_stop
from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.hub import Cut
from streamspace.controlplane.sessions.policies import describe
from streamspace.db.engine import DbSession, SessionFactory, transaction
from streamspace.db.models import AgentCommand, utcnow
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import policies as policy_repo
from streamspace.db.repo.policies import Taken
from streamspace.protocol import SESSION_NOT_RUNNING, Action
from streamspace.states import IdleAction, PolicyReason, SessionState

log = logging.getLogger(__name__)

_Take = Callable[[DbSession, datetime], Awaitable[list[Taken]]]


class PolicyEnforcer:
    """Runs :meth:`run_once` every ``SESSION_POLICY_INTERVAL`` seconds."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        settings: ApiSettings,
        ring: Callable[[str], Awaitable[object]],
        cut: Callable[[Cut], Awaitable[None]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``clock`` gives the time the timeouts are counted to; a test moves it on."""
        self._db = db
        self._settings = settings
        self._ring = ring
        self._cut = cut
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            await wait_or_stop(stop, self._settings.session_policy_interval)

    async def run_once(self) -> list[Taken]:
        """Apply every policy once (maximum age first: a stop wins over a hibernate); one
        that fails is logged and the others still run. Returns the sessions acted on."""
        acted: list[Taken] = []
        for reason, take in (
            (PolicyReason.MAX_AGE, self._overdue),
            (PolicyReason.IDLE, self._idle),
            (PolicyReason.RETENTION, self._unretained),
        ):
            try:
                acted += await self._enforce(reason, take)
            except Exception:
                log.exception("lifecycle policy %s failed; will retry", reason.value)
        return acted

    async def _overdue(self, db: DbSession, now: datetime) -> list[Taken]:
        return await policy_repo.take_overdue(db, now=now, describe=describe)

    async def _unretained(self, db: DbSession, now: datetime) -> list[Taken]:
        return await policy_repo.take_unretained(db, now=now, describe=describe)

    async def _idle(self, db: DbSession, now: datetime) -> list[Taken]:
        taken: list[Taken] = []
        for timeout, action in sorted(await policy_repo.idle_policies(db)):
            taken += await policy_repo.take_idle(
                db, idle_timeout=timeout, action=IdleAction(action), now=now, describe=describe
            )
        return taken

    async def _enforce(self, reason: PolicyReason, take: _Take) -> list[Taken]:
        async with transaction(self._db) as db:
            taken = await take(db, self._clock())
            if taken:
                await command_repo.insert_new(db, [_command(item) for item in taken])
        for item in taken:
            action = "hibernate" if item.to_state is SessionState.HIBERNATING else "stop"
            metrics.POLICY_ACTIONS.labels(reason=reason.value, action=action).inc()
            log.info("session %s: %s by policy (%s)", item.session_id, action, item.reason)
            if item.from_state is SessionState.RUNNING:
                verb = "hibernated" if action == "hibernate" else "stopped"
                why = f"session {verb}: {item.reason}"
                await self._cut(Cut(SESSION_NOT_RUNNING, why, session_id=item.session_id))
        for agent_id in sorted({item.agent_id for item in taken}):
            await self._ring(agent_id)
        return taken


def _command(item: Taken) -> AgentCommand:
    payload: dict[str, Any]
    if item.to_state is SessionState.HIBERNATING:
        action, payload = Action.HIBERNATE_SESSION, {"state": item.platform_state}
    else:
        action = Action.STOP_SESSION
        payload = {"state": item.platform_state, "keep_home": item.keep_home}
    return command_repo.new(
        agent_id=item.agent_id,
        session_id=item.session_id,
        action=action,
        payload=payload,
        reason=item.reason,
    )
