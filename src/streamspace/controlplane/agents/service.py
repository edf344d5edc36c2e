"""Agent registration and administration; keys are returned once and stored hashed."""

from __future__ import annotations

import hmac
import logging

from streamspace.config import ApiSettings
from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.auth.hashing import digest, new_secret
from streamspace.controlplane.errors import Conflict, NotFound, Unauthorized
from streamspace.controlplane.hub import AgentHub, Cut
from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import Agent
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo.pages import Page, PageRequest
from streamspace.protocol import CloseCode
from streamspace.states import AgentApproval

log = logging.getLogger(__name__)
_FIRST = PageRequest()


class AgentService:
    """Registers agents (bootstrap key) and administers them (approval, keys)."""

    def __init__(
        self, *, db: SessionFactory, hub: AgentHub, settings: ApiSettings, audit: AuditLog
    ) -> None:
        self._db = db
        self._audit = audit
        self._hub = hub
        self._settings = settings

    async def register(
        self,
        *,
        bootstrap_key: str,
        agent_id: str,
        platform: str,
        capacity: int,
        address: str | None = None,
    ) -> tuple[Agent, str]:
        """Create an agent from the shared bootstrap key; returns it and its new API key.

        The bootstrap key only ever creates a *pending* agent (unless ``AGENT_AUTO_APPROVE``)
        and never touches an approved or revoked one: those keep their own keys.
        A still-pending agent may register again (it lost its key) and gets a new one.
        """
        expected = self._settings.agent_bootstrap_key
        if not expected or not hmac.compare_digest(bootstrap_key.encode(), expected.encode()):
            raise Unauthorized("invalid bootstrap key")
        api_key = new_secret("ssa")
        approval = (
            AgentApproval.APPROVED if self._settings.agent_auto_approve else AgentApproval.PENDING
        )
        try:
            async with transaction(self._db) as db:
                agent = await agent_repo.get(db, agent_id)
                if agent is not None and agent.approval != AgentApproval.PENDING:
                    raise Conflict(
                        f"agent {agent_id!r} is already registered ({agent.approval}); "
                        "use its API key, or ask an administrator to rotate it"
                    )
                if agent is None:
                    agent = agent_repo.create(
                        db,
                        agent_id=agent_id,
                        platform=platform,
                        approval=approval,
                        api_key_hash=digest(api_key),
                        capacity=capacity,
                    )
                else:
                    agent_repo.set_key(agent, digest(api_key))
                await db.flush()  # a concurrent registration fails here
                await self._audit.record(
                    db,
                    Actor(id=None, name=agent_id, address=address),
                    "agent.register",
                    target=("agent", agent_id),
                    detail={"platform": platform, "approval": agent.approval},
                )
        except ConstraintViolation:
            raise Conflict(f"agent {agent_id!r} was registered concurrently; retry") from None
        log.info("registered agent %s (%s, %s)", agent_id, platform, agent.approval)
        return agent, api_key

    async def list(self, page: PageRequest = _FIRST) -> Page[Agent]:
        """A page of the agents, by id."""
        async with reading(self._db) as db:
            return await agent_repo.list_agents(db, page)

    async def approve(self, agent_id: str, *, actor: Actor) -> Agent:
        async with transaction(self._db) as db:
            agent = await _get(db, agent_id)
            agent_repo.set_approval(agent, AgentApproval.APPROVED)
            await self._audit.record(db, actor, "agent.approve", target=("agent", agent_id))
        return agent

    async def revoke(self, agent_id: str, *, actor: Actor) -> Agent:
        """Revoke; the agent is disconnected at once, and its VNC tunnels closed, on every
        replica."""
        async with transaction(self._db) as db:
            agent = await _get(db, agent_id)
            agent_repo.set_approval(agent, AgentApproval.REVOKED)
            await self._audit.record(db, actor, "agent.revoke", target=("agent", agent_id))
        await self._hub.cut(Cut(CloseCode.FORBIDDEN, "agent revoked", agent_id=agent_id))
        return agent

    async def rotate_key(self, agent_id: str, *, actor: Actor) -> tuple[Agent, str]:
        """A new API key for the agent; the old one stops working (its connection and VNC
        tunnels end, on every replica)."""
        api_key = new_secret("ssa")
        async with transaction(self._db) as db:
            agent = await _get(db, agent_id)
            agent_repo.set_key(agent, digest(api_key))
            await self._audit.record(db, actor, "agent.rotate_key", target=("agent", agent_id))
        await self._hub.cut(Cut(CloseCode.UNAUTHORIZED, "API key rotated", agent_id=agent_id))
        return agent, api_key


async def _get(db: DbSession, agent_id: str) -> Agent:
    agent = await agent_repo.get(db, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return agent
