"""Queries on ``templates`` (the catalog)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Template
from streamspace.db.repo.lists import padded
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest

_BY_NAMES = select(Template).where(Template.name.in_(bindparam("names", expanding=True)))
"""Built once: constructing a statement costs more than running it."""


_BY_NAME = Keyset("templates", Key(Template.name, str))


async def list_templates(db: AsyncSession, page: PageRequest) -> Page[Template]:
    """A page of the catalog, by name."""
    found = (await db.scalars(_BY_NAME.select(select(Template), page))).all()
    return _BY_NAME.page(found, page, lambda template: (template.name,))


async def get(db: AsyncSession, name: str) -> Template | None:
    return await db.get(Template, name)


async def get_many(db: AsyncSession, names: Collection[str]) -> dict[str, Template]:
    """Templates by name (names that do not exist are left out)."""
    found = await db.scalars(_BY_NAMES, {"names": padded(names)})
    return {template.name: template for template in found}


async def count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Template)) or 0)


def add(db: AsyncSession, fields: Mapping[str, Any]) -> Template:
    """A new template (a taken name breaks a constraint at the commit)."""
    template = Template(**fields)
    db.add(template)
    return template


async def replace(db: AsyncSession, name: str, fields: Mapping[str, Any]) -> Template | None:
    """Overwrite the template's fields; ``None`` if there is no such template."""
    template = await get(db, name)
    if template is not None:
        for field, value in fields.items():
            setattr(template, field, value)
    return template


async def delete(db: AsyncSession, name: str) -> bool:
    """Delete the template; ``False`` if there was none."""
    template = await get(db, name)
    if template is None:
        return False
    await db.delete(template)
    return True
