"""The record of commands sent to agents, as administrators look it up."""

from __future__ import annotations

from streamspace.controlplane.errors import NotFound
from streamspace.db.engine import SessionFactory, reading
from streamspace.db.models import AgentCommand
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo.pages import Page, PageRequest
from streamspace.states import CommandStatus


class CommandHistory:
    """Reads commands, newest first."""

    def __init__(self, *, db: SessionFactory) -> None:
        self._db = db

    async def list(
        self, *, session_id: str | None, status: CommandStatus | None, page: PageRequest
    ) -> Page[AgentCommand]:
        """A page of the commands (of one session, in one status), newest first."""
        async with reading(self._db) as db:
            return await command_repo.list_commands(
                db, session_id=session_id, status=status, page=page
            )

    async def get(self, command_id: str) -> AgentCommand:
        async with reading(self._db) as db:
            command = await command_repo.get(db, command_id)
        if command is None:
            raise NotFound(f"command {command_id!r} not found")
        return command
