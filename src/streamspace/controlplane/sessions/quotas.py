"""Quotas: what a user may launch and keep, from their groups and the site default.

The rule (docs/groups-and-quotas.md): a group's limit left unset means the site default's
(``QUOTA_*``); a user in several groups gets the most generous value of each limit (no limit
beats any number) and may launch the templates of any of their groups (a group without a
list allows all); a user in no group gets the site default. Administrators too.

Sessions ``pending``, ``running`` or ``waking`` count as running (a stopping one does not:
it was given up); ``hibernating`` or ``hibernated`` ones as hibernated. A decision is taken
under :func:`~streamspace.db.repo.quotas.lock_owners` in the transaction that writes what it
allows, so launches on many replicas at once never exceed a limit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.errors import Forbidden, OverQuota
from streamspace.db.engine import DbSession, SessionFactory, reading
from streamspace.db.models import Group, User
from streamspace.db.repo import quotas as quota_repo
from streamspace.states import SessionState

RUNNING_STATES = frozenset({SessionState.PENDING, SessionState.RUNNING, SessionState.WAKING})
"""Sessions that count against ``max_running_sessions``."""
HIBERNATED_STATES = frozenset({SessionState.HIBERNATING, SessionState.HIBERNATED})
"""Sessions that count against ``max_hibernated_sessions``."""


@dataclass(frozen=True)
class Limits:
    """One set of limits; ``None`` is no limit (``allowed_templates``: all templates)."""

    max_running_sessions: int | None = None
    max_hibernated_sessions: int | None = None
    max_session_minutes: int | None = None
    allowed_templates: frozenset[str] | None = None

    def allows(self, template: str) -> bool:
        return self.allowed_templates is None or template in self.allowed_templates

    @property
    def counts_sessions(self) -> bool:
        """Whether deciding for this user needs their sessions counted."""
        return self.max_running_sessions is not None or self.max_hibernated_sessions is not None

    @property
    def max_age_seconds(self) -> int | None:
        minutes = self.max_session_minutes
        return None if minutes is None else minutes * 60


def site_limits(settings: ApiSettings) -> Limits:
    """The site default, from ``QUOTA_MAX_*``."""
    return Limits(
        max_running_sessions=settings.quota_max_running_sessions,
        max_hibernated_sessions=settings.quota_max_hibernated_sessions,
        max_session_minutes=settings.quota_max_session_minutes,
    )


def _of_group(group: Group, site: Limits) -> Limits:
    """A group's limits, its unset ones filled in from the site default."""

    def own(value: int | None, default: int | None) -> int | None:
        return default if value is None else value

    templates = group.allowed_templates
    return Limits(
        max_running_sessions=own(group.max_running_sessions, site.max_running_sessions),
        max_hibernated_sessions=own(group.max_hibernated_sessions, site.max_hibernated_sessions),
        max_session_minutes=own(group.max_session_minutes, site.max_session_minutes),
        allowed_templates=site.allowed_templates if templates is None else frozenset(templates),
    )


def _most(values: Iterable[int | None]) -> int | None:
    """The most generous of these limits: no limit if any is none, else the largest."""
    found = list(values)
    return None if None in found else max(value for value in found if value is not None)


def effective(groups: Sequence[Group], site: Limits) -> Limits:
    """A user's limits from their groups (none: the site default)."""
    if not groups:
        return site
    each = [_of_group(group, site) for group in groups]
    lists = [limits.allowed_templates for limits in each]
    return Limits(
        max_running_sessions=_most(limits.max_running_sessions for limits in each),
        max_hibernated_sessions=_most(limits.max_hibernated_sessions for limits in each),
        max_session_minutes=_most(limits.max_session_minutes for limits in each),
        allowed_templates=None
        if None in lists
        else frozenset().union(*(names for names in lists if names is not None)),
    )


@dataclass
class Quota:
    """A user's limits, the groups they come from, and what the user holds now."""

    limits: Limits
    groups: list[str] = field(default_factory=list)
    running: int = 0
    hibernated: int = 0

    def refuse_launch(self, template: str) -> Forbidden | OverQuota | None:
        """Why a launch of ``template`` is refused now, or ``None`` (counted as a refusal)."""
        if not self.limits.allows(template):
            metrics.QUOTA_REFUSALS.labels("template").inc()
            return Forbidden(f"template {template!r} is not allowed for your groups")
        return self.refuse_running()

    def refuse_running(self) -> OverQuota | None:
        """Why one more running session is refused now, or ``None``."""
        limit = self.limits.max_running_sessions
        if limit is None or self.running < limit:
            return None
        metrics.QUOTA_REFUSALS.labels("running").inc()
        return OverQuota(
            f"quota reached: you may run {_sessions(limit)} at once ({self.running} running)",
            limit="running",
        )

    def refuse_hibernated(self) -> OverQuota | None:
        """Why one more hibernated session is refused now, or ``None``."""
        limit = self.limits.max_hibernated_sessions
        if limit is None or self.hibernated < limit:
            return None
        metrics.QUOTA_REFUSALS.labels("hibernated").inc()
        return OverQuota(
            f"quota reached: you may keep {_sessions(limit)} hibernated "
            f"({self.hibernated} hibernated); stop one first",
            limit="hibernated",
        )


def _sessions(count: int) -> str:
    return f"{count} session{'' if count == 1 else 's'}"


async def quotas_of(
    db: DbSession, user_ids: Collection[str], site: Limits, *, lock: bool
) -> dict[str, Quota]:
    """The users' quotas with their current usage; ``lock`` serialises the decisions of this
    transaction with the others' for the same users (taken only where a limit applies)."""
    groups = await quota_repo.groups_of(db, user_ids)
    quotas = {
        user_id: Quota(
            effective(groups.get(user_id, []), site),
            groups=[group.name for group in groups.get(user_id, [])],
        )
        for user_id in user_ids
    }
    # Deciding counts only the users with a limit (and locks them first); showing counts all.
    counted = [
        user_id for user_id, quota in quotas.items() if quota.limits.counts_sessions or not lock
    ]
    if lock:
        await quota_repo.lock_owners(db, counted)
    counts = await quota_repo.session_counts(db, counted, RUNNING_STATES | HIBERNATED_STATES)
    for user_id, by_state in counts.items():
        quota = quotas[user_id]
        quota.running = sum(by_state.get(state, 0) for state in RUNNING_STATES)
        quota.hibernated = sum(by_state.get(state, 0) for state in HIBERNATED_STATES)
    return quotas


async def quota_of(db: DbSession, user_id: str, site: Limits, *, lock: bool) -> Quota:
    """One user's quota (see :func:`quotas_of`)."""
    return (await quotas_of(db, [user_id], site, lock=lock))[user_id]


class Quotas:
    """Shows users their quota and usage."""

    def __init__(self, *, db: SessionFactory, settings: ApiSettings) -> None:
        self._db = db
        self._site = site_limits(settings)

    async def of(self, user: User) -> Quota:
        async with reading(self._db) as db:
            return await quota_of(db, user.id, self._site, lock=False)
