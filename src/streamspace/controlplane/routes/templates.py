"""The catalog: everybody reads, administrators write."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from streamspace.controlplane.deps import AdminDep, TemplatesDep, UserDep
from streamspace.controlplane.errors import Invalid
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import TemplateIn, TemplateOut
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/templates",
    tags=["templates"],
    responses=AUTHENTICATED,
    dependencies=[Depends(storable_url)],
)


@router.get("")
async def list_templates(_user: UserDep, templates: TemplatesDep) -> list[TemplateOut]:
    return [TemplateOut.model_validate(t) for t in await templates.list()]


@router.get("/{name}", responses=errors(404))
async def get_template(name: str, _user: UserDep, templates: TemplatesDep) -> TemplateOut:
    return TemplateOut.model_validate(await templates.get(name))


@router.post("", status_code=status.HTTP_201_CREATED, responses=ADMIN | BODY | errors(409))
async def create_template(
    body: TemplateIn, _admin: AdminDep, templates: TemplatesDep
) -> TemplateOut:
    await templates.create(body.model_dump())
    return TemplateOut.model_validate(body.model_dump())


@router.put("/{name}", responses=ADMIN | BODY | errors(404))
async def replace_template(
    name: str, body: TemplateIn, _admin: AdminDep, templates: TemplatesDep
) -> TemplateOut:
    if body.name != name:
        raise Invalid("name in body and URL differ")
    await templates.replace(name, body.model_dump())
    return TemplateOut.model_validate(body.model_dump())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=ADMIN | errors(404))
async def delete_template(name: str, _admin: AdminDep, templates: TemplatesDep) -> None:
    await templates.delete(name)
