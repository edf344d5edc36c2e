"""Queries on ``users`` and ``auth_tokens``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from streamspace.db.models import AuthToken, User, utcnow
from streamspace.states import UserRole


async def get_by_username(db: AsyncSession, username: str) -> User | None:
    return await db.scalar(select(User).where(User.username == username))


def detached_user(values: dict[str, Any]) -> User:
    """A ``User`` built from cached column values, as if loaded and then detached."""
    user = User(**values)
    make_transient_to_detached(user)
    return user


async def list_users(db: AsyncSession) -> Sequence[User]:
    return (await db.scalars(select(User).order_by(User.username))).all()


def create(db: AsyncSession, *, username: str, password_hash: str, role: str) -> User:
    user = User(username=username, password_hash=password_hash, role=role, created_at=utcnow())
    db.add(user)
    return user


async def count_admins(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).where(User.role == UserRole.ADMIN)) or 0)


def add_token(db: AsyncSession, *, user: User, token_hash: str, expires_at: datetime) -> None:
    db.add(AuthToken(token_hash=token_hash, user_id=user.id, expires_at=expires_at))


async def user_for_token(db: AsyncSession, token_hash: str) -> tuple[User, datetime] | None:
    """The user a live (unexpired) token belongs to, and when the token expires."""
    row = (
        await db.execute(
            select(User, AuthToken.expires_at)
            .join(AuthToken, AuthToken.user_id == User.id)
            .where(AuthToken.token_hash == token_hash, AuthToken.expires_at > utcnow())
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def delete_token(db: AsyncSession, token_hash: str) -> None:
    await db.execute(delete(AuthToken).where(AuthToken.token_hash == token_hash))
