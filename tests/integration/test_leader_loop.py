"""The leader loop over a real Redis lease: campaign, serve, renew, step down, hand over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from streamspace import names
from streamspace.agent.leader.base import Term
from streamspace.agent.leader.election import create_lease, lead
from streamspace.config import AgentSettings
from tests.helpers import eventually
from tests.services import RedisServer

AGENT = "ha-loop"
LEASE = 1.0


@dataclass
class Replica:
    """One contender: its ``lead`` task and the terms it served."""

    name: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    terms: list[Term] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    fail: bool = False

    async def serve(self, term: Term) -> None:
        self.terms.append(term)
        if self.fail:
            raise RuntimeError(f"{self.name} cannot serve")
        await term.ended.wait()

    def leading(self) -> Term | None:
        term = self.terms[-1] if self.terms else None
        return term if term is not None and not term.ended.is_set() else None

    async def finish(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


Start = Callable[[str], Replica]


@pytest.fixture
async def start(redis_url: str) -> AsyncIterator[Start]:
    """``start(name)``: a replica campaigning for ``AGENT`` (stopped at the end)."""
    settings = AgentSettings(
        agent_id=AGENT, leader_election="redis", leader_lease_seconds=LEASE, redis_url=redis_url
    )
    replicas: list[Replica] = []

    def start_one(name: str, *, fail: bool = False) -> Replica:
        replica = Replica(name, fail=fail)
        lease = create_lease(settings)
        assert lease is not None
        replica.task = asyncio.create_task(
            lead(lease, replica.serve, agent_id=AGENT, lease_seconds=LEASE, stop=replica.stop)
        )
        replicas.append(replica)
        return replica

    yield start_one
    for replica in replicas:
        await replica.finish()


async def leads(replica: Replica, *, timeout: float = 5.0) -> Term:
    async def term() -> Term | None:
        return replica.leading()

    return await eventually(term, timeout=timeout, message=f"{replica.name} leads")


async def test_follower_takes_over_at_once_when_the_leader_shuts_down(start: Start) -> None:
    a = start("a")
    first = await leads(a)
    b = start("b")
    await asyncio.sleep(0)  # b's first campaign runs; the lease is a's
    assert first.held() and b.leading() is None

    began = time.monotonic()
    await a.finish()  # a clean shutdown releases the lease
    second = await leads(b)
    assert time.monotonic() - began < LEASE / 2, "the follower waited for the lease to expire"
    assert second.epoch == first.epoch + 1
    assert not first.held()


async def test_leader_keeps_its_lease_by_renewing(start: Start) -> None:
    a = start("a")
    term = await leads(a)
    b = start("b")
    renewed_by = term.deadline

    async def renewed_twice() -> bool:
        return term.deadline > renewed_by + LEASE / 2

    await eventually(renewed_twice, timeout=3 * LEASE, message="two renewals")
    assert term.held() and b.leading() is None and len(a.terms) == 1


async def test_leader_that_loses_its_lease_stops_at_once_and_campaigns_again(
    start: Start, redis_client: aioredis.Redis
) -> None:
    a = start("a")
    term = await leads(a)
    # Someone else holds the lease now (as if ours expired during a pause and was taken).
    await redis_client.set(
        names.agent_leader_key(AGENT), "another-replica", px=int(1.5 * LEASE * 1000)
    )
    began = time.monotonic()
    await asyncio.wait_for(term.ended.wait(), LEASE)
    assert time.monotonic() - began <= LEASE / 3 + 0.2  # at the next renewal
    assert not term.held()
    # The stolen lease was never renewed: once it expires, a leads again, with a new epoch.
    again = await leads(a, timeout=3 * LEASE)
    assert again.epoch == term.epoch + 1


async def test_leader_steps_down_when_redis_is_gone_before_its_lease_ends(
    start: Start, redis_server: RedisServer
) -> None:
    a = start("a")
    term = await leads(a)
    redis_server.kill()
    try:
        began = time.monotonic()
        await asyncio.wait_for(term.ended.wait(), 2 * LEASE)
        # Renewal errors are retried while the lease lasts, and no longer.
        assert time.monotonic() - began <= LEASE + 0.2
    finally:
        redis_server.start()
    again = await leads(a, timeout=5 * LEASE)
    assert again.epoch > term.epoch  # Redis lost the counter; its clock restarted it higher


async def test_a_failing_term_releases_the_lease_and_raises(
    start: Start, redis_client: aioredis.Redis
) -> None:
    a = start("a", fail=True)
    assert a.task is not None
    with pytest.raises(RuntimeError, match="a cannot serve"):
        await asyncio.wait_for(a.task, 5)
    assert await redis_client.exists(names.agent_leader_key(AGENT)) == 0
