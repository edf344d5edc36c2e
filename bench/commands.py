"""Benchmark: commands created through REST and completed by a no-op agent (one replica).

Runs a throwaway PostgreSQL, one ``streamspace api`` replica and one no-op fake agent, all
as real processes on this machine. A command's latency is measured from just before the
client sends ``POST /api/v1/sessions`` to the ``completed_at`` the control plane writes
when the agent's ``complete`` arrives (same clock, same machine).

    .venv/bin/python -m bench.commands [--sequential 300] [--concurrent 3000] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from pathlib import Path
from tempfile import mkdtemp

import aiohttp
from sqlalchemy import select
from tests.helpers import login, wait_for_agent
from tests.processes import AgentProcess, ApiProcess, kill_all
from tests.services import PostgresServer, make_postgres_dir

from bench.report import append_results, percentile
from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.models import AgentCommand

PRODUCTION_ENV = {
    "AGENT_AUTO_APPROVE": "true",
    "LOG_LEVEL": "INFO",
    "HEARTBEAT_INTERVAL": "10",
    "COMMAND_ACK_TIMEOUT": "10",
    "RECONCILE_INTERVAL": "2",
    "COMMAND_POLL_INTERVAL": "2",
    "COMMAND_DEADLINE": "120",
}
"""The API replica at production intervals (the tests shorten them)."""
NOOP_AGENT_ARGS = ["--capacity", "100000", "--poll-interval", "2"]
"""A no-op agent with room for every session and the production session-poll interval."""


async def post_session(client: aiohttp.ClientSession) -> tuple[str, float]:
    """Create an xterm session; returns its id and when the request was sent."""
    started = time.time()
    async with client.post("/api/v1/sessions", json={"template": "xterm"}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /api/v1/sessions: {response.status} {body}")
    return str(body["id"]), started


async def _completion_times(url: str, expected: int) -> dict[str, float]:
    """session id -> completed_at (epoch seconds), once all ``expected`` commands completed."""
    engine = create_engine(url, pool_size=1)
    factory = create_session_factory(engine)
    deadline = time.monotonic() + 120
    try:
        while True:
            async with factory() as db:
                rows = (
                    await db.execute(
                        select(AgentCommand.session_id, AgentCommand.completed_at).where(
                            AgentCommand.status == "completed"
                        )
                    )
                ).all()
            if len(rows) >= expected or time.monotonic() > deadline:
                return {sid: done.timestamp() for sid, done in rows if sid and done}
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def sequential(client: aiohttp.ClientSession, count: int) -> dict[str, float]:
    """One client, commands paced 20 ms apart so they do not overlap (unloaded latency)."""
    sent: dict[str, float] = {}
    for _ in range(count):
        session_id, started = await post_session(client)
        sent[session_id] = started
        await asyncio.sleep(0.02)  # pacing, so commands do not overlap: this is not a wait
    return sent


async def concurrent(client: aiohttp.ClientSession, count: int, clients: int) -> dict[str, float]:
    """``clients`` workers posting back to back until ``count`` commands were created."""
    sent: dict[str, float] = {}
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            session_id, started = await post_session(client)
            sent[session_id] = started

    await asyncio.gather(*(worker() for _ in range(clients)))
    return sent


def _summary(name: str, sent: dict[str, float], done: dict[str, float]) -> dict[str, str]:
    latencies = sorted((done[sid] - t0) * 1000 for sid, t0 in sent.items() if sid in done)
    span = max(done[sid] for sid in sent if sid in done) - min(sent.values())
    return {
        "run": name,
        "commands": f"{len(latencies)}/{len(sent)}",
        "p50 ms": f"{statistics.median(latencies):.2f}",
        "p99 ms": f"{percentile(latencies, 99):.2f}",
        "max ms": f"{latencies[-1]:.2f}",
        "completed/s": f"{len(latencies) / span:.0f}",
    }


async def api_with_noop_agent(work: Path, url: str) -> tuple[ApiProcess, dict[str, str]]:
    """One production-configured replica on ``url`` with a no-op agent online, and the
    headers of an administrator logged in to it."""
    api = ApiProcess(work / "api", database_url=url, env=PRODUCTION_ENV)
    api.start()
    agent = AgentProcess(
        work / "agent",
        control_plane_url=api.url,
        agent_id="noop",
        extra_args=NOOP_AGENT_ARGS,
        env={"LOG_LEVEL": "WARNING"},
    )
    agent.start()
    session = await login(api.url)
    await wait_for_agent(session, "noop")
    headers = {"Authorization": session.headers["Authorization"]}
    await session.aclose()
    return api, headers


async def main(args: argparse.Namespace) -> list[dict[str, str]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    try:
        postgres.start()
        url = postgres.create_database("bench")
        api, headers = await api_with_noop_agent(work, url)
        # aiohttp, not httpx: httpx costs ~2.5 ms per request here, more than the server.
        async with aiohttp.ClientSession(
            base_url=api.url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=args.clients),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as client:
            await sequential(client, 20)  # warm-up
            seq = await sequential(client, args.sequential)
            done = await _completion_times(url, 20 + args.sequential)
            rows = [_summary("sequential, 1 client", seq, done)]
            print(rows[0], flush=True)
            conc = await concurrent(client, args.concurrent, args.clients)
            done = await _completion_times(url, 20 + args.sequential + args.concurrent)
            rows.append(_summary(f"concurrent, {args.clients} clients", conc, done))
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
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    options = parser.parse_args()
    results = asyncio.run(main(options))
    append_results(
        "Commands through REST, completed by a no-op agent (1 replica, PostgreSQL)",
        results,
        command="make bench  # .venv/bin/python -m bench.commands "
        f"--sequential {options.sequential} --concurrent {options.concurrent} "
        f"--clients {options.clients}",
    )
