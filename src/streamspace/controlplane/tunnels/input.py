"""Which bytes a viewer sends are input: a small parser of the RFB client stream.

The idle timeout counts from a viewer's last *input*: a KeyEvent, a PointerEvent or a
ClientCutText (RFB 7.5.4-7.5.6). The rest of what a viewer sends says nothing about a
person being there (noVNC asks for a framebuffer update after each one it receives, so a
desktop with a ticking clock makes it send all the time). The parser follows the client's
handshake (ProtocolVersion, the chosen security type, a VNC authentication response,
ClientInit), then message by message, across frame boundaries. Whatever it cannot follow
(RFB 3.3, another security type, an unknown message) makes it give up and count every
later byte as input: a viewer is never taken for idle because its protocol was not
understood.
"""

from __future__ import annotations

import struct

INPUT_MESSAGES = frozenset({4, 5, 6})
"""KeyEvent, PointerEvent, ClientCutText."""
_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
"""Client messages of a fixed size: SetPixelFormat, FramebufferUpdateRequest, KeyEvent,
PointerEvent, EnableContinuousUpdates, xvp."""
_HEADERS = {2: 4, 6: 8, 248: 9, 251: 8}
"""Client messages of a variable size, and the bytes that tell it: SetEncodings,
ClientCutText, ClientFence, SetDesktopSize."""
_SECURITY_NONE, _SECURITY_VNC_AUTH = 1, 2


class InputWatch:
    """Fed the viewer's frames in order; says whether each held input. Memory stays
    bounded: only headers are buffered, message bodies are skipped as they pass."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._stage = "version"
        self._skip = 0
        """Bytes of the current message still to pass."""
        self.lost = False
        """The parser gave up: every byte counts as input from now on."""

    def feed(self, data: bytes) -> bool:
        """Take the next bytes the viewer sent; ``True`` if an input message began in them."""
        if self.lost:
            return bool(data)
        view = memoryview(data)
        found = False
        while view and not self.lost:
            if self._skip:
                passed = min(self._skip, len(view))
                self._skip -= passed
                view = view[passed:]
                continue
            wanted = self._wanted()
            taken = max(0, min(len(view), wanted - len(self._buffer)))
            self._buffer += view[:taken]
            view = view[taken:]
            if len(self._buffer) < self._wanted():  # the type byte told of a longer header
                continue
            found = self._step() or found
        return True if self.lost else found

    def _wanted(self) -> int:
        """Bytes needed in the buffer before the next :meth:`_step`."""
        if self._stage == "version":
            return 12
        if self._stage == "auth":
            return 16
        if self._stage != "messages" or not self._buffer:
            return 1
        return _HEADERS.get(self._buffer[0], 1)  # the message type, or the header that sizes it

    def _step(self) -> bool:
        """Consume the buffered unit of the stream (the buffer holds what :meth:`_wanted`
        asked for); ``True`` for an input message."""
        buffer = self._buffer
        if self._stage == "version":
            if bytes(buffer) not in (b"RFB 003.007\n", b"RFB 003.008\n"):
                return self._give_up()
            return self._advance("security")
        if self._stage == "security":
            if buffer[0] == _SECURITY_NONE:
                return self._advance("init")
            if buffer[0] == _SECURITY_VNC_AUTH:
                return self._advance("auth")
            return self._give_up()
        if self._stage in ("auth", "init"):
            return self._advance("init" if self._stage == "auth" else "messages")
        kind = buffer[0]
        if kind not in _FIXED and kind not in _HEADERS:
            return self._give_up()
        self._skip = self._size(kind) - len(buffer)
        buffer.clear()
        return kind in INPUT_MESSAGES

    def _size(self, kind: int) -> int:
        """A message's whole size (a variable one's header is in the buffer)."""
        buffer = self._buffer
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == 2:  # SetEncodings: a count of 4-byte encodings
            return 4 + 4 * int(struct.unpack_from(">H", buffer, 2)[0])
        if kind == 6:  # ClientCutText; a negative length is the extended clipboard's
            return 8 + abs(int(struct.unpack_from(">i", buffer, 4)[0]))
        if kind == 248:  # ClientFence: flags, then a length-prefixed payload
            return 9 + buffer[8]
        return 8 + 16 * buffer[6]  # SetDesktopSize: screens of 16 bytes each

    def _advance(self, stage: str) -> bool:
        self._buffer.clear()
        self._stage = stage
        return False

    def _give_up(self) -> bool:
        self.lost = True
        self._buffer.clear()
        return True
