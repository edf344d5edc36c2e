"""Hostile agent-protocol frames for property-based tests (hypothesis strategies).

``hostile_frames()`` draws text or binary frames an agent might send: bad JSON, JSON that is
not an envelope, unknown types, binary frames, oversized frames, and valid messages with one
field replaced by something out of range or of the wrong type (huge ints, NaN/inf, over-long
strings, NUL, lone surrogates, deep nesting), removed, or joined by an unknown one.
``expected_close()`` says how the control plane must end the connection for one of them.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from streamspace.protocol import (
    INVENTORY_PAGE_SESSIONS,
    MAX_FRAME_BYTES,
    CloseCode,
    ProtocolError,
    close_reason,
    parse_agent_message,
)

BINARY_REFUSED = "binary frames are not part of the agent protocol"


def valid_payloads(agent_id: str) -> dict[str, dict[str, Any]]:
    """One valid payload per message type an agent sends."""
    return {
        "hello": {
            "v": 1,
            "agent_id": agent_id,
            "platform": "local",
            "version": "fuzz",
            "capacity": 0,
            "sessions": [{"session_id": "s1", "vnc": None, "state": {}}],
        },
        "inventory": {
            "seq": 1,
            "sessions": [{"session_id": "s2", "vnc": None, "state": {}}],
            "last": True,
        },
        "heartbeat": {"active_sessions": 0, "capacity": 0},
        "ack": {"command_id": "c1"},
        "complete": {"command_id": "c1", "result": {"state": {"k": "v"}}},
        "failed": {"command_id": "c1", "error": "e", "retryable": False},
        "status": {"session_id": "s1", "state": "exited", "reason": "r"},
        "progress": {"session_id": "s1", "stage": "pulling image", "message": "m"},
    }


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


hostile_values: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=2**31, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-1),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 1e11 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.builds(lambda char, count: char * count, st.characters(), st.integers(129, 20_000)),
    st.sampled_from(["nul\x00", "\ud800", "a\udfffb", "\x00"]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(17, 400).map(_nested),
    st.integers(17, 60).map(lambda depth: {"state": _nested(depth)}),
)


@st.composite
def _mutated(draw: st.DrawFn, agent_id: str) -> str:
    """A valid message with one field broken (replaced, removed, or an unknown one added)."""
    payloads = valid_payloads(agent_id)
    kind = draw(st.sampled_from(sorted(payloads)))
    frame: dict[str, Any] = {"type": kind, "id": "m1", "ts": 0, "payload": payloads[kind]}
    target = frame if draw(st.integers(0, 3)) == 0 else frame["payload"]
    existing = st.sampled_from(sorted(target))
    key = draw(st.one_of(existing, existing, existing, st.text(min_size=1, max_size=20)))
    operation = draw(st.sampled_from(["replace", "remove"]))
    if operation == "remove" and key in target:
        del target[key]
    else:
        target[key] = draw(hostile_values)
    return json.dumps(frame)  # NaN/inf as JSON's non-standard tokens, surrogates escaped


_huge_ints = st.integers(min_value=2**31, max_value=10**40) | st.integers(max_value=-1)
_bad_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300]) | _huge_ints
_bad_text = st.text(max_size=10).map(lambda text: text + "\x00") | st.builds(
    lambda char, count: char * count, st.characters(), st.integers(4001, 10_000)
)
_bad_json = st.one_of(
    st.integers(17, 400).map(_nested),
    st.dictionaries(st.text(max_size=5), _bad_numbers | _bad_text, min_size=1, max_size=3),
    st.integers(17 * 1024, 40 * 1024).map(lambda size: {"blob": "x" * size}),
)
_too_many_sessions = st.integers(INVENTORY_PAGE_SESSIONS + 1, 2 * INVENTORY_PAGE_SESSIONS).map(
    lambda count: [{"session_id": "s"}] * count
)
_IN_RANGE_OF_TYPE = {
    ("envelope", "ts"): _bad_numbers,
    ("hello", "v"): _huge_ints,
    ("hello", "capacity"): _huge_ints,
    ("hello", "leader_epoch"): _huge_ints,
    ("hello", "version"): _bad_text,
    ("hello", "sessions"): _too_many_sessions,
    ("inventory", "seq"): _huge_ints,
    ("inventory", "sessions"): _too_many_sessions,
    ("heartbeat", "active_sessions"): _huge_ints,
    ("heartbeat", "capacity"): _huge_ints,
    ("complete", "result"): _bad_json,
    ("failed", "error"): _bad_text,
    ("status", "reason"): _bad_text,
    ("progress", "message"): _bad_text,
    ("progress", "stage"): _bad_text,
}
"""Values of the right JSON type that are out of range, per field (where bounds matter)."""


@st.composite
def _out_of_range(draw: st.DrawFn, agent_id: str) -> str:
    """A valid message with one field of the right type but out of range."""
    payloads = valid_payloads(agent_id)
    where, field = draw(st.sampled_from(sorted(_IN_RANGE_OF_TYPE)))
    kind = draw(st.sampled_from(sorted(payloads))) if where == "envelope" else where
    frame: dict[str, Any] = {"type": kind, "id": "m1", "ts": 0, "payload": payloads[kind]}
    target = frame if where == "envelope" else frame["payload"]
    target[field] = draw(_IN_RANGE_OF_TYPE[where, field])
    return json.dumps(frame)


def _truncated(agent_id: str) -> st.SearchStrategy[str]:
    frame = json.dumps({"type": "ack", "id": "m1", "ts": 0, "payload": {"command_id": "c1"}})
    return st.integers(0, len(frame) - 1).map(lambda cut: frame[:cut])


_oversized = st.integers(MAX_FRAME_BYTES - 40, 4 * MAX_FRAME_BYTES).map(
    lambda size: json.dumps(
        {"type": "status", "id": "m1", "ts": 0, "payload": {"reason": "x" * size}}
    )
)


def hostile_frames(agent_id: str) -> st.SearchStrategy[str | bytes]:
    """Frames that are not valid agent messages (``expected_close`` filters out the rare
    valid one a mutation produces)."""
    not_an_envelope = st.one_of(
        st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3), st.none()
    ).map(json.dumps)
    unknown_type = st.text(max_size=40).map(
        lambda kind: json.dumps({"type": kind, "id": "m1", "ts": 0, "payload": {}})
    )
    return st.one_of(
        _mutated(agent_id),
        _mutated(agent_id),
        _out_of_range(agent_id),
        _out_of_range(agent_id),
        _truncated(agent_id),
        st.text(max_size=200),
        not_an_envelope,
        unknown_type,
        st.binary(max_size=200),
        _oversized,
    )


def expected_close(frame: str | bytes) -> tuple[int, str] | None:
    """The close code and reason an agent sending ``frame`` must get; ``None`` if it is a
    valid message (not hostile after all)."""
    if isinstance(frame, bytes):
        return CloseCode.BAD_MESSAGE, BINARY_REFUSED
    try:
        parse_agent_message(frame)
    except ProtocolError as exc:
        return exc.close_code, close_reason(str(exc))
    return None
