"""The leader loop: campaign → serve with the term's epoch → renew every third of the lease →
on losing it stop acting at once and campaign again; on shutdown release the lease.

Sessions are not stopped when a term ends: they belong to the platform, and the next
leader adopts them through its ``hello``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from streamspace.agent.leader.base import Lease, LeaseUnavailable, Term
from streamspace.agent.leader.file import FileLease
from streamspace.agent.leader.kubernetes import KubernetesLease
from streamspace.agent.leader.redis import RedisLease
from streamspace.agent.platforms.kubernetes.client import LeaseClient
from streamspace.aio import wait_or_stop
from streamspace.config import AgentSettings
from streamspace.redis_client import create_redis

log = logging.getLogger(__name__)

STEP_DOWN_GRACE = 1.0
"""Seconds a term's work gets to stop by itself after the lease was lost; then it is cancelled."""

Serve = Callable[[Term], Coroutine[Any, Any, None]]
"""Acts as the agent until ``term.ended`` is set."""


def create_lease(settings: AgentSettings) -> Lease | None:
    """The lease ``LEADER_ELECTION`` asks for, or ``None`` without leader election."""
    if settings.leader_election == "redis":
        return RedisLease(
            create_redis(settings),
            settings.agent_id,
            lease_seconds=settings.leader_lease_seconds,
        )
    if settings.leader_election == "file":
        return FileLease(settings.leader_lock_path)
    if settings.leader_election == "kubernetes":
        return KubernetesLease(
            LeaseClient.from_settings(settings),
            settings.agent_id,
            holder=settings.pod_name,
            lease_seconds=settings.leader_lease_seconds,
        )
    return None


async def lead(
    lease: Lease,
    serve: Serve,
    *,
    agent_id: str,
    lease_seconds: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Serve one term after another while this replica holds ``lease``, until ``stop``."""
    try:
        while not stop.is_set():
            term = await _campaign(
                lease, agent_id=agent_id, lease_seconds=lease_seconds, stop=stop, clock=clock
            )
            if term is None:
                return
            log.info("leading agent %s (epoch %d)", agent_id, term.epoch)
            await _serve_term(lease, serve, term, lease_seconds=lease_seconds, stop=stop)
    finally:
        await lease.close()


async def _campaign(
    lease: Lease,
    *,
    agent_id: str,
    lease_seconds: float,
    stop: asyncio.Event,
    clock: Callable[[], float],
) -> Term | None:
    """Try for the lease every quarter lease until it is ours (``None`` once stopped)."""
    following = False
    while not stop.is_set():
        began = clock()
        try:
            epoch = await lease.acquire()
        except LeaseUnavailable as exc:
            log.warning("cannot campaign for agent %s: %s", agent_id, exc)
            epoch = None
        if epoch is not None:
            return Term(epoch, deadline=began + lease_seconds, clock=clock)
        if not following:
            log.info("another replica leads agent %s; following", agent_id)
            following = True
        await wait_or_stop(stop, lease_seconds / 4)
    return None


async def _serve_term(
    lease: Lease, serve: Serve, term: Term, *, lease_seconds: float, stop: asyncio.Event
) -> None:
    """Run ``serve`` while the lease is renewed; end the term when either stops or ``stop``."""
    serving = asyncio.create_task(serve(term), name=f"leader-term-{term.epoch}")
    renewing = asyncio.create_task(_renew(lease, term, lease_seconds), name="leader-renew")
    stopping = asyncio.create_task(stop.wait(), name="leader-stop")
    try:
        await asyncio.wait({serving, renewing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        term.ended.set()  # the runtime cancels its commands and closes its socket
        stopping.cancel()
        if renewing.done() and not serving.done():  # lost: stop at once, not politely
            await asyncio.wait({serving}, timeout=STEP_DOWN_GRACE)
            serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        renewing.cancel()
        await asyncio.gather(renewing, stopping, return_exceptions=True)
        try:
            await lease.release()
        except LeaseUnavailable as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)
    for task in (serving, renewing):  # a crash of either is loud
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _renew(lease: Lease, term: Term, lease_seconds: float) -> None:
    """Renew every third of the lease; return once it is lost or could not be renewed
    before it ran out (errors are retried while it lasts)."""
    while True:
        await asyncio.sleep(max(0.0, min(lease_seconds / 3, term.deadline - term.clock())))
        began = term.clock()
        try:
            async with asyncio.timeout(max(0.0, term.deadline - began)):
                renewed = await lease.renew()
        except TimeoutError:
            log.error("lease (epoch %d) ran out before it was renewed; stepping down", term.epoch)
            return
        except LeaseUnavailable as exc:
            log.warning("cannot renew the lease (epoch %d), retrying: %s", term.epoch, exc)
            continue
        if not renewed:
            log.error("lease (epoch %d) lost to another replica; stepping down", term.epoch)
            return
        term.deadline = began + lease_seconds
