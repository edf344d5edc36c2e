"""Login throttling per username and per client address.

Every failed login counts against both the username and the address it came from. Once a
subject reaches its allowance, it is locked for ``base`` seconds, doubling with each further
failure up to ``cap``; a login attempt on a locked subject is refused with 429 before the
password is even checked (so a lock is not an oracle). A success clears the username's
failures, not the address's (one good account must not unlock guessing at others).
Failures are forgotten after ``cap`` seconds without a new one.

With the Redis hub the counters live in Redis, shared by every replica; while Redis is
unreachable each replica falls back to its own in-process counters rather than refusing
logins.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamspace.config import ApiSettings
from streamspace.controlplane.hub import AgentHub
from streamspace.redis_client import LoginCounters, RedisUnavailable, create_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """What failures are counted against: ``user:<name>`` or ``address:<ip>``."""

    key: str
    allowed: int


@dataclass(frozen=True)
class Policy:
    """Failures allowed before a lock, and how long locks last (seconds)."""

    per_user: int
    per_address: int
    base: float
    cap: float

    @classmethod
    def of(cls, settings: ApiSettings) -> Policy:
        return cls(
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
            base=settings.login_lockout_base,
            cap=settings.login_lockout_max,
        )

    def user(self, username: str) -> Subject:
        return Subject(f"user:{username}", self.per_user)

    def address(self, address: str) -> Subject:
        return Subject(f"address:{address}", self.per_address)

    def lock_for(self, failures: int, allowed: int) -> float:
        """Seconds of lock after the ``failures``-th failure (0 below the allowance)."""
        if failures < allowed:
            return 0.0
        # Past ~60 doublings any base exceeds every cap; this keeps the float finite.
        return min(self.base * 2.0 ** min(failures - allowed, 64), self.cap)


class LoginThrottle(abc.ABC):
    """The contract the login route uses; subjects come from :class:`Policy`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @abc.abstractmethod
    async def retry_after(self, subjects: Sequence[Subject]) -> float:
        """Seconds until the longest lock among ``subjects`` ends; 0 when none is locked."""

    @abc.abstractmethod
    async def failed(self, subjects: Sequence[Subject]) -> None:
        """Count one failure against each subject (locking those past their allowance)."""

    @abc.abstractmethod
    async def succeeded(self, subject: Subject) -> None:
        """Forget the subject's failures and lock."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release shared infrastructure, if any."""


class MemoryLoginThrottle(LoginThrottle):
    """Counters of this process only (single replica, or Redis unreachable)."""

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_subjects: int = 100_000,
    ) -> None:
        super().__init__(policy)
        self._clock = clock
        self._max = max_subjects
        # key -> (failures, time of the last failure, locked until)
        self._entries: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def _live(self, key: str, now: float) -> tuple[int, float, float] | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] > self.policy.cap:
            del self._entries[key]
            return None
        return entry

    async def retry_after(self, subjects: Sequence[Subject]) -> float:
        now = self._clock()
        locks = [entry[2] - now for s in subjects if (entry := self._live(s.key, now))]
        return max([0.0, *locks])

    async def failed(self, subjects: Sequence[Subject]) -> None:
        now = self._clock()
        for subject in subjects:
            entry = self._live(subject.key, now)
            failures = (entry[0] if entry else 0) + 1
            until = now + self.policy.lock_for(failures, subject.allowed)
            self._entries[subject.key] = (failures, now, until)
            self._entries.move_to_end(subject.key)
        while len(self._entries) > self._max:  # a flood of made-up names must not grow us
            self._entries.popitem(last=False)

    async def succeeded(self, subject: Subject) -> None:
        self._entries.pop(subject.key, None)


class RedisLoginThrottle(LoginThrottle):
    """Counters shared by every replica through Redis, with an in-process fallback."""

    def __init__(
        self, policy: Policy, *, counters: LoginCounters, available: Callable[[], bool | None]
    ) -> None:
        super().__init__(policy)
        self._counters = counters
        self._available = available
        """The hub's view of Redis: known down means no waiting for timeouts here."""
        self._fallback = MemoryLoginThrottle(policy)
        self._degraded = False

    async def retry_after(self, subjects: Sequence[Subject]) -> float:
        if self._usable():
            try:
                remaining = await self._counters.locked_for([s.key for s in subjects])
                self._recovered()
                return max([0.0, *remaining])
            except RedisUnavailable as exc:
                self._degrade(exc)
        return await self._fallback.retry_after(subjects)

    async def failed(self, subjects: Sequence[Subject]) -> None:
        if self._usable():
            try:
                await self._counters.failed(
                    [(s.key, s.allowed) for s in subjects],
                    base=self.policy.base,
                    cap=self.policy.cap,
                )
                self._recovered()
                return
            except RedisUnavailable as exc:
                self._degrade(exc)
        await self._fallback.failed(subjects)

    async def succeeded(self, subject: Subject) -> None:
        await self._fallback.succeeded(subject)
        if self._usable():
            try:
                await self._counters.forget(subject.key)
                self._recovered()
            except RedisUnavailable as exc:
                self._degrade(exc)

    async def close(self) -> None:
        await self._counters.close()

    def _usable(self) -> bool:
        if self._available() is False:
            self._degrade("the hub finds Redis unavailable")
            return False
        return True

    def _degrade(self, error: BaseException | str) -> None:
        if not self._degraded:
            log.warning("login throttling falls back to this replica's counters: %s", error)
        self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("login throttling shared through Redis again")
        self._degraded = False


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 while a lock lasts."""
    return str(max(1, math.ceil(seconds)))


def create_login_throttle(settings: ApiSettings, hub: AgentHub) -> LoginThrottle:
    """Shared through Redis with the Redis hub (falling back while the hub finds Redis down),
    in-process otherwise."""
    policy = Policy.of(settings)
    if not settings.agenthub_redis_enabled:
        return MemoryLoginThrottle(policy)
    counters = LoginCounters(create_redis(settings))
    return RedisLoginThrottle(policy, counters=counters, available=lambda: hub.shared_state_up)
