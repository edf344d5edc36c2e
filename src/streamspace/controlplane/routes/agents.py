"""Agent registration (bootstrap key) and administration (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamspace.controlplane.deps import AddressDep, AdminActorDep, AdminDep, AgentsDep
from streamspace.controlplane.errors import Unauthorized
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import AgentKeyOut, AgentOut, AgentRegisterIn
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/agents",
    tags=["agents"],
    responses=AUTHENTICATED,
    dependencies=[Depends(storable_url)],
)
_bearer = HTTPBearer(auto_error=False)


@router.post("/register", status_code=status.HTTP_201_CREATED, responses=BODY | errors(409))
async def register(
    body: AgentRegisterIn,
    agents: AgentsDep,
    address: AddressDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AgentKeyOut:
    """Exchange the bootstrap key for a per-agent API key (shown once)."""
    if credentials is None:
        raise Unauthorized("bootstrap key required")
    agent, api_key = await agents.register(
        bootstrap_key=credentials.credentials,
        agent_id=body.agent_id,
        platform=body.platform,
        capacity=body.capacity,
        address=address,
    )
    return AgentKeyOut(agent_id=agent.agent_id, api_key=api_key, status=agent.approval)


@router.get("", responses=ADMIN | PAGED)
async def list_agents(
    _admin: AdminDep, agents: AgentsDep, page: PageDep, request: Request, response: Response
) -> list[AgentOut]:
    """The agents by id, a page at a time."""
    found = await agents.list(page)
    link_next(request, response, found)
    return [AgentOut.model_validate(agent) for agent in found.items]


@router.post("/{agent_id}/approve", responses=ADMIN | errors(404))
async def approve(agent_id: str, admin: AdminActorDep, agents: AgentsDep) -> AgentOut:
    return AgentOut.model_validate(await agents.approve(agent_id, actor=admin))


@router.post("/{agent_id}/revoke", responses=ADMIN | errors(404))
async def revoke(agent_id: str, admin: AdminActorDep, agents: AgentsDep) -> AgentOut:
    return AgentOut.model_validate(await agents.revoke(agent_id, actor=admin))


@router.post("/{agent_id}/rotate-key", responses=ADMIN | errors(404))
async def rotate_key(agent_id: str, admin: AdminActorDep, agents: AgentsDep) -> AgentKeyOut:
    agent, api_key = await agents.rotate_key(agent_id, actor=admin)
    return AgentKeyOut(agent_id=agent.agent_id, api_key=api_key, status=agent.approval)
