"""The two lease backends of agent leader election: real Redis, real flock, real processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamspace import names
from streamspace.agent.leader.base import Lease, LeaseUnavailable
from streamspace.agent.leader.election import create_lease
from streamspace.agent.leader.file import FileLease
from streamspace.config import AgentSettings
from tests.helpers import eventually
from tests.services import free_port

AGENT = "ha-agent"
MakeLease = Callable[..., Lease]


@pytest.fixture
async def leases(tmp_path: Path) -> AsyncIterator[Callable[..., MakeLease]]:
    """``leases(backend, redis_url)`` → ``make(lease_seconds=1.0)``: leases on ``AGENT``, as
    ``LEADER_ELECTION=backend`` builds them (closed at the end)."""
    made: list[Lease] = []

    def factory(backend: str, redis_url: str | None = None) -> MakeLease:
        def make(lease_seconds: float = 1.0) -> Lease:
            settings = AgentSettings(
                agent_id=AGENT,
                agent_data_dir=tmp_path,
                leader_election=backend,
                leader_lease_seconds=lease_seconds,
                redis_url=redis_url,
            )
            lease = create_lease(settings)
            assert lease is not None
            made.append(lease)
            return lease

        return make

    yield factory
    for lease in made:
        await lease.close()


@pytest.fixture
def make_redis_lease(leases: Callable[..., MakeLease], redis_url: str) -> MakeLease:
    return leases("redis", redis_url)


@pytest.fixture(params=["redis", "file"])
def make_lease(request: pytest.FixtureRequest, leases: Callable[..., MakeLease]) -> MakeLease:
    """Each backend in turn (the contract tests run on both)."""
    if request.param == "redis":
        return leases("redis", request.getfixturevalue("redis_url"))
    return leases("file")


async def test_lease_excludes_others_and_epochs_increase(make_lease: MakeLease) -> None:
    first, second = make_lease(), make_lease()
    epoch = await first.acquire()
    assert epoch is not None
    assert await second.acquire() is None
    assert await first.renew()

    await first.release()
    assert await second.acquire() == epoch + 1
    assert not await first.renew()
    await first.release()  # no longer ours: changes nothing
    assert await second.renew()
    assert await make_lease().acquire() is None


async def test_redis_lease_expires_unless_renewed(
    make_redis_lease: MakeLease, redis_client: aioredis.Redis
) -> None:
    stale, fresh = make_redis_lease(lease_seconds=0.2), make_redis_lease()
    epoch = await stale.acquire()
    assert epoch is not None
    assert 0 < await redis_client.pttl(names.agent_leader_key(AGENT)) <= 200

    async def expired() -> bool:
        return await redis_client.exists(names.agent_leader_key(AGENT)) == 0

    await eventually(expired, timeout=5, message="the first lease expired")
    assert await fresh.acquire() == epoch + 1
    holder = await redis_client.get(names.agent_leader_key(AGENT))
    # The expired holder can neither renew nor release the new holder's lease.
    assert not await stale.renew()
    await stale.release()
    assert await redis_client.get(names.agent_leader_key(AGENT)) == holder
    assert await fresh.renew()
    assert await redis_client.get(names.agent_leader_epoch_key(AGENT)) == str(epoch + 1)


async def test_a_lost_epoch_counter_still_yields_a_higher_epoch(
    make_redis_lease: MakeLease, redis_client: aioredis.Redis
) -> None:
    lease = make_redis_lease()
    epoch = await lease.acquire()
    assert epoch is not None
    await lease.release()
    await redis_client.flushdb()  # Redis restarted without persistence

    async def later() -> bool:  # the counter restarts from the server's clock in ms
        seconds, micros = await redis_client.time()
        return seconds * 1000 + micros // 1000 >= epoch

    await eventually(later, timeout=5, message="the next millisecond")
    again = await lease.acquire()
    assert again is not None and again > epoch


async def test_unreachable_redis_is_reported(leases: Callable[..., MakeLease]) -> None:
    lease = leases("redis", f"redis://127.0.0.1:{free_port()}/1")()
    with pytest.raises(LeaseUnavailable, match="Redis"):
        await lease.acquire()


async def test_file_lease_is_lost_when_its_lock_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    first, second = FileLease(path), FileLease(path)
    epoch = await first.acquire()
    assert epoch is not None
    path.unlink()  # e.g. an operator cleaning up: another replica can now lock a new file
    assert not await first.renew()
    assert await second.acquire() == epoch + 1
    assert (tmp_path / "leader.lock.epoch").read_text() == f"{epoch + 1}\n"
    await first.close()
    await second.close()


HOLD = """
import asyncio, sys
from pathlib import Path
from streamspace.agent.leader.file import FileLease

async def main() -> None:
    print(await FileLease(Path(sys.argv[1])).acquire(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_file_lease_is_free_once_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        epoch = int(await asyncio.wait_for(holder.stdout.readline(), 10))
        lease = FileLease(path)
        assert await lease.acquire() is None
        holder.kill()  # SIGKILL: no release; the kernel drops the lock
        await holder.wait()
        taken = await eventually(lease.acquire, timeout=5, message="lock taken over")
        assert taken == epoch + 1
        await lease.close()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
