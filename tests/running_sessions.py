"""Thousands of running sessions on a fake agent, without launching them one by one.

The session rows are inserted in one statement through the repository, and the fake
platform's state file (``fake-agent --state``) lists the same sessions, so the agent
reports them in its inventory as if it had started them.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import templates as template_repo
from streamspace.db.repo import users as user_repo
from streamspace.states import SessionState
from tests.database import Database

VNC_HOST = "127.0.0.1"
VNC_PORT = 5900
"""Where the fake platform says its sessions listen (its default)."""


async def seed_running_sessions(
    database: Database, state_path: Path, *, agent_id: str, count: int
) -> list[str]:
    """``count`` sessions of the administrator, ``running`` on ``agent_id`` in the database
    and in the fake platform's state file; returns their ids."""
    async with database.session() as db, db.begin():
        owner = await user_repo.get_by_username(db, "admin")
        template = await template_repo.get(db, "xterm")
        assert owner is not None and template is not None, "the seeded admin and xterm"
        sessions = [session_repo.new(owner, template, agent_id=agent_id) for _ in range(count)]
        states = {}
        for session in sessions:
            state = {"session_id": session.id, "fake": True}
            session.state = SessionState.RUNNING.value
            session.platform_state = state
            session.vnc_host, session.vnc_port = VNC_HOST, VNC_PORT
            states[session.id] = state
        await session_repo.insert_new(db, sessions)
    staged = state_path.with_name(state_path.name + ".tmp")
    staged.write_text(json.dumps(states))
    staged.replace(state_path)
    return list(states)
