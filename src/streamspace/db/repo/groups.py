"""Queries on ``groups`` and ``group_members``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Group, GroupMember, User, utcnow
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest


async def get(db: AsyncSession, name: str) -> Group | None:
    return await db.scalar(select(Group).where(Group.name == name))


_BY_NAME = Keyset("groups", Key(Group.name, str))


async def list_groups(db: AsyncSession, page: PageRequest) -> Page[Group]:
    """A page of the groups, by name."""
    found = (await db.scalars(_BY_NAME.select(select(Group), page))).all()
    return _BY_NAME.page(found, page, lambda group: (group.name,))


def add(db: AsyncSession, fields: Mapping[str, Any]) -> Group:
    """A new group (a taken name breaks a constraint at the commit)."""
    group = Group(**fields, created_at=utcnow())
    db.add(group)
    return group


def update(group: Group, fields: Mapping[str, Any]) -> None:
    for field, value in fields.items():
        setattr(group, field, value)


async def delete_group(db: AsyncSession, group: Group) -> None:
    """Delete the group; its memberships go with it (ON DELETE CASCADE)."""
    await db.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    await db.delete(group)


async def members(db: AsyncSession, group_ids: Sequence[str]) -> dict[str, list[str]]:
    """The usernames of each group's members (by group id), sorted."""
    rows = await db.execute(
        select(GroupMember.group_id, User.username)
        .join(User, User.id == GroupMember.user_id)
        .where(GroupMember.group_id.in_(list(group_ids)))
        .order_by(User.username)
    )
    found: dict[str, list[str]] = {group_id: [] for group_id in group_ids}
    for group_id, username in rows:
        found[group_id].append(username)
    return found


async def add_member(db: AsyncSession, group: Group, user: User) -> None:
    """Make ``user`` a member of ``group`` (already one: nothing changes)."""
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    await db.execute(
        insert(GroupMember)
        .values(group_id=group.id, user_id=user.id)
        .on_conflict_do_nothing(index_elements=[GroupMember.group_id, GroupMember.user_id])
    )


async def remove_member(db: AsyncSession, group: Group, user: User) -> bool:
    """``False`` if ``user`` was not a member."""
    result = await db.execute(
        delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id == user.id)
    )
    return bool(getattr(result, "rowcount", 0))
