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

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamspace import names
from streamspace.config import ApiSettings
from streamspace.controlplane.hub.base import AgentHub
from streamspace.redis_client import create_redis

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


# KEYS: failures, lock. ARGV: allowed, base ms, cap ms, memory s. The lock's TTL is the
# lock, so every replica reads the same remaining time (Redis's clock, not ours).
_FAIL = """
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local allowed = tonumber(ARGV[1])
if failures >= allowed then
  local ms = tonumber(ARGV[2]) * 2 ^ math.min(failures - allowed, 64)
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(math.min(ms, tonumber(ARGV[3]))))
end
return failures
"""


class RedisLoginThrottle(LoginThrottle):
    """Counters shared by every replica through Redis, with an in-process fallback."""

    def __init__(
        self, policy: Policy, *, redis: Redis, available: Callable[[], bool | None]
    ) -> None:
        super().__init__(policy)
        self._redis = redis
        self._available = available
        """The hub's view of Redis: known down means no waiting for timeouts here."""
        self._fallback = MemoryLoginThrottle(policy)
        self._fail = redis.register_script(_FAIL)
        self._degraded = False

    async def retry_after(self, subjects: Sequence[Subject]) -> float:
        if self._usable():
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for subject in subjects:
                        pipe.pttl(names.login_lock_key(subject.key))
                    remaining: list[int] = await pipe.execute()
                self._recovered()
                return max([0.0, *(ms / 1000 for ms in remaining if ms > 0)])
            except (RedisError, OSError) as exc:
                self._degrade(exc)
        return await self._fallback.retry_after(subjects)

    async def failed(self, subjects: Sequence[Subject]) -> None:
        if self._usable():
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for subject in subjects:
                        await self._fail(
                            keys=self._keys(subject),
                            args=[
                                subject.allowed,
                                round(self.policy.base * 1000),
                                round(self.policy.cap * 1000),
                                max(1, math.ceil(self.policy.cap)),
                            ],
                            client=pipe,
                        )
                    await pipe.execute()
                self._recovered()
                return
            except (RedisError, OSError) as exc:
                self._degrade(exc)
        await self._fallback.failed(subjects)

    async def succeeded(self, subject: Subject) -> None:
        await self._fallback.succeeded(subject)
        if self._usable():
            try:
                await self._redis.delete(*self._keys(subject))
                self._recovered()
            except (RedisError, OSError) as exc:
                self._degrade(exc)

    async def close(self) -> None:
        await self._redis.aclose()

    def _keys(self, subject: Subject) -> list[str]:
        return [names.login_failures_key(subject.key), names.login_lock_key(subject.key)]

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
    return RedisLoginThrottle(
        policy, redis=create_redis(settings), available=lambda: hub.shared_state_up
    )
