"""FastAPI dependencies: the replica's parts and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamspace.controlplane.auth.hashing import digest
from streamspace.controlplane.state import Replica
from streamspace.db.models import User
from streamspace.db.repo import users as user_repo

COOKIE_NAME = "streamspace_token"
_bearer = HTTPBearer(auto_error=False)


async def get_replica(request: Request) -> Replica:
    replica: Replica = request.app.state.replica
    return replica


ReplicaDep = Annotated[Replica, Depends(get_replica)]


async def presented_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The login token from ``Authorization: Bearer`` or, for the browser, the cookie."""
    if credentials is not None:
        return credentials.credentials
    return request.cookies.get(COOKIE_NAME)


async def current_user(
    replica: ReplicaDep, token: Annotated[str | None, Depends(presented_token)]
) -> User:
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "not authenticated: log in first",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token_digest = digest(token)
    user = replica.tokens.get(token_digest)
    if user is None:
        ticket = replica.tokens.ticket()
        async with replica.db() as db:
            found = await user_repo.user_for_token(db, token_digest)
        if found is not None:
            user, expires_at = found
            replica.tokens.put(token_digest, user, expires_at=expires_at, ticket=ticket)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "session expired or token invalid: log in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


UserDep = Annotated[User, Depends(current_user)]


async def admin_user(user: UserDep) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    return user


AdminDep = Annotated[User, Depends(admin_user)]
