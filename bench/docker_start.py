"""Benchmark: session start → VNC server ready (RFB banner), Docker vs local, side by side.

Direct Platform calls, no control plane: ``platform.start(spec)`` returns once the session's
VNC port has sent its RFB banner (both platforms probe it themselves), so its wall time is
exactly "start → RFB ready" without the API, the command round trip or the agent's queue
(the control plane adds the same few milliseconds to both). Each round starts one xterm
session on each platform in turn (alternating which goes first), checks the banner once
more from here, and stops both (stop timed apart). One warm-up round is not counted. The
Docker session image is built first if missing (cached by tag).

    .venv/bin/python -m bench.docker_start [--starts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
import uuid
from pathlib import Path
from tempfile import mkdtemp

from tests.docker_env import ensure_docker

from bench.report import RESULTS, append_results, percentile
from streamspace.agent.platforms.base import Platform
from streamspace.agent.platforms.docker import DockerPlatform
from streamspace.agent.platforms.docker_client import DockerClient
from streamspace.agent.platforms.local import LocalPlatform
from streamspace.agent.platforms.vnc_probe import read_rfb_banner
from streamspace.config import AgentSettings
from streamspace.protocol import SessionSpec

TARGET_DOCKER_P50 = 2.0


async def start_and_stop(platform: Platform) -> tuple[float, float]:
    """Seconds from ``start`` to RFB ready, and seconds ``stop`` took."""
    spec = SessionSpec(
        session_id=f"bench-{uuid.uuid4().hex[:12]}", user="bench", template="xterm",
        command=["xterm"],
    )  # fmt: skip
    began = time.perf_counter()
    started = await platform.start(spec)
    ready = time.perf_counter() - began
    banner = await read_rfb_banner(started.vnc.host, started.vnc.port, 5.0)
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


async def main(starts: int) -> list[dict[str, str]]:
    image = await asyncio.to_thread(ensure_docker)
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    platforms: list[Platform] = [
        DockerPlatform(
            client=DockerClient(AgentSettings().docker_host),
            agent_id=f"bench-{uuid.uuid4().hex[:8]}",
            image=image,
        ),
        LocalPlatform(data_dir=work),
    ]
    timings: dict[str, tuple[list[float], list[float]]] = {p.name: ([], []) for p in platforms}
    try:
        for round_number in range(starts + 1):
            order = platforms if round_number % 2 else platforms[::-1]
            for platform in order:
                ready, stopped = await start_and_stop(platform)
                if round_number:  # round 0 warms up caches (image layers, fonts, pages)
                    timings[platform.name][0].append(ready)
                    timings[platform.name][1].append(stopped)
    finally:
        for platform in platforms:
            await platform.close()
        shutil.rmtree(work, ignore_errors=True)
    return [row(name, *values) for name, values in timings.items()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    options = parser.parse_args()
    rows = asyncio.run(main(options.starts))
    append_results(
        "Session start → RFB ready, Docker vs local (direct Platform calls, xterm)",
        rows,
        command=f".venv/bin/python -m bench.docker_start --starts {options.starts}",
    )
    docker_p50 = float(rows[0]["p50 s"])
    paragraph = (
        f"\nReading: Docker start → RFB ready p50 {docker_p50:.3f} s, target ≤ "
        f"{TARGET_DOCKER_P50:g} s {'met' if docker_p50 <= TARGET_DOCKER_P50 else 'NOT met'}; "
        f"local p50 {rows[1]['p50 s']} s. Direct Platform calls: `start` returns at the RFB "
        "banner, so no control-plane round trip is included (it adds the same to both).\n"
    )
    print(paragraph)
    with RESULTS.open("a") as handle:
        handle.write(paragraph)
