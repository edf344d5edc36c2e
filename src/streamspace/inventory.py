"""An agent's inventory (the sessions it runs) in frames that each fit ``MAX_FRAME_BYTES``.

The agent sends its ``hello`` with the first page and ``more`` set, then ``inventory``
frames numbered from 1, the final one marked ``last``. :func:`split_inventory` packs the
pages by measured encoded size; :class:`InventoryPages` checks the pages on arrival.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamspace.bounds import MAX_COUNT
from streamspace.protocol import (
    INVENTORY_PAGE_SESSIONS,
    MAX_FRAME_BYTES,
    MAX_INVENTORY_FRAMES,
    Hello,
    HelloPayload,
    Inventory,
    InventoryPayload,
    RunningSession,
    encode,
)


@dataclass(frozen=True)
class Refused:
    """A session left out of the inventory, and why (in words)."""

    session: RunningSession
    reason: str


@dataclass
class SplitInventory:
    """The frames to send, in order, and the sessions that could not be sent."""

    messages: list[Hello | Inventory] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def _size(text: str) -> int:
    return len(text.encode())


def split_inventory(
    hello: HelloPayload, sessions: Sequence[RunningSession], *, limit: int = MAX_FRAME_BYTES
) -> SplitInventory:
    """``hello`` (its own ``sessions`` ignored) carrying ``sessions`` in as few frames of at
    most ``limit`` bytes as fit; a session too large for any frame, or beyond the protocol's
    counts (``MAX_COUNT`` sessions, ``MAX_INVENTORY_FRAMES`` frames), is refused instead.

    Sizes are measured: an empty page's encoded size plus each session's encoded size and a
    comma (how a JSON list is written), and every frame is encoded once more to check.
    """
    split = SplitInventory()
    ts = time.time()  # one for all frames: its encoded length is part of every frame's size
    # The longest forms of an empty page: ``more`` set, ``last`` false (the largest seq, to
    # tell a session that fits no page).
    first_overhead = _size(encode(Hello(ts=ts, payload=_hello_page(hello, [], more=True))))
    page_overhead = _size(encode(_inventory_page(ts, MAX_INVENTORY_FRAMES - 1, [], last=False)))
    pages: list[list[RunningSession]] = [[]]
    used = first_overhead
    accepted = 0
    for session in sessions:
        item = _size(encode(session))
        if page_overhead + item > limit:
            too_large = (
                f"its entry takes {item} bytes encoded, more than a {limit}-byte frame holds"
            )
            split.refused.append(Refused(session, too_large))
            continue
        if accepted >= MAX_COUNT:
            split.refused.append(Refused(session, f"an inventory lists at most {MAX_COUNT}"))
            continue
        page = pages[-1]
        if len(page) >= INVENTORY_PAGE_SESSIONS or used + item + (1 if page else 0) > limit:
            if len(pages) >= MAX_INVENTORY_FRAMES:
                too_many = f"an inventory takes at most {MAX_INVENTORY_FRAMES} frames"
                split.refused.append(Refused(session, too_many))
                continue
            page = []
            pages.append(page)
            used = _size(encode(_inventory_page(ts, len(pages) - 1, [], last=False)))
        used += item + (1 if page else 0)
        page.append(session)
        accepted += 1
    first = _hello_page(hello, pages[0], more=len(pages) > 1)
    split.messages.append(Hello(ts=ts, payload=first))
    for seq, page in enumerate(pages[1:], start=1):
        split.messages.append(_inventory_page(ts, seq, page, last=seq == len(pages) - 1))
    for message in split.messages:
        size = _size(encode(message))
        if size > limit:  # the arithmetic above is exact; this guards against its drift
            raise AssertionError(f"inventory frame of {size} bytes exceeds {limit}")
    return split


def _hello_page(hello: HelloPayload, page: list[RunningSession], *, more: bool) -> HelloPayload:
    return hello.model_copy(update={"sessions": page, "more": more})


def _inventory_page(ts: float, seq: int, page: list[RunningSession], *, last: bool) -> Inventory:
    return Inventory(ts=ts, payload=InventoryPayload(seq=seq, sessions=page, last=last))


class InventoryError(ValueError):
    """Pages that do not make one inventory (out of order, too many sessions)."""


class InventoryPages:
    """Collects an inventory as its pages arrive, checking their order and counts."""

    def __init__(self, hello: HelloPayload) -> None:
        self.sessions: list[RunningSession] = list(hello.sessions)
        self.complete = not hello.more
        self._next_seq = 1

    def add(self, page: InventoryPayload) -> None:
        """Add the next page (InventoryError, in words, if it is not the next one)."""
        if self.complete:
            raise InventoryError("inventory page after the inventory was complete")
        if page.seq != self._next_seq:
            raise InventoryError(f"inventory page {page.seq} where {self._next_seq} was due")
        if len(self.sessions) + len(page.sessions) > MAX_COUNT:
            raise InventoryError(f"inventory lists more than {MAX_COUNT} sessions")
        self.sessions.extend(page.sessions)
        self._next_seq += 1
        self.complete = page.last
