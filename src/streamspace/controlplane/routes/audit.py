"""The audit log (administrators): actions and session transitions, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from streamspace.controlplane.deps import AdminDep, AuditDep
from streamspace.controlplane.routes import text
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED
from streamspace.controlplane.routes.schemas import AuditEventOut
from streamspace.controlplane.routes.text import storable_url
from streamspace.db.repo.audit import Filters

router = APIRouter(
    prefix="/api/v1/audit",
    tags=["audit"],
    responses=AUTHENTICATED | ADMIN,
    dependencies=[Depends(storable_url)],
)

_TIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
"""ISO 8601 with a zone (``Z`` or an offset): a time without one would be ambiguous."""
_ACTION = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$"


def audit_filters(
    actor: Annotated[
        str | None,
        Query(max_length=128, pattern=text.NO_NUL_PATTERN, description="A username, or system."),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=_ACTION,
            description="An action (`session.stop`), or all of a kind (`session.*`).",
        ),
    ] = None,
    target_kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    target_id: Annotated[str | None, Query(max_length=255, pattern=text.NO_NUL_PATTERN)] = None,
    since: Annotated[
        str | None, Query(pattern=_TIME, description="From this time on (ISO 8601, with a zone).")
    ] = None,
    until: Annotated[
        str | None, Query(pattern=_TIME, description="Before this time (ISO 8601, with a zone).")
    ] = None,
) -> Filters:
    return Filters(
        actor=actor,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        since=_utc(since, "since"),
        until=_utc(until, "until"),
    )


def _utc(text: str | None, name: str) -> datetime | None:
    """The time ``text`` names, in UTC (as stored); 422 for one that does not exist (month
    13) or has no UTC equivalent (year 1 east of UTC)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        error = {"loc": ("query", name), "msg": "not a time", "type": "datetime_parsing"}
        raise RequestValidationError([error]) from None


@router.get("", responses=PAGED)
async def list_audit(
    _admin: AdminDep,
    audit: AuditDep,
    filters: Annotated[Filters, Depends(audit_filters)],
    page: PageDep,
    request: Request,
    response: Response,
) -> list[AuditEventOut]:
    """Who did what, when, from where, newest first, a page at a time; every given filter
    must match. Session transitions are listed as ``session.transition`` by ``system``."""
    found = await audit.list(filters, page)
    link_next(request, response, found)
    return [AuditEventOut.model_validate(entry) for entry in found.items]
