"""Run one agent process: credentials, the executed-commands record, the runtime."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from streamspace.agent.credentials import obtain_api_key
from streamspace.agent.executed import ExecutedCommands
from streamspace.agent.platforms.base import Platform
from streamspace.agent.runtime import AgentRuntime
from streamspace.config import AgentSettings


async def run_agent(
    settings: AgentSettings, platform: Platform, stop: asyncio.Event, **runtime_options: Any
) -> None:
    """Stay connected and execute commands until ``stop`` is set (sessions keep running)."""
    api_key = await obtain_api_key(settings, platform.name)
    executed = ExecutedCommands.in_data_dir(settings.agent_data_dir)
    try:
        runtime = AgentRuntime(settings, platform, executed, api_key, **runtime_options)
        await runtime.run(stop)
    finally:
        executed.close()
        await platform.close()


async def until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``run(stop)``; SIGINT/SIGTERM set ``stop`` so it can finish cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run(stop)
