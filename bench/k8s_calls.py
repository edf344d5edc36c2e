"""Benchmark: Kubernetes API calls of the kubernetes platform, counted by the emulator.

Direct platform calls against the Kubernetes API emulator (``tests.k8s.emulator``, real
HTTP; it counts every request it answers): the calls per session start, hibernate, wake and
stop (averaged over ``--sessions`` sessions, after the agent's pod cache has made its one
list and one watch), then the start-up adoption of ``--adopt`` sessions already running:
a new platform (a restarted agent) runs ``list_running`` once; its wall time and its calls
(the target: one list per kind and one watch of pods, under 5 s for 1,000 sessions).

    .venv/bin/python -m bench.k8s_calls [--sessions 20] [--adopt 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.k8s.controllers import Behaviour
from tests.k8s.emulator import KubeEmulator

from streamspace.agent.platforms import create_platform
from streamspace.agent.platforms.kubernetes.platform import KubernetesPlatform
from streamspace.config import AgentSettings
from streamspace.protocol import PlatformName, SessionSpec

AGENT_ID = "bench-agent"
START_CONCURRENCY = 100
"""Starts in flight at once while the sessions to adopt are made."""


def platform_for(kube: KubeEmulator) -> KubernetesPlatform:
    settings = AgentSettings(
        agent_id=AGENT_ID, kubeconfig=kube.kubeconfig_path, kubernetes_start_timeout=300
    )
    platform = create_platform(PlatformName.KUBERNETES, settings)
    assert isinstance(platform, KubernetesPlatform)
    return platform


def spec(index: int) -> SessionSpec:
    return SessionSpec(
        session_id=f"b-{index}-{uuid.uuid4().hex[:8]}",
        user=f"user-{index % 50}",
        template="xterm",
        command=["xterm"],
    )


def describe(calls: Counter[str], per: int) -> str:
    total = sum(calls.values()) / per
    detail = ", ".join(f"{what} {n / per:g}" for what, n in sorted(calls.items()))
    return f"{total:g} ({detail})"


async def per_operation(kube: KubeEmulator, sessions: int) -> dict[str, Counter[str]]:
    platform = platform_for(kube)
    counts: dict[str, Counter[str]] = {op: Counter() for op in ("start", "hibernate", "wake")}
    counts["stop"] = Counter()
    try:
        await platform.list_running()  # the pod cache's list and watch, once per agent
        for index in range(sessions):
            session = spec(index)
            mark = len(kube.calls)
            started = await platform.start(session)
            counts["start"] += kube.count(since=mark)
            mark = len(kube.calls)
            hibernated = await platform.hibernate(started.state)
            counts["hibernate"] += kube.count(since=mark)
            mark = len(kube.calls)
            woken = await platform.wake(session, hibernated)
            counts["wake"] += kube.count(since=mark)
            mark = len(kube.calls)
            await platform.stop(woken.state)
            counts["stop"] += kube.count(since=mark)
    finally:
        await platform.close()
    return counts


async def adoption(kube: KubeEmulator, sessions: int) -> tuple[float, int, Counter[str]]:
    maker = platform_for(kube)
    gate = asyncio.Semaphore(START_CONCURRENCY)

    async def start(index: int) -> None:
        async with gate:
            await maker.start(spec(index))

    began = time.perf_counter()
    await asyncio.gather(*(start(i) for i in range(sessions)))
    print(f"made {sessions} running sessions in {time.perf_counter() - began:.1f} s")
    await maker.close()

    restarted = platform_for(kube)
    try:
        mark = len(kube.calls)
        began = time.perf_counter()
        running = await restarted.list_running()
        seconds = time.perf_counter() - began
        return seconds, len(running), kube.count(since=mark)
    finally:
        await restarted.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--adopt", type=int, default=1000)
    args = parser.parse_args()
    kube = KubeEmulator()
    kube.behaviour = Behaviour(delay=0.05)
    kube.start()
    try:
        kube.kubeconfig(Path(tempfile.mkdtemp(prefix="k8s-bench-")) / "kubeconfig")
        counts = await per_operation(kube, args.sessions)
        print(f"Kubernetes API calls per operation (mean of {args.sessions} sessions):")
        for operation, calls in counts.items():
            print(f"  {operation:<9} {describe(calls, args.sessions)}")
        seconds, adopted, calls = await adoption(kube, args.adopt)
        print(
            f"adoption of {args.adopt} running sessions by a restarted agent: {seconds:.2f} s,"
            f" {adopted} adopted, calls: {describe(calls, 1)}"
        )
    finally:
        kube.close()


if __name__ == "__main__":
    asyncio.run(main())
