"""Benchmark: session start → VNC server ready (RFB banner), Docker vs local, side by side.

Direct Platform calls, no control plane: ``platform.start(spec)`` returns once the session's
VNC server has sent its RFB banner (both platforms probe it themselves), so its wall time is
exactly "start → RFB ready" without the API, the command round trip or the agent's queue
(the control plane adds the same few milliseconds to both). Each round starts one xterm
session on each contender in turn (rotating which goes first), checks the banner once more
from here, and stops it (stop timed apart). One warm-up round is not counted. The Docker
session image is built first if missing (cached by tag).

The local platform runs twice: sandboxed (bubblewrap, each user as their own uid, the
default when the agent runs as root) and ``LOCAL_SANDBOX=none`` (the same code, no
sandbox). ``--baseline SRC`` adds the local platform of an older checkout's ``src`` (e.g.
``git archive 0e920f4 src``: before the sandbox, Xvnc on TCP), timed in a worker process
(``bench.local_worker``) in the same rounds.

    .venv/bin/python -m bench.docker_start [--starts 20] [--baseline SRC] [--no-docker]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import mkdtemp

from tests.docker_env import ensure_docker

from bench.report import RESULTS, append_results, percentile
from streamspace.agent.platforms.base import Platform
from streamspace.agent.platforms.docker import DockerPlatform
from streamspace.agent.platforms.docker_client import DockerClient
from streamspace.agent.platforms.local import LocalPlatform
from streamspace.agent.platforms.vnc_probe import read_banner
from streamspace.config import AgentSettings
from streamspace.protocol import SessionSpec

TARGET_DOCKER_P50 = 2.0
TARGET_SANDBOX_ADDED_MS = 50.0


async def start_and_stop(platform: Platform) -> tuple[float, float]:
    """Seconds from ``start`` to RFB ready, and seconds ``stop`` took."""
    spec = SessionSpec(
        session_id=f"bench-{uuid.uuid4().hex[:12]}", user="bench", template="xterm",
        command=["xterm"],
    )  # fmt: skip
    began = time.perf_counter()
    started = await platform.start(spec)
    ready = time.perf_counter() - began
    banner = await read_banner(started.vnc, 5.0)
    if not banner.startswith(b"RFB "):
        raise RuntimeError(f"{platform.name}: no RFB banner after start: {banner!r}")
    began = time.perf_counter()
    await platform.stop(started.state)
    return ready, time.perf_counter() - began


def row(name: str, starts: list[float], stops: list[float]) -> dict[str, str]:
    ordered = sorted(starts)
    return {
        "platform": name,
        "starts": str(len(starts)),
        "p50 s": f"{statistics.median(ordered):.3f}",
        "p99 s": f"{percentile(ordered, 99):.3f}",
        "min s": f"{ordered[0]:.3f}",
        "max s": f"{ordered[-1]:.3f}",
        "stop p50 s": f"{statistics.median(stops):.3f}",
    }


class Baseline:
    """An older checkout's LocalPlatform in a worker process (``bench.local_worker``)."""

    name = "local, before the sandbox"

    def __init__(self, src: Path) -> None:
        self._src = src
        self._worker: asyncio.subprocess.Process | None = None

    async def start_and_stop(self) -> tuple[float, float]:
        if self._worker is None:
            env = {**os.environ, "PYTHONPATH": f"{self._src}{os.pathsep}{Path.cwd()}"}
            self._worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.local_worker", env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        assert self._worker.stdin is not None and self._worker.stdout is not None
        self._worker.stdin.write(b"go\n")
        await self._worker.stdin.drain()
        line = await self._worker.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline worker exited with {await self._worker.wait()}")
        ready, stopped = json.loads(line)
        return float(ready), float(stopped)

    async def close(self) -> None:
        if self._worker is not None and self._worker.stdin is not None:
            self._worker.stdin.close()
            await self._worker.wait()


async def main(starts: int, *, baseline: Path | None, docker: bool) -> list[dict[str, str]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    platforms: dict[str, Platform] = {}
    if docker:
        image = await asyncio.to_thread(ensure_docker)
        platforms["docker"] = DockerPlatform(
            client=DockerClient(AgentSettings().docker_host),
            agent_id=f"bench-{uuid.uuid4().hex[:8]}",
            image=image,
        )
    platforms["local, sandboxed"] = LocalPlatform(data_dir=work / "sandboxed", sandbox="bubblewrap")
    platforms["local, LOCAL_SANDBOX=none"] = LocalPlatform(
        data_dir=work / "bare", sandbox="none", trusted_user="bench"
    )
    runs: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        name: functools.partial(start_and_stop, platform) for name, platform in platforms.items()
    }
    old = Baseline(baseline) if baseline else None
    if old is not None:
        runs[old.name] = old.start_and_stop
    timings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    names = list(runs)
    try:
        for round_number in range(starts + 1):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                ready, stopped = await runs[name]()
                if round_number:  # round 0 warms up caches (image layers, fonts, pages)
                    timings[name][0].append(ready)
                    timings[name][1].append(stopped)
    finally:
        if old is not None:
            await old.close()
        for platform in platforms.values():
            await platform.close()
        shutil.rmtree(work, ignore_errors=True)
    return [row(name, *values) for name, values in timings.items()]


def reading(rows: list[dict[str, str]]) -> str:
    by_name = {r["platform"]: r for r in rows}
    parts = []
    if "docker" in by_name:
        docker_p50 = float(by_name["docker"]["p50 s"])
        verdict = "met" if docker_p50 <= TARGET_DOCKER_P50 else "NOT met"
        parts.append(
            f"Docker start → RFB ready p50 {docker_p50:.3f} s, target ≤ "
            f"{TARGET_DOCKER_P50:g} s {verdict}."
        )
    sandboxed = by_name["local, sandboxed"]
    for other in ("local, LOCAL_SANDBOX=none", Baseline.name):
        if other in by_name:
            added = (float(sandboxed["p50 s"]) - float(by_name[other]["p50 s"])) * 1000
            verdict = "met" if added <= TARGET_SANDBOX_ADDED_MS else "NOT met"
            parts.append(
                f"The sandbox adds {added:+.0f} ms at p50 over '{other}' "
                f"({sandboxed['p50 s']} vs {by_name[other]['p50 s']} s; target ≤ "
                f"{TARGET_SANDBOX_ADDED_MS:g} ms {verdict})."
            )
    parts.append(
        "Direct Platform calls: `start` returns at the RFB banner, so no control-plane round "
        "trip is included (it adds the same to all)."
    )
    return "\nReading: " + " ".join(parts) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="src/ of an older checkout to time too")
    parser.add_argument("--no-docker", action="store_true", help="time the local platform only")
    options = parser.parse_args()
    rows = asyncio.run(
        main(options.starts, baseline=options.baseline, docker=not options.no_docker)
    )
    command = f".venv/bin/python -m bench.docker_start --starts {options.starts}"
    command += f" --baseline {options.baseline}" if options.baseline else ""
    command += " --no-docker" if options.no_docker else ""
    append_results(
        "Session start → RFB ready: local sandboxed vs unsandboxed (and Docker)", rows,
        command=command,
    )  # fmt: skip
    paragraph = reading(rows)
    print(paragraph)
    with RESULTS.open("a") as handle:
        handle.write(paragraph)
