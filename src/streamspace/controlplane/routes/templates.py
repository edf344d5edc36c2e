"""The catalog: everybody reads, administrators write."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy.exc import IntegrityError

from streamspace.controlplane.deps import AdminDep, ReplicaDep, UserDep
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import TemplateIn, TemplateOut
from streamspace.controlplane.routes.text import storable_url
from streamspace.db.models import Template
from streamspace.db.repo import templates as template_repo

router = APIRouter(
    prefix="/api/v1/templates",
    tags=["templates"],
    responses=AUTHENTICATED,
    dependencies=[Depends(storable_url)],
)


@router.get("")
async def list_templates(_user: UserDep, replica: ReplicaDep) -> list[TemplateOut]:
    async with replica.db() as db:
        return [TemplateOut.model_validate(t) for t in await template_repo.list_templates(db)]


@router.get("/{name}", responses=errors(404))
async def get_template(name: str, _user: UserDep, replica: ReplicaDep) -> TemplateOut:
    async with replica.db() as db:
        template = await template_repo.get(db, name)
    if template is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"template {name!r} not found")
    return TemplateOut.model_validate(template)


@router.post("", status_code=status.HTTP_201_CREATED, responses=ADMIN | BODY | errors(409))
async def create_template(body: TemplateIn, _admin: AdminDep, replica: ReplicaDep) -> TemplateOut:
    try:
        async with replica.db() as db, db.begin():
            db.add(Template(**body.model_dump()))
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"template {body.name!r} already exists"
        ) from None
    return TemplateOut.model_validate(body.model_dump())


@router.put("/{name}", responses=ADMIN | BODY | errors(404))
async def replace_template(
    name: str, body: TemplateIn, _admin: AdminDep, replica: ReplicaDep
) -> TemplateOut:
    if body.name != name:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "name in body and URL differ")
    async with replica.db() as db, db.begin():
        template = await template_repo.get(db, name)
        if template is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"template {name!r} not found")
        for field, value in body.model_dump().items():
            setattr(template, field, value)
    return TemplateOut.model_validate(body.model_dump())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=ADMIN | errors(404))
async def delete_template(name: str, _admin: AdminDep, replica: ReplicaDep) -> None:
    async with replica.db() as db, db.begin():
        template = await template_repo.get(db, name)
        if template is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"template {name!r} not found")
        await db.delete(template)
