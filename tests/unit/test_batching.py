"""Coalescing concurrent requests into batches, and IN lists padded to few lengths."""

from __future__ import annotations

import asyncio

import pytest

from streamspace.batching import Coalescer
from streamspace.db.repo.lists import padded

WAIT = 5.0


class Recorder:
    """A batch write that records its batches and waits for ``release`` before returning."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.writing = asyncio.Event()

    async def write(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(batch)
        self.writing.set()
        await self.release.wait()
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in batch]


async def test_requests_arriving_during_a_write_form_the_next_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.write, max_batch=3, name="test")
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.wait_for(recorder.writing.wait(), WAIT)  # a lone request goes at once
    later = [asyncio.create_task(coalescer.submit(n)) for n in range(2, 10, 2)]
    await asyncio.sleep(0)  # let them queue behind the write in flight
    recorder.release.set()
    assert await asyncio.wait_for(first, WAIT) == 0
    assert await asyncio.wait_for(asyncio.gather(*later), WAIT) == [20, 40, 60, 80]
    assert recorder.batches == [[0], [2, 4, 6], [8]]  # at most max_batch together


async def test_each_request_gets_its_own_result_or_error() -> None:
    recorder = Recorder()
    recorder.release.set()
    coalescer = Coalescer(recorder.write, max_batch=10, name="test")
    results = await asyncio.gather(*(coalescer.submit(n) for n in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert [str(error) for error in (results[1], results[3])] == ["odd 1", "odd 3"]


async def test_a_failed_write_fails_its_whole_batch_and_not_the_next() -> None:
    calls: list[list[str]] = []

    async def write(batch: list[str]) -> list[str | BaseException]:
        calls.append(batch)
        if "bad" in batch:
            raise ConnectionError("database went away")
        return [item.upper() for item in batch]

    coalescer = Coalescer(write, max_batch=10, name="test")
    failing = await asyncio.gather(
        coalescer.submit("bad"), coalescer.submit("also"), return_exceptions=True
    )
    assert all(isinstance(error, ConnectionError) for error in failing)
    assert await coalescer.submit("fine") == "FINE"


async def test_a_cancelled_caller_does_not_withdraw_its_item() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.write, max_batch=10, name="test")
    blocker = asyncio.create_task(coalescer.submit(0))
    await asyncio.wait_for(recorder.writing.wait(), WAIT)
    impatient = asyncio.create_task(coalescer.submit(1))  # an odd item: its result is an error
    await asyncio.sleep(0)
    impatient.cancel()
    recorder.release.set()
    await asyncio.wait_for(blocker, WAIT)
    with pytest.raises(asyncio.CancelledError):
        await impatient
    while len(recorder.batches) < 2:  # written all the same, its error retrieved quietly
        await asyncio.wait_for(recorder.writing.wait(), WAIT)
        recorder.writing.clear()
    assert recorder.batches == [[0], [1]]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        (["a"], ["a"]),
        (["a", "b"], ["a", "b"]),
        (["a", "b", "c"], ["a", "b", "c", "c"]),
        (list("abcde"), list("abcdeeee")),
    ],
)
def test_padded_lists_have_power_of_two_lengths(values: list[str], expected: list[str]) -> None:
    assert padded(values) == expected
    assert set(padded(values)) == set(values)
