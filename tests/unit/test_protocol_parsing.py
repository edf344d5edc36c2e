"""Whatever an agent sends, parsing it either gives a message or raises ProtocolError."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamspace.protocol import AgentMessage, ProtocolError, close_reason, parse_agent_message
from tests.protocol_frames import expected_close, hostile_frames

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_RAW_SURROGATES = st.text(max_size=10).map(lambda text: text + "\ud800")
"""A str that cannot be UTF-8 (a WebSocket cannot carry it, but a caller may pass it)."""


def _parse(frame: str | bytes) -> AgentMessage | ProtocolError:
    try:
        return parse_agent_message(frame)
    except ProtocolError as exc:
        return exc


@FUZZ
@given(frame=hostile_frames("fuzz-agent") | _RAW_SURROGATES | st.text() | st.binary())
def test_parsing_only_ever_raises_protocol_errors(frame: str | bytes) -> None:
    outcome = _parse(frame)
    if isinstance(outcome, ProtocolError):
        assert 4400 <= outcome.close_code <= 4499
        reason = close_reason(str(outcome))
        assert reason and len(reason.encode()) <= 123


@FUZZ
@given(frame=hostile_frames("fuzz-agent"))
def test_what_parses_can_be_stored_and_sent_again(frame: str | bytes) -> None:
    """A frame that passes parsing is within the bounds: every number fits a 64-bit column
    and is finite, no text holds a NUL, and it encodes again to the same message."""
    if expected_close(frame) is not None:
        return
    assert isinstance(frame, str)
    message = parse_agent_message(frame)
    _check_storable(message.model_dump())
    assert parse_agent_message(message.model_dump_json()) == message


def _check_storable(value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key)
            _check_storable(item)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item)
    elif isinstance(value, str):
        assert "\x00" not in value
    elif isinstance(value, int):
        assert abs(value) < 2**63
    elif isinstance(value, float):
        assert math.isfinite(value)
