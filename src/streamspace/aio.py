"""Asyncio helpers shared by the control plane and the agent: stoppable sleeps and waits,
and supervision of tasks that live and die together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_or_stop(stop: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds unless ``stop`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


async def unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """Await ``work``; if ``stop`` is set first, cancel it and return ``None``."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        task.cancel()  # no-op when it already finished
        await asyncio.gather(task, stopping, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def supervise(
    tasks: Mapping[str, asyncio.Task[Any]],
) -> tuple[str, BaseException | None]:
    """Wait for the first task to end, cancel the others; return its name and exception.

    When several end together the first in ``tasks`` order wins, so put ``stop`` first.
    """
    try:
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        first = next(name for name, task in tasks.items() if task in done)
        task = tasks[first]
        return first, None if task.cancelled() else task.exception()
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
