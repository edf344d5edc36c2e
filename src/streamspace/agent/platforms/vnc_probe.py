"""Is a VNC server answering? Read the RFB protocol banner from its TCP port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

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


async def wait_for_rfb(
    host: str,
    port: int,
    *,
    deadline: float,
    gone: Callable[[], Awaitable[str | None]],
    interval: float = 0.05,
) -> str | None:
    """Probe ``host:port`` until it sends an RFB banner or the loop time ``deadline`` passes.

    Returns ``None`` once it answers, else why it never will: the reason ``gone()`` gives
    (checked between probes; ``None`` while the server may still come up) or a timeout.
    """
    loop = asyncio.get_running_loop()
    while (remaining := deadline - loop.time()) > 0:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            if (await read_rfb_banner(host, port, min(1.0, remaining))).startswith(b"RFB "):
                return None
        if (reason := await gone()) is not None:
            return reason
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
    return "no RFB banner before the start deadline"
