"""Groups of users and their quotas: the one service behind the REST API, the admin UI and
``streamspace groups``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamspace.controlplane.audit.log import SYSTEM, Actor, AuditLog
from streamspace.controlplane.errors import Conflict, Invalid, NotFound
from streamspace.controlplane.idempotency import Idempotency, claim_or_recall
from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import Group, User
from streamspace.db.repo import groups as group_repo
from streamspace.db.repo import templates as template_repo
from streamspace.db.repo import users as user_repo
from streamspace.db.repo.pages import Page, PageRequest

FIELDS = frozenset(
    {
        "description",
        "max_running_sessions",
        "max_hibernated_sessions",
        "max_session_minutes",
        "allowed_templates",
    }
)
"""What :meth:`GroupService.update` may change (the name stays)."""
_FIRST = PageRequest()


@dataclass(frozen=True)
class GroupView:
    """A group and the usernames of its members."""

    group: Group
    members: list[str]


class GroupService:
    """Creates, changes and deletes groups and their memberships (administrators only: the
    routes check)."""

    def __init__(self, *, db: SessionFactory, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def list(self, page: PageRequest = _FIRST) -> Page[GroupView]:
        """A page of the groups (by name) with their members."""
        async with reading(self._db) as db:
            groups = await group_repo.list_groups(db, page)
            members = await group_repo.members(db, [group.id for group in groups.items])
        return Page([GroupView(group, members[group.id]) for group in groups.items], groups.next)

    async def get(self, name: str) -> GroupView:
        async with reading(self._db) as db:
            return await _view(db, await _group(db, name))

    async def create(
        self,
        name: str,
        fields: Mapping[str, Any],
        *,
        actor: Actor = SYSTEM,
        idempotency: Idempotency | None = None,
    ) -> GroupView:
        """A new group; :class:`Conflict` if the name is taken, :class:`Invalid` if it
        allows a template that does not exist. With ``idempotency``, a retry of a create
        that made it answers with the group as it is."""
        _known_fields(fields)
        try:
            async with transaction(self._db) as db:
                if idempotency is not None and actor.id is not None:
                    made = await claim_or_recall(
                        db, actor.id, idempotency, resource="group", resource_id=name
                    )
                    if made is not None:
                        return await _view(db, await _group(db, made))
                await _check_templates(db, fields.get("allowed_templates"))
                if await group_repo.get(db, name) is not None:
                    raise _taken(name)
                group = group_repo.add(db, {"description": "", **fields, "name": name})
                await db.flush()  # a taken name fails here, before the audit row
                await self._record(db, actor, "group.create", name, fields)
                return GroupView(group, [])
        except ConstraintViolation:
            raise _taken(name) from None

    async def update(
        self, name: str, fields: Mapping[str, Any], *, actor: Actor = SYSTEM
    ) -> GroupView:
        """Change the given fields of a group (``None`` clears a limit)."""
        _known_fields(fields)
        async with transaction(self._db) as db:
            group = await _group(db, name)
            await _check_templates(db, fields.get("allowed_templates"))
            group_repo.update(group, fields)
            await self._record(db, actor, "group.update", name, fields)
            return await _view(db, group)

    async def delete(self, name: str, *, actor: Actor = SYSTEM) -> None:
        async with transaction(self._db) as db:
            await group_repo.delete_group(db, await _group(db, name))
            await self._record(db, actor, "group.delete", name)

    async def add_member(self, name: str, username: str, *, actor: Actor = SYSTEM) -> GroupView:
        """Make the user a member (already one: nothing changes)."""
        async with transaction(self._db) as db:
            group = await _group(db, name)
            await group_repo.add_member(db, group, await _user(db, username))
            await self._record(db, actor, "group.add_member", name, {"username": username})
            return await _view(db, group)

    async def remove_member(self, name: str, username: str, *, actor: Actor = SYSTEM) -> GroupView:
        async with transaction(self._db) as db:
            group = await _group(db, name)
            if not await group_repo.remove_member(db, group, await _user(db, username)):
                raise NotFound(f"user {username!r} is not a member of group {name!r}")
            await self._record(db, actor, "group.remove_member", name, {"username": username})
            return await _view(db, group)

    async def _record(
        self,
        db: DbSession,
        actor: Actor,
        action: str,
        name: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        shown = {
            k: v if not isinstance(v, list) else ",".join(v) for k, v in (detail or {}).items()
        }
        await self._audit.record(db, actor, action, target=("group", name), detail=shown)


async def _view(db: DbSession, group: Group) -> GroupView:
    return GroupView(group, (await group_repo.members(db, [group.id]))[group.id])


async def _group(db: DbSession, name: str) -> Group:
    group = await group_repo.get(db, name)
    if group is None:
        raise NotFound(f"group {name!r} not found")
    return group


async def _user(db: DbSession, username: str) -> User:
    user = await user_repo.get_by_username(db, username)
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


async def _check_templates(db: DbSession, names: list[str] | None) -> None:
    if not names:
        return
    known = await template_repo.get_many(db, set(names))
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise Invalid(f"no such template: {', '.join(repr(name) for name in unknown)}")


def _known_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"not fields of a group: {sorted(unknown)}")


def _taken(name: str) -> Conflict:
    return Conflict(f"group {name!r} already exists")
