"""Reference relay for ``bench.tunnel``: the API's web server stack alone, one hop.

A bare ASGI app on uvicorn (same WebSocket implementation and settings as
``streamspace api``) that carries each WebSocket to a TCP port and back, with no
authentication, database, agent or framework: the least any tunnel served through this
stack can cost. Run by the benchmark as

    HOP_TARGET_PORT=<source port> uvicorn bench.asgi_hop:app --port <port>
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

CHUNK = 256 * 1024
TARGET_PORT = int(os.environ.get("HOP_TARGET_PORT", "0"))

Message = dict[str, Any]


async def app(scope: Message, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": "binary" if offered else None})
    reader, writer = await asyncio.open_connection("127.0.0.1", TARGET_PORT, limit=2 * CHUNK)

    async def down() -> None:
        while data := await reader.read(CHUNK):
            await send({"type": "websocket.send", "bytes": data})
        await send({"type": "websocket.close", "code": 1000})

    async def up() -> None:
        while (message := await receive())["type"] == "websocket.receive":
            writer.write(message.get("bytes") or b"")
            await writer.drain()

    pumps = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
