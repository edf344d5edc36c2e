"""Which bytes a viewer sends count as input (the idle timeout's clock): keys, the pointer
and the clipboard do; the update requests a viewer sends by itself do not."""

from __future__ import annotations

import struct

import pytest

from streamspace.controlplane.tunnels.input import InputWatch

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, security None, ClientInit
SET_ENCODINGS = struct.pack(">BxH3i", 2, 3, 0, 1, -223)
UPDATE_REQUEST = struct.pack(">BBHHHH", 3, 1, 0, 0, 1024, 768)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
PIXEL_FORMAT = struct.pack(">Bxxx16s", 0, b"\0" * 16)
FENCE = struct.pack(">BxxxIB", 248, 0, 2) + b"ab"


def _cut(text: bytes) -> bytes:
    return struct.pack(">BxxxI", 6, len(text)) + text


def _watching() -> InputWatch:
    watch = InputWatch()
    assert watch.feed(HANDSHAKE) is False
    return watch


def test_update_requests_and_settings_are_not_input() -> None:
    watch = _watching()
    for message in (SET_ENCODINGS, PIXEL_FORMAT, UPDATE_REQUEST, FENCE, UPDATE_REQUEST * 20):
        assert watch.feed(message) is False
    assert not watch.lost


@pytest.mark.parametrize("message", [KEY, POINTER, _cut(b"hello")], ids=["key", "pointer", "cut"])
def test_keys_pointer_and_clipboard_are_input(message: bytes) -> None:
    watch = _watching()
    assert watch.feed(UPDATE_REQUEST + message + UPDATE_REQUEST) is True
    assert watch.feed(UPDATE_REQUEST) is False  # the stream is still followed


def test_messages_split_across_frames_byte_by_byte() -> None:
    watch = InputWatch()
    stream = HANDSHAKE + SET_ENCODINGS + UPDATE_REQUEST + _cut(b"xyz") + UPDATE_REQUEST + KEY
    seen = [watch.feed(stream[n : n + 1]) for n in range(len(stream))]
    inputs = [n for n, found in enumerate(seen) if found]
    cut_header_end = len(HANDSHAKE + SET_ENCODINGS + UPDATE_REQUEST) + 7
    key_start = len(stream) - len(KEY)
    assert inputs == [cut_header_end, key_start]
    assert not watch.lost


def test_vnc_authentication_is_followed() -> None:
    watch = InputWatch()
    assert watch.feed(b"RFB 003.008\n" + b"\x02" + b"r" * 16 + b"\x01" + UPDATE_REQUEST) is False
    assert watch.feed(POINTER) is True


def test_a_long_clipboard_is_skipped_not_buffered() -> None:
    watch = _watching()
    assert watch.feed(struct.pack(">BxxxI", 6, 10_000_000)) is True
    for _ in range(100):
        assert watch.feed(b"\x04" * 100_000) is False  # inside the text: no key events
    assert watch.feed(UPDATE_REQUEST) is False
    assert watch.feed(KEY) is True


@pytest.mark.parametrize(
    "start",
    [b"RFB 003.003\n", b"RFB 003.008\n\x13", HANDSHAKE + b"\x7f"],
    ids=["rfb-3.3", "other-security", "unknown-message"],
)
def test_what_it_cannot_follow_counts_as_input_from_then_on(start: bytes) -> None:
    watch = InputWatch()
    assert watch.feed(start) is True
    assert watch.lost
    assert watch.feed(UPDATE_REQUEST) is True
