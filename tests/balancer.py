"""A TCP load balancer in front of API replicas, as a Kubernetes Service is to its pods.

Each new connection goes to the backend chosen at that moment (``send_to``); bytes are
carried both ways until either side closes. Which backend took each connection is kept in
``routed``, so a test can show where a socket landed.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.processes import ApiProcess

CHUNK = 64 * 1024


class Balancer:
    def __init__(self, backends: list[ApiProcess]) -> None:
        self.backends = backends
        self.current = 0
        self.routed: list[int] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def send_to(self, index: int) -> None:
        """New connections go to ``backends[index]`` from now on."""
        self.current = index

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.current
        self.routed.append(index)
        port = int(self.backends[index].url.rsplit(":", 1)[1])
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._pumps.discard(task)
            for side in (writer, up_writer):
                side.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
