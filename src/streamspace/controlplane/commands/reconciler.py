"""Periodic checks that bring derived state back in line with the database's truth.

Every check is idempotent and safe to run on several replicas at once: each one is a
conditional UPDATE, so a row is moved by exactly one of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from streamspace.aio import wait_or_stop
from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.auth.users import DISABLED
from streamspace.controlplane.commands.outcomes import apply_outcome
from streamspace.controlplane.hub import AgentHub, Cut
from streamspace.db.engine import DbSession, SessionFactory
from streamspace.db.models import AgentCommand, utcnow
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import idempotency as idempotency_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import viewers
from streamspace.protocol import SESSION_NOT_RUNNING, Action, CloseCode
from streamspace.states import CommandStatus, SessionState

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
"""An agent silent for this many heartbeat intervals is dropped."""


class Reconciler:
    """Runs the ``check_*`` methods every ``RECONCILE_INTERVAL`` seconds."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        hub: AgentHub,
        settings: ApiSettings,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` gives the time the checks' cutoffs are counted from, ``monotonic`` the
        time a replica's liveness key has been missing; a test moves them on instead of
        sleeping."""
        self._db = db
        self._hub = hub
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._missing_since: dict[str, float] = {}
        """Replicas whose liveness key was found missing, and since when (monotonic)."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            await wait_or_stop(stop, self._settings.reconcile_interval)

    async def run_once(self) -> None:
        """Run every check once; one that fails is logged and the others still run."""
        checks: list[Callable[[], Awaitable[None]]] = [
            self.check_silent_connections,
            self.check_unacknowledged,
            self.check_deadlines,
            self.check_expired,
            self.check_silent_agents,
            self.check_dead_replicas,
            self.check_stuck_sessions,
            self.check_idempotency_keys,
            self.check_disabled_owners,
        ]
        for check in checks:
            try:
                await check()
            except Exception:
                log.exception("reconciler check %s failed; will retry", check.__name__)

    async def check_silent_connections(self) -> None:
        """Close local connections of agents that missed three heartbeats."""
        limit = MISSED_HEARTBEATS * self._settings.heartbeat_interval
        for connection in self._hub.local_connections():
            if connection.silent_for() > limit:
                log.warning(
                    "agent %s missed %d heartbeats; dropping it",
                    connection.agent_id,
                    MISSED_HEARTBEATS,
                )
                await connection.close(CloseCode.HEARTBEAT_TIMEOUT, "missed heartbeats")

    async def check_unacknowledged(self) -> None:
        """``sent`` without an ack past the ack timeout: send again, or fail after max attempts."""
        cutoff = self._ago(self._settings.command_ack_timeout)
        async with self._db() as db, db.begin():
            agents, failed = await command_repo.requeue_unacknowledged(
                db, sent_before=cutoff, max_attempts=self._settings.command_max_attempts
            )
            await self._settle(db, failed)
        if agents:
            metrics.COMMANDS_REQUEUED.inc(len(agents))
            log.info("re-sending unacknowledged commands of %d agent(s)", len(agents))
        for agent_id in agents:
            await self._hub.ring(agent_id)

    async def check_deadlines(self) -> None:
        """``acknowledged`` but unfinished past the action deadline: failed, session failed."""
        cutoff = self._ago(self._settings.command_deadline)
        async with self._db() as db, db.begin():
            await self._settle(db, await command_repo.fail_overdue(db, acknowledged_before=cutoff))

    async def check_expired(self) -> None:
        """``pending`` past the pending timeout (no agent ever took it): expired."""
        cutoff = self._ago(self._settings.command_pending_timeout)
        async with self._db() as db, db.begin():
            await self._settle(db, await command_repo.expire_pending(db, created_before=cutoff))

    async def check_silent_agents(self) -> None:
        """Agents marked online whose heartbeats stopped (their replica died): offline."""
        cutoff = self._ago(MISSED_HEARTBEATS * self._settings.heartbeat_interval)
        async with self._db() as db, db.begin():
            await agent_repo.mark_silent_offline(db, heartbeat_before=cutoff)

    async def check_stuck_sessions(self) -> None:
        """A session in a transitional state with no open command would wait forever:
        fail it with the reason (e.g. its command was cancelled by hand)."""
        cutoff = self._ago(self._settings.command_ack_timeout)
        async with self._db() as db, db.begin():
            for session in await session_repo.stuck(db, unchanged_since=cutoff):
                log.warning("session %s stuck in %s; failing it", session.id, session.state)
                session_repo.transition(
                    db,
                    session,
                    SessionState.FAILED,
                    detail=f"stuck in {session.state}: no command in progress",
                )

    async def check_dead_replicas(self) -> None:
        """Agents marked online at a replica whose liveness key is gone: offline now,
        without waiting for their heartbeats to age (they reconnect to a survivor); the
        viewers it held: uncounted (their browsers lost the tunnel with it).

        A key missing once may just have been lost with Redis (restart, failover); a live
        replica re-creates it within a third of its TTL, so only a key still missing a full
        TTL later means the replica is dead.
        """
        async with self._db() as db:
            named = await agent_repo.online_by_replica(db) | await viewers.replicas_with_viewers(db)
        now = self._monotonic()
        dead = []
        for name in named - {self._settings.pod_name}:
            if await self._hub.replica_alive(name) is not False:
                self._missing_since.pop(name, None)
            elif (
                now - self._missing_since.setdefault(name, now) >= self._settings.replica_alive_ttl
            ):
                dead.append(name)
        if not dead:
            return
        async with self._db() as db, db.begin():
            for name in dead:
                count = await agent_repo.mark_replica_offline(db, name)
                gone = await viewers.forget_replica(db, name)
                log.warning(
                    "replica %s is gone; %d agent(s) marked offline, %d viewer(s) uncounted",
                    name,
                    count,
                    gone,
                )
                self._missing_since.pop(name, None)

    async def check_idempotency_keys(self) -> None:
        """Forget the ``Idempotency-Key`` rows older than a day (their launches may be
        repeated now)."""
        async with self._db() as db, db.begin():
            await idempotency_repo.forget_expired(db, now=self._clock())

    async def check_disabled_owners(self) -> None:
        """Sessions still running for a disabled account (a launch accepted just as the
        account was disabled, or a disable by a command line that reached no replica):
        stopped as the disable stops the others, their viewers cut."""
        stopped: list[tuple[str, str]] = []
        async with self._db() as db, db.begin():
            for session in await session_repo.running_of_disabled_owners(db):
                assert session.agent_id is not None  # a running session has its agent
                session_repo.transition(db, session, SessionState.STOPPING, detail=DISABLED)
                stop = command_repo.new(
                    agent_id=session.agent_id,
                    session_id=session.id,
                    action=Action.STOP_SESSION,
                    payload={"state": session.platform_state, "keep_home": False},
                    reason=DISABLED,
                )
                await command_repo.insert_new(db, [stop])
                stopped.append((session.id, session.agent_id))
        for session_id, agent_id in stopped:
            log.warning("session %s of a disabled account was running; stopping it", session_id)
            await self._hub.cut(Cut(SESSION_NOT_RUNNING, DISABLED, session_id=session_id))
            await self._hub.ring(agent_id)

    def _ago(self, seconds: float) -> datetime:
        """The time ``seconds`` before now, by the clock."""
        return self._clock() - timedelta(seconds=seconds)

    @staticmethod
    async def _settle(db: DbSession, ended: list[AgentCommand]) -> None:
        for command in ended:
            log.warning(
                "command %s (%s) %s: %s",
                command.command_id,
                command.action,
                command.status,
                command.error_message,
            )
            metrics.COMMANDS_TIMED_OUT.labels(command.status).inc()
            await apply_outcome(
                db,
                command,
                status=CommandStatus(command.status),
                error=command.error_message,
                already_recorded=True,
            )
