"""Personal API tokens (``ssp_…``): made by a user for automation, named, expiring and
revocable, shown once and stored as SHA-256; they authenticate like a login token
(``Authorization: Bearer ssp_…``) for as long as they live and their user is enabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streamspace.controlplane.auth.hashing import digest, new_secret
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.errors import Conflict, Invalid, NotFound
from streamspace.controlplane.idempotency import Idempotency, claim_or_recall
from streamspace.db.engine import SessionFactory, reading, transaction
from streamspace.db.models import ApiToken, User, new_id, utcnow
from streamspace.db.repo import api_tokens as token_repo

PREFIX = "ssp"
MAX_DAYS = 365
"""The longest lifetime a token may be given."""
DEFAULT_DAYS = 90
MAX_LIVE = 100
"""Live (unrevoked, unexpired) tokens one user may hold at once."""
TOUCH_EVERY = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token: authenticating stays a read."""


def is_api_token(token: str) -> bool:
    return token.startswith(f"{PREFIX}_")


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str | None
    """The token itself, shown this once (only its digest is kept); ``None`` in the answer
    to a retry."""


class ApiTokenService:
    """A user's own tokens: create, list, revoke; and who a presented one belongs to."""

    def __init__(self, *, db: SessionFactory, tokens: TokenCache) -> None:
        self._db = db
        self._tokens = tokens

    async def create(
        self,
        user: User,
        *,
        name: str,
        days: int = DEFAULT_DAYS,
        idempotency: Idempotency | None = None,
    ) -> NewToken:
        """A new token of ``user`` valid ``days`` days (1..:data:`MAX_DAYS`); :class:`Conflict`
        past :data:`MAX_LIVE` live tokens. With ``idempotency``, a retry of a create that
        made one answers with that token, without its secret (shown in the first answer
        only)."""
        if not 1 <= days <= MAX_DAYS:
            raise Invalid(f"an API token lives 1 to {MAX_DAYS} days, not {days}")
        secret = new_secret(PREFIX)
        token_id = new_id()
        async with transaction(self._db) as db:
            if idempotency is not None:
                made = await claim_or_recall(
                    db, user.id, idempotency, resource="api_token", resource_id=token_id
                )
                if made is not None:
                    earlier = await token_repo.get(db, user.id, made)
                    if earlier is None:
                        raise NotFound("the API token this Idempotency-Key made is gone")
                    return NewToken(earlier, None)
            if await token_repo.count_live(db, user.id) >= MAX_LIVE:
                raise Conflict(
                    f"you hold {MAX_LIVE} live API tokens already: revoke one you no longer use"
                )
            token = token_repo.add(
                db,
                token_id=token_id,
                user_id=user.id,
                name=name,
                token_hash=digest(secret),
                expires_at=utcnow() + timedelta(days=days),
            )
        return NewToken(token, secret)

    async def list(self, user: User) -> list[ApiToken]:
        async with reading(self._db) as db:
            return list(await token_repo.of_user(db, user.id))

    async def revoke(self, user: User, token_id: str) -> ApiToken:
        """Revoke one of ``user``'s tokens at once on every replica (idempotent)."""
        async with transaction(self._db) as db:
            token = await token_repo.get(db, user.id, token_id)
            if token is None:
                raise NotFound("API token not found")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
        await self._tokens.revoke(token.token_hash)  # after the commit: nobody re-reads it
        return token

    async def holder(self, token_digest: str) -> tuple[User, datetime] | None:
        """The user a live token belongs to and when it expires; records the use (at most
        once per :data:`TOUCH_EVERY`)."""
        async with reading(self._db) as db:
            found = await token_repo.holder(db, token_digest)
        if found is None:
            return None
        now = utcnow()
        if found.last_used_at is None or found.last_used_at < now - TOUCH_EVERY:
            async with transaction(self._db) as db:
                await token_repo.touch(db, found.token_id, now=now, unless_since=now - TOUCH_EVERY)
        return found.user, found.expires_at
