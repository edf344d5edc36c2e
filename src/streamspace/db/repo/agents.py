"""Queries on ``agents``: registration, approval, presence and selection."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Agent, Session, Template, utcnow
from streamspace.db.repo.lists import padded
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest
from streamspace.protocol import HeartbeatPayload
from streamspace.states import ACTIVE_SESSION_STATES, AgentApproval, AgentStatus


async def get(db: AsyncSession, agent_id: str) -> Agent | None:
    return await db.get(Agent, agent_id)


class Credentials(NamedTuple):
    """What deciding whether an agent may connect reads."""

    agent_id: str
    api_key_hash: str
    approval: str
    leader_epoch: int | None


async def credentials(db: AsyncSession, agent_ids: Collection[str]) -> dict[str, Credentials]:
    """The credentials of those of ``agent_ids`` that exist, in one statement."""
    rows = await db.execute(
        select(Agent.agent_id, Agent.api_key_hash, Agent.approval, Agent.leader_epoch).where(
            Agent.agent_id.in_(padded(agent_ids))
        )
    )
    return {row.agent_id: Credentials(*row) for row in rows}


_BY_ID = Keyset("agents", Key(Agent.agent_id, str))


async def list_agents(db: AsyncSession, page: PageRequest) -> Page[Agent]:
    """A page of the agents, by id."""
    found = (await db.scalars(_BY_ID.select(select(Agent), page))).all()
    return _BY_ID.page(found, page, lambda agent: (agent.agent_id,))


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
        status=AgentStatus.OFFLINE,
        approval=approval,
        api_key_hash=api_key_hash,
        capacity=capacity,
        active_sessions=0,
        created_at=utcnow(),
    )
    db.add(agent)
    return agent


def set_approval(agent: Agent, approval: AgentApproval) -> None:
    agent.approval = approval


def set_key(agent: Agent, api_key_hash: str) -> None:
    """A new API key (its digest); the old one stops working at the commit."""
    agent.api_key_hash = api_key_hash


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


@dataclass(frozen=True)
class Arriving:
    """What an agent's hello says about it."""

    agent_id: str
    platform: str
    capacity: int
    version: str


async def mark_online(db: AsyncSession, agents: Sequence[Arriving], *, replica: str) -> set[str]:
    """Mark ``agents`` online on ``replica`` in two statements; returns the ids that exist
    (an agent deleted while it connected is not among them)."""
    ids = {agent.agent_id for agent in agents}
    present = set(
        (await db.scalars(select(Agent.agent_id).where(Agent.agent_id.in_(padded(ids))))).all()
    )
    now = utcnow()
    rows = [
        {
            "agent_id": agent.agent_id,
            "status": AgentStatus.ONLINE,
            "replica": replica,
            "platform": agent.platform,
            "capacity": agent.capacity,
            "version": agent.version,
            "last_heartbeat": now,
        }
        for agent in {agent.agent_id: agent for agent in agents}.values()  # the latest hello
        if agent.agent_id in present
    ]
    if rows:
        await db.execute(update(Agent), rows)
    return present


async def mark_offline(db: AsyncSession, agent_id: str, *, replica: str) -> None:
    """Offline, unless the agent has meanwhile connected to another replica."""
    await db.execute(
        update(Agent)
        .where(Agent.agent_id == agent_id, Agent.replica == replica)
        .values(status=AgentStatus.OFFLINE)
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
                "status": AgentStatus.ONLINE,
                "replica": replica,
                "last_heartbeat": at,
                "active_sessions": beat.active_sessions,
                "capacity": beat.capacity,
            }
            for agent_id, beat in beats.items()
        ],
    )


async def mark_silent_offline(db: AsyncSession, *, heartbeat_before: datetime) -> int:
    """Agents still marked online whose heartbeats stopped (their replica died): offline."""
    result = await db.execute(
        update(Agent)
        .where(Agent.status == AgentStatus.ONLINE, Agent.last_heartbeat < heartbeat_before)
        .values(status=AgentStatus.OFFLINE)
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


_CANDIDATES = (
    select(Agent.agent_id, Agent.platform, Agent.capacity, func.count(Session.id))
    .outerjoin(
        Session,
        (Session.agent_id == Agent.agent_id) & Session.state.in_(ACTIVE_SESSION_STATES),
    )
    .where(
        Agent.approval == AgentApproval.APPROVED,
        Agent.status == AgentStatus.ONLINE,
        Agent.last_heartbeat >= bindparam("heartbeat_after"),
    )
    .group_by(Agent.agent_id, Agent.platform, Agent.capacity)
)
"""Built once: constructing this statement costs more than running it. The join reads only
active sessions, through ``ix_sessions_agent_state``: its cost follows the sessions running
now, not the site's history (``bench/launch_history.py``: flat from 1,000 to 100,000)."""


async def launch_candidates(db: AsyncSession, *, heartbeat_after: datetime) -> list[Candidate]:
    """Approved, online agents with a heartbeat since ``heartbeat_after`` and their active
    session counts, in one round trip (full ones included: the caller counts its own)."""
    rows = await db.execute(_CANDIDATES, {"heartbeat_after": heartbeat_after})
    return [Candidate(*row) for row in rows]


def least_loaded(candidates: Sequence[Candidate], template: Template) -> Candidate | None:
    """The candidate with the fewest sessions that takes ``template`` (ties: lowest id)."""
    fitting = [candidate for candidate in candidates if candidate.takes(template)]
    return min(fitting, key=lambda c: (c.used, c.agent_id), default=None)


async def online_by_replica(db: AsyncSession) -> set[str]:
    """Replicas that have agents marked online."""
    rows = await db.scalars(
        select(Agent.replica)
        .where(Agent.status == AgentStatus.ONLINE, Agent.replica.is_not(None))
        .distinct()
    )
    return {replica for replica in rows.all() if replica is not None}


async def mark_replica_offline(db: AsyncSession, replica: str) -> int:
    """Every agent still marked online at a replica that is gone: offline."""
    result = await db.execute(
        update(Agent)
        .where(Agent.status == AgentStatus.ONLINE, Agent.replica == replica)
        .values(status=AgentStatus.OFFLINE)
    )
    return int(getattr(result, "rowcount", 0))
