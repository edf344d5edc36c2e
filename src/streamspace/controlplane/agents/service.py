"""Agent registration and administration; keys are returned once and stored hashed."""

from __future__ import annotations

import hmac
import logging

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.config import ApiSettings
from streamspace.controlplane.auth.hashing import digest, new_secret
from streamspace.controlplane.errors import Conflict, NotFound, ServiceError
from streamspace.controlplane.hub import AgentHub, Cut
from streamspace.db.engine import SessionFactory
from streamspace.db.models import Agent
from streamspace.db.repo import agents as agent_repo
from streamspace.protocol import CloseCode

log = logging.getLogger(__name__)


class Unauthorized(ServiceError):
    status_code = 401


async def register(
    db: SessionFactory,
    settings: ApiSettings,
    *,
    bootstrap_key: str,
    agent_id: str,
    platform: str,
    capacity: int,
) -> tuple[Agent, str]:
    """Create an agent from the shared bootstrap key; returns it and its new API key.

    The bootstrap key only ever creates a *pending* agent (unless ``AGENT_AUTO_APPROVE``)
    and never touches an approved or revoked one: those keep their own keys.
    A still-pending agent may register again (it lost its key) and gets a new one.
    """
    expected = settings.agent_bootstrap_key
    if not expected or not hmac.compare_digest(bootstrap_key.encode(), expected.encode()):
        raise Unauthorized("invalid bootstrap key")
    api_key = new_secret("ssa")
    approval = "approved" if settings.agent_auto_approve else "pending"
    try:
        async with db() as session, session.begin():
            agent = await agent_repo.get(session, agent_id)
            if agent is not None and agent.approval != "pending":
                raise Conflict(
                    f"agent {agent_id!r} is already registered ({agent.approval}); "
                    "use its API key, or ask an administrator to rotate it"
                )
            if agent is None:
                agent = agent_repo.create(
                    session,
                    agent_id=agent_id,
                    platform=platform,
                    approval=approval,
                    api_key_hash=digest(api_key),
                    capacity=capacity,
                )
            else:
                agent.api_key_hash = digest(api_key)
    except IntegrityError:
        raise Conflict(f"agent {agent_id!r} was registered concurrently; retry") from None
    log.info("registered agent %s (%s, %s)", agent_id, platform, agent.approval)
    return agent, api_key


async def set_approval(db: SessionFactory, hub: AgentHub, agent_id: str, approval: str) -> Agent:
    """Approve or revoke; a revoked agent is disconnected at once, and its VNC tunnels
    closed, on every replica."""
    async with db() as session, session.begin():
        agent = await _get(session, agent_id)
        agent.approval = approval
    if approval == "revoked":
        await hub.cut(Cut(CloseCode.FORBIDDEN, "agent revoked", agent_id=agent_id))
    return agent


async def rotate_key(db: SessionFactory, hub: AgentHub, agent_id: str) -> tuple[Agent, str]:
    """A new API key for the agent; the old one stops working (its connection and VNC
    tunnels end, on every replica)."""
    api_key = new_secret("ssa")
    async with db() as session, session.begin():
        agent = await _get(session, agent_id)
        agent.api_key_hash = digest(api_key)
    await hub.cut(Cut(CloseCode.UNAUTHORIZED, "API key rotated", agent_id=agent_id))
    return agent, api_key


async def _get(session: AsyncSession, agent_id: str) -> Agent:
    agent = await agent_repo.get(session, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return agent
