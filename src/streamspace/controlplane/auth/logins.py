"""Logging in and out with a password, and who a login token belongs to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from streamspace.config import ApiSettings
from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.auth.hashing import DUMMY_HASH, digest, new_secret, verify_password
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.throttle import LoginThrottle, retry_after_header
from streamspace.controlplane.errors import TooManyRequests, Unauthorized
from streamspace.db.engine import SessionFactory, reading, transaction
from streamspace.db.models import User, utcnow
from streamspace.db.repo import users as user_repo

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sst"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Login:
    user: User
    token: str
    """The new login token (only its digest is stored)."""
    ttl: float
    """Seconds the token is valid."""


class LoginService:
    """Password logins (throttled per user and per address) and their tokens."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        settings: ApiSettings,
        throttle: LoginThrottle,
        tokens: TokenCache,
        audit: AuditLog,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._throttle = throttle
        self._tokens = tokens

    def cookie_secure(self, scheme: str) -> bool:
        """``Secure`` over HTTPS (the scheme a trusted proxy reports counts) or when forced."""
        return self._settings.cookie_secure or scheme == "https"

    async def login(self, username: str, password: str, *, address: str) -> Login:
        """A new token for a right password; :class:`TooManyRequests` while locked out."""
        throttle = self._throttle
        user_subject = throttle.policy.user(username)
        subjects = [user_subject, throttle.policy.address(address)]
        wait = await throttle.retry_after(subjects)
        if wait > 0:
            seconds = retry_after_header(wait)
            raise TooManyRequests(
                f"too many failed logins: try again in {seconds} s",
                headers={"Retry-After": seconds},
            )
        async with reading(self._db) as db:
            user = await user_repo.get_by_username(db, username)
        valid = await verify_password(user.password_hash if user else DUMMY_HASH, password)
        if user is None or not valid:
            await throttle.failed(subjects)
            log.warning("failed login for user %r from %s", username, address)
            tried = Actor(id=user.id if user else None, name=username, address=address)
            await self._audit.record_alone(
                tried, "auth.login_failed", detail={"username": username}
            )
            raise Unauthorized("wrong username or password")
        await throttle.succeeded(user_subject)
        token = new_secret(TOKEN_PREFIX)
        ttl = self._settings.session_token_ttl
        async with transaction(self._db) as db:
            user_repo.add_token(
                db,
                user=user,
                token_hash=digest(token),
                expires_at=utcnow() + timedelta(seconds=ttl),
            )
            await self._audit.record(db, Actor.of(user, address), "auth.login")
        return Login(user=user, token=token, ttl=ttl)

    async def logout(self, token: str, *, actor: Actor) -> None:
        async with transaction(self._db) as db:
            await user_repo.delete_token(db, digest(token))
            await self._audit.record(db, actor, "auth.logout")
        await self._tokens.revoke(digest(token))  # after the delete: nobody re-reads it

    async def authenticate(self, token: str | None) -> User:
        """The user a live login token belongs to; :class:`Unauthorized` (with a Bearer
        challenge) without one."""
        if not token:
            raise Unauthorized("not authenticated: log in first", headers=_CHALLENGE)
        token_digest = digest(token)
        user = self._tokens.get(token_digest)
        if user is None:
            ticket = self._tokens.ticket()
            async with reading(self._db) as db:
                found = await user_repo.user_for_token(db, token_digest)
            if found is not None:
                user, expires_at = found
                self._tokens.put(token_digest, user, expires_at=expires_at, ticket=ticket)
        if user is None:
            raise Unauthorized("session expired or token invalid: log in again", headers=_CHALLENGE)
        return user
