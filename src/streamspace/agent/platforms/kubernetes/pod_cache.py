"""The agent's session pods, kept current by ONE list and ONE watch (an informer).

Starts wait on it for their pod to turn Ready and ``poll`` reads it, so neither costs an
API call per session. While the API server is unreachable the cache keeps what it last
knew and says it is not ``synced``: nothing is judged dead on stale knowledge; once the
server answers again the cache lists afresh and carries on watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from streamspace.agent.platforms.kubernetes.client import GONE, KubeApiError, KubeClient

log = logging.getLogger(__name__)

RETRY_MIN = 0.2
RETRY_MAX = 5.0
"""Seconds between attempts to list again while the API server fails (doubling)."""
T = TypeVar("T")


class PodCache:
    """Pods carrying ``labels``, by name; started on first use."""

    def __init__(self, client: KubeClient, labels: dict[str, str]) -> None:
        self._client = client
        self._labels = labels
        self._pods: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Condition()
        self.synced = asyncio.Event()
        """Set while the cache follows the API server (cleared while it cannot)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="kubernetes-pod-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def pods(self, label: str, value: str) -> list[dict[str, Any]]:
        """Live pods (not being deleted) whose ``label`` is ``value``, oldest first."""
        found = [
            pod
            for pod in self._pods.values()
            if pod["metadata"].get("labels", {}).get(label) == value
            and not pod["metadata"].get("deletionTimestamp")
        ]
        return sorted(found, key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))

    async def wait_synced(self) -> None:
        self.start()
        await self.synced.wait()

    async def wait_for(self, check: Callable[[], T | None]) -> T:
        """Wait (no polling: woken by each change) until ``check()`` returns non-None."""
        self.start()
        async with self._changed:
            while True:
                if self.synced.is_set():
                    found = check()
                    if found is not None:
                        return found
                await self._changed.wait()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _follow(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                listing = await self._client.list("Pod", self._labels)
                self._pods = {pod["metadata"]["name"]: pod for pod in listing.items}
                self.synced.set()
                await self._notify()
                delay = RETRY_MIN
                async for event, pod in self._client.watch(
                    "Pod", self._labels, resource_version=listing.resource_version
                ):
                    name = pod["metadata"]["name"]
                    if event == "DELETED":
                        self._pods.pop(name, None)
                    else:
                        self._pods[name] = pod
                    await self._notify()
            except KubeApiError as exc:
                if exc.status != GONE:  # 410: the watch fell behind; list again at once
                    log.warning("following session pods failed (retrying): %s", exc)
                    self.synced.clear()
                    await self._notify()
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
