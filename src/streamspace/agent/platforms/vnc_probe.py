"""Is a VNC server answering? Read the RFB protocol banner from its endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator

from streamspace.protocol import VncEndpoint

RFB_BANNER_LENGTH = 12
"""``RFB xxx.yyy\\n``: every RFB server sends exactly these 12 bytes first."""


async def read_banner(vnc: VncEndpoint, timeout: float) -> bytes:  # noqa: ASYNC109
    """Connect to ``vnc`` (TCP or Unix socket) and return the server's 12-byte RFB banner.

    Raises ``OSError`` when nothing listens, ``TimeoutError`` when the banner does not arrive
    within ``timeout`` seconds, and ``asyncio.IncompleteReadError`` when the peer hangs up early.
    """
    async with asyncio.timeout(timeout):
        if vnc.unix is not None:
            with unix_address(vnc.unix) as address:
                reader, writer = await asyncio.open_unix_connection(address)
        else:
            reader, writer = await asyncio.open_connection(vnc.host, vnc.port)
        try:
            return await reader.readexactly(RFB_BANNER_LENGTH)
        finally:
            writer.close()
            # The server may already have reset the connection; the banner is what matters.
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """An address for ``connect(2)`` that reaches the socket ``path`` however long it is.

    ``sun_path`` holds 108 bytes and a data dir can be deeper than that, so the address goes
    through ``/proc/self/fd`` of the socket's directory, opened for as long as the block runs.
    """
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)


async def read_rfb_banner(host: str, port: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """:func:`read_banner` of the TCP endpoint ``host:port``."""
    return await read_banner(VncEndpoint(host=host, port=port), timeout)


async def wait_for_rfb(
    vnc: VncEndpoint,
    *,
    deadline: float,
    gone: Callable[[], Awaitable[str | None]],
    interval: float = 0.05,
) -> str | None:
    """Probe ``vnc`` until it sends an RFB banner or the loop time ``deadline`` passes.

    Returns ``None`` once it answers, else why it never will: the reason ``gone()`` gives
    (checked between probes; ``None`` while the server may still come up) or a timeout.
    """
    loop = asyncio.get_running_loop()
    while (remaining := deadline - loop.time()) > 0:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            if (await read_banner(vnc, min(1.0, remaining))).startswith(b"RFB "):
                return None
        if (reason := await gone()) is not None:
            return reason
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
    return "no RFB banner before the start deadline"
