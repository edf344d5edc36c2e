"""Leader election on a ``coordination.k8s.io/v1`` Lease (``LEADER_ELECTION=kubernetes``),
against the Kubernetes API emulator over real HTTP; a real process holding it is killed -9."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from streamspace.agent.leader.base import LeaseUnavailable, Term
from streamspace.agent.leader.election import create_lease, lead
from streamspace.agent.leader.kubernetes import KubernetesLease, lease_name
from streamspace.agent.platforms.kubernetes.client import LeaseClient
from streamspace.config import AgentSettings
from streamspace.protocol import CloseCode
from tests.helpers import eventually
from tests.k8s.emulator import KubeEmulator
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess

AGENT = "k8s-prod-cluster"
LEASE = 1.0
MakeLease = Callable[..., KubernetesLease]


def settings_for(kube: KubeEmulator, pod: str, agent_id: str = AGENT) -> AgentSettings:
    return AgentSettings(
        agent_id=agent_id,
        leader_election="kubernetes",
        leader_lease_seconds=LEASE,
        pod_name=pod,
        kubeconfig=kube.kubeconfig_path,
        namespace=kube.namespace,
    )


def env_for(kube: KubeEmulator, pod: str) -> dict[str, str]:
    """The environment of a replica ``pod`` under Lease election (as its Deployment sets)."""
    return {
        "LEADER_ELECTION": "kubernetes",
        "LEADER_LEASE_SECONDS": str(LEASE),
        "POD_NAME": pod,
        **kube.agent_env(),
    }


@pytest.fixture
async def make_lease(kube: KubeEmulator) -> AsyncIterator[MakeLease]:
    """``make(pod, clock=None)``: a replica's lease on ``AGENT`` (closed at the end)."""
    made: list[KubernetesLease] = []

    def make(pod: str, clock: Callable[[], float] | None = None) -> KubernetesLease:
        settings = settings_for(kube, pod)
        if clock is None:
            lease = create_lease(settings)
        else:
            lease = KubernetesLease(
                LeaseClient.from_settings(settings),
                AGENT,
                holder=pod,
                lease_seconds=LEASE,
                clock=clock,
            )
        assert isinstance(lease, KubernetesLease)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        await lease.close()


def spec(kube: KubeEmulator) -> dict[str, object]:
    lease = kube.get("leases", AGENT)
    assert lease is not None
    found: dict[str, object] = lease["spec"]
    return found


async def test_lease_excludes_others_renews_and_hands_over(
    kube: KubeEmulator, make_lease: MakeLease
) -> None:
    first, second = make_lease("agent-a"), make_lease("agent-b")
    epoch = await first.acquire()
    assert epoch is not None and epoch >= int(time.time()) - 5  # a new Lease: the time in s
    assert await second.acquire() is None
    written = spec(kube)
    assert (written["holderIdentity"], written["leaseTransitions"]) == ("agent-a", epoch)
    assert written["leaseDurationSeconds"] == 1
    renewed_before = written["renewTime"]
    assert await first.renew()
    assert spec(kube)["renewTime"] != renewed_before

    await first.release()
    assert "holderIdentity" not in spec(kube)
    assert await second.acquire() == epoch + 1
    assert not await first.renew()
    await first.release()  # no longer ours: changes nothing
    assert spec(kube)["holderIdentity"] == "agent-b"
    assert await second.renew()
    assert await make_lease("agent-c").acquire() is None


async def test_expired_lease_is_taken_over_and_the_stale_holder_loses(
    kube: KubeEmulator, make_lease: MakeLease
) -> None:
    now = [time.time()]
    stale, fresh = make_lease("agent-a", lambda: now[0]), make_lease("agent-b", lambda: now[0])
    epoch = await stale.acquire()
    assert epoch is not None
    now[0] += 0.9  # renewTime + leaseDurationSeconds not yet passed
    assert await fresh.acquire() is None
    now[0] += 0.2
    assert await fresh.acquire() == epoch + 1

    calls = len(kube.calls)
    assert not await stale.renew()  # its write carries the old resourceVersion: 409, lost
    assert kube.count(since=calls)["PUT leases"] == 1
    assert spec(kube)["holderIdentity"] == "agent-b"
    await stale.release()
    assert (spec(kube)["holderIdentity"], spec(kube)["leaseTransitions"]) == ("agent-b", epoch + 1)
    assert await fresh.renew()


async def test_a_conflict_from_another_writer_does_not_lose_our_term(
    kube: KubeEmulator, make_lease: MakeLease
) -> None:
    lease = make_lease("agent-a")
    epoch = await lease.acquire()
    kube.conflict_next("leases")  # e.g. someone annotated the Lease meanwhile
    assert await lease.renew()
    assert (spec(kube)["holderIdentity"], spec(kube)["leaseTransitions"]) == ("agent-a", epoch)


async def test_unreachable_api_server_is_reported_and_a_deleted_lease_is_lost(
    kube: KubeEmulator, make_lease: MakeLease
) -> None:
    lease = make_lease("agent-a")
    epoch = await lease.acquire()
    assert epoch is not None
    kube.down()
    with pytest.raises(LeaseUnavailable, match="Kubernetes"):
        await lease.renew()
    kube.up()
    kube.delete("leases", AGENT)
    assert not await lease.renew()
    again = await lease.acquire()
    assert again is not None and again >= epoch  # a new Lease starts at the time in seconds


def test_lease_names_are_kubernetes_names() -> None:
    assert lease_name("k8s-prod-cluster") == "k8s-prod-cluster"
    odd = lease_name("K8s_Prod Cluster")
    assert odd.startswith("k8s-prod-cluster-") and len(odd) == len("k8s-prod-cluster-") + 8
    assert lease_name("k8s_prod") != lease_name("k8s-prod")


HOLD = """
import asyncio
from streamspace.agent.leader.election import create_lease, lead
from streamspace.config import AgentSettings

async def main() -> None:
    settings = AgentSettings()
    lease = create_lease(settings)

    async def serve(term) -> None:
        print(f"leading {term.epoch}", flush=True)
        await term.ended.wait()

    await lead(lease, serve, agent_id=settings.agent_id,
               lease_seconds=settings.leader_lease_seconds, stop=asyncio.Event())

asyncio.run(main())
"""


async def test_killed_holder_is_followed_within_two_leases(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    env = {**os.environ, **env_for(kube, "agent-a"), "AGENT_ID": AGENT}
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        first = int(line.split()[1])
        terms: list[Term] = []

        async def serve(term: Term) -> None:
            terms.append(term)
            await term.ended.wait()

        stop = asyncio.Event()
        follower = create_lease(settings_for(kube, "agent-b"))
        assert follower is not None
        following = asyncio.create_task(
            lead(follower, serve, agent_id=AGENT, lease_seconds=LEASE, stop=stop)
        )

        async def renewed_by_holder() -> bool:  # the holder renews every third of the lease
            return spec(kube)["renewTime"] != spec(kube)["acquireTime"]

        await eventually(renewed_by_holder, message="a renewal by the holder")
        assert not terms
        holder.kill()  # SIGKILL: no release
        killed = time.monotonic()

        async def leads() -> Term | None:
            return terms[0] if terms else None

        term = await eventually(leads, timeout=10, interval=0.02, message="the follower leads")
        took = time.monotonic() - killed
        print(f"\nkubernetes lease: takeover {took:.2f} s after kill -9 (lease {LEASE} s)")
        assert took <= 2 * LEASE
        assert term.epoch == first + 1 and spec(kube)["holderIdentity"] == "agent-b"
        stop.set()
        await following
        assert "holderIdentity" not in spec(kube)  # released on shutdown
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_stale_leader_from_the_lease_is_refused(
    kube: KubeEmulator, make_lease: MakeLease, api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    now = [time.time()]
    old, new = make_lease("agent-a", lambda: now[0]), make_lease("agent-b", lambda: now[0])
    stale_epoch = await old.acquire()
    assert stale_epoch is not None
    now[0] += 2 * LEASE
    epoch = await new.acquire()
    assert epoch == stale_epoch + 1

    leader = await ManualAgent.registered(api.url, AGENT)
    await leader.connect(leader_epoch=epoch)
    stale = ManualAgent(api.url, AGENT, leader.api_key)
    await stale.hello(leader_epoch=stale_epoch)
    code, reason, _ = await stale.closed_with()
    assert code == CloseCode.STALE_LEADER and f"leader epoch {stale_epoch} is stale" in reason


async def test_leader_rides_out_a_short_outage_and_steps_down_in_a_long_one(
    kube: KubeEmulator,
) -> None:
    terms: list[Term] = []

    async def serve(term: Term) -> None:
        terms.append(term)
        await term.ended.wait()

    stop = asyncio.Event()
    lease = create_lease(settings_for(kube, "agent-a"))
    assert lease is not None
    leading = asyncio.create_task(
        lead(lease, serve, agent_id=AGENT, lease_seconds=LEASE, stop=stop)
    )
    try:

        async def renewals() -> int:
            return kube.count()["PUT leases"]

        await eventually(renewals, message="a renewal")
        kube.down(503)
        await asyncio.sleep(LEASE / 4)  # an outage well within the lease (fault shaping)
        kube.up()
        before = await renewals()

        async def renewed_again() -> bool:
            return await renewals() > before

        await eventually(renewed_again, message="renewals again")
        assert len(terms) == 1 and not terms[0].ended.is_set()

        kube.down()  # longer than the lease: the term ends by the leader's own clock
        await asyncio.wait_for(terms[0].ended.wait(), 3 * LEASE)
        kube.up()

        async def leads_again() -> bool:
            return len(terms) == 2 and not terms[1].ended.is_set()

        await eventually(leads_again, timeout=10, message="a new term once the server is back")
        assert terms[1].epoch == terms[0].epoch + 1
    finally:
        stop.set()
        await leading
