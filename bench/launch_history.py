"""Benchmark: launch latency as a site accumulates sessions (issue 14: it must stay flat).

One site per size, side by side on one throwaway PostgreSQL: a database filled with 1,000,
10,000 or 100,000 sessions (1,000 of them active on the agent, the rest terminated, written
directly in SQL, then vacuumed and checkpointed), a production-configured ``streamspace
api`` replica and a no-op agent, as real processes. In each of ``--rounds`` rounds every
site times its share of sequential ``POST /api/v1/sessions`` from the client (request sent
→ 201 received), so a swing of the shared machine hits every size alike. The sessions a
round launched are terminated after it: every launch places against the same 1,000
active sessions.

    .venv/bin/python -m bench.launch_history [--launches 300] [--rounds 5]
        [--sizes 1000,10000,100000]
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

from bench.commands import api_with_noop_agent, post_session
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
           'xterm', 'noop', CAST(:state AS varchar), '{}', false, 0, now(), now(),
           CASE WHEN CAST(:state AS varchar) = 'terminated' THEN now() END
    FROM generate_series(1, :count) AS n
    """
)
_COUNT = text("SELECT state = 'running', count(*) FROM sessions GROUP BY 1")
_END = text("UPDATE sessions SET state = 'terminated', terminated_at = now() WHERE id = ANY(:ids)")


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
        # Settled before timing: no autovacuum of the new rows, no checkpoint, mid-step.
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE sessions"))
            await autocommit.execute(text("CHECKPOINT"))
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


async def timed(client: aiohttp.ClientSession, url: str, launches: int) -> list[float]:
    """``launches`` sequential launches, ended afterwards; their latencies."""
    launched: list[str] = []
    latencies: list[float] = []
    for _ in range(launches):
        session_id, started = await post_session(client)
        latencies.append((time.time() - started) * 1000)
        launched.append(session_id)
    await end(url, launched)
    return latencies


def summary(counts: dict[bool, int], latencies: list[float]) -> dict[str, str]:
    latencies = sorted(latencies)
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
    clients: list[aiohttp.ClientSession] = []
    try:
        postgres.start()
        sites = []
        for total in args.sizes:
            url = postgres.create_database(f"bench_{total}")
            api, headers = await api_with_noop_agent(work / str(total), url)
            client = aiohttp.ClientSession(
                base_url=api.url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
            )
            clients.append(client)
            await timed(client, url, 20)  # warm-up
            sites.append((client, url, await fill(url, total)))
        latencies: list[list[float]] = [[] for _ in sites]
        for round_ in range(args.rounds):  # interleaved: the machine's swings hit every size
            for (client, url, _), mine in zip(sites, latencies, strict=True):
                mine += await timed(client, url, args.launches // args.rounds)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        return [
            summary(counts, mine) for (_, _, counts), mine in zip(sites, latencies, strict=True)
        ]
    except Exception:
        print(f"benchmark failed; logs kept in {work}")
        raise
    finally:
        for client in clients:
            await client.close()
        kill_all()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=300, help="per size, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
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
        command="python -m bench.launch_history --launches "
        f"{options.launches} --rounds {options.rounds} --sizes {','.join(map(str, options.sizes))}",
    )
