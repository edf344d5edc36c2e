"""Queries on ``templates`` (the catalog)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Template


async def list_templates(db: AsyncSession) -> Sequence[Template]:
    return (await db.scalars(select(Template).order_by(Template.name))).all()


async def get(db: AsyncSession, name: str) -> Template | None:
    return await db.get(Template, name)


async def count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Template)) or 0)
