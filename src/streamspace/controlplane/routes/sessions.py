"""Sessions of the current user (administrators: everybody's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from streamspace.controlplane.deps import AddressDep, SessionsDep, UserDep
from streamspace.controlplane.routes.headers import IdempotencyKeyHeader
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import SessionEventOut, SessionIn, SessionOut
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(
    prefix="/api/v1/sessions",
    tags=["sessions"],
    responses=AUTHENTICATED,
    dependencies=[Depends(storable_url)],
)


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY | errors(404, 409, 429))
async def create_session(
    body: SessionIn,
    user: UserDep,
    sessions: SessionsDep,
    address: AddressDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> SessionOut:
    """Launch a template; 403 for a template the user's groups may not launch, 429 when the
    user runs as many sessions as their quota allows, 503 when no agent can take it (nothing
    is created then, and an ``Idempotency-Key`` stays unused).

    With an ``Idempotency-Key``, a retry returns the session the first request made, and
    the same key with another template is refused (422).
    """
    created = await sessions.create(
        user, body.template, idempotency_key=idempotency_key, address=address
    )
    return SessionOut.of(created, viewer=user, warning=sessions.idle_warning)


@router.get("", responses=PAGED)
async def list_sessions(
    user: UserDep,
    sessions: SessionsDep,
    page: PageDep,
    request: Request,
    response: Response,
    mine: Annotated[
        bool, Query(description="Only your own sessions (administrators see all otherwise).")
    ] = False,
) -> list[SessionOut]:
    """Your sessions (an administrator's: everybody's), newest first, a page at a time."""
    found = await sessions.list(user, page, mine=mine)
    link_next(request, response, found)
    return [
        SessionOut.of(session, viewer=user, warning=sessions.idle_warning)
        for session in found.items
    ]


@router.get("/{session_id}", responses=errors(404))
async def get_session(session_id: str, user: UserDep, sessions: SessionsDep) -> SessionOut:
    return SessionOut.of(
        await sessions.get(user, session_id), viewer=user, warning=sessions.idle_warning
    )


@router.delete("/{session_id}", status_code=status.HTTP_202_ACCEPTED, responses=errors(404, 409))
async def stop_session(
    session_id: str, user: UserDep, sessions: SessionsDep, address: AddressDep
) -> SessionOut:
    return SessionOut.of(
        await sessions.stop(user, session_id, address), viewer=user, warning=sessions.idle_warning
    )


@router.post(
    "/{session_id}/hibernate",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(404, 409, 429),
)
async def hibernate_session(
    session_id: str, user: UserDep, sessions: SessionsDep, address: AddressDep
) -> SessionOut:
    """429 when its owner keeps as many hibernated sessions as their quota allows."""
    return SessionOut.of(
        await sessions.hibernate(user, session_id, address),
        viewer=user,
        warning=sessions.idle_warning,
    )


@router.post(
    "/{session_id}/wake", status_code=status.HTTP_202_ACCEPTED, responses=errors(404, 409, 429)
)
async def wake_session(
    session_id: str, user: UserDep, sessions: SessionsDep, address: AddressDep
) -> SessionOut:
    """Start a hibernated session again; 429 when its owner runs as many sessions as their
    quota allows."""
    return SessionOut.of(
        await sessions.wake(user, session_id, address), viewer=user, warning=sessions.idle_warning
    )


@router.post("/{session_id}/keep", responses=errors(404, 409))
async def keep_session(
    session_id: str, user: UserDep, sessions: SessionsDep, address: AddressDep
) -> SessionOut:
    """The owner is still there: the idle timeout starts again (the viewer's *Keep
    session* button). Only the session's owner may (403 for others); 409 unless running."""
    return SessionOut.of(
        await sessions.keep(user, session_id, address), viewer=user, warning=sessions.idle_warning
    )


@router.get("/{session_id}/events", responses=PAGED | errors(404))
async def session_events(
    session_id: str,
    user: UserDep,
    sessions: SessionsDep,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[SessionEventOut]:
    """The session's state transitions, oldest first, a page at a time."""
    found = await sessions.events(user, session_id, page)
    link_next(request, response, found)
    return [SessionEventOut.model_validate(event) for event in found.items]
