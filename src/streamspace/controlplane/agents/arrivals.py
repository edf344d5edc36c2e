"""What an agent's arrival and departure change in the database."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from streamspace.db.engine import DbSession, SessionFactory, transaction
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.protocol import INVENTORY_PAGE_SESSIONS, Action, Hello, RunningSession
from streamspace.states import FINAL_SESSION_STATES, SessionState

log = logging.getLogger(__name__)

LOST = "session lost: the agent no longer runs it"


class Arrivals:
    """Records agents connecting to and disconnecting from this replica."""

    def __init__(self, *, db: SessionFactory, replica: str) -> None:
        self._db = db
        self._replica = replica

    async def connected(self, hello: Hello, inventory: Sequence[RunningSession]) -> None:
        """Mark the agent online, re-send its unfinished commands, reconcile its sessions.

        In one transaction: sessions the database says run there but the agent does not
        report (in its complete ``inventory``) are failed; sessions it runs that the database
        has ended (or never knew) get a ``stop_session`` so nothing keeps running unaccounted
        for. Set operations: one statement for the agent's running sessions, one per page of the
        inventory, and for each page of sessions that changed (lost or stray) one statement per
        table it writes.
        """
        info = hello.payload
        reported = {running.session_id: running for running in inventory}
        async with transaction(self._db) as db:
            agent = await agent_repo.get(db, info.agent_id)
            if agent is None:
                raise LookupError(f"agent {info.agent_id} vanished while connecting")
            await agent_repo.mark_online(
                db,
                agent,
                replica=self._replica,
                platform=info.platform,
                capacity=info.capacity,
                version=info.version,
            )
            requeued = await command_repo.requeue_in_flight(db, info.agent_id)
            if requeued:
                log.info(
                    "agent %s reconnected: re-sending %d unfinished command(s)",
                    info.agent_id,
                    requeued,
                )
            running = await session_repo.ids_for_agent(
                db, info.agent_id, frozenset({SessionState.RUNNING})
            )
            for page in _pages(sorted(running - reported.keys())):
                lost = await session_repo.fail_running(db, info.agent_id, page, reason=LOST)
                await _stop(db, info.agent_id, lost)
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
                        info.agent_id,
                        len(strays),
                        ", ".join(list(strays)[:5]) + (", …" if len(strays) > 5 else ""),
                    )
                await _stop(db, info.agent_id, strays)

    async def disconnected(self, agent_id: str) -> None:
        """Mark the agent offline unless it is by now connected to another replica."""
        async with transaction(self._db) as db:
            await agent_repo.mark_offline(db, agent_id, replica=self._replica)


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
