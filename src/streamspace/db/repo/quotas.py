"""What quotas are decided on: the groups of users, how many sessions they hold in each
state, and the lock that makes the decision exact across replicas.

:func:`lock_owners` takes ``FOR NO KEY UPDATE`` on the users' rows: two transactions
deciding for the same user (launches on two replicas, a launch and a wake) take turns,
and the one that waited counts the sessions the other committed (READ COMMITTED reads
afresh per statement). It does not block the foreign-key checks of other writes (logins,
tokens). On SQLite the single writer serialises already and the lock is left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from streamspace.db.models import Group, GroupMember, Session, User
from streamspace.db.repo.lists import padded

_GROUPS_OF = (
    select(GroupMember.user_id, Group)
    .join(Group, Group.id == GroupMember.group_id)
    .where(GroupMember.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(Group.name)
)
_LOCK = (
    select(User.id)
    .where(User.id.in_(bindparam("user_ids", expanding=True)))
    .order_by(User.id)  # one order, so two lockers of several users never cross
    .with_for_update(key_share=True)
)
_COUNTS = (
    select(Session.owner_id, Session.state, func.count())
    .where(
        Session.owner_id.in_(bindparam("user_ids", expanding=True)),
        Session.state.in_(bindparam("states", expanding=True)),
    )
    .group_by(Session.owner_id, Session.state)
)


async def groups_of(db: AsyncSession, user_ids: Collection[str]) -> dict[str, list[Group]]:
    """The groups each user is a member of (users of no group are left out)."""
    if not user_ids:
        return {}
    rows = await db.execute(_GROUPS_OF, {"user_ids": padded(user_ids)})
    found: dict[str, list[Group]] = defaultdict(list)
    for user_id, group in rows:
        found[user_id].append(group)
    return dict(found)


async def lock_owners(db: AsyncSession, user_ids: Collection[str]) -> None:
    """Lock the users' rows until the end of the transaction (PostgreSQL)."""
    if user_ids and db.get_bind().dialect.name == "postgresql":
        await db.execute(_LOCK, {"user_ids": padded(sorted(user_ids))})


async def session_counts(
    db: AsyncSession, user_ids: Collection[str], states: Collection[str]
) -> dict[str, dict[str, int]]:
    """How many sessions each user has in each of ``states`` (zeros left out)."""
    if not user_ids:
        return {}
    rows = await db.execute(
        _COUNTS, {"user_ids": padded(user_ids), "states": padded(sorted(states))}
    )
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for owner_id, state, count in rows:
        found[owner_id][state] = count
    return dict(found)
