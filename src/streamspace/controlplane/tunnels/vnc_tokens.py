"""Single-use VNC connect tokens: issued to a session's owner, bound to user and session."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from streamspace.config import ApiSettings
from streamspace.controlplane.auth.hashing import digest, new_secret
from streamspace.controlplane.errors import Conflict
from streamspace.controlplane.sessions.service import SessionService
from streamspace.db.engine import SessionFactory, transaction
from streamspace.db.models import User, utcnow
from streamspace.db.repo import vnc_tokens
from streamspace.states import SessionState
from streamspace.wire import VIEWER_TUNNEL_PATH

TOKEN_PREFIX = "ssv"


@dataclass(frozen=True)
class ConnectTicket:
    token: str
    expires_in: int
    url: str


class ConnectTickets:
    """Issues VNC connect tokens for the sessions a user may see."""

    def __init__(
        self, *, db: SessionFactory, settings: ApiSettings, sessions: SessionService
    ) -> None:
        self._db = db
        self._settings = settings
        self._sessions = sessions

    async def issue(self, user: User, session_id: str) -> ConnectTicket:
        """A token for one tunnel to a running session the user may see (404 / 409
        otherwise).

        Only the token's SHA-256 is stored; it works once, within ``VNC_TOKEN_TTL`` seconds.
        """
        session = await self._sessions.get(user, session_id)
        if session.state != SessionState.RUNNING:
            raise Conflict(f"session is {session.state}; only a running session can be viewed")
        token = new_secret(TOKEN_PREFIX)
        ttl = self._settings.vnc_token_ttl
        now = utcnow()
        async with transaction(self._db) as db:
            await vnc_tokens.purge_expired(db, now=now)
            vnc_tokens.issue(
                db,
                token_hash=digest(token),
                session_id=session.id,
                user_id=user.id,
                now=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        url = VIEWER_TUNNEL_PATH.format(session_id=quote(session.id)) + f"?token={quote(token)}"
        return ConnectTicket(token=token, expires_in=max(1, math.ceil(ttl)), url=url)
