"""Local users and their administration: the one service behind the REST API, the web UI
and the ``streamspace users`` commands.

What each change reaches beyond its row:

- disable: every login token of the user is deleted, and every cached token of theirs
  (login or API) dropped on every replica (``tokens:revoked``, ``user:<id>``); their API
  tokens stay but are refused while the account is disabled. Their active sessions are
  stopped the way a user's stop does (a durable ``stop_session`` row each, the agent's
  doorbell, and a cut that closes the open viewers on every replica). Hibernated sessions
  keep their homes, to be woken once the account is enabled again.
- delete: the same (hibernated sessions stopped too), then the row goes; its tokens and
  sessions go with it (``ON DELETE CASCADE``), while the stop commands already queued stay
  and run (their outcome finds no session, which is harmless).
- role change, password reset: every cached token of the user is dropped, so the change
  holds on the next request everywhere; a reset also logs the user out.

The last enabled administrator cannot be disabled, deleted or demoted, and an administrator
cannot do any of these to their own account (409 in words): nobody locks the door from the
inside. Two such requests at once are serialised by locking the administrators' rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from streamspace.controlplane.audit.log import SYSTEM, Actor, AuditLog
from streamspace.controlplane.auth.hashing import hash_password
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.passwords import (
    check_password,
    check_username,
    temporary_password,
)
from streamspace.controlplane.errors import Conflict, Invalid, NotFound
from streamspace.controlplane.idempotency import Idempotency, claim_or_recall
from streamspace.db.engine import DbSession, SessionFactory, reading, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import User, utcnow
from streamspace.db.repo import users as user_repo
from streamspace.db.repo.pages import BadCursor, Page, PageRequest
from streamspace.states import UserRole

log = logging.getLogger(__name__)

DISABLED = "account disabled"
DELETED = "account deleted"
"""Why a user's sessions stopped (their history and the viewers' close reason say it)."""


class SessionStopper(Protocol):
    """Stops a user's sessions (the session service)."""

    async def stop_all_of(self, owner: User, *, why: str, hibernated: bool = False) -> int: ...


@dataclass(frozen=True)
class WithPassword:
    user: User
    password: str | None
    """A generated temporary password, to show this once; ``None`` when one was given."""


class UserService:
    """Creates, lists, changes and removes local users."""

    def __init__(
        self, *, db: SessionFactory, tokens: TokenCache, sessions: SessionStopper, audit: AuditLog
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._sessions = sessions
        self._audit = audit

    async def create(
        self,
        *,
        username: str,
        password: str | None,
        role: str,
        must_change_password: bool | None = None,
        actor: Actor = SYSTEM,
        idempotency: Idempotency | None = None,
    ) -> WithPassword:
        """Create a user; without ``password`` one is generated (and must be changed at the
        first login unless ``must_change_password`` says otherwise). :class:`Conflict` if
        the name is taken, :class:`Invalid` for a name or password the rules refuse."""
        check_username(username)
        role = _role(role)
        generated = None if password is not None else temporary_password()
        secret = password if password is not None else generated
        assert secret is not None
        check_password(secret)
        must_change = must_change_password
        if must_change is None:
            must_change = generated is not None
        password_hash = await hash_password(secret)
        try:
            async with transaction(self._db) as db:
                if idempotency is not None and actor.id is not None:
                    made = await claim_or_recall(
                        db, actor.id, idempotency, resource="user", resource_id=username
                    )
                    if made is not None:  # a password is shown once, in the first answer
                        found = await user_repo.get_by_username(db, made)
                        return WithPassword(_found(found, made), None)
                user = user_repo.create(
                    db,
                    username=username,
                    password_hash=password_hash,
                    role=role,
                    must_change_password=must_change,
                )
                await db.flush()  # its id, for the audit row
                await self._audit.record(
                    db,
                    actor,
                    "user.create",
                    target=("user", user.id),
                    detail={"username": username, "role": role},
                )
        except ConstraintViolation:
            raise Conflict(f"user {username!r} already exists") from None
        log.info("created %s %r", role, username)
        return WithPassword(user, generated)

    async def list(self, *, search: str | None, cursor: str | None, limit: int) -> Page[User]:
        """A page of users in username order (:mod:`streamspace.db.repo.pages`)."""
        try:
            async with reading(self._db) as db:
                page = PageRequest(limit=limit, cursor=cursor)
                return await user_repo.page_of_users(db, search=search, page=page)
        except BadCursor as exc:
            raise Invalid(str(exc)) from None

    async def get(self, username: str) -> User:
        async with reading(self._db) as db:
            return _found(await user_repo.get_by_username(db, username), username)

    async def set_role(self, actor: User | None, username: str, role: str) -> User:
        role = _role(role)
        async with transaction(self._db) as db:
            admins = await user_repo.lock_active_admins(db)
            user = await _locked(db, username)
            if user.role == role:
                return user
            if role != UserRole.ADMIN:
                _keep_an_admin(actor, user, admins, "demote")
            user.role = role
            await self._record(db, actor, "user.role", user, {"role": role})
        await self._tokens.revoke_user(user.id)
        log.info("user %r is now %s", username, role)
        return user

    async def disable(self, actor: User | None, username: str) -> User:
        """Disable the account at once everywhere (idempotent); see the module's words."""
        user = await self._disable(actor, username, "disable")
        stopped = await self._sessions.stop_all_of(user, why=DISABLED)
        log.info("disabled user %r (%d session(s) stopped)", username, stopped)
        return user

    async def enable(self, username: str) -> User:
        async with transaction(self._db) as db:
            user = await _locked(db, username)
            user.disabled_at = None
            await self._record(db, None, "user.enable", user)
        await self._tokens.revoke_user(user.id)
        log.info("enabled user %r", username)
        return user

    async def delete(self, actor: User | None, username: str) -> None:
        """Disable, stop every session (hibernated ones too), then remove the user."""
        user = await self._disable(actor, username, "delete")
        stopped = await self._sessions.stop_all_of(user, why=DELETED, hibernated=True)
        async with transaction(self._db) as db:
            row = await user_repo.get(db, user.id)
            if row is not None:
                await user_repo.delete_user(db, row)
            await self._record(db, actor, "user.delete", user)
        await self._tokens.revoke_user(user.id)
        log.info("deleted user %r (%d session(s) stopped)", username, stopped)

    async def reset_password(
        self, actor: User | None, username: str, password: str | None = None
    ) -> WithPassword:
        """Set a temporary password (``password``, or a generated one, returned once) that
        the user must change at their next login; they are logged out everywhere."""
        generated = None if password is not None else temporary_password()
        secret = password if password is not None else generated
        assert secret is not None
        check_password(secret)
        password_hash = await hash_password(secret)
        async with transaction(self._db) as db:
            user = await _locked(db, username)
            if actor is not None and actor.id == user.id:
                raise Conflict(
                    "you cannot reset your own password: change it with your current one "
                    "(POST /api/v1/auth/password)"
                )
            user.password_hash = password_hash
            user.must_change_password = True
            await user_repo.delete_tokens_of(db, user.id)
            await self._record(db, actor, "user.reset_password", user)
        await self._tokens.revoke_user(user.id)
        log.info("reset the password of user %r", username)
        return WithPassword(user, generated)

    async def ensure_admin(self, *, password: str | None) -> str | None:
        """Create ``admin`` if no administrator exists; returns a generated password, once.

        With ``password`` given (``STREAMSPACE_ADMIN_PASSWORD``) that one is used and nothing
        is returned. Replicas racing here are fine: the unique username lets one win.
        """
        async with reading(self._db) as db:
            if await user_repo.count_admins(db):
                return None
        generated = None if password else temporary_password()
        password_hash = await hash_password(password or generated or "")
        try:
            async with transaction(self._db) as db:
                admin = user_repo.create(
                    db, username="admin", password_hash=password_hash, role=UserRole.ADMIN
                )
                await (
                    db.flush()
                )  # its id, for the audit row; a replica that lost the race fails here
                detail = {"username": "admin", "role": UserRole.ADMIN.value}
                await self._audit.record(
                    db, SYSTEM, "user.create", target=("user", admin.id), detail=detail
                )
        except ConstraintViolation:
            return None
        log.info("created the first administrator account 'admin'")
        return generated

    async def _record(
        self,
        db: DbSession,
        actor: User | None,
        action: str,
        user: User,
        detail: dict[str, str] | None = None,
    ) -> None:
        """Record an administrator's (``None``: the command line's) change of ``user``."""
        who = SYSTEM if actor is None else Actor.of(actor)
        shown = {"username": user.username, **(detail or {})}
        await self._audit.record(db, who, action, target=("user", user.id), detail=shown)

    async def _disable(self, actor: User | None, username: str, verb: str) -> User:
        """Mark the user disabled and log them out; every replica forgets their tokens."""
        async with transaction(self._db) as db:
            admins = await user_repo.lock_active_admins(db)
            user = await _locked(db, username)
            _keep_an_admin(actor, user, admins, verb)
            if user.disabled_at is None:
                user.disabled_at = utcnow()
                await self._record(db, actor, "user.disable", user)
            await user_repo.delete_tokens_of(db, user.id)
        await self._tokens.revoke_user(user.id)  # after the commit: nobody re-reads them
        return user


def _role(role: str) -> UserRole:
    if role not in tuple(UserRole):
        raise Invalid(f"role must be one of {', '.join(UserRole)}, not {role!r}")
    return UserRole(role)


def _found(user: User | None, username: str) -> User:
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


async def _locked(db: DbSession, username: str) -> User:
    return _found(await user_repo.get_by_username(db, username, for_update=True), username)


def _keep_an_admin(actor: User | None, user: User, admins: set[str], verb: str) -> None:
    """Refuse to take away the actor's own account, or the last enabled administrator."""
    if actor is not None and actor.id == user.id:
        raise Conflict(f"you cannot {verb} your own account: ask another administrator")
    if admins == {user.id}:
        raise Conflict(
            f"{user.username!r} is the last enabled administrator and cannot be {verb}d: "
            "make another user an administrator first"
        )
