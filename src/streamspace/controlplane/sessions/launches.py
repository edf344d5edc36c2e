"""Launching sessions together: the launches waiting at one moment share one transaction.

Written one by one, every launch pays its own round trips, its own commit and its own
count of every agent's sessions. The :class:`LaunchWriter` writes whatever launches are
waiting when it is free as one batch: one query for their templates, one for the agents
and their loads, one INSERT per table, one commit. A launch that arrives alone is a batch
of one; nobody waits for a batch to fill. Within a batch each launch goes to the least
loaded agent that fits, counting the launches placed before it, so one replica never
overfills an agent however many launches arrive together.

Each launch is held to its user's quota (:mod:`~streamspace.controlplane.sessions.quotas`)
in the same transaction: the users of the batch are locked, their sessions counted, and the
launches before it in the batch counted too, so no replica ever lets a user exceed a limit.
A refused launch (quota, template, capacity) writes nothing and claims no key.

A launch sent with an ``Idempotency-Key`` claims the key in the same transaction as its
session: a key already held (by an earlier launch, on any replica, or by one before it in
the batch) makes the launch :class:`Repeated` instead, which writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from streamspace.batching import Coalescer
from streamspace.config import ApiSettings
from streamspace.controlplane.audit.log import Action as AuditAction
from streamspace.controlplane.audit.log import Actor, AuditLog
from streamspace.controlplane.errors import Forbidden, NotFound, OverQuota, Unavailable
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.sessions.policies import effective_policy
from streamspace.controlplane.sessions.quotas import Quota, quotas_of, site_limits
from streamspace.controlplane.sessions.specs import session_spec
from streamspace.db.engine import DbSession, SessionFactory, transaction
from streamspace.db.errors import ConstraintViolation
from streamspace.db.models import AgentCommand, IdempotencyKey, Session, Template, User, utcnow
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import idempotency as idempotency_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import templates as template_repo
from streamspace.protocol import Action

log = logging.getLogger(__name__)

MAX_BATCH = 100
"""Launches written per transaction at most."""
MAX_WAITING = 5_000
"""Launches queued on one replica at most; more are refused (503) rather than left to grow."""


class Launched(NamedTuple):
    """A new session, its agent and its ``start_session`` command (written ``sent``)."""

    session: Session
    agent_id: str
    command: AgentCommand


class Repeated(NamedTuple):
    """A launch whose ``Idempotency-Key`` was taken: nothing was written for it."""

    user_id: str
    key: str


Outcome = Launched | Repeated | BaseException


@dataclass(frozen=True)
class _Launch:
    user: User
    template_name: str
    idempotency: Idempotency | None
    actor: Actor

    @property
    def claim(self) -> idempotency_repo.Claim | None:
        return None if self.idempotency is None else (self.user.id, self.idempotency.key)

    def repeated(self) -> Repeated:
        assert self.idempotency is not None
        return Repeated(self.user.id, self.idempotency.key)


class LaunchWriter:
    """Writes new sessions with their first command, many launches per transaction."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        settings: ApiSettings,
        audit: AuditLog,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._max_waiting = max_waiting
        self._site = site_limits(settings)
        self._queue: Coalescer[_Launch, Launched | Repeated] = Coalescer(
            self._write_batch, max_batch=MAX_BATCH, name="launch-writer"
        )

    async def launch(
        self,
        user: User,
        template_name: str,
        idempotency: Idempotency | None = None,
        *,
        actor: Actor | None = None,
    ) -> Launched | Repeated:
        """Write a pending session of the template on the least loaded agent that fits,
        unless ``idempotency`` names a key already taken (:class:`Repeated`).

        Raises :class:`NotFound` for an unknown template, :class:`Forbidden` for one the
        user's groups may not launch, :class:`OverQuota` when the user runs as many sessions
        as their quota allows, and :class:`Unavailable` when no agent can take it or this
        replica already has ``max_waiting`` launches queued; nothing is written for that
        launch then.
        """
        if self._queue.waiting >= self._max_waiting:
            raise Unavailable(
                f"{self._queue.waiting} launches are waiting on this replica; try again in a moment"
            )
        launch = _Launch(user, template_name, idempotency, actor or Actor.of(user))
        return await self._queue.submit(launch)

    async def _write_batch(self, batch: list[_Launch]) -> list[Outcome]:
        try:
            return await self._write(batch)
        except ConstraintViolation as exc:
            if len(batch) == 1:
                raise
            # Rolled back for sure; one launch may have spoilt it (e.g. its user was just
            # deleted): write each alone, so that only that one fails.
            log.warning("%d launches together violated a constraint (%s)", len(batch), exc)
            return [await self._write_alone(launch) for launch in batch]
        # Any other error (e.g. the database went away) leaves unknown whether the commit
        # happened: nothing is written again, every launch of the batch gets the error.

    async def _write_alone(self, launch: _Launch) -> Outcome:
        try:
            return (await self._write([launch]))[0]
        except Exception as exc:
            return exc

    async def _write(self, batch: list[_Launch]) -> list[Outcome]:
        """Place and write one batch in one transaction."""
        async with transaction(self._db) as db:
            templates = await template_repo.get_many(db, {x.template_name for x in batch})
            fresh = utcnow() - timedelta(seconds=3 * self._settings.heartbeat_interval)
            candidates = await agent_repo.launch_candidates(db, heartbeat_after=fresh)
            repeated = await _repeated(db, batch)
            users = {launch.user.id for launch in batch}
            quotas = await quotas_of(db, users, self._site, lock=True)
            outcomes: list[Outcome] = [
                launch.repeated()
                if position in repeated
                else _place(
                    launch,
                    templates.get(launch.template_name),
                    candidates,
                    quotas[launch.user.id],
                    self._settings,
                )
                for position, launch in enumerate(batch)
            ]
            outcomes = await _claim_keys(db, batch, outcomes, candidates)
            placed = [
                (launch, outcome)
                for launch, outcome in zip(batch, outcomes, strict=True)
                if isinstance(outcome, Launched)
            ]
            if placed:
                await session_repo.insert_new(db, [launched.session for _, launched in placed])
                await command_repo.insert_new(db, [launched.command for _, launched in placed])
                await self._audit.record_many(db, [_launched(*pair) for pair in placed])
        return outcomes


def _launched(launch: _Launch, launched: Launched) -> AuditAction:
    """The audit record of a placed launch."""
    detail = {"template": launch.template_name, "agent": launched.agent_id}
    target = ("session", launched.session.id)
    return AuditAction(launch.actor, "session.launch", target, detail)


async def _repeated(db: DbSession, batch: list[_Launch]) -> set[int]:
    """The launches of the batch (by position) whose key is taken already: by a live row,
    or by a launch before them in this batch."""
    claims = [launch.claim for launch in batch if launch.claim is not None]
    taken = await idempotency_repo.live(db, claims, now=utcnow())
    repeated: set[int] = set()
    for position, launch in enumerate(batch):
        if launch.claim is None:
            continue
        if launch.claim in taken:
            repeated.add(position)
        taken.add(launch.claim)
    return repeated


async def _claim_keys(
    db: DbSession,
    batch: list[_Launch],
    outcomes: list[Outcome],
    candidates: list[agent_repo.Candidate],
) -> list[Outcome]:
    """Claim the keys of the placed launches that have one; a launch whose key another
    replica claimed meanwhile becomes :class:`Repeated` and gives its place back."""
    keyed = {
        launch.claim: (launch, outcome)
        for launch, outcome in zip(batch, outcomes, strict=True)
        if launch.claim is not None and isinstance(outcome, Launched)
    }
    if not keyed:
        return outcomes
    rows = [
        IdempotencyKey(
            user_id=launch.user.id,
            key=launch.idempotency.key,
            request_hash=launch.idempotency.request_hash,
            resource="session",
            resource_id=launched.session.id,
        )
        for launch, launched in keyed.values()
        if launch.idempotency is not None  # always, as keyed holds only claims
    ]
    claimed = await idempotency_repo.claim(db, rows, now=utcnow())
    load = {candidate.agent_id: candidate for candidate in candidates}
    result: list[Outcome] = []
    for launch, outcome in zip(batch, outcomes, strict=True):
        if launch.claim in keyed and launch.claim not in claimed and isinstance(outcome, Launched):
            load[outcome.agent_id].used -= 1
            result.append(launch.repeated())
        else:
            result.append(outcome)
    return result


def _place(
    launch: _Launch,
    template: Template | None,
    candidates: list[agent_repo.Candidate],
    quota: Quota,
    settings: ApiSettings,
) -> Launched | NotFound | Forbidden | OverQuota | Unavailable:
    """The launch's session and start command on the least loaded agent that fits, or why
    there is none (counted on the chosen candidate and the user's quota, for the launches
    after it)."""
    if template is None:
        return NotFound(f"template {launch.template_name!r} not found")
    refused = quota.refuse_launch(template.name)
    if refused is not None:
        return refused
    agent = agent_repo.least_loaded(candidates, template)
    if agent is None:
        wanted = f" for platform {template.platform!r}" if template.platform else ""
        return Unavailable(
            f"no agent available{wanted}: none is online with free capacity; "
            "try again later or ask an administrator"
        )
    agent.used += 1
    quota.running += 1
    policy = effective_policy(template, settings, quota_max_age=quota.limits.max_age_seconds)
    session = session_repo.new(launch.user, template, agent_id=agent.agent_id, policy=policy)
    command = command_repo.new(
        agent_id=agent.agent_id,
        session_id=session.id,
        action=Action.START_SESSION,
        payload={"spec": session_spec(session, template, launch.user).model_dump()},
        sent=True,
    )
    return Launched(session, agent.agent_id, command)
