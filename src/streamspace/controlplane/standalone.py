"""The user services outside any replica: what the ``streamspace users``, ``streamspace
tokens`` and ``streamspace groups`` commands run, on ``DATABASE_URL`` like a replica would.

What a change must reach inside the replicas goes where a replica would send it: every
database row first (tokens deleted, ``stop_session`` commands queued), then, with the Redis
hub configured (``AGENTHUB_REDIS_ENABLED``), the revocation of cached tokens
(``tokens:revoked``), the cut of open viewers (``tunnels:cuts``) and the agents' doorbells,
as a client of that Redis under a name of its own. Without Redis the replicas still see it
all: cached tokens live 5 s at most, the dispatcher's poll delivers the commands, and the
reconciler stops whatever a disabled account still runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from streamspace.config import ApiSettings
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.auth.api_tokens import ApiTokenService
from streamspace.controlplane.auth.groups import GroupService
from streamspace.controlplane.auth.login_tokens import create_token_cache
from streamspace.controlplane.auth.users import UserService
from streamspace.controlplane.hub.factory import create_hub
from streamspace.controlplane.sessions.service import SessionService
from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.models import AgentCommand


@dataclass(frozen=True)
class Standalone:
    users: UserService
    api_tokens: ApiTokenService
    groups: GroupService


class _NoLaunches:
    """The hand-off of a launch's first command: a command line launches nothing."""

    async def hand_off(self, agent_id: str, command: AgentCommand) -> None:
        raise RuntimeError("the command line does not launch sessions")


@asynccontextmanager
async def standalone(settings: ApiSettings) -> AsyncIterator[Standalone]:
    """The services on ``settings.database_url`` (migrated already), closed afterwards."""
    # Never a replica's POD_NAME (the command may run inside a replica's pod): closing the
    # hub withdraws its name from Redis.
    own = settings.model_copy(update={"pod_name": f"cli-{socket.gethostname()}-{os.getpid()}"})
    engine = create_engine(own.database_url, pool_size=2)
    db = create_session_factory(engine)
    hub = create_hub(own)
    await hub.start()
    try:
        tokens = create_token_cache(own, hub)
        audit = AuditLog(db=db)
        sessions = SessionService(
            db=db, settings=own, ring=hub.ring, direct=_NoLaunches(), cut=hub.cut, audit=audit
        )
        yield Standalone(
            users=UserService(db=db, tokens=tokens, sessions=sessions, audit=audit),
            api_tokens=ApiTokenService(db=db, tokens=tokens),
            groups=GroupService(db=db, audit=audit),
        )
    finally:
        await hub.close()
        await engine.dispose()
