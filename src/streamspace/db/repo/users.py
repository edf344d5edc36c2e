"""Queries on ``users`` and ``auth_tokens`` (login tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from streamspace.db.models import AuthToken, User, utcnow
from streamspace.db.repo.pages import Key, Keyset, Page, PageRequest
from streamspace.states import UserRole


async def get_by_username(
    db: AsyncSession, username: str, *, for_update: bool = False
) -> User | None:
    query = select(User).where(User.username == username)
    if for_update:
        query = query.with_for_update()
    return await db.scalar(query)


async def get(db: AsyncSession, user_id: str) -> User | None:
    return await db.get(User, user_id)


def detached_user(values: dict[str, Any]) -> User:
    """A ``User`` built from cached column values, as if loaded and then detached."""
    user = User(**values)
    make_transient_to_detached(user)
    return user


async def list_users(db: AsyncSession) -> Sequence[User]:
    return (await db.scalars(select(User).order_by(User.username))).all()


_BY_USERNAME = Keyset("users", Key(User.username, str))


async def page_of_users(db: AsyncSession, *, search: str | None, page: PageRequest) -> Page[User]:
    """A page of users in username order; ``search`` keeps those whose name contains it
    (any case). Raises :class:`~streamspace.db.repo.pages.BadCursor`."""
    query = select(User)
    if search:
        query = query.where(func.lower(User.username).contains(search.lower(), autoescape=True))
    rows = (await db.scalars(_BY_USERNAME.select(query, page))).all()
    return _BY_USERNAME.page(rows, page, lambda user: (user.username,))


def create(
    db: AsyncSession,
    *,
    username: str,
    password_hash: str,
    role: str,
    must_change_password: bool = False,
) -> User:
    user = User(
        username=username,
        password_hash=password_hash,
        role=role,
        created_at=utcnow(),
        must_change_password=must_change_password,
    )
    db.add(user)
    return user


async def count_admins(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).where(User.role == UserRole.ADMIN)) or 0)


async def lock_active_admins(db: AsyncSession) -> set[str]:
    """The ids of the enabled administrators, locked until the transaction ends: two
    requests that would each remove one of the last two wait for one another."""
    query = (
        select(User.id)
        .where(User.role == UserRole.ADMIN, User.disabled_at.is_(None))
        .order_by(User.id)
        .with_for_update()
    )
    return set((await db.scalars(query)).all())


async def delete_user(db: AsyncSession, user: User) -> None:
    await db.delete(user)


def add_token(db: AsyncSession, *, user: User, token_hash: str, expires_at: datetime) -> None:
    db.add(AuthToken(token_hash=token_hash, user_id=user.id, expires_at=expires_at))


async def user_for_token(db: AsyncSession, token_hash: str) -> tuple[User, datetime] | None:
    """The enabled user a live (unexpired) token belongs to, and when the token expires."""
    row = (
        await db.execute(
            select(User, AuthToken.expires_at)
            .join(AuthToken, AuthToken.user_id == User.id)
            .where(
                AuthToken.token_hash == token_hash,
                AuthToken.expires_at > utcnow(),
                User.disabled_at.is_(None),
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def delete_token(db: AsyncSession, token_hash: str) -> None:
    await db.execute(delete(AuthToken).where(AuthToken.token_hash == token_hash))


async def delete_tokens_of(db: AsyncSession, user_id: str, *, keep: str | None = None) -> None:
    """Log the user out everywhere (but for the login token whose digest is ``keep``)."""
    query = delete(AuthToken).where(AuthToken.user_id == user_id)
    if keep is not None:
        query = query.where(AuthToken.token_hash != keep)
    await db.execute(query)
