"""A minimal RFB (VNC) client over a WebSocket, enough to prove a tunnel carries real VNC:
version, security None, ClientInit/ServerInit, framebuffer update requests and updates
(Raw encoding, the only one a client that sends no SetEncodings gets)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection

RFB_VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1


@dataclass(frozen=True)
class ServerInit:
    width: int
    height: int
    bytes_per_pixel: int
    name: str


class RfbClient:
    """Reads exact byte counts from binary WebSocket messages of any size."""

    def __init__(self, ws: ClientConnection, *, timeout: float = 10.0) -> None:
        self.ws = ws
        self.timeout = timeout
        self._buffer = bytearray()
        self.init: ServerInit | None = None

    async def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            message = await asyncio.wait_for(self.ws.recv(), self.timeout)
            assert isinstance(message, bytes), f"text frame in a VNC tunnel: {message!r}"
            self._buffer += message
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def handshake(self) -> ServerInit:
        """RFB 3.8 with security None and a shared session; returns the ServerInit."""
        banner = await self.read(12)
        assert banner == RFB_VERSION, banner
        await self.send(RFB_VERSION)
        count = (await self.read(1))[0]
        assert count > 0, "server refused the connection"
        types = await self.read(count)
        assert SECURITY_NONE in types, f"security types {list(types)}"
        await self.send(bytes([SECURITY_NONE]))
        (result,) = struct.unpack(">I", await self.read(4))
        assert result == 0, f"SecurityResult {result}"
        await self.send(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", await self.read(4))
        pixel_format = await self.read(16)
        (name_length,) = struct.unpack(">I", await self.read(4))
        name = (await self.read(name_length)).decode(errors="replace")
        self.init = ServerInit(width, height, pixel_format[0] // 8, name)
        return self.init

    async def request_update(self, *, incremental: bool = False) -> None:
        assert self.init is not None
        await self.send(
            struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.init.width, self.init.height)
        )

    async def read_update(self) -> int:
        """Read one FramebufferUpdate (type 0) in full; returns its pixel byte count."""
        assert self.init is not None
        kind = (await self.read(1))[0]
        assert kind == 0, f"expected a FramebufferUpdate (0), got message type {kind}"
        (rectangles,) = struct.unpack(">xH", await self.read(3))
        pixels = 0
        for _ in range(rectangles):
            _x, _y, width, height, encoding = struct.unpack(">HHHHi", await self.read(12))
            assert encoding == 0, f"unexpected encoding {encoding}"
            size = width * height * self.init.bytes_per_pixel
            await self.read(size)
            pixels += size
        return pixels
