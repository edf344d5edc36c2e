"""Login and logout: a bearer token for API clients, the same token as an httpOnly cookie."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status

from streamspace.controlplane.deps import COOKIE_NAME, ReplicaDep, UserDep, presented_token
from streamspace.controlplane.routes.responses import AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import LoginIn, LoginOut, UserOut
from streamspace.controlplane.secrets import DUMMY_HASH, digest, new_secret, verify_password
from streamspace.db.models import utcnow
from streamspace.db.repo import users as user_repo

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=AUTHENTICATED)


@router.post("/login", responses=BODY | errors(429))
async def login(body: LoginIn, replica: ReplicaDep, response: Response) -> LoginOut:
    async with replica.db() as db:
        user = await user_repo.get_by_username(db, body.username)
    valid = await verify_password(user.password_hash if user else DUMMY_HASH, body.password)
    if user is None or not valid:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
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
        secure=replica.settings.cookie_secure,
    )
    return LoginOut(access_token=token, user=UserOut(username=user.username, role=user.role))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    _user: UserDep,
    replica: ReplicaDep,
    response: Response,
    token: Annotated[str | None, Depends(presented_token)],
) -> None:
    if token:
        replica.tokens.forget(digest(token))
        async with replica.db() as db, db.begin():
            await user_repo.delete_token(db, digest(token))
    response.delete_cookie(COOKIE_NAME)


@router.get("/me")
async def me(user: UserDep) -> UserOut:
    return UserOut(username=user.username, role=user.role)
