"""The agent's session pods, kept current by ONE list and ONE watch (an informer).

Starts wait on it for their pod to turn Ready (their check runs at every change, so no
stage of the pod goes unseen) and ``poll`` reads it, so neither costs an API call per
session. While the API server is unreachable the cache keeps what it last
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
        self._waiters: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
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
        """Wait (no polling) until ``check()``, run after each change while the cache is
        synced, returns non-None; an exception it raises ends the wait."""
        self.start()
        waiter: tuple[Callable[[], Any], asyncio.Future[Any]] = (
            check,
            asyncio.get_running_loop().create_future(),
        )
        self._waiters.append(waiter)
        try:
            if self.synced.is_set():
                _offer(waiter)
            found: T = await waiter[1]
            return found
        finally:
            self._waiters.remove(waiter)

    def _changed(self) -> None:
        if self.synced.is_set():
            for waiter in list(self._waiters):
                _offer(waiter)

    async def _follow(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                listing = await self._client.list("Pod", self._labels)
                self._pods = {pod["metadata"]["name"]: pod for pod in listing.items}
                self.synced.set()
                self._changed()
                delay = RETRY_MIN
                async for event, pod in self._client.watch(
                    "Pod", self._labels, resource_version=listing.resource_version
                ):
                    name = pod["metadata"]["name"]
                    if event == "DELETED":
                        self._pods.pop(name, None)
                    else:
                        self._pods[name] = pod
                    self._changed()
            except KubeApiError as exc:
                if exc.status != GONE:  # 410: the watch fell behind; list again at once
                    log.warning("following session pods failed (retrying): %s", exc)
                    self.synced.clear()
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)


def _offer(waiter: tuple[Callable[[], Any], asyncio.Future[Any]]) -> None:
    check, future = waiter
    if future.done():
        return
    try:
        found = check()
    except Exception as exc:
        future.set_exception(exc)
        return
    if found is not None:
        future.set_result(found)
