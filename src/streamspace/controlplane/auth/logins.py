"""Logging in and out with a password, and who a login token (or an API token) belongs to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.auth.api_tokens import ApiTokenService, is_api_token
from streamspace.controlplane.auth.hashing import (
    digest,
    hash_password,
    new_secret,
    verify_password,
)
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.passwords import check_password
from streamspace.controlplane.auth.throttle import LoginThrottle, Subject, retry_after_header
from streamspace.controlplane.errors import Forbidden, Invalid, TooManyRequests, Unauthorized
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
        api_tokens: ApiTokenService,
        audit: AuditLog,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._throttle = throttle
        self._tokens = tokens
        self._api_tokens = api_tokens

    def cookie_secure(self, scheme: str) -> bool:
        """``Secure`` over HTTPS (the scheme a trusted proxy reports counts) or when forced."""
        return self._settings.cookie_secure or scheme == "https"

    async def login(self, username: str, password: str, *, address: str) -> Login:
        """A new token for a right password; :class:`TooManyRequests` while locked out,
        :class:`Forbidden` for a disabled account (said only to who knows its password).

        A user who must change their password gets a token all the same: it is good for
        the password change (and ``me``, ``logout``) only, until they have.
        """
        throttle = self._throttle
        subjects = self._subjects(username, address)
        user_subject = subjects[0]
        try:
            await self._unless_locked(subjects, "too many failed logins")
        except TooManyRequests:
            metrics.LOGINS.labels("throttled").inc()
            raise
        async with reading(self._db) as db:
            user = await user_repo.get_by_username(db, username)
        valid = await verify_password(user.password_hash if user else None, password)
        if user is None or not valid:
            await throttle.failed(subjects)
            metrics.LOGINS.labels("failed").inc()
            log.warning("failed login for user %r from %s", username, address)
            tried = Actor(id=user.id if user else None, name=username, address=address)
            await self._audit.record_alone(
                tried, "auth.login_failed", detail={"username": username}
            )
            raise Unauthorized("wrong username or password")
        if user.disabled_at is not None:
            metrics.LOGINS.labels("disabled").inc()
            log.warning("refused login of disabled user %r from %s", username, address)
            detail = {"username": username, "reason": "disabled"}
            await self._audit.record_alone(
                Actor.of(user, address), "auth.login_failed", detail=detail
            )
            raise Forbidden("this account is disabled: ask an administrator to enable it")
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
        metrics.LOGINS.labels("success").inc()
        return Login(user=user, token=token, ttl=ttl)

    async def change_password(
        self, user: User, *, current: str, new: str, token: str | None, address: str
    ) -> None:
        """The user's own change: the current password (wrong guesses count as failed
        logins), then a new one by the rules; their other login tokens end everywhere,
        the one in use (``token``) stays."""
        subjects = self._subjects(user.username, address)
        await self._unless_locked(subjects, "too many wrong passwords")
        async with reading(self._db) as db:
            row = await user_repo.get(db, user.id)
        if row is None or not await verify_password(row.password_hash, current):
            await self._throttle.failed(subjects)
            log.warning("wrong current password in a password change of %r", user.username)
            raise Forbidden("the current password is not right")
        await self._throttle.succeeded(subjects[0])
        if new == current:
            raise Invalid("the new password must differ from the current one")
        check_password(new)
        password_hash = await hash_password(new)
        async with transaction(self._db) as db:
            row = await user_repo.get(db, user.id)
            if row is None:
                raise Unauthorized("session expired or token invalid: log in again")
            row.password_hash = password_hash
            row.must_change_password = False
            keep = digest(token) if token and not is_api_token(token) else None
            await user_repo.delete_tokens_of(db, user.id, keep=keep)
            actor = Actor.of(user, address)
            target = ("user", user.id)
            await self._audit.record(db, actor, "user.change_password", target=target)
        await self._tokens.revoke_user(user.id)
        log.info("user %r changed their password", user.username)

    def _subjects(self, username: str, address: str) -> list[Subject]:
        """What a password attempt counts against: the username first, then the address."""
        return [self._throttle.policy.user(username), self._throttle.policy.address(address)]

    async def _unless_locked(self, subjects: list[Subject], what: str) -> None:
        wait = await self._throttle.retry_after(subjects)
        if wait > 0:
            seconds = retry_after_header(wait)
            raise TooManyRequests(
                f"{what}: try again in {seconds} s", headers={"Retry-After": seconds}
            )

    async def logout(self, token: str, *, actor: Actor) -> None:
        async with transaction(self._db) as db:
            await user_repo.delete_token(db, digest(token))
            await self._audit.record(db, actor, "auth.logout")
        await self._tokens.revoke(digest(token))  # after the delete: nobody re-reads it

    async def authenticate(self, token: str | None) -> User:
        """The enabled user a live login token or API token belongs to; :class:`Unauthorized`
        (with a Bearer challenge) without one."""
        if not token:
            raise Unauthorized("not authenticated: log in first", headers=_CHALLENGE)
        token_digest = digest(token)
        user = self._tokens.get(token_digest)
        if user is None:
            ticket = self._tokens.ticket()
            found = await self._look_up(token, token_digest)
            if found is not None:
                user, expires_at = found
                self._tokens.put(token_digest, user, expires_at=expires_at, ticket=ticket)
        if user is None:
            raise Unauthorized("session expired or token invalid: log in again", headers=_CHALLENGE)
        return user

    async def _look_up(self, token: str, token_digest: str) -> tuple[User, datetime] | None:
        if is_api_token(token):
            return await self._api_tokens.holder(token_digest)
        async with reading(self._db) as db:
            return await user_repo.user_for_token(db, token_digest)
