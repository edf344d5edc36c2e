"""A hand-driven agent: the test decides every frame it sends (for protocol and fault tests)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamspace.protocol import (
    PROTOCOL_VERSION,
    Hello,
    HelloPayload,
    PlatformName,
    ServerMessage,
    parse_server_message,
)

BOOTSTRAP_KEY = "bootstrap-secret"


async def register(
    base_url: str, agent_id: str, *, bootstrap_key: str = BOOTSTRAP_KEY, capacity: int = 10
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.post(
            "/api/v1/agents/register",
            json={"agent_id": agent_id, "platform": "local", "capacity": capacity},
            headers={"Authorization": f"Bearer {bootstrap_key}"},
        )


class ManualAgent:
    """Speaks the agent protocol one frame at a time."""

    opened: ClassVar[list[ClientConnection]] = []
    """Every socket any instance opened; ``close_all`` closes them (fixture teardown)."""

    def __init__(self, base_url: str, agent_id: str, api_key: str, *, capacity: int = 10) -> None:
        self.url = base_url.replace("http://", "ws://") + "/api/v1/agents/connect"
        self.agent_id = agent_id
        self.api_key = api_key
        self.capacity = capacity
        self.ws: ClientConnection | None = None

    @classmethod
    async def close_all(cls) -> None:
        for ws in cls.opened:
            await ws.close()
        cls.opened.clear()

    @classmethod
    async def registered(cls, base_url: str, agent_id: str, *, capacity: int = 10) -> ManualAgent:
        response = await register(base_url, agent_id, capacity=capacity)
        assert response.status_code == 201, response.text
        return cls(base_url, agent_id, response.json()["api_key"], capacity=capacity)

    async def open(self, *, agent_id: str | None = None, api_key: str | None = None) -> None:
        """Open the WebSocket (nothing sent yet)."""
        headers = {
            "Authorization": f"Bearer {api_key or self.api_key}",
            "X-Agent-ID": agent_id or self.agent_id,
        }
        self.ws = await connect(self.url, additional_headers=headers, max_size=2**20)
        self.opened.append(self.ws)

    async def connect(
        self, sessions: list[dict[str, Any]] | None = None, *, leader_epoch: int | None = None
    ) -> ServerMessage:
        """Open, say hello (as leader ``leader_epoch`` if given), return the welcome."""
        await self.hello(sessions, leader_epoch=leader_epoch)
        welcome = await self.receive()
        assert welcome.type == "welcome", welcome
        return welcome

    async def hello(
        self, sessions: list[dict[str, Any]] | None = None, *, leader_epoch: int | None = None
    ) -> None:
        """Open and say hello; the answer is left to read."""
        await self.open()
        hello = Hello(
            payload=HelloPayload(
                v=PROTOCOL_VERSION,
                agent_id=self.agent_id,
                platform=PlatformName.LOCAL,
                version="test",
                capacity=self.capacity,
                sessions=sessions or [],
                leader_epoch=leader_epoch,
            )
        )
        await self.send_raw(hello.model_dump_json())

    async def send_raw(self, frame: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(frame)

    async def send(self, type_: str, payload: dict[str, Any]) -> None:
        await self.send_raw(json.dumps({"type": type_, "id": "m1", "ts": 0, "payload": payload}))

    async def receive(self, timeout: float = 10.0) -> ServerMessage:
        """The next server frame, skipping nothing."""
        assert self.ws is not None
        frame = await asyncio.wait_for(self.ws.recv(decode=True), timeout)
        assert isinstance(frame, str)
        return parse_server_message(frame)

    async def closed_with(self, timeout: float = 10.0) -> tuple[int | None, str | None, list[str]]:
        """Read until the server closes; returns (code, reason, frames seen meanwhile)."""
        assert self.ws is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    seen.append(str(await self.ws.recv(decode=True)))
        except ConnectionClosed as closed:
            received = closed.rcvd
            return (
                received.code if received else None,
                received.reason if received else None,
                seen,
            )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
