"""Groups of users and their quotas (administrators only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from streamspace.controlplane.deps import AdminActorDep, AdminDep, GroupsDep
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.routes.headers import IdempotencyKeyHeader
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import GroupIn, GroupOut, GroupPatch
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/groups",
    tags=["groups"],
    responses=AUTHENTICATED | ADMIN,
    dependencies=[Depends(storable_url)],
)


@router.get("", responses=PAGED)
async def list_groups(
    _admin: AdminDep, groups: GroupsDep, page: PageDep, request: Request, response: Response
) -> list[GroupOut]:
    """The groups by name, a page at a time."""
    found = await groups.list(page)
    link_next(request, response, found)
    return [GroupOut.of(view) for view in found.items]


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY | errors(409))
async def create_group(
    body: GroupIn,
    admin: AdminActorDep,
    groups: GroupsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> GroupOut:
    """A new group; 422 if it allows a template that does not exist. With an
    ``Idempotency-Key``, a retry answers with the group and makes nothing."""
    fields = body.model_dump(exclude={"name"})
    idempotency = Idempotency.of(idempotency_key, "group", body.model_dump())
    return GroupOut.of(await groups.create(body.name, fields, actor=admin, idempotency=idempotency))


@router.get("/{name}", responses=errors(404))
async def get_group(name: str, _admin: AdminDep, groups: GroupsDep) -> GroupOut:
    return GroupOut.of(await groups.get(name))


@router.patch("/{name}", responses=BODY | errors(404))
async def update_group(
    name: str, body: GroupPatch, admin: AdminActorDep, groups: GroupsDep
) -> GroupOut:
    """Change the fields the body names; ``null`` clears a limit (the site default applies)."""
    return GroupOut.of(await groups.update(name, body.changes(), actor=admin))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def delete_group(name: str, admin: AdminActorDep, groups: GroupsDep) -> None:
    """Delete the group; its members stay, without it."""
    await groups.delete(name, actor=admin)


@router.put("/{name}/members/{username}", responses=errors(404))
async def add_member(name: str, username: str, admin: AdminActorDep, groups: GroupsDep) -> GroupOut:
    """Make the user a member (already one: nothing changes)."""
    return GroupOut.of(await groups.add_member(name, username, actor=admin))


@router.delete("/{name}/members/{username}", responses=errors(404))
async def remove_member(
    name: str, username: str, admin: AdminActorDep, groups: GroupsDep
) -> GroupOut:
    return GroupOut.of(await groups.remove_member(name, username, actor=admin))
