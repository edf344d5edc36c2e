"""FastAPI dependencies: the one service each route needs, and the authenticated user.

The app factory builds every service once and hands them to :func:`provide`; a route names
the service it uses by its ``…Dep`` type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from streamspace.controlplane.agents.service import AgentService
from streamspace.controlplane.agents.socket import AgentSocket
from streamspace.controlplane.audit import Actor, AuditLog
from streamspace.controlplane.auth.api_tokens import ApiTokenService
from streamspace.controlplane.auth.groups import GroupService
from streamspace.controlplane.auth.logins import LoginService
from streamspace.controlplane.auth.users import UserService
from streamspace.controlplane.commands.history import CommandHistory
from streamspace.controlplane.errors import Forbidden
from streamspace.controlplane.health import HealthService
from streamspace.controlplane.sessions.quotas import Quotas
from streamspace.controlplane.sessions.service import SessionService
from streamspace.controlplane.templates.service import TemplateService
from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.vnc_tokens import ConnectTickets
from streamspace.db.models import User
from streamspace.states import UserRole

COOKIE_NAME = "streamspace_token"
_bearer = HTTPBearer(auto_error=False)
_Service = TypeVar("_Service")


def provide(app: FastAPI, *services: object) -> None:
    """Make the services of ``app`` (built once, at its start) available to its routes."""
    app.state.services = {type(service): service for service in services}


def provided(app: FastAPI, kind: type[_Service]) -> _Service:
    """The service of ``kind`` that :func:`provide` was given."""
    service = app.state.services[kind]
    assert isinstance(service, kind)
    return service


def _dependency(kind: type[_Service]) -> Callable[[HTTPConnection], Awaitable[_Service]]:
    async def service(connection: HTTPConnection) -> _Service:
        return provided(connection.app, kind)

    return service


AuditDep = Annotated[AuditLog, Depends(_dependency(AuditLog))]
SessionsDep = Annotated[SessionService, Depends(_dependency(SessionService))]
AgentsDep = Annotated[AgentService, Depends(_dependency(AgentService))]
TemplatesDep = Annotated[TemplateService, Depends(_dependency(TemplateService))]
LoginsDep = Annotated[LoginService, Depends(_dependency(LoginService))]
UsersDep = Annotated[UserService, Depends(_dependency(UserService))]
ApiTokensDep = Annotated[ApiTokenService, Depends(_dependency(ApiTokenService))]
CommandsDep = Annotated[CommandHistory, Depends(_dependency(CommandHistory))]
HealthDep = Annotated[HealthService, Depends(_dependency(HealthService))]
ConnectTicketsDep = Annotated[ConnectTickets, Depends(_dependency(ConnectTickets))]
TunnelsDep = Annotated[Tunnels, Depends(_dependency(Tunnels))]
AgentSocketDep = Annotated[AgentSocket, Depends(_dependency(AgentSocket))]
GroupsDep = Annotated[GroupService, Depends(_dependency(GroupService))]
QuotasDep = Annotated[Quotas, Depends(_dependency(Quotas))]


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address as this replica sees it: the peer, or what a trusted proxy
    (``FORWARDED_ALLOW_IPS``) put in ``X-Forwarded-For``, which uvicorn has applied."""
    return connection.client.host if connection.client else None


AddressDep = Annotated[str | None, Depends(client_address)]


async def presented_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The login token from ``Authorization: Bearer`` or, for the browser, the cookie."""
    if credentials is not None:
        return credentials.credentials
    return request.cookies.get(COOKIE_NAME)


TokenDep = Annotated[str | None, Depends(presented_token)]


async def signed_in(logins: LoginsDep, token: TokenDep) -> User:
    return await logins.authenticate(token)


AccountDep = Annotated[User, Depends(signed_in)]
"""The authenticated user, even one who must change their password first: only for the
routes that user may still use (``auth/me``, ``auth/logout``, ``auth/password``)."""


async def current_user(user: AccountDep) -> User:
    if user.must_change_password:
        raise Forbidden(
            "you must change your password before you go on: "
            "POST /api/v1/auth/password with your current and a new password"
        )
    return user


UserDep = Annotated[User, Depends(current_user)]


async def admin_user(user: UserDep) -> User:
    if user.role != UserRole.ADMIN:
        raise Forbidden("administrators only")
    return user


AdminDep = Annotated[User, Depends(admin_user)]


async def acting_user(user: UserDep, address: AddressDep) -> Actor:
    """The logged-in user as the actor of an audited action."""
    return Actor.of(user, address)


async def acting_admin(admin: AdminDep, address: AddressDep) -> Actor:
    """The logged-in administrator as the actor of an audited action."""
    return Actor.of(admin, address)


ActorDep = Annotated[Actor, Depends(acting_user)]
AdminActorDep = Annotated[Actor, Depends(acting_admin)]
