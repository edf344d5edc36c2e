"""Run one agent process: credentials, the executed-commands record, the runtime, and the
leader loop when several replicas share the agent's identity (``LEADER_ELECTION``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from streamspace.agent.credentials import obtain_api_key
from streamspace.agent.executed import ExecutedCommands
from streamspace.agent.leader.base import Term
from streamspace.agent.leader.election import create_lease, lead
from streamspace.agent.platforms.base import Platform
from streamspace.agent.runtime import AgentRuntime
from streamspace.config import AgentSettings
from streamspace.files import private_dir


async def run_agent(
    settings: AgentSettings, platform: Platform, stop: asyncio.Event, **runtime_options: Any
) -> None:
    """Stay connected and execute commands until ``stop`` is set (sessions keep running).

    With leader election, only while this replica holds the agent's lease.
    """
    private_dir(settings.agent_data_dir)  # its key, the command record, session homes

    async def serve(until: asyncio.Event, leader: Term | None) -> None:
        api_key = await obtain_api_key(settings, platform.name)
        executed = ExecutedCommands.in_data_dir(settings.agent_data_dir)
        try:
            runtime = AgentRuntime(
                settings, platform, executed, api_key, leader=leader, **runtime_options
            )
            await runtime.run(until)
        finally:
            executed.close()

    try:
        lease = create_lease(settings)
        if lease is None:
            await serve(stop, None)
            return
        await lead(
            lease,
            lambda term: serve(term.ended, term),
            agent_id=settings.agent_id,
            lease_seconds=settings.leader_lease_seconds,
            stop=stop,
        )
    finally:
        await platform.close()


async def until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``run(stop)``; SIGINT/SIGTERM set ``stop`` so it can finish cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run(stop)
