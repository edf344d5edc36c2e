"""The catalog: everybody reads, administrators write."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from streamspace.controlplane.deps import AdminActorDep, TemplatesDep, UserDep
from streamspace.controlplane.errors import Invalid
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.routes.headers import IdempotencyKeyHeader
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import TemplateIn, TemplateOut
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/templates",
    tags=["templates"],
    responses=AUTHENTICATED,
    dependencies=[Depends(storable_url)],
)


@router.get("", responses=PAGED)
async def list_templates(
    _user: UserDep, templates: TemplatesDep, page: PageDep, request: Request, response: Response
) -> list[TemplateOut]:
    """The catalog by name, a page at a time."""
    found = await templates.list(page)
    link_next(request, response, found)
    return [TemplateOut.model_validate(template) for template in found.items]


@router.get("/{name}", responses=errors(404))
async def get_template(name: str, _user: UserDep, templates: TemplatesDep) -> TemplateOut:
    return TemplateOut.model_validate(await templates.get(name))


@router.post("", status_code=status.HTTP_201_CREATED, responses=ADMIN | BODY | errors(409))
async def create_template(
    body: TemplateIn,
    admin: AdminActorDep,
    templates: TemplatesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TemplateOut:
    """Add a template. With an ``Idempotency-Key``, a retry answers the same and adds
    nothing (422 if the key came with another request)."""
    fields = body.model_dump()
    idempotency = Idempotency.of(idempotency_key, "template", fields)
    await templates.create(fields, actor=admin, idempotency=idempotency)
    return TemplateOut.model_validate(body.model_dump())


@router.put("/{name}", responses=ADMIN | BODY | errors(404))
async def replace_template(
    name: str, body: TemplateIn, admin: AdminActorDep, templates: TemplatesDep
) -> TemplateOut:
    if body.name != name:
        raise Invalid("name in body and URL differ")
    await templates.replace(name, body.model_dump(), actor=admin)
    return TemplateOut.model_validate(body.model_dump())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=ADMIN | errors(404))
async def delete_template(name: str, admin: AdminActorDep, templates: TemplatesDep) -> None:
    await templates.delete(name, actor=admin)
