"""The catalog of templates: everybody reads it, administrators edit it; the default catalog
holds applications that ship in Debian and run on the local platform."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.errors import Conflict, NotFound
from streamspace.controlplane.idempotency import Idempotency, claim_or_recall
from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import Template
from streamspace.db.repo import templates as template_repo
from streamspace.db.repo.pages import Page, PageRequest

_FIRST = PageRequest()

DEFAULT_TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "name": "xterm",
        "display_name": "Terminal (xterm)",
        "description": "A plain X terminal with a shell.",
        "command": ["xterm", "-maximized"],
    },
    {
        "name": "xedit",
        "display_name": "Text editor (xedit)",
        "description": "A simple text editor; files in its home are kept between sessions.",
        "command": ["xedit"],
        "persistent_home": True,
    },
    {
        "name": "xcalc",
        "display_name": "Calculator (xcalc)",
        "description": "A scientific calculator.",
        "command": ["xcalc"],
    },
)
_FIELD_DEFAULTS: dict[str, Any] = {
    "image": "",
    "vnc_port": 5900,
    "resources": {},
    "env": {},
    "platform": None,
    "persistent_home": False,
    "network": "none",  # none of the defaults needs the network: an X terminal or editor
    # The site defaults (SESSION_* settings) decide their lifecycle policies.
    "idle_timeout_minutes": None,
    "idle_action": None,
    "max_age_minutes": None,
    "hibernated_retention_days": None,
    "retention_home": None,
}


class TemplateService:
    """Reads and edits the catalog."""

    def __init__(self, *, db: SessionFactory, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def list(self, page: PageRequest = _FIRST) -> Page[Template]:
        """A page of the catalog, by name."""
        async with reading(self._db) as db:
            return await template_repo.list_templates(db, page)

    async def get(self, name: str) -> Template:
        async with reading(self._db) as db:
            template = await template_repo.get(db, name)
        if template is None:
            raise _missing(name)
        return template

    async def create(
        self, fields: Mapping[str, Any], *, actor: Actor, idempotency: Idempotency | None = None
    ) -> None:
        """Add a template; :class:`Conflict` if its name is taken. With ``idempotency``, a
        retry of a create that made it changes nothing (the answer is the same body)."""
        try:
            async with transaction(self._db) as db:
                if idempotency is not None and actor.id is not None:
                    name = str(fields["name"])
                    made = await claim_or_recall(
                        db, actor.id, idempotency, resource="template", resource_id=name
                    )
                    if made is not None:
                        return
                template_repo.add(db, fields)
                await db.flush()  # a taken name fails here, before the audit row
                await self._record(db, actor, "template.create", fields)
        except ConstraintViolation:
            raise Conflict(f"template {fields['name']!r} already exists") from None

    async def replace(self, name: str, fields: Mapping[str, Any], *, actor: Actor) -> None:
        async with transaction(self._db) as db:
            if await template_repo.replace(db, name, fields) is None:
                raise _missing(name)
            await self._record(db, actor, "template.update", fields)

    async def delete(self, name: str, *, actor: Actor) -> None:
        async with transaction(self._db) as db:
            if not await template_repo.delete(db, name):
                raise _missing(name)
            await self._audit.record(db, actor, "template.delete", target=("template", name))

    async def _record(
        self, db: DbSession, actor: Actor, action: str, fields: Mapping[str, Any]
    ) -> None:
        """What a change set (the template's environment is not shown: it may hold secrets)."""
        shown = {key: fields.get(key) for key in ("image", "platform", "network")}
        target = ("template", str(fields["name"]))
        await self._audit.record(db, actor, action, target=target, detail=shown)

    async def ensure_defaults(self) -> None:
        """Fill an empty catalog with the defaults (an admin's edits are never overwritten)."""
        try:
            async with transaction(self._db) as db:
                if await template_repo.count(db):
                    return
                for fields in DEFAULT_TEMPLATES:
                    template_repo.add(db, _FIELD_DEFAULTS | fields)
        except ConstraintViolation:
            pass  # another replica filled it at the same moment


def _missing(name: str) -> NotFound:
    return NotFound(f"template {name!r} not found")
