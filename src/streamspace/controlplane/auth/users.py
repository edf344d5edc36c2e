"""Local users: creation and the first administrator."""

from __future__ import annotations

import logging
import secrets as random

from sqlalchemy.exc import IntegrityError

from streamspace.controlplane.auth.hashing import hash_password
from streamspace.controlplane.errors import Conflict
from streamspace.db.engine import SessionFactory
from streamspace.db.models import User
from streamspace.db.repo import users as user_repo

log = logging.getLogger(__name__)

ROLES = ("admin", "user")


async def create_user(db: SessionFactory, *, username: str, password: str, role: str) -> User:
    """Create a user; :class:`Conflict` if the name is taken."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    password_hash = hash_password(password)
    try:
        async with db() as session, session.begin():
            return user_repo.create(
                session, username=username, password_hash=password_hash, role=role
            )
    except IntegrityError:
        raise Conflict(f"user {username!r} already exists") from None


async def ensure_admin(db: SessionFactory, *, password: str | None) -> str | None:
    """Create ``admin`` if no administrator exists; returns a generated password, once.

    With ``password`` given (``STREAMSPACE_ADMIN_PASSWORD``) that one is used and nothing
    is returned. Replicas racing here are fine: the unique username lets one win.
    """
    async with db() as session:
        if await user_repo.count_admins(session):
            return None
    generated = None if password else random.token_urlsafe(12)
    try:
        await create_user(db, username="admin", password=password or generated or "", role="admin")
    except Conflict:
        return None
    log.info("created the first administrator account 'admin'")
    return generated
