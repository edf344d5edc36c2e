"""Is a VNC server answering? Read the RFB protocol banner from its TCP port."""

from __future__ import annotations

import asyncio
import contextlib

RFB_BANNER_LENGTH = 12
"""``RFB xxx.yyy\\n``: every RFB server sends exactly these 12 bytes first."""


async def read_rfb_banner(host: str, port: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """Connect to ``host:port`` and return the server's 12-byte RFB banner.

    Raises ``OSError`` when nothing listens, ``TimeoutError`` when the banner does not arrive
    within ``timeout`` seconds, and ``asyncio.IncompleteReadError`` when the peer hangs up early.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await reader.readexactly(RFB_BANNER_LENGTH)
        finally:
            writer.close()
            # The server may already have reset the connection; the banner is what matters.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
