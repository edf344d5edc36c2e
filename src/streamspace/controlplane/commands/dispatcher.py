"""CommandDispatcher: delivers pending ``agent_commands`` rows to agents connected here.

A worker wakes for an agent when its doorbell rings (a command was just created: the hub's
``doorbells`` queue, awaited together with the poll tick) or when the poll tick finds
pending rows of a local agent (a doorbell was lost); it claims the rows, sends them in
creation order and leaves any it could not send pending. Commands of one agent are
delivered by one worker at a time, so their order is kept. A new session's first command
may skip the claim: :meth:`CommandDispatcher.hand_off`.

Supervision: :meth:`CommandDispatcher.run` is one task of the app's TaskGroup and runs its
workers, its doorbell listener and the hand-offs in a TaskGroup of its own. A failed delivery
is logged and the worker goes on (the rows stay pending or ``sent``; the poll and the ack
timeout bring them back); anything else escapes and ends the replica.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from streamspace.batching import Coalescer
from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.hub import AgentHub, Ring
from streamspace.db.engine import SessionFactory, one_statement_each
from streamspace.db.models import AgentCommand, utcnow
from streamspace.db.repo import commands as command_repo
from streamspace.protocol import Action, Command, CommandPayload, Parcel

log = logging.getLogger(__name__)

CLAIM_BATCH = 100
"""Commands claimed (and sent) per statement."""


class CommandDispatcher:
    """A pool of workers (``DISPATCHER_WORKERS``, default 10) fed by doorbells and a poll."""

    def __init__(self, *, db: SessionFactory, hub: AgentHub, settings: ApiSettings) -> None:
        self._db = db
        self._hub = hub
        self._settings = settings
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._handing: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        """The TaskGroup of :meth:`run`, which hand-offs heard while it runs join."""
        self._releases = Coalescer(self._release_all, max_batch=1000, name="command-release")

    def wake(self, agent_id: str) -> None:
        """Schedule delivery for an agent (cheap, idempotent, callable from anywhere)."""
        if agent_id in self._busy:
            self._again.add(agent_id)
        elif agent_id not in self._waiting:
            self._waiting.add(agent_id)
            self._queue.put_nowait(agent_id)

    async def hand_off(self, agent_id: str, command: AgentCommand) -> None:
        """Deliver a new session's first command, which its creator wrote already ``sent``,
        without the claim's round trip: sent from here if the agent is connected here, else
        handed to its replica with the doorbell. Nothing older of a new session can be
        waiting to go first. If nobody takes it, it goes back to ``pending`` for the normal
        path; a crash on the way leaves it ``sent``, which the ack timeout and the agent's
        reconnect both send again."""
        if self._ready(agent_id) is not None:
            await self._send_handed_off(agent_id, command)
        elif not await self._hub.ring(agent_id, parcel=_parcel(command)):
            await self._release(agent_id, command)

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "[CommandDispatcher] Starting CommandDispatcher with %d workers",
            self._settings.dispatcher_workers,
        )
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(self._worker(), name=f"dispatcher-worker-{n}")
                for n in range(self._settings.dispatcher_workers)
            ]
            self._group = group
            try:
                await self._listen(stop)
            finally:
                self._group = None
                # A hand-off cut short stays ``sent``: the ack timeout sends it again.
                for task in [*workers, *self._handing]:
                    task.cancel()

    async def drain(self) -> None:
        """Deliver everything waiting here now (doorbells, hand-offs, pending rows of local
        agents) and return once idle. For in-process tests; :meth:`run` need not run."""
        await self._poll_once()
        while True:
            while not self._hub.doorbells.empty():
                ring = self._hub.doorbells.get_nowait()
                if ring.parcel is None:
                    self.wake(ring.agent_id)
                else:
                    await self._send_handed_off(ring.agent_id, _unparcel(ring.parcel))
            if not self._queue.empty():
                await self._serve(self._queue.get_nowait())
            elif self._handing:
                await asyncio.wait(self._handing)
            elif self._busy:
                await asyncio.sleep(0.01)  # run()'s workers are still at it
            else:
                return

    async def _listen(self, stop: asyncio.Event) -> None:
        """Answer doorbells as they ring and poll on every tick, until ``stop``: whichever
        of the three comes first."""
        loop = asyncio.get_running_loop()
        doorbells = self._hub.doorbells
        stopping = asyncio.ensure_future(stop.wait())
        ringing: asyncio.Future[Ring] = asyncio.ensure_future(doorbells.get())
        tick = loop.time()
        try:
            while not stop.is_set():
                if loop.time() >= tick:
                    await self._poll_once()
                    tick = loop.time() + self._settings.command_poll_interval
                await asyncio.wait(
                    (ringing, stopping),
                    timeout=max(tick - loop.time(), 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if ringing.done():
                    self._answer(ringing.result())
                    while not doorbells.empty():
                        self._answer(doorbells.get_nowait())
                    ringing = asyncio.ensure_future(doorbells.get())
        finally:
            stopping.cancel()
            ringing.cancel()

    def _answer(self, ring: Ring) -> None:
        if ring.parcel is None:
            self.wake(ring.agent_id)
            return
        command = _unparcel(ring.parcel)
        if self._group is None:  # stopping: it stays ``sent``, the ack timeout sends it again
            return
        task = self._group.create_task(self._hand_over(ring.agent_id, command))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _hand_over(self, agent_id: str, command: AgentCommand) -> None:
        """A command handed over with a doorbell; a failure is logged, not fatal (the row
        stays ``sent``: the ack timeout sends it again)."""
        try:
            await self._send_handed_off(agent_id, command)
        except Exception:
            log.exception("handing command %s to agent %s failed", command.command_id, agent_id)

    async def _send_handed_off(self, agent_id: str, command: AgentCommand) -> None:
        connection = self._ready(agent_id)
        unsent = [command]
        if connection is not None and self._room(connection) > 0:
            unsent = await self._send_all(connection, unsent)
        if unsent:  # not here, its window full, or the send failed
            await self._release(agent_id, command)

    async def _release(self, agent_id: str, command: AgentCommand) -> None:
        """Back to ``pending`` (it could not be sent), for whoever holds the agent next.
        Under load many hand-offs find the window full at once: they share one UPDATE."""
        await self._releases.submit(command.id)
        self.wake(agent_id)

    async def _release_all(self, command_ids: list[uuid.UUID]) -> list[None]:
        async with one_statement_each(self._db) as db:
            await command_repo.release(db, command_ids)
        return [None] * len(command_ids)

    def _ready(self, agent_id: str) -> ConnectedAgent | None:
        """The agent's connection here, once welcomed (commands sent before the welcome
        would reach an agent that cannot answer them yet)."""
        connection = self._hub.local(agent_id)
        if connection is None or not connection.welcomed.is_set() or connection.closed.is_set():
            return None
        return connection

    async def _worker(self) -> None:
        while True:
            await self._serve(await self._queue.get())

    async def _serve(self, agent_id: str) -> None:
        self._waiting.discard(agent_id)
        self._busy.add(agent_id)
        try:
            while True:
                self._again.discard(agent_id)
                await self._deliver(agent_id)
                if agent_id not in self._again:
                    break
        except Exception:
            # Rows stay pending/sent; the poll and the ack timeout bring them back.
            log.exception("delivering commands to agent %s failed", agent_id)
        finally:
            self._busy.discard(agent_id)

    async def _poll_once(self) -> None:
        """Safety net: look for pending rows of local agents (every few seconds)."""
        try:
            local = [conn.agent_id for conn in self._hub.local_connections()]
            async with self._db() as db:
                for agent_id in await command_repo.agents_with_pending(db, local):
                    self.wake(agent_id)
        except Exception:
            log.exception("dispatcher poll failed; retrying")

    async def _deliver(self, agent_id: str) -> None:
        connection = self._ready(agent_id)
        if connection is None:
            return  # woken again once the welcome is out
        while not connection.closed.is_set():
            limit = min(CLAIM_BATCH, self._room(connection))
            if not limit:
                return  # window full: the agent's next answer wakes us
            async with one_statement_each(self._db) as db:
                claimed = await command_repo.claim_pending(db, agent_id, limit=limit)
            if not claimed:
                return
            unsent = await self._send_all(connection, claimed)
            if unsent:
                await self._release_all([command.id for command in unsent])
                return
            if len(claimed) < limit:
                return  # all there was; a command created since rang the doorbell again

    def _room(self, connection: ConnectedAgent) -> int:
        settings = self._settings
        return connection.room(settings.command_window, forget_after=settings.command_ack_timeout)

    @staticmethod
    async def _send_all(
        connection: ConnectedAgent, claimed: list[AgentCommand]
    ) -> list[AgentCommand]:
        """Send in order; returns the commands that could not be sent."""
        for index, command in enumerate(claimed):
            message = Command(
                payload=CommandPayload(
                    command_id=command.command_id,
                    action=Action(command.action),
                    session_id=command.session_id or "",
                    payload=command.payload or {},
                )
            )
            try:
                await connection.send(message)
            except Exception as exc:
                log.info("could not send to %r (%s); left pending", connection, exc)
                return claimed[index:]
            connection.note_sent(command.command_id)
            metrics.COMMANDS_SENT.labels(command.action).inc()
            metrics.DISPATCH_LATENCY.observe((utcnow() - command.created_at).total_seconds())
        return []


def _parcel(command: AgentCommand) -> Parcel:
    """A handed-off command as the doorbell carries it."""
    return Parcel(
        agent_id=command.agent_id,
        id=command.id,
        command_id=command.command_id,
        session_id=command.session_id,
        action=Action(command.action),
        payload=command.payload or {},
        created_at=command.created_at,
    )


def _unparcel(parcel: Parcel) -> AgentCommand:
    return AgentCommand(
        id=parcel.id,
        command_id=parcel.command_id,
        agent_id=parcel.agent_id,
        session_id=parcel.session_id,
        action=parcel.action.value,
        payload=dict(parcel.payload),
        created_at=parcel.created_at,
    )
