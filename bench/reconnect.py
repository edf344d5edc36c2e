"""Benchmark: an agent's reconnect time against the number of sessions it runs.

One ``streamspace api`` replica (production intervals) on one PostgreSQL, real processes on
this machine. Per size, an agent is registered and that many ``running`` session rows are
inserted for it (tests/running_sessions.py); then the agent reconnects ``--repeats`` times:
dial, ``hello`` with its inventory in pages (``split_inventory``, as the agent runtime
sends it), until the ``welcome``, which the replica sends once the whole inventory is
reconciled and committed. Between reconnects the agent waits until the replica has marked
it offline, so each is a fresh connect, not a replacement. Every run is checked: the
sessions are all still ``running`` and no command was created (nothing was taken for lost
or unknown). Last, once per size, the worst change: the agent comes back with an empty
inventory (its host rebooted), so every session is failed and gets a ``stop_session``.

    .venv/bin/python -m bench.reconnect [--sizes 100,1000,10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from pathlib import Path
from tempfile import mkdtemp

from sqlalchemy import func, select
from tests.database import Database
from tests.helpers import eventually
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess, kill_all
from tests.running_sessions import VNC_HOST, VNC_PORT, seed_running_sessions
from tests.services import PostgresServer, make_postgres_dir

from bench.commands import PRODUCTION_ENV
from streamspace.db.models import Agent, AgentCommand, Session
from streamspace.inventory import split_inventory
from streamspace.protocol import (
    PROTOCOL_VERSION,
    HelloPayload,
    PlatformName,
    RunningSession,
    VncEndpoint,
    encode,
)


async def _offline(database: Database, agent_id: str) -> bool:
    async with database.session() as db:
        return await db.scalar(select(Agent.status).where(Agent.agent_id == agent_id)) != "online"


async def _check(
    database: Database, agent_id: str, *, states: dict[str, int], commands: int
) -> None:
    """The agent's sessions by state, and how many commands were created for it."""
    async with database.session() as db:
        rows = await db.execute(
            select(Session.state, func.count())
            .where(Session.agent_id == agent_id)
            .group_by(Session.state)
        )
        created = await db.scalar(
            select(func.count()).select_from(AgentCommand).where(AgentCommand.agent_id == agent_id)
        )
    found = ({state: count for state, count in rows}, created)
    assert found == (states, commands), found


async def reconnect_once(agent: ManualAgent, sessions: list[RunningSession]) -> tuple[float, int]:
    """Seconds from dialing to the welcome, and the frames the inventory took."""
    hello = HelloPayload(
        v=PROTOCOL_VERSION,
        agent_id=agent.agent_id,
        platform=PlatformName.LOCAL,
        version="bench",
        capacity=agent.capacity,
    )
    began = time.perf_counter()
    await agent.open()
    split = split_inventory(hello, sessions)
    assert not split.refused
    for message in split.messages:
        await agent.send_raw(encode(message))
    welcome = await agent.receive(timeout=120)
    took = time.perf_counter() - began
    assert welcome.type == "welcome", welcome
    await agent.close()
    return took, len(split.messages)


async def measure(
    api: ApiProcess, database: Database, work: Path, *, size: int, repeats: int
) -> dict[str, float]:
    agent = await ManualAgent.registered(api.url, f"agent-{size}", capacity=size)
    ids = await seed_running_sessions(
        database, work / f"{size}.state.json", agent_id=agent.agent_id, count=size
    )
    vnc = VncEndpoint(host=VNC_HOST, port=VNC_PORT)
    sessions = [
        RunningSession(session_id=sid, vnc=vnc, state={"session_id": sid, "fake": True})
        for sid in ids
    ]
    times = []
    frames = 0
    for _ in range(repeats):
        took, frames = await reconnect_once(agent, sessions)
        times.append(took)
        await eventually(lambda: _offline(database, agent.agent_id), timeout=30, interval=0.1)
    await _check(database, agent.agent_id, states={"running": size}, commands=0)
    all_lost, _ = await reconnect_once(agent, [])
    await _check(database, agent.agent_id, states={"failed": size}, commands=size)
    median = statistics.median(times)
    return {
        "sessions": size,
        "frames": frames,
        "median_s": median,
        "max_s": max(times),
        "all_lost_s": all_lost,
    }


async def main(args: argparse.Namespace) -> list[dict[str, float]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    rows = []
    try:
        postgres.start()
        url = postgres.create_database("bench")
        api = ApiProcess(
            work / "api", database_url=url, env={**PRODUCTION_ENV, "LOG_LEVEL": "WARNING"}
        )
        api.start()
        database = Database(url)
        try:
            for size in args.sizes:
                row = await measure(api, database, work, size=size, repeats=args.repeats)
                print(
                    f"{size:>6} sessions: {row['frames']:>3} frame(s), reconnect median"
                    f" {row['median_s'] * 1000:.0f} ms (max {row['max_s'] * 1000:.0f} ms),"
                    f" {row['median_s'] / size * 1e6:.0f} µs per session; all lost:"
                    f" {row['all_lost_s'] * 1000:.0f} ms",
                    flush=True,
                )
                rows.append(row)
        finally:
            await ManualAgent.close_all()
            await database.close()
    except Exception:
        print(f"benchmark failed; logs kept in {work}")
        raise
    finally:
        kill_all()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100, 1000, 10000],
    )
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
