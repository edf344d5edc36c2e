"""Benchmark: launch latency as active sessions accumulate on the online agents.

Runs a throwaway PostgreSQL, one ``streamspace api`` replica and one no-op fake agent, all
as real processes on this machine. At each level the sessions are inserted directly (as
``running`` on the agent, the way launches write them) and vacuumed, then launches go
through ``POST /api/v1/sessions`` one after another; a launch's latency is the time to its
201 (a level is the count of active sessions when its launches begin). The ladder of
levels is climbed ``--rounds`` times (all sessions deleted in between), so that the
machine's noise spreads over every level; each row pools its rounds.
Placement reads the agents' ``used_slots``; for comparison the query it replaced (a count
of every active session of the online agents, once per launch batch) is timed against the
same database at each level.

    .venv/bin/python -m bench.launch_scale [--levels 100 1000 10000] [--launches 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from datetime import timedelta
from pathlib import Path
from tempfile import mkdtemp

import aiohttp
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from tests.processes import kill_all
from tests.services import PostgresServer, make_postgres_dir

from bench.commands import api_with_noop_agent, post_session
from bench.report import append_results, percentile
from streamspace.db.engine import SessionFactory, create_engine, create_session_factory
from streamspace.db.models import Agent, Session, Template, User, utcnow
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.states import ACTIVE_SESSION_STATES, SessionState

OLD_CANDIDATES = (
    select(Agent.agent_id, Agent.platform, Agent.capacity, func.count(Session.id))
    .outerjoin(
        Session,
        (Session.agent_id == Agent.agent_id) & Session.state.in_(ACTIVE_SESSION_STATES),
    )
    .where(Agent.approval == "approved", Agent.status == "online")
    .group_by(Agent.agent_id, Agent.platform, Agent.capacity)
)
"""The placement query before ``used_slots`` (kept here only, to compare)."""
QUERY_RUNS = 200
INSERT_CHUNK = 1_000


async def add_sessions(factory: SessionFactory, *, agent_id: str, count: int) -> None:
    """``count`` running sessions of the admin's xterm on ``agent_id``, inserted directly."""
    async with factory() as db:
        owner = await db.scalar(select(User).where(User.username == "admin"))
        template = await db.get(Template, "xterm")
    assert owner is not None and template is not None
    for start in range(0, count, INSERT_CHUNK):
        new = [
            session_repo.new(owner, template, agent_id=agent_id, idle_timeout=None)
            for _ in range(min(INSERT_CHUNK, count - start))
        ]
        for session in new:
            session.state = SessionState.RUNNING.value
        async with factory() as db, db.begin():
            await session_repo.insert_new(db, new)


async def active_sessions(factory: SessionFactory) -> int:
    async with factory() as db:
        counted = await db.scalar(
            select(func.count()).where(Session.state.in_(ACTIVE_SESSION_STATES))
        )
    return int(counted or 0)


async def settle(engine: AsyncEngine) -> None:
    """Vacuum and analyze ``sessions`` now, not autovacuum in the middle of a measurement."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE sessions"))


async def query_ms(factory: SessionFactory, *, old: bool) -> list[float]:
    """Timings of the placement query alone (the old count or ``launch_candidates``)."""

    async def once(db: AsyncSession) -> None:
        if old:
            (await db.execute(OLD_CANDIDATES)).all()
        else:
            await agent_repo.launch_candidates(db, heartbeat_after=utcnow() - timedelta(hours=1))

    times = []
    async with factory() as db:
        for _ in range(QUERY_RUNS):
            started = time.perf_counter()
            await once(db)
            times.append((time.perf_counter() - started) * 1000)
            await db.rollback()
    return times


async def launch_ms(client: aiohttp.ClientSession, count: int) -> list[float]:
    """Latencies of ``count`` launches one after another (201 received)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await post_session(client)
        times.append((time.perf_counter() - started) * 1000)
    return times


def p50_p99(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{statistics.median(ordered):.2f} / {percentile(ordered, 99):.2f}"


class Level:
    """What was measured at one level of active sessions, over the rounds."""

    def __init__(self, sessions: int) -> None:
        self.sessions = sessions
        self.launches: list[float] = []
        self.placement: list[float] = []
        self.old_count: list[float] = []

    async def measure(
        self, factory: SessionFactory, client: aiohttp.ClientSession, launches: int
    ) -> None:
        self.launches += await launch_ms(client, launches)
        self.placement += await query_ms(factory, old=False)
        self.old_count += await query_ms(factory, old=True)

    def row(self) -> dict[str, str]:
        ordered = sorted(self.launches)
        return {
            "active sessions": f"{self.sessions:,}",
            "launches": str(len(ordered)),
            "launch p50 ms": f"{statistics.median(ordered):.2f}",
            "launch p99 ms": f"{percentile(ordered, 99):.2f}",
            "placement query p50/p99 ms": p50_p99(self.placement),
            "old count query p50/p99 ms": p50_p99(self.old_count),
        }


async def main(args: argparse.Namespace) -> list[dict[str, str]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    engine = None
    try:
        postgres.start()
        url = postgres.create_database("bench")
        api, headers = await api_with_noop_agent(work, url)
        engine = create_engine(url, pool_size=2)
        factory = create_session_factory(engine)
        async with aiohttp.ClientSession(
            base_url=api.url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as client:
            await launch_ms(client, 20)  # warm-up
            levels = [Level(sessions) for sessions in args.levels]
            for _ in range(args.rounds):
                async with factory() as db, db.begin():
                    await db.execute(delete(Session))
                for level in levels:
                    await add_sessions(
                        factory,
                        agent_id="noop",
                        count=level.sessions - await active_sessions(factory),
                    )
                    await settle(engine)
                    await level.measure(factory, client, args.launches)
                    print(level.row(), flush=True)
            rows = [level.row() for level in levels]
    except Exception:
        print(f"benchmark failed; logs kept in {work}")
        raise
    finally:
        if engine is not None:
            await engine.dispose()
        kill_all()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--launches", type=int, default=200, help="per level and round")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = asyncio.run(main(options))
    append_results(
        "Launch latency with active sessions on the online agent (1 replica, PostgreSQL)",
        results,
        command="python -m bench.launch_scale "
        f"--levels {' '.join(map(str, options.levels))} --launches {options.launches} "
        f"--rounds {options.rounds}",
    )
