"""Queries on ``agents``: registration, approval, presence and selection."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Agent, Session, Template, utcnow
from streamspace.db.repo.lists import padded
from streamspace.protocol import HeartbeatPayload
from streamspace.states import ACTIVE_SESSION_STATES


async def get(db: AsyncSession, agent_id: str) -> Agent | None:
    return await db.get(Agent, agent_id)


async def list_agents(db: AsyncSession) -> Sequence[Agent]:
    return (await db.scalars(select(Agent).order_by(Agent.agent_id))).all()


def create(
    db: AsyncSession,
    *,
    agent_id: str,
    platform: str,
    approval: str,
    api_key_hash: str,
    capacity: int,
) -> Agent:
    agent = Agent(
        agent_id=agent_id,
        platform=platform,
        status="offline",
        approval=approval,
        api_key_hash=api_key_hash,
        capacity=capacity,
        active_sessions=0,
        used_slots=0,
        created_at=utcnow(),
    )
    db.add(agent)
    return agent


async def claim_leader_epoch(db: AsyncSession, agent_id: str, epoch: int) -> bool:
    """Record ``epoch`` unless a higher one was seen: one conditional UPDATE, so of two
    replicas racing with different epochs only the higher can win. Equal is allowed (the
    same leader reconnecting)."""
    claimed = await db.scalar(
        update(Agent)
        .where(
            Agent.agent_id == agent_id,
            or_(Agent.leader_epoch.is_(None), Agent.leader_epoch <= epoch),
        )
        .values(leader_epoch=epoch)
        .returning(Agent.agent_id)
        .execution_options(synchronize_session=False)
    )
    return claimed is not None


async def mark_online(
    db: AsyncSession, agent: Agent, *, replica: str, platform: str, capacity: int, version: str
) -> None:
    agent.status = "online"
    agent.replica = replica
    agent.platform = platform
    agent.capacity = capacity
    agent.version = version
    agent.last_heartbeat = utcnow()


async def mark_offline(db: AsyncSession, agent_id: str, *, replica: str) -> None:
    """Offline, unless the agent has meanwhile connected to another replica."""
    await db.execute(
        update(Agent)
        .where(Agent.agent_id == agent_id, Agent.replica == replica)
        .values(status="offline")
    )


async def record_heartbeats(
    db: AsyncSession, *, replica: str, beats: Mapping[str, HeartbeatPayload], at: datetime
) -> None:
    """Record many agents' heartbeats in one executemany.

    A heartbeat also re-asserts presence: an agent wrongly marked offline (e.g. its
    replica's liveness key was lost with Redis) is online again at its next heartbeat.
    """
    await db.execute(
        update(Agent),
        [
            {
                "agent_id": agent_id,
                "status": "online",
                "replica": replica,
                "last_heartbeat": at,
                "active_sessions": beat.active_sessions,
                "capacity": beat.capacity,
            }
            # In id order, as the used_slots triggers lock agents: no deadlock between them.
            for agent_id, beat in sorted(beats.items())
        ],
    )


async def mark_silent_offline(db: AsyncSession, *, heartbeat_before: datetime) -> int:
    """Agents still marked online whose heartbeats stopped (their replica died): offline."""
    result = await db.execute(
        update(Agent)
        .where(Agent.status == "online", Agent.last_heartbeat < heartbeat_before)
        .values(status="offline")
    )
    return int(getattr(result, "rowcount", 0))


@dataclass
class Candidate:
    """An agent that can take new sessions now, with the sessions it already has."""

    agent_id: str
    platform: str
    capacity: int
    used: int

    def takes(self, template: Template) -> bool:
        """Room for one more session of ``template`` (its platform, if it names one)."""
        platform_fits = template.platform is None or template.platform == self.platform
        return platform_fits and self.used < self.capacity


_CANDIDATES = select(Agent.agent_id, Agent.platform, Agent.capacity, Agent.used_slots).where(
    Agent.approval == "approved",
    Agent.status == "online",
    Agent.last_heartbeat >= bindparam("heartbeat_after"),
)
"""Built once: constructing this statement costs more than running it."""


async def launch_candidates(db: AsyncSession, *, heartbeat_after: datetime) -> list[Candidate]:
    """Approved, online agents with a heartbeat since ``heartbeat_after`` and their active
    session counts (``used_slots``: no session is read), full ones included: the caller
    counts its own."""
    rows = await db.execute(_CANDIDATES, {"heartbeat_after": heartbeat_after})
    return [Candidate(*row) for row in rows]


async def overfilled(db: AsyncSession, agent_ids: Collection[str]) -> set[str]:
    """Those of ``agent_ids`` with more active sessions than their capacity."""
    rows = await db.scalars(
        select(Agent.agent_id).where(
            Agent.agent_id.in_(padded(agent_ids)), Agent.used_slots > Agent.capacity
        )
    )
    return set(rows.all())


def least_loaded(candidates: Sequence[Candidate], template: Template) -> Candidate | None:
    """The candidate with the fewest sessions that takes ``template`` (ties: lowest id)."""
    fitting = [candidate for candidate in candidates if candidate.takes(template)]
    return min(fitting, key=lambda c: (c.used, c.agent_id), default=None)


async def online_by_replica(db: AsyncSession) -> set[str]:
    """Replicas that have agents marked online."""
    rows = await db.scalars(
        select(Agent.replica).where(Agent.status == "online", Agent.replica.is_not(None)).distinct()
    )
    return {replica for replica in rows.all() if replica is not None}


async def mark_replica_offline(db: AsyncSession, replica: str) -> int:
    """Every agent still marked online at a replica that is gone: offline."""
    result = await db.execute(
        update(Agent)
        .where(Agent.status == "online", Agent.replica == replica)
        .values(status="offline")
    )
    return int(getattr(result, "rowcount", 0))


_ACTIVE_COUNTS = (
    select(Session.agent_id, func.count().label("n"))
    .where(Session.state.in_(ACTIVE_SESSION_STATES))
    .group_by(Session.agent_id)
    .subquery()
)
_ACTIVE_COUNT = (
    select(func.count())
    .where(Session.agent_id == Agent.agent_id, Session.state.in_(ACTIVE_SESSION_STATES))
    .correlate(Agent)
    .scalar_subquery()
)


async def repair_used_slots(db: AsyncSession) -> dict[str, tuple[int, int]]:
    """Agents whose ``used_slots`` differs from their active sessions: set to the count.

    Returns ``{agent_id: (counted, actual)}`` of those repaired. The comparison reads one
    snapshot, in which count and sessions agree unless they drifted; the repair locks the
    drifted agents first and counts after, so that a session changing meanwhile (whose
    trigger waits for that lock) is counted on top of the repair, not lost under it.
    """
    actual = func.coalesce(_ACTIVE_COUNTS.c.n, 0)
    drifted = (
        await db.execute(
            select(Agent.agent_id, Agent.used_slots, actual)
            .outerjoin(_ACTIVE_COUNTS, _ACTIVE_COUNTS.c.agent_id == Agent.agent_id)
            .where(Agent.used_slots != actual)
        )
    ).all()
    if not drifted:
        return {}
    ids = sorted(agent_id for agent_id, _, _ in drifted)
    await db.execute(
        select(Agent.agent_id)
        .where(Agent.agent_id.in_(ids))
        .order_by(Agent.agent_id)
        .with_for_update()
    )
    rows = await db.execute(
        update(Agent)
        .where(Agent.agent_id.in_(ids), Agent.used_slots != _ACTIVE_COUNT)
        .values(used_slots=_ACTIVE_COUNT)
        .returning(Agent.agent_id, Agent.used_slots)
        .execution_options(synchronize_session=False)
    )
    counted = {agent_id: used for agent_id, used, _ in drifted}
    return {agent_id: (counted[agent_id], used) for agent_id, used in rows}
