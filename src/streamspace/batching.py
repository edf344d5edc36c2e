"""Coalescing concurrent requests into batches: whatever waits when the writer is free goes
together, so many callers share one transaction instead of paying one each.

Nobody waits for a batch to fill: a request that arrives alone is written alone at once;
under load, the requests that arrive while one batch is being written form the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchWrite = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]
"""Writes a batch; returns, in order, each item's result or the exception it gets."""


class Coalescer(Generic[Item, Result]):
    """One writer task at a time runs ``write`` over up to ``max_batch`` waiting items."""

    def __init__(self, write: BatchWrite[Item, Result], *, max_batch: int, name: str) -> None:
        self._write = write
        self._max_batch = max_batch
        self._name = name
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken into a batch."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` for the next batch and wait for its result (or exception).

        A caller cancelled meanwhile does not withdraw its item: once queued, it is
        written like the others.
        """
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume)  # a cancelled caller's error is not "never retrieved"
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name=self._name)
        return await asyncio.shield(done)

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)


def _consume(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
