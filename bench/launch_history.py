"""Benchmark: launch latency as a site accumulates sessions (issue 14: it must stay flat).

One production-configured ``streamspace api`` replica on a throwaway PostgreSQL and one
no-op agent, as real processes. Before each step the database is filled up to 1,000, then
10,000, then 100,000 sessions (1,000 of them active on the agent, the rest terminated,
written directly in SQL); then ``--launches`` sequential ``POST /api/v1/sessions`` are timed
from the client (request sent → 201 received). The sessions a step launched are terminated
before the next step, so every step places against the same 1,000 active sessions.

    .venv/bin/python -m bench.launch_history [--launches 300] [--sizes 1000,10000,100000]
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
from sqlalchemy import text
from tests.processes import kill_all
from tests.services import PostgresServer, make_postgres_dir

from bench.commands import api_with_noop_agent
from bench.report import append_results, percentile
from streamspace.db.engine import create_engine, create_session_factory

ACTIVE = 1_000
"""Active sessions on the agent at every step."""

# Sessions written in bulk: ids are uuid-shaped text, the owner is the administrator.
_FILL = text(
    """
    INSERT INTO sessions (id, owner_id, template_name, agent_id, state, platform_state,
                          persistent_home, active_viewers, created_at, updated_at, terminated_at)
    SELECT md5(random()::text || n)::uuid::text, (SELECT id FROM users WHERE username = 'admin'),
           'xterm', 'noop', :state, '{}', false, 0, now(), now(),
           CASE WHEN :state = 'terminated' THEN now() END
    FROM generate_series(1, :count) AS n
    """
)
_COUNT = text("SELECT state = 'running', count(*) FROM sessions GROUP BY 1")
_END = text("UPDATE sessions SET state = 'terminated', terminated_at = now() WHERE id = ANY(:ids)")


async def launch(client: aiohttp.ClientSession) -> tuple[str, float]:
    """One launch; returns the session id and its latency in ms."""
    started = time.perf_counter()
    async with client.post("/api/v1/sessions", json={"template": "xterm"}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /api/v1/sessions: {response.status} {body}")
    return str(body["id"]), (time.perf_counter() - started) * 1000


async def fill(url: str, total: int) -> dict[bool, int]:
    """Add terminated sessions (and active ones up to :data:`ACTIVE`) until ``total``."""
    engine = create_engine(url, pool_size=1)
    try:
        async with create_session_factory(engine)() as db, db.begin():
            counts = {active: n for active, n in (await db.execute(_COUNT)).all()}
            active = ACTIVE - counts.get(True, 0)
            if active > 0:
                await db.execute(_FILL, {"state": "running", "count": active})
            ended = total - ACTIVE - counts.get(False, 0)
            if ended > 0:
                await db.execute(_FILL, {"state": "terminated", "count": ended})
            await db.execute(text("ANALYZE sessions"))
        async with create_session_factory(engine)() as db:
            return {active: n for active, n in (await db.execute(_COUNT)).all()}
    finally:
        await engine.dispose()


async def end(url: str, session_ids: list[str]) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with create_session_factory(engine)() as db, db.begin():
            await db.execute(_END, {"ids": session_ids})
    finally:
        await engine.dispose()


async def step(
    client: aiohttp.ClientSession, url: str, total: int, launches: int
) -> dict[str, str]:
    counts = await fill(url, total)
    launched: list[str] = []
    latencies: list[float] = []
    for _ in range(launches):
        session_id, latency = await launch(client)
        launched.append(session_id)
        latencies.append(latency)
    await end(url, launched)
    latencies.sort()
    return {
        "sessions in the database": f"{sum(counts.values()):,}",
        "active": f"{counts.get(True, 0):,}",
        "launches": str(len(latencies)),
        "p50 ms": f"{statistics.median(latencies):.2f}",
        "p99 ms": f"{percentile(latencies, 99):.2f}",
        "max ms": f"{latencies[-1]:.2f}",
    }


async def main(args: argparse.Namespace) -> list[dict[str, str]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    rows: list[dict[str, str]] = []
    try:
        postgres.start()
        url = postgres.create_database("bench")
        api, headers = await api_with_noop_agent(work, url)
        async with aiohttp.ClientSession(
            base_url=api.url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as client:
            warm_up = [(await launch(client))[0] for _ in range(20)]
            await end(url, warm_up)
            for total in args.sizes:
                rows.append(await step(client, url, total, args.launches))
                print(rows[-1], flush=True)
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
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument(
        "--sizes",
        type=lambda value: [int(size) for size in value.split(",")],
        default=[1_000, 10_000, 100_000],
    )
    options = parser.parse_args()
    results = asyncio.run(main(options))
    append_results(
        "Launch latency as sessions accumulate (1 replica, PostgreSQL, 1,000 active)",
        results,
        command="python -m bench.launch_history "
        f"--launches {options.launches} --sizes {','.join(map(str, options.sizes))}",
    )
