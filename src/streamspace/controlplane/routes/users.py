"""User administration (administrators): list, create, change role, disable and enable,
reset the password, delete. The same :class:`UserService` serves the UI and the CLI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from streamspace.controlplane.deps import AdminActorDep, AdminDep, UsersDep
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.routes.headers import IdempotencyKeyHeader
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import (
    PasswordResetIn,
    PasswordResetOut,
    RoleIn,
    UserCreatedOut,
    UserIn,
    UserOut,
)
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/users",
    tags=["users"],
    responses=AUTHENTICATED | ADMIN,
    dependencies=[Depends(storable_url)],
)
Search = Annotated[
    str | None, Query(max_length=128, description="Only users whose name contains it (any case).")
]


@router.get("", responses=PAGED)
async def list_users(
    request: Request,
    response: Response,
    _admin: AdminDep,
    users: UsersDep,
    paging: PageDep,
    q: Search = None,
) -> list[UserOut]:
    """Users in username order, a page at a time (``Link`` names the next page)."""
    page = await users.list(search=q, cursor=paging.cursor, limit=paging.limit)
    link_next(request, response, page)
    return [UserOut.of(user) for user in page.items]


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY | errors(409))
async def create_user(
    body: UserIn,
    admin: AdminActorDep,
    users: UsersDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> UserCreatedOut:
    """Create a user; without ``password`` one is generated and answered this once. With
    an ``Idempotency-Key``, a retry answers with the user (without a password: it is shown
    in the first answer only) and makes nothing."""
    asked = body.model_dump(exclude={"password"})  # no password in what is kept
    made = await users.create(
        username=body.username,
        password=body.password,
        role=body.role,
        must_change_password=body.must_change_password,
        actor=admin,
        idempotency=Idempotency.of(idempotency_key, "user", asked),
    )
    return UserCreatedOut(**UserOut.of(made.user).model_dump(), password=made.password)


@router.get("/{username}", responses=errors(404))
async def get_user(username: str, _admin: AdminDep, users: UsersDep) -> UserOut:
    return UserOut.of(await users.get(username))


@router.post("/{username}/role", responses=BODY | errors(404, 409))
async def set_role(username: str, body: RoleIn, admin: AdminDep, users: UsersDep) -> UserOut:
    """Make the user an administrator or an ordinary user (not the last administrator)."""
    return UserOut.of(await users.set_role(admin, username, body.role))


@router.post("/{username}/disable", responses=errors(404, 409))
async def disable_user(username: str, admin: AdminDep, users: UsersDep) -> UserOut:
    """No more logins; their tokens are refused at once on every replica, their active
    sessions are stopped and their open viewers closed."""
    return UserOut.of(await users.disable(admin, username))


@router.post("/{username}/enable", responses=errors(404))
async def enable_user(username: str, _admin: AdminDep, users: UsersDep) -> UserOut:
    return UserOut.of(await users.enable(username))


@router.post("/{username}/reset-password", responses=BODY | errors(404, 409))
async def reset_password(
    username: str, body: PasswordResetIn, admin: AdminDep, users: UsersDep
) -> PasswordResetOut:
    """Set a temporary password (given, or generated and answered this once); the user is
    logged out and must choose a new one at their next login."""
    done = await users.reset_password(admin, username, body.password)
    return PasswordResetOut(user=UserOut.of(done.user), password=done.password)


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404, 409))
async def delete_user(username: str, admin: AdminDep, users: UsersDep) -> None:
    """Disable, stop all their sessions (hibernated ones too), then remove the user."""
    await users.delete(admin, username)
