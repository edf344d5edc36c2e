"""Docker for tests: a running dockerd, the images, the ``docker`` CLI, leftover checks.

``ensure_docker()`` starts dockerd when none answers (scripts/start-dockerd.sh) and builds
the session image with the real builder (cached by tag, so only the first run pays for it;
``ensure_server_image()`` does the same for the StreamSpace image of this checkout);
it fails, never skips, when Docker cannot run here. ``DockerScope`` gives a test its own
agent id and user and, at the end, fails the test for any container, volume or network of
ours that it left behind (removing them, so the next run starts clean).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from streamspace.agent.platforms.docker import AGENT_LABEL, HOME_LABEL, LABEL, SESSION_LABEL
from streamspace.images.builder import build_session_image
from streamspace.images.recipe import DEFAULT_TAG
from streamspace.images.server_builder import build_server_image

CHECKOUT = Path(__file__).parents[1]
START_DOCKERD = CHECKOUT / "scripts" / "start-dockerd.sh"
SERVER_TAG = "streamspace/streamspace:test"
"""The tests' own tag: building this checkout's code never replaces an operator's image."""
BUILD_LOCK = Path(tempfile.gettempdir()) / "streamspace-test-images.lock"


def ensure_dockerd() -> None:
    """A running daemon (started when none answers)."""
    started = subprocess.run(["bash", str(START_DOCKERD)], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(
            "the Docker tests need a running dockerd (scripts/install-deps.sh test installs "
            f"docker.io):\n{started.stdout}{started.stderr}"
        )


@contextlib.contextmanager
def _one_builder() -> Iterator[None]:
    """One pytest worker at a time starts dockerd or builds an image; the others wait and
    then find it running or cached."""
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_docker() -> str:
    """A running daemon and the session image; returns the image's tag."""
    with _one_builder():
        ensure_dockerd()
        build_session_image(tag=DEFAULT_TAG, console=Console(stderr=True))
    return DEFAULT_TAG


def ensure_server_image() -> str:
    """A running daemon and the StreamSpace image of this checkout; returns its tag."""
    with _one_builder():
        ensure_dockerd()
        build_server_image(source=CHECKOUT, tag=SERVER_TAG, console=Console(stderr=True))
    return SERVER_TAG


async def docker(*args: str, check: bool = True) -> str:
    """Run ``docker args…``; return its stdout (fails the test on a non-zero exit)."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


def docker_sync(*args: str) -> list[str]:
    """Run ``docker args…`` (teardown, outside the event loop); return its output lines."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout.split()


@dataclass
class DockerScope:
    """One test's identities on the shared daemon, and what existed before it ran."""

    agent_id: str = field(default_factory=lambda: f"docker-test-{uuid.uuid4().hex[:8]}")
    user: str = field(default_factory=lambda: f"user-{uuid.uuid4().hex[:8]}")
    homes_before: set[str] = field(default_factory=set)
    networks_before: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.homes_before = set(_volumes(HOME_LABEL))
        self.networks_before = set(_networks())

    def leftovers(self) -> list[str]:
        """Remove what the test left behind; describe it (empty when nothing was left).

        The test user's persistent homes are not leftovers: ``stop`` keeps them by design.
        """
        found = []
        containers = docker_sync("ps", "-aq", "--filter", f"label={AGENT_LABEL}={self.agent_id}")
        if containers:
            found.append(f"containers {containers}")
            docker_sync("rm", "-f", "-v", *containers)
        own_homes = _volumes(f"{LABEL}user={self.user}")
        strangers = set(_volumes(HOME_LABEL)) - self.homes_before - set(own_homes)
        if strangers:
            found.append(f"volumes {sorted(strangers)}")
        if own_homes or strangers:
            docker_sync("volume", "rm", *own_homes, *strangers)
        networks = set(_networks()) - self.networks_before
        if networks:
            found.append(f"networks {sorted(networks)}")
            docker_sync("network", "rm", *networks)
        return found


def _volumes(label: str) -> list[str]:
    return docker_sync("volume", "ls", "-q", "--filter", f"label={label}")


def _networks() -> list[str]:
    return docker_sync("network", "ls", "-q")


async def container_labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = json.loads(
        await docker("inspect", "--format", "{{json .Config.Labels}}", name)
    )
    return labels


async def container_ids(label: str) -> list[str]:
    """Full ids of the containers (any state) carrying ``label`` (``key=value`` or ``key``)."""
    return (await docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}")).split()


async def session_containers(session_id: str) -> list[dict[str, Any]]:
    """``docker inspect`` of every container (any state) labelled with the session."""
    ids = await container_ids(f"{SESSION_LABEL}={session_id}")
    found: list[dict[str, Any]] = json.loads(await docker("inspect", *ids)) if ids else []
    return found


async def container_events(agent_id: str, event: str, *, since: float) -> Counter[str]:
    """How many ``event`` (``create``, ``start``, ``destroy``…) the agent's containers had
    since the Unix time ``since``, per session."""
    out = await docker(
        "events",
        *("--since", f"{since:.3f}", "--until", f"{time.time():.3f}"),
        *("--filter", "type=container", "--filter", f"event={event}"),
        *("--filter", f"label={AGENT_LABEL}={agent_id}"),
        *("--format", "{{json .Actor.Attributes}}"),
    )
    return Counter(json.loads(line)[SESSION_LABEL] for line in out.splitlines() if line.strip())
