"""The inventory encoder: an agent's sessions split into frames that each fit the limit."""

from __future__ import annotations

import json

import pytest

from streamspace.inventory import InventoryError, InventoryPages, split_inventory
from streamspace.protocol import (
    INVENTORY_PAGE_SESSIONS,
    MAX_FRAME_BYTES,
    Hello,
    HelloPayload,
    Inventory,
    InventoryPayload,
    RunningSession,
    VncEndpoint,
    encode,
    parse_agent_message,
)

HELLO = HelloPayload(v=1, agent_id="a1", platform="local", version="t", capacity=10)
VNC = VncEndpoint(host="127.0.0.1", port=5900)


def _sessions(count: int, *, state_bytes: int = 40) -> list[RunningSession]:
    return [
        RunningSession(session_id=f"s-{n:05d}", vnc=VNC, state={"pad": "x" * state_bytes})
        for n in range(count)
    ]


def _reassembled(messages: list[Hello | Inventory]) -> list[RunningSession]:
    """What the control plane makes of the frames, each parsed as it arrives."""
    first = parse_agent_message(encode(messages[0]))
    assert isinstance(first, Hello)
    pages = InventoryPages(first.payload)
    for message in messages[1:]:
        parsed = parse_agent_message(encode(message))
        assert isinstance(parsed, Inventory)
        pages.add(parsed.payload)
    assert pages.complete
    return pages.sessions


def test_a_small_inventory_is_one_hello_as_before() -> None:
    sessions = _sessions(3)
    split = split_inventory(HELLO, sessions)
    assert split.refused == []
    assert len(split.messages) == 1
    frame = json.loads(encode(split.messages[0]))
    assert frame["type"] == "hello"
    assert "more" not in frame["payload"]  # what an older control plane accepts
    assert [s["session_id"] for s in frame["payload"]["sessions"]] == [
        s.session_id for s in sessions
    ]


def test_ten_thousand_sessions_travel_in_frames_within_the_limit() -> None:
    sessions = _sessions(10_000, state_bytes=300)
    split = split_inventory(HELLO, sessions)
    assert split.refused == []
    sizes = [len(encode(message).encode()) for message in split.messages]
    assert max(sizes) <= MAX_FRAME_BYTES
    assert len(split.messages) > 1
    assert min(sizes[:-1]) > MAX_FRAME_BYTES * 0.9, "pages are packed, not half empty"
    inventories = [m.payload for m in split.messages[1:] if isinstance(m, Inventory)]
    assert [page.seq for page in inventories] == list(range(1, len(split.messages)))
    assert [page.last for page in inventories] == [False] * (len(inventories) - 1) + [True]
    assert _reassembled(split.messages) == sessions


def test_a_page_holds_at_most_its_session_count() -> None:
    sessions = [RunningSession(session_id=f"{n}") for n in range(2 * INVENTORY_PAGE_SESSIONS + 1)]
    split = split_inventory(HELLO, sessions)
    counts = [len(message.payload.sessions) for message in split.messages]
    assert counts == [INVENTORY_PAGE_SESSIONS, INVENTORY_PAGE_SESSIONS, 1]
    assert _reassembled(split.messages) == sessions


@pytest.mark.parametrize("limit", [700, 701, 950, 4096])
def test_every_frame_is_full_up_to_the_limit(limit: int) -> None:
    """Each frame fits; each but the last would not fit with the next session in it too."""
    sessions = _sessions(60)
    split = split_inventory(HELLO, sessions, limit=limit)
    assert split.refused == []
    assert len(split.messages) > 1
    taken = 0
    for message in split.messages:
        assert len(encode(message).encode()) <= limit
        page = list(message.payload.sessions)
        taken += len(page)
        if taken < len(sessions):
            fuller = message.payload.model_copy(update={"sessions": [*page, sessions[taken]]})
            assert len(encode(message.model_copy(update={"payload": fuller})).encode()) > limit
    assert _reassembled(split.messages) == sessions


def test_a_session_too_large_for_any_frame_is_refused_and_the_rest_sent() -> None:
    sessions = _sessions(4)
    huge = RunningSession.model_construct(
        session_id="s-huge", vnc=None, state={"pad": "x" * MAX_FRAME_BYTES}
    )  # unvalidated: a platform's state that outgrew every bound
    split = split_inventory(HELLO, [sessions[0], huge, *sessions[1:]])
    assert [refused.session.session_id for refused in split.refused] == ["s-huge"]
    reason = split.refused[0].reason
    assert "bytes encoded" in reason and f"{MAX_FRAME_BYTES}-byte frame" in reason
    assert _reassembled(split.messages) == sessions


def test_pages_out_of_order_or_after_the_last_are_refused() -> None:
    split = split_inventory(HELLO, _sessions(3_000, state_bytes=100))
    first, _, third = split.messages[:3]
    assert isinstance(first, Hello) and isinstance(third, Inventory)
    pages = InventoryPages(first.payload)
    with pytest.raises(InventoryError, match="inventory page 2 where 1 was due"):
        pages.add(third.payload)
    done = InventoryPages(HELLO)
    with pytest.raises(InventoryError, match="after the inventory was complete"):
        done.add(InventoryPayload(seq=1, sessions=[], last=True))
