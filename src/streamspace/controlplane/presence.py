"""What an agent's arrival and departure change in the database."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.controlplane.services.outcomes import fail_and_clean_up
from streamspace.controlplane.state import Replica
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.protocol import INVENTORY_PAGE_SESSIONS, Action, Hello, RunningSession
from streamspace.states import FINAL_SESSION_STATES, SessionState

log = logging.getLogger(__name__)


async def agent_connected(
    replica: Replica, hello: Hello, inventory: Sequence[RunningSession]
) -> None:
    """Mark the agent online, re-send its unfinished commands, reconcile its sessions.

    In one transaction: sessions the database says run there but the agent does not
    report (in its complete ``inventory``) are failed; sessions it runs that the database
    has ended (or never knew) get a ``stop_session`` so nothing keeps running unaccounted
    for. Set operations: one statement for the agent's running sessions and one per page of
    the inventory; only the sessions that changed cost more.
    """
    info = hello.payload
    reported = {running.session_id: running for running in inventory}
    async with replica.db() as db, db.begin():
        agent = await agent_repo.get(db, info.agent_id)
        if agent is None:
            raise LookupError(f"agent {info.agent_id} vanished while connecting")
        await agent_repo.mark_online(
            db,
            agent,
            replica=replica.hub.replica,
            platform=info.platform,
            capacity=info.capacity,
            version=info.version,
        )
        requeued = await command_repo.requeue_in_flight(db, info.agent_id)
        if requeued:
            log.info(
                "agent %s reconnected: re-sending %d unfinished command(s)", info.agent_id, requeued
            )
        running = await session_repo.ids_for_agent(
            db, info.agent_id, frozenset({SessionState.RUNNING})
        )
        lost = await session_repo.get_many(db, running - reported.keys())
        for session in lost.values():
            await fail_and_clean_up(db, session, reason="session lost: the agent no longer runs it")
        ids = list(reported)
        for start in range(0, len(ids), INVENTORY_PAGE_SESSIONS):
            page = ids[start : start + INVENTORY_PAGE_SESSIONS]
            known = await session_repo.states_of(db, page)
            for session_id in page:
                state = known.get(session_id)
                if state is None or state in FINAL_SESSION_STATES:
                    await _stop_stray(db, info.agent_id, reported[session_id])


async def _stop_stray(db: AsyncSession, agent_id: str, running: RunningSession) -> None:
    """Stop a session the agent runs that the database has ended or never knew."""
    log.warning(
        "agent %s runs unknown or ended session %s; stopping it", agent_id, running.session_id
    )
    await command_repo.create(
        db,
        agent_id=agent_id,
        session_id=running.session_id,
        action=Action.STOP_SESSION,
        payload={"state": running.state, "keep_home": False},
    )


async def agent_disconnected(replica: Replica, agent_id: str) -> None:
    """Mark the agent offline unless it is by now connected to another replica."""
    async with replica.db() as db, db.begin():
        await agent_repo.mark_offline(db, agent_id, replica=replica.hub.replica)
