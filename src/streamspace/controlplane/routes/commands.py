"""Command history (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from streamspace.controlplane.deps import AdminDep, CommandsDep
from streamspace.controlplane.routes import text
from streamspace.controlplane.routes.paging import PAGED, PageDep, link_next
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, errors
from streamspace.controlplane.routes.schemas import CommandOut
from streamspace.controlplane.routes.text import storable_url
from streamspace.states import CommandStatus

router = APIRouter(
    prefix="/api/v1/commands",
    tags=["commands"],
    responses=AUTHENTICATED | ADMIN,
    dependencies=[Depends(storable_url)],
)


@router.get("", responses=PAGED)
async def list_commands(
    _admin: AdminDep,
    commands: CommandsDep,
    page: PageDep,
    request: Request,
    response: Response,
    session_id: Annotated[str | None, Query(max_length=64, pattern=text.NO_NUL_PATTERN)] = None,
    status_: Annotated[CommandStatus | None, Query(alias="status")] = None,
) -> list[CommandOut]:
    """Commands (of one session, in one status), newest first, a page at a time."""
    found = await commands.list(session_id=session_id, status=status_, page=page)
    link_next(request, response, found)
    return [CommandOut.of(command) for command in found.items]


@router.get("/{command_id}", responses=errors(404))
async def get_command(command_id: str, _admin: AdminDep, commands: CommandsDep) -> CommandOut:
    return CommandOut.of(await commands.get(command_id))
