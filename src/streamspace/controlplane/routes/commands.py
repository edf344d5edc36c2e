"""Command history (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from streamspace.controlplane.deps import AdminDep, ReplicaDep
from streamspace.controlplane.routes import text
from streamspace.controlplane.routes.responses import ADMIN, AUTHENTICATED, errors
from streamspace.controlplane.routes.schemas import CommandOut
from streamspace.controlplane.routes.text import storable_url
from streamspace.db.repo import commands as command_repo
from streamspace.states import CommandStatus

router = APIRouter(
    prefix="/api/v1/commands",
    tags=["commands"],
    responses=AUTHENTICATED | ADMIN,
    dependencies=[Depends(storable_url)],
)


@router.get("")
async def list_commands(
    _admin: AdminDep,
    replica: ReplicaDep,
    session_id: Annotated[str | None, Query(max_length=64, pattern=text.NO_NUL_PATTERN)] = None,
    status_: Annotated[CommandStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CommandOut]:
    async with replica.db() as db:
        found = await command_repo.list_commands(
            db, session_id=session_id, status=status_, limit=limit
        )
    return [CommandOut.of(command) for command in found]


@router.get("/{command_id}", responses=errors(404))
async def get_command(command_id: str, _admin: AdminDep, replica: ReplicaDep) -> CommandOut:
    async with replica.db() as db:
        command = await command_repo.get(db, command_id)
    if command is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"command {command_id!r} not found")
    return CommandOut.of(command)
