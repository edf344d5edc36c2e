"""Queries on ``vnc_tokens``: single-use VNC connect tickets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import User, VncToken
from streamspace.states import UserRole


@dataclass(frozen=True)
class Ticket:
    """What a consumed token grants: one tunnel to ``session_id`` for ``user_id``."""

    session_id: str
    user_id: str
    is_admin: bool


def issue(
    db: AsyncSession,
    *,
    token_hash: str,
    session_id: str,
    user_id: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Add a token to the caller's transaction."""
    db.add(
        VncToken(
            token_hash=token_hash,
            session_id=session_id,
            user_id=user_id,
            created_at=now,
            expires_at=expires_at,
        )
    )


async def purge_expired(db: AsyncSession, *, now: datetime) -> None:
    """Forget tokens that can no longer be used (used ones expire too)."""
    await db.execute(delete(VncToken).where(VncToken.expires_at <= now))


async def consume(db: AsyncSession, token_hash: str, *, now: datetime) -> Ticket | None:
    """Use a token once: atomically marks it used if it is unused and unexpired.

    Two replicas presenting the same token race on the same row; exactly one UPDATE
    matches it, so exactly one gets the ticket.
    """
    used = await db.execute(
        update(VncToken)
        .where(
            VncToken.token_hash == token_hash,
            VncToken.used_at.is_(None),
            VncToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(VncToken.session_id, VncToken.user_id)
    )
    row = used.one_or_none()
    if row is None:
        return None
    session_id, user_id = row
    role = await db.scalar(select(User.role).where(User.id == user_id))
    return Ticket(session_id=session_id, user_id=user_id, is_admin=role == UserRole.ADMIN)
