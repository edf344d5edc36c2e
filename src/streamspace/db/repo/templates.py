"""Queries on ``templates`` (the catalog)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Template
from streamspace.db.repo.lists import padded

_BY_NAMES = select(Template).where(Template.name.in_(bindparam("names", expanding=True)))
"""Built once: constructing a statement costs more than running it."""


async def list_templates(db: AsyncSession) -> Sequence[Template]:
    return (await db.scalars(select(Template).order_by(Template.name))).all()


async def get(db: AsyncSession, name: str) -> Template | None:
    return await db.get(Template, name)


async def get_many(db: AsyncSession, names: Collection[str]) -> dict[str, Template]:
    """Templates by name (names that do not exist are left out)."""
    found = await db.scalars(_BY_NAMES, {"names": padded(names)})
    return {template.name: template for template in found}


async def count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Template)) or 0)
