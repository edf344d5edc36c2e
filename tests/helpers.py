"""Small helpers for tests: awaiting conditions, an authenticated API client, the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout} s (last: {last!r})")


@asynccontextmanager
async def logged_in(
    base_url: str, username: str = "admin", password: str = "admin-password"
) -> AsyncIterator[httpx.AsyncClient]:
    """``async with logged_in(url) as client``: a logged-in client, closed afterwards."""
    client = await login(base_url, username, password)
    try:
        yield client
    finally:
        await client.aclose()


async def login(
    base_url: str, username: str = "admin", password: str = "admin-password"
) -> httpx.AsyncClient:
    """An httpx client for ``base_url`` carrying the user's bearer token."""
    client = httpx.AsyncClient(base_url=base_url, timeout=10)
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return client


async def session_state(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/sessions/{session_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def wait_for_state(
    client: httpx.AsyncClient, session_id: str, state: str, *, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll the session until it reaches ``state``."""

    async def reached() -> dict[str, Any] | None:
        body = await session_state(client, session_id)
        return body if body["state"] == state else None

    return await eventually(reached, timeout=timeout, message=f"session {session_id} {state}")


async def running_session(
    client: httpx.AsyncClient, template: str = "xterm", *, timeout: float = 20.0
) -> str:
    """Launch a session of ``template`` and wait until it runs; its id."""
    created = await client.post("/api/v1/sessions", json={"template": template})
    assert created.status_code == 201, (
        f"POST /api/v1/sessions: {created.status_code} {created.text}"
    )
    session_id = str(created.json()["id"])
    await wait_for_state(client, session_id, "running", timeout=timeout)
    return session_id


async def all_rows(client: httpx.AsyncClient, path: str, **params: Any) -> list[Any]:
    """Every row of a paged list, following its ``Link: rel="next"`` answers."""
    rows: list[Any] = []
    response = await client.get(path, params=params)
    while True:
        response.raise_for_status()
        rows += response.json()
        if "next" not in response.links:
            return rows
        response = await client.get(response.links["next"]["url"])


async def wait_for_agent(
    client: httpx.AsyncClient, agent_id: str, *, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll the admin agent list until ``agent_id`` is online."""

    async def online() -> dict[str, Any] | None:
        for agent in await all_rows(client, "/api/v1/agents", limit=500):
            if agent["agent_id"] == agent_id and agent["status"] == "online":
                return dict(agent)
        return None

    return await eventually(online, timeout=timeout, message=f"agent {agent_id} online")
