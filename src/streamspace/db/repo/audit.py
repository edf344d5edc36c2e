"""Queries on ``audit_events``, listed together with ``session_events``; and the audit log.

An action's audit row is written in the action's own transaction (both commit, or neither).
Once that transaction commits, each of its audit rows and session transitions also goes to
the ``streamspace.audit`` logger as one JSON object (for a SIEM); a rolled-back transaction
logs nothing. Session transitions are not copied into ``audit_events``: the hot paths write
their ``session_events`` row once, and :func:`list_entries` reads both tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, event, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as OrmSession

from streamspace.db.models import AuditEvent, Base, SessionEvent
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest, decode, encode

AUDIT_LOG = logging.getLogger("streamspace.audit")
"""One INFO record per committed audit event; its message is a JSON object."""
SYSTEM = "system"
"""The actor name of what nobody in particular did (transitions, policies, the CLI)."""
TRANSITION = "session.transition"
"""The action under which ``session_events`` rows are listed and logged."""

_INSERT = insert(Base.metadata.tables[AuditEvent.__tablename__])
_PENDING = "streamspace.audit.pending"
"""Key in a database session's ``info``: the lines to log when it commits."""


@dataclass(frozen=True)
class Entry:
    """One event of the audit listing: an ``audit_events`` row or a session transition."""

    source: str
    """``audit`` (an action) or ``transition`` (a ``session_events`` row)."""
    id: int
    """Unique within its source."""
    created_at: datetime
    actor_id: str | None
    actor: str
    action: str
    target_kind: str | None
    target_id: str | None
    address: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The event as the one JSON line the audit log carries."""
        return json.dumps(
            {
                "time": self.created_at.isoformat(),
                "action": self.action,
                "actor": self.actor,
                "actor_id": self.actor_id,
                "target_kind": self.target_kind,
                "target_id": self.target_id,
                "address": self.address,
                "detail": self.detail,
            },
            separators=(",", ":"),
            default=str,
        )


@dataclass(frozen=True)
class Filters:
    """What to list: every given field must match (``action`` may end with ``.*``)."""

    actor: str | None = None
    action: str | None = None
    target_kind: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    """Exclusive."""


async def insert_rows(db: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write audit rows (``AuditEvent`` column values) in the caller's transaction; each
    is logged once it commits."""
    if not rows:
        return
    await db.execute(_INSERT, [dict(row) for row in rows])
    if AUDIT_LOG.isEnabledFor(logging.INFO):
        log_after_commit(db, [_entry_of_row(0, row).line() for row in rows])


def log_transitions(db: AsyncSession, events: Sequence[Mapping[str, Any]]) -> None:
    """Log these ``session_events`` values (being written in ``db``) once ``db`` commits."""
    if AUDIT_LOG.isEnabledFor(logging.INFO) and events:
        log_after_commit(db, [_transition(0, event).line() for event in events])


def log_after_commit(db: AsyncSession, lines: Sequence[str]) -> None:
    db.info.setdefault(_PENDING, []).extend(lines)


@event.listens_for(OrmSession, "after_commit")
def _committed(session: OrmSession) -> None:
    for line in session.info.pop(_PENDING, ()):
        AUDIT_LOG.info("%s", line)


@event.listens_for(OrmSession, "after_rollback")
def _rolled_back(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)


_AUDIT_ORDER = Keyset(
    "audit", Key(AuditEvent.created_at, datetime), Key(AuditEvent.id, int), descending=True
)
_TRANSITION_ORDER = Keyset(
    "audit", Key(SessionEvent.created_at, datetime), Key(SessionEvent.id, int), descending=True
)
_CURSOR_KINDS = (datetime, str, int)
# At equal times transitions ("t") come before actions ("a"): the order is
# (created_at, source letter, id), newest first.
_LETTER = {"audit": "a", "transition": "t"}


async def list_entries(db: AsyncSession, filters: Filters, page: PageRequest) -> Page[Entry]:
    """A page of audit events and session transitions matching ``filters``, newest first.

    Each table is read along its ``(created_at, id)`` index from the cursor; the two
    pages are merged.
    """
    after = None if page.cursor is None else decode("audit", page.cursor, _CURSOR_KINDS)
    found: list[Entry] = []
    audit_query = _audit_query(filters)
    if audit_query is not None:
        audit_query = _after(audit_query, _AUDIT_ORDER, "a", after, AuditEvent.created_at)
        audit_query = audit_query.order_by(*_AUDIT_ORDER.order_by()).limit(page.limit + 1)
        found += [_entry_of_row(row.id, _columns(row)) for row in await db.scalars(audit_query)]
    transition_query = _transition_query(filters)
    if transition_query is not None:
        transition_query = _after(
            transition_query, _TRANSITION_ORDER, "t", after, SessionEvent.created_at
        )
        transition_query = transition_query.order_by(*_TRANSITION_ORDER.order_by())
        transition_query = transition_query.limit(page.limit + 1)
        found += [_transition(row.id, _columns(row)) for row in await db.scalars(transition_query)]
    found.sort(key=lambda e: (e.created_at, _LETTER[e.source], e.id), reverse=True)
    items = found[: page.limit]
    if len(found) <= page.limit:
        return Page(items)
    last = items[-1]
    return Page(items, encode("audit", (last.created_at, _LETTER[last.source], last.id)))


def _after(
    query: Any, order: Keyset, letter: str, after: tuple[Any, ...] | None, created_at: Any
) -> Any:
    """Restrict one table's query to the rows after the cursor in the merged order."""
    if after is None:
        return query
    moment, cursor_letter, row_id = after
    clause: ColumnElement[bool]
    if letter == cursor_letter:
        clause = order.after((moment, row_id))
    elif letter < cursor_letter:  # this table's rows at the cursor's time come after it
        clause = created_at <= moment
    else:
        clause = created_at < moment
    return query.where(clause)


def _audit_query(filters: Filters) -> Any:
    conditions: list[ColumnElement[bool]] = []
    if filters.actor is not None:
        conditions.append(AuditEvent.actor == filters.actor)
    if filters.action is not None:
        if filters.action.endswith(".*"):
            conditions.append(AuditEvent.action.startswith(filters.action[:-1], autoescape=True))
        else:
            conditions.append(AuditEvent.action == filters.action)
    if filters.target_kind is not None:
        conditions.append(AuditEvent.target_kind == filters.target_kind)
    if filters.target_id is not None:
        conditions.append(AuditEvent.target_id == filters.target_id)
    if filters.since is not None:
        conditions.append(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(AuditEvent.created_at < filters.until)
    return select(AuditEvent).where(*conditions)


def _transition_query(filters: Filters) -> Any:
    """The query on ``session_events``, or ``None`` if the filters leave none of them."""
    action = filters.action
    if action is not None and not (
        action == TRANSITION or (action.endswith(".*") and TRANSITION.startswith(action[:-1]))
    ):
        return None
    if filters.actor not in (None, SYSTEM) or filters.target_kind not in (None, "session"):
        return None
    conditions: list[ColumnElement[bool]] = []
    if filters.target_id is not None:
        conditions.append(SessionEvent.session_id == filters.target_id)
    if filters.since is not None:
        conditions.append(SessionEvent.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(SessionEvent.created_at < filters.until)
    return select(SessionEvent).where(*conditions)


def _columns(row: Base) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def _entry_of_row(row_id: int, row: Mapping[str, Any]) -> Entry:
    return Entry(
        source="audit",
        id=row_id,
        created_at=row["created_at"],
        actor_id=row["actor_id"],
        actor=row["actor"],
        action=row["action"],
        target_kind=row["target_kind"],
        target_id=row["target_id"],
        address=row["address"],
        detail=dict(row["detail"] or {}),
    )


def _transition(row_id: int, values: Mapping[str, Any]) -> Entry:
    """A ``session_events`` row as an audit entry."""
    return Entry(
        source="transition",
        id=row_id,
        created_at=values["created_at"],
        actor_id=None,
        actor=SYSTEM,
        action=TRANSITION,
        target_kind="session",
        target_id=values["session_id"],
        address=None,
        detail={
            "from": values["from_state"],
            "to": values["to_state"],
            "reason": values.get("detail"),
        },
    )
