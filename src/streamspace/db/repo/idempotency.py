"""Queries on ``idempotency_keys``: what a user's ``Idempotency-Key`` made.

A key lives :data:`KEEP`; an expired one may be claimed again. Claims are one upsert per
batch, so two replicas claiming the same key at once cannot both win: the second waits
for the first's transaction and then finds the key taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import IdempotencyKey
from streamspace.db.repo.lists import padded

KEEP = timedelta(hours=24)
"""How long a key answers with what its request made."""

Claim = tuple[str, str]
"""``(user_id, key)``."""


async def live(db: AsyncSession, claims: Sequence[Claim], *, now: datetime) -> set[Claim]:
    """Which of ``claims`` a live key holds already."""
    if not claims:
        return set()
    users = padded({user_id for user_id, _ in claims})
    keys = padded({key for _, key in claims})
    rows = await db.execute(
        select(IdempotencyKey.user_id, IdempotencyKey.key).where(
            IdempotencyKey.user_id.in_(users),
            IdempotencyKey.key.in_(keys),
            IdempotencyKey.created_at >= now - KEEP,
        )
    )
    return {(row.user_id, row.key) for row in rows} & set(claims)


async def claim(db: AsyncSession, rows: Sequence[IdempotencyKey], *, now: datetime) -> set[Claim]:
    """Write these keys (distinct claims) unless a live key holds the same claim; returns
    the claims written, in the caller's transaction."""
    if not rows:
        return set()
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(IdempotencyKey).values(
        [
            {
                "user_id": row.user_id,
                "key": row.key,
                "request_hash": row.request_hash,
                "resource": row.resource,
                "resource_id": row.resource_id,
                "created_at": now,
            }
            for row in rows
        ]
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
        set_={
            "request_hash": statement.excluded.request_hash,
            "resource": statement.excluded.resource,
            "resource_id": statement.excluded.resource_id,
            "created_at": statement.excluded.created_at,
        },
        where=IdempotencyKey.created_at < now - KEEP,
    ).returning(IdempotencyKey.user_id, IdempotencyKey.key)
    return {(row.user_id, row.key) for row in await db.execute(upsert)}


async def get(db: AsyncSession, user_id: str, key: str, *, now: datetime) -> IdempotencyKey | None:
    """The user's live key, if any."""
    found = await db.get(IdempotencyKey, (user_id, key))
    return found if found is not None and found.created_at >= now - KEEP else None


async def forget_expired(db: AsyncSession, *, now: datetime) -> int:
    """Delete the keys older than :data:`KEEP`; returns how many."""
    result = await db.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - KEEP))
    return int(getattr(result, "rowcount", 0))
