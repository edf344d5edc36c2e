"""Login and logout: a bearer token for API clients, the same token as an httpOnly cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from streamspace.controlplane.audit import Actor
from streamspace.controlplane.deps import (
    COOKIE_NAME,
    AddressDep,
    LoginsDep,
    UserDep,
    client_address,
    presented_token,
)
from streamspace.controlplane.routes.responses import AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import LoginIn, LoginOut, UserOut

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=AUTHENTICATED)


@router.post("/login", responses=BODY | errors(429))
async def login(body: LoginIn, request: Request, logins: LoginsDep, response: Response) -> LoginOut:
    address = client_address(request) or "unknown"
    done = await logins.login(body.username, body.password, address=address)
    response.set_cookie(
        COOKIE_NAME,
        done.token,
        max_age=int(done.ttl),
        httponly=True,
        samesite="strict",
        secure=logins.cookie_secure(request.url.scheme),
    )
    user = done.user
    return LoginOut(access_token=done.token, user=UserOut(username=user.username, role=user.role))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    user: UserDep,
    request: Request,
    logins: LoginsDep,
    response: Response,
    address: AddressDep,
    token: Annotated[str | None, Depends(presented_token)],
) -> None:
    if token:
        await logins.logout(token, actor=Actor.of(user, address))
    response.delete_cookie(
        COOKIE_NAME,
        httponly=True,
        samesite="strict",
        secure=logins.cookie_secure(request.url.scheme),
    )


@router.get("/me")
async def me(user: UserDep) -> UserOut:
    return UserOut(username=user.username, role=user.role)
