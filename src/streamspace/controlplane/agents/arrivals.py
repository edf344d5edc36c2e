"""What an agent's arrival and departure change in the database."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamspace.batching import Coalescer
from streamspace.db.engine import DbSession, SessionFactory, transaction
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.protocol import INVENTORY_PAGE_SESSIONS, Action, Hello, RunningSession
from streamspace.states import FINAL_SESSION_STATES, SessionState

log = logging.getLogger(__name__)

LOST = "session lost: the agent no longer runs it"


ARRIVALS_BATCH = 200
"""Agents whose arrivals at most share one transaction (a reconnect storm)."""


@dataclass(frozen=True)
class _Arrival:
    agent: agent_repo.Arriving
    inventory: Sequence[RunningSession]


class Arrivals:
    """Records agents connecting to and disconnecting from this replica.

    Agents that arrive together (a replica died and its agents re-home here) share one
    transaction: a handful of statements for the whole batch, not a handful per agent.
    """

    def __init__(self, *, db: SessionFactory, replica: str) -> None:
        self._db = db
        self._replica = replica
        self._batches: Coalescer[_Arrival, None] = Coalescer(
            self._write, max_batch=ARRIVALS_BATCH, name="arrivals"
        )

    async def connected(self, hello: Hello, inventory: Sequence[RunningSession]) -> None:
        """Mark the agent online, re-send its unfinished commands, reconcile its sessions.

        Sessions the database says run there but the agent does not report (in its complete
        ``inventory``) are failed; sessions it runs that the database has ended (or never
        knew) get a ``stop_session`` so nothing keeps running unaccounted for.
        :class:`LookupError` if the agent is not in the database.
        """
        info = hello.payload
        agent = agent_repo.Arriving(
            agent_id=info.agent_id,
            platform=info.platform,
            capacity=info.capacity,
            version=info.version,
        )
        await self._batches.submit(_Arrival(agent, inventory))

    async def _write(self, batch: list[_Arrival]) -> list[BaseException | None]:
        """One transaction for the batch. Set operations: two statements mark the agents
        online, one re-sends their unfinished commands, one reads their running sessions;
        then, per agent, one per page of its inventory, and for each page of sessions that
        changed (lost or stray) one per table it writes."""
        results: list[BaseException | None] = []
        async with transaction(self._db) as db:
            present = await agent_repo.mark_online(
                db, [arrival.agent for arrival in batch], replica=self._replica
            )
            requeued = await command_repo.requeue_in_flight(db, present)
            running = await session_repo.ids_by_agent(
                db, present, frozenset({SessionState.RUNNING})
            )
            for arrival in batch:
                agent_id = arrival.agent.agent_id
                if agent_id not in present:
                    results.append(LookupError(f"agent {agent_id} vanished while connecting"))
                    continue
                if requeued[agent_id]:
                    log.info(
                        "agent %s reconnected: re-sending %d unfinished command(s)",
                        agent_id,
                        requeued.pop(agent_id),
                    )
                await _reconcile(db, agent_id, running.get(agent_id, set()), arrival.inventory)
                results.append(None)
        return results

    async def disconnected(self, agent_id: str) -> None:
        """Mark the agent offline unless it is by now connected to another replica."""
        async with transaction(self._db) as db:
            await agent_repo.mark_offline(db, agent_id, replica=self._replica)


async def _reconcile(
    db: DbSession, agent_id: str, running: set[str], inventory: Sequence[RunningSession]
) -> None:
    """Fail what the agent no longer runs; stop what it runs that the database has ended."""
    reported = {session.session_id: session for session in inventory}
    for page in _pages(sorted(running - reported.keys())):
        lost = await session_repo.fail_running(db, agent_id, page, reason=LOST)
        await _stop(db, agent_id, lost)
    for page in _pages(list(reported)):
        known = await session_repo.states_of(db, page)
        strays = {
            session_id: reported[session_id].state
            for session_id in page
            if known.get(session_id) is None or known[session_id] in FINAL_SESSION_STATES
        }
        if strays:
            log.warning(
                "agent %s runs %d unknown or ended session(s) (%s); stopping them",
                agent_id,
                len(strays),
                ", ".join(list(strays)[:5]) + (", …" if len(strays) > 5 else ""),
            )
        await _stop(db, agent_id, strays)


def _pages(ids: list[str]) -> list[list[str]]:
    """``ids`` in pages of an inventory page's size: a statement's parameters stay bounded."""
    return [
        ids[start : start + INVENTORY_PAGE_SESSIONS]
        for start in range(0, len(ids), INVENTORY_PAGE_SESSIONS)
    ]


async def _stop(db: DbSession, agent_id: str, states: dict[str, dict[str, Any]]) -> None:
    """A ``stop_session`` for each session (by id, with its platform state), in one INSERT."""
    if not states:
        return
    stops = [
        command_repo.new(
            agent_id=agent_id,
            session_id=session_id,
            action=Action.STOP_SESSION,
            payload={"state": state, "keep_home": False},
        )
        for session_id, state in states.items()
    ]
    await command_repo.insert_new(db, stops)
