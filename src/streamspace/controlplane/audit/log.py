"""Recording actions in the audit log, and reading it back.

One call records an action: ``await audit.record(db, actor, "template.update",
target=("template", name), detail={...})`` inside the transaction that makes the change,
so the change and its row commit together (a crash loses both or neither). The JSON line
for a SIEM follows once the transaction commits (:mod:`streamspace.db.repo.audit`).
Actions outside any transaction (a failed login) use :meth:`AuditLog.record_alone`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.models import User, utcnow
from streamspace.db.repo import audit as audit_repo
from streamspace.db.repo.pages import Page, PageRequest

MAX_DETAIL_FIELDS = 12
MAX_DETAIL_TEXT = 256
"""Characters of one detail value at most (longer ones are cut)."""
_SECRET_WORDS = ("password", "token", "secret", "key")
"""A detail field whose name contains one of these is never written (nor logged)."""
MAX_ADDRESS = 64


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (``id`` and name) or the system (no id), and from which address."""

    id: str | None
    name: str
    address: str | None = None

    @classmethod
    def of(cls, user: User, address: str | None = None) -> Actor:
        return cls(id=user.id, name=user.username, address=address)


SYSTEM = Actor(id=None, name=audit_repo.SYSTEM)
"""What nobody in particular did: the CLI, start-up, policies."""


@dataclass(frozen=True)
class Action:
    """One action to record (:meth:`AuditLog.record_many`)."""

    actor: Actor
    action: str
    target: tuple[str, str] | None = None
    """``(kind, id)``: ``("session", "…")``, ``("template", "xterm")``."""
    detail: Mapping[str, Any] | None = None


class AuditLog:
    """Writes audit rows in the callers' transactions and lists them (with transitions)."""

    def __init__(self, *, db: SessionFactory) -> None:
        self._db = db

    async def record(
        self,
        db: DbSession,
        actor: Actor,
        action: str,
        *,
        target: tuple[str, str] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record ``action`` in ``db``'s transaction (it commits, or not, with the change)."""
        await self.record_many(db, [Action(actor, action, target, detail)])

    async def record_many(self, db: DbSession, actions: Sequence[Action]) -> None:
        """Record several actions in ``db``'s transaction with one INSERT."""
        now = utcnow()
        await audit_repo.insert_rows(db, [_row(action, now) for action in actions])

    async def record_alone(
        self,
        actor: Actor,
        action: str,
        *,
        target: tuple[str, str] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an action that changed nothing else (e.g. a refused login) on its own."""
        async with transaction(self._db) as db:
            await self.record(db, actor, action, target=target, detail=detail)

    async def list(self, filters: audit_repo.Filters, page: PageRequest) -> Page[audit_repo.Entry]:
        """A page of events (actions and session transitions), newest first."""
        async with reading(self._db) as db:
            return await audit_repo.list_entries(db, filters, page)


def _row(action: Action, now: Any) -> dict[str, Any]:
    kind, target_id = action.target or (None, None)
    address = action.actor.address
    return {
        "created_at": now,
        "actor_id": action.actor.id,
        "actor": action.actor.name[:128],
        "action": action.action,
        "target_kind": kind,
        "target_id": None if target_id is None else target_id[:255],
        "address": None if address is None else address[:MAX_ADDRESS],
        "detail": bounded(action.detail or {}),
    }


def bounded(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A few small fields of ``detail``: at most :data:`MAX_DETAIL_FIELDS`, text cut to
    :data:`MAX_DETAIL_TEXT`, anything named like a secret left out."""
    kept: dict[str, Any] = {}
    for name, value in detail.items():
        if len(kept) == MAX_DETAIL_FIELDS:
            break
        if any(word in name.lower() for word in _SECRET_WORDS):
            continue
        if value is None or isinstance(value, bool | int | float):
            kept[name[:64]] = value
        else:
            kept[name[:64]] = str(value)[:MAX_DETAIL_TEXT]
    return kept
