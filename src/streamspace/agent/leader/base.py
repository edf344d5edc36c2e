"""The lease contract of leader election, and one leadership term.

Several replicas of ONE agent identity campaign for one lease; only its holder talks to the
control plane and touches sessions. Every acquisition yields a higher *epoch* (the fencing
token): the holder sends it in ``hello`` and the control plane refuses a lower one, so a
leader that lost its lease without noticing is shut out there too.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable


class LeaseUnavailable(Exception):
    """The backend could not be asked (e.g. Redis is unreachable); try again later."""


class Lease(ABC):
    """A lease on one agent identity that at most one replica holds at a time.

    Every method may raise :class:`LeaseUnavailable`; none blocks longer than its backend's
    I/O timeout. An acquisition whose answer was lost is harmless: the lease then simply
    expires (Redis) or is never held (file).
    """

    @abstractmethod
    async def acquire(self) -> int | None:
        """Try once, without waiting: the new epoch (above every earlier one) if this
        replica got the lease, ``None`` if another holds it."""

    @abstractmethod
    async def renew(self) -> bool:
        """Extend the lease by a full period; ``False`` if it is no longer ours (it
        expired and may have been taken: a renewal never takes back a lost lease)."""

    @abstractmethod
    async def release(self) -> None:
        """Give the lease up, if still ours, so a follower takes over at once."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Free the backend's resources (connections, file descriptors)."""


class Term:
    """One leadership term: its epoch, and until when the lease is surely ours."""

    def __init__(
        self, epoch: int, *, deadline: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.epoch = epoch
        self.deadline = deadline
        """``clock()`` value before which the lease cannot have expired (renewals move it)."""
        self.ended = asyncio.Event()
        """Set when the term is over (lease lost or shutting down): stop acting."""
        self.clock = clock

    def held(self) -> bool:
        """Whether this replica may still act as the leader, by its own clock."""
        return not self.ended.is_set() and self.clock() < self.deadline
