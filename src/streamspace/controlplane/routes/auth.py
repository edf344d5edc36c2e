"""Login and logout: a bearer token for API clients, the same token as an httpOnly cookie."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from streamspace.controlplane.auth.hashing import DUMMY_HASH, digest, new_secret, verify_password
from streamspace.controlplane.auth.throttle import retry_after_header
from streamspace.controlplane.deps import COOKIE_NAME, ReplicaDep, UserDep, presented_token
from streamspace.controlplane.routes.responses import AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import LoginIn, LoginOut, UserOut
from streamspace.controlplane.state import Replica
from streamspace.db.models import utcnow
from streamspace.db.repo import users as user_repo

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=AUTHENTICATED)


def _cookie_secure(request: Request, replica: Replica) -> bool:
    """``Secure`` over HTTPS (the scheme a trusted proxy reports counts) or when forced."""
    return replica.settings.cookie_secure or request.url.scheme == "https"


@router.post("/login", responses=BODY | errors(429))
async def login(
    body: LoginIn, request: Request, replica: ReplicaDep, response: Response
) -> LoginOut:
    address = request.client.host if request.client else "unknown"
    throttle = replica.throttle
    user_subject = throttle.policy.user(body.username)
    subjects = [user_subject, throttle.policy.address(address)]
    wait = await throttle.retry_after(subjects)
    if wait > 0:
        seconds = retry_after_header(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins: try again in {seconds} s",
            headers={"Retry-After": seconds},
        )
    async with replica.db() as db:
        user = await user_repo.get_by_username(db, body.username)
    valid = await verify_password(user.password_hash if user else DUMMY_HASH, body.password)
    if user is None or not valid:
        await throttle.failed(subjects)
        log.warning("failed login for user %r from %s", body.username, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    await throttle.succeeded(user_subject)
    token = new_secret("sst")
    ttl = replica.settings.session_token_ttl
    async with replica.db() as db, db.begin():
        user_repo.add_token(
            db, user=user, token_hash=digest(token), expires_at=utcnow() + timedelta(seconds=ttl)
        )
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(ttl),
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request, replica),
    )
    return LoginOut(access_token=token, user=UserOut(username=user.username, role=user.role))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    _user: UserDep,
    request: Request,
    replica: ReplicaDep,
    response: Response,
    token: Annotated[str | None, Depends(presented_token)],
) -> None:
    if token:
        async with replica.db() as db, db.begin():
            await user_repo.delete_token(db, digest(token))
        await replica.tokens.revoke(digest(token))  # after the delete: nobody re-reads it
    response.delete_cookie(
        COOKIE_NAME, httponly=True, samesite="strict", secure=_cookie_secure(request, replica)
    )


@router.get("/me")
async def me(user: UserDep) -> UserOut:
    return UserOut(username=user.username, role=user.role)
