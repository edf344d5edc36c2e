"""Local users: creation and the first administrator."""

from __future__ import annotations

import logging
import secrets as random

from streamspace.controlplane.audit.log import SYSTEM, Actor, AuditLog
from streamspace.controlplane.auth.hashing import hash_password
from streamspace.controlplane.errors import Conflict
from streamspace.db.engine import SessionFactory, reading, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import User
from streamspace.db.repo import users as user_repo
from streamspace.states import UserRole

log = logging.getLogger(__name__)


class UserService:
    """Creates local users."""

    def __init__(self, *, db: SessionFactory, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def create(
        self, *, username: str, password: str, role: str, actor: Actor = SYSTEM
    ) -> User:
        """Create a user; :class:`Conflict` if the name is taken."""
        if role not in tuple(UserRole):
            raise ValueError(f"role must be one of {', '.join(UserRole)}")
        password_hash = hash_password(password)
        try:
            async with transaction(self._db) as db:
                user = user_repo.create(
                    db, username=username, password_hash=password_hash, role=UserRole(role)
                )
                await db.flush()  # its id, for the audit row
                await self._audit.record(
                    db,
                    actor,
                    "user.create",
                    target=("user", user.id),
                    detail={"username": username, "role": role},
                )
                return user
        except ConstraintViolation:
            raise Conflict(f"user {username!r} already exists") from None

    async def ensure_admin(self, *, password: str | None) -> str | None:
        """Create ``admin`` if no administrator exists; returns a generated password, once.

        With ``password`` given (``STREAMSPACE_ADMIN_PASSWORD``) that one is used and nothing
        is returned. Replicas racing here are fine: the unique username lets one win.
        """
        async with reading(self._db) as db:
            if await user_repo.count_admins(db):
                return None
        generated = None if password else random.token_urlsafe(12)
        try:
            await self.create(
                username="admin", password=password or generated or "", role=UserRole.ADMIN
            )
        except Conflict:
            return None
        log.info("created the first administrator account 'admin'")
        return generated
