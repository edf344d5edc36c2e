"""Queries on ``api_tokens``: personal tokens (``ssp_…``) for automation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import ApiToken, User, utcnow


class Holder(NamedTuple):
    """Who a live API token belongs to, and what authentication needs to know of it."""

    user: User
    token_id: str
    expires_at: datetime
    last_used_at: datetime | None


def add(
    db: AsyncSession,
    *,
    token_id: str,
    user_id: str,
    name: str,
    token_hash: str,
    expires_at: datetime,
) -> ApiToken:
    token = ApiToken(
        id=token_id,
        user_id=user_id,
        name=name,
        token_hash=token_hash,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    db.add(token)
    return token


async def of_user(db: AsyncSession, user_id: str) -> Sequence[ApiToken]:
    """A user's tokens, newest first (revoked and expired ones too)."""
    query = (
        select(ApiToken)
        .where(ApiToken.user_id == user_id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    return (await db.scalars(query)).all()


async def count_live(db: AsyncSession, user_id: str) -> int:
    query = select(func.count()).where(
        ApiToken.user_id == user_id,
        ApiToken.revoked_at.is_(None),
        ApiToken.expires_at > utcnow(),
    )
    return int(await db.scalar(query) or 0)


async def get(db: AsyncSession, user_id: str, token_id: str) -> ApiToken | None:
    """One of the user's tokens, locked (someone else's looks missing)."""
    query = select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
    return await db.scalar(query.with_for_update())


async def holder(db: AsyncSession, token_hash: str) -> Holder | None:
    """The enabled user a live (unrevoked, unexpired) token belongs to."""
    row = (
        await db.execute(
            select(User, ApiToken.id, ApiToken.expires_at, ApiToken.last_used_at)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(
                ApiToken.token_hash == token_hash,
                ApiToken.revoked_at.is_(None),
                ApiToken.expires_at > utcnow(),
                User.disabled_at.is_(None),
            )
        )
    ).first()
    return None if row is None else Holder(row[0], row[1], row[2], row[3])


async def touch(db: AsyncSession, token_id: str, *, now: datetime, unless_since: datetime) -> None:
    """Record a use at ``now`` unless one was recorded at ``unless_since`` or later."""
    await db.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < unless_since),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
