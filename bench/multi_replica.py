"""Benchmark: commands across two replicas sharing PostgreSQL and Redis (the doorbell path).

Two ``streamspace api`` replicas (pod-1, pod-2), one PostgreSQL, one Redis, all real
processes on this machine, with production intervals (heartbeat 10 s, poll 2 s), so a
command reaches its agent through the doorbell, not the database poll.

1. Latency, side by side in one run: one no-op agent connected to pod-1 only; sequential
   ``POST /api/v1/sessions`` alternating between pod-1 (same replica: the doorbell is an
   in-process call) and pod-2 (cross replica: GET ``agent:<id>:pod`` + PUBLISH on
   ``pod:pod-1:commands``), paced so commands never overlap. Measured from just before the
   client sends the POST to the fake agent's execution log ``ts`` ("agent received": the
   platform call, right after the agent sent its ack) and to ``completed_at`` in the
   database. Same clock, same machine.
2. The floor: a raw Redis PUBLISH → subscriber round trip (redis.asyncio, the client the
   replicas use, subscriber reading with ``pubsub.listen()`` as the hub does), and
   GET + PUBLISH → subscriber (what a cross-replica doorbell costs in Redis round trips).
3. Throughput: the latency agent leaves; one fresh no-op agent per replica; ``--clients``
   concurrent clients split over both replicas post ``--commands`` sessions back to back.

    .venv/bin/python -m bench.multi_replica [--sequential 300] [--commands 2000] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import func, select
from tests.helpers import login, wait_for_agent
from tests.processes import AgentProcess, ApiProcess, kill_all, replica_processes
from tests.services import PostgresServer, RedisServer, make_postgres_dir

from bench.agents_scale import CLOCK_TICKS, family_cpu_ticks, machine_cpu_ticks
from bench.commands import NOOP_AGENT_ARGS, PRODUCTION_ENV, post_session
from bench.report import append_results, percentile
from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.models import AgentCommand

PACE = 0.03
"""Seconds between sequential POSTs: commands do not overlap (unloaded latency)."""
WARM_UP = 20


@dataclass(frozen=True)
class Times:
    """One command's timestamps (epoch seconds), all on this machine's clock."""

    posted: float
    created: float
    sent: float | None
    received: float | None
    completed: float | None


# --- helpers ------------------------------------------------------------------------------


def _client(base_url: str, headers: dict[str, str], limit: int) -> aiohttp.ClientSession:
    # aiohttp, not httpx: httpx costs ~2.5 ms per request here, more than the server.
    return aiohttp.ClientSession(
        base_url=base_url,
        headers=headers,
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _command_rows(
    url: str, session_ids: set[str], *, timeout: float
) -> dict[str, AgentCommand]:
    """session id -> its start command, once no command is in flight (or ``timeout`` passed).

    The wait polls a cheap count (index on status), so it costs PostgreSQL next to nothing
    while the CPU of the phase is being measured; the rows are read once at the end.
    """
    engine = create_engine(url, pool_size=1)
    factory = create_session_factory(engine)
    deadline = time.monotonic() + timeout
    in_flight = AgentCommand.status.in_(["pending", "sent", "acknowledged"])
    try:
        while time.monotonic() < deadline:
            async with factory() as db:
                busy = await db.scalar(
                    select(func.count()).select_from(AgentCommand).where(in_flight)
                )
            if not busy:
                break
            await asyncio.sleep(0.25)
        async with factory() as db:
            rows = (
                await db.scalars(select(AgentCommand).where(AgentCommand.action == "start_session"))
            ).all()
        return {row.session_id: row for row in rows if row.session_id in session_ids}
    finally:
        await engine.dispose()


def _executions(agents: list[AgentProcess]) -> dict[str, float]:
    """session id -> when a fake agent ran its start (first execution, epoch seconds)."""
    received: dict[str, float] = {}
    for agent in agents:
        if not agent.execution_log.exists():
            continue
        for line in agent.execution_log.read_text().splitlines():
            entry = json.loads(line)
            if entry["action"] == "start_session":
                received.setdefault(entry["session_id"], float(entry["ts"]))
    return received


def _times(
    posted: dict[str, float], rows: dict[str, AgentCommand], received: dict[str, float]
) -> list[Times]:
    out = []
    for sid, t0 in posted.items():
        row = rows.get(sid)
        if row is None:
            continue
        out.append(
            Times(
                posted=t0,
                created=row.created_at.timestamp(),
                sent=row.sent_at.timestamp() if row.sent_at else None,
                received=received.get(sid),
                completed=row.completed_at.timestamp() if row.completed_at else None,
            )
        )
    return out


def _ms(values: list[float]) -> list[float]:
    return sorted(value * 1000 for value in values)


def _stat(values_ms: list[float]) -> tuple[str, str]:
    if not values_ms:
        return "-", "-"
    return f"{statistics.median(values_ms):.2f}", f"{percentile(values_ms, 99):.2f}"


def _latency_row(name: str, times: list[Times], total: int) -> dict[str, str]:
    received = _ms([t.received - t.posted for t in times if t.received is not None])
    completed = _ms([t.completed - t.posted for t in times if t.completed is not None])
    doorbell = _ms([t.sent - t.created for t in times if t.sent is not None])
    rp50, rp99 = _stat(received)
    cp50, cp99 = _stat(completed)
    dp50, dp99 = _stat(doorbell)
    return {
        "run": name,
        "commands": f"{len(completed)}/{total}",
        "received p50 ms": rp50,
        "received p99 ms": rp99,
        "completed p50 ms": cp50,
        "completed p99 ms": cp99,
        "created→sent p50 ms": dp50,
        "created→sent p99 ms": dp99,
        "max received ms": f"{received[-1]:.2f}" if received else "-",
    }


def _busy_cores(since: tuple[int, int]) -> str:
    """Cores the whole machine kept busy since ``since`` (ours and everybody else's)."""
    busy, total = machine_cpu_ticks()
    return f"{(busy - since[0]) / (total - since[1]) * (os.cpu_count() or 1):.2f}"


async def _doorbells(base_url: str, headers: dict[str, str]) -> dict[str, float]:
    """This replica's ``streamspace_doorbells_total`` by result."""
    async with (
        aiohttp.ClientSession(base_url=base_url, headers=headers) as client,
        client.get("/metrics") as response,
    ):
        text = await response.text()
    found = re.findall(r'^streamspace_doorbells_total\{result="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    return {result: float(value) for result, value in found}


# --- the floor ----------------------------------------------------------------------------


async def redis_floor(port: int, count: int) -> list[dict[str, str]]:
    """PUBLISH → subscriber, and GET + PUBLISH → subscriber, ``count`` round trips each."""
    subscriber = aioredis.Redis(port=port, db=1)
    publisher = aioredis.Redis(port=port, db=1)
    channel = "bench:floor"
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    await publisher.set("bench:floor:pod", "pod-x")
    rows = []
    try:
        async with subscriber.pubsub() as pubsub:
            await pubsub.subscribe(channel)

            subscribed = asyncio.Event()

            async def listen() -> None:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        arrivals.put_nowait(time.perf_counter())
                    elif message.get("type") == "subscribe":
                        subscribed.set()

            listener = asyncio.create_task(listen())
            try:
                await asyncio.wait_for(subscribed.wait(), 5)
                for name, with_get in (("PUBLISH → subscriber", False), ("GET + PUBLISH", True)):
                    samples: list[float] = []
                    for index in range(count + 50):
                        started = time.perf_counter()
                        if with_get:
                            await publisher.get("bench:floor:pod")
                        await publisher.publish(channel, "agent")
                        arrived = await asyncio.wait_for(arrivals.get(), 5)
                        if index >= 50:  # warm-up
                            samples.append(arrived - started)
                        await asyncio.sleep(0.001)
                    values = _ms(samples)
                    p50, p99 = _stat(values)
                    rows.append(
                        {
                            "run": f"Redis floor: {name} (redis.asyncio)",
                            "commands": f"{len(values)}/{count}",
                            "received p50 ms": p50,
                            "received p99 ms": p99,
                            "completed p50 ms": "-",
                            "completed p99 ms": "-",
                            "created→sent p50 ms": "-",
                            "created→sent p99 ms": "-",
                            "max received ms": f"{values[-1]:.2f}",
                            "machine busy cores": "-",
                        }
                    )
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    finally:
        await subscriber.aclose()
        await publisher.aclose()
    return rows


# --- the phases ---------------------------------------------------------------------------


async def latency(
    pods: list[ApiProcess], agent: AgentProcess, url: str, headers: dict[str, str], count: int
) -> tuple[list[dict[str, str]], dict[str, float]]:
    """Alternate POSTs between pod-1 (same replica) and pod-2 (cross replica)."""
    posted: list[dict[str, float]] = [{}, {}]
    busy = machine_cpu_ticks()
    async with _client(pods[0].url, headers, 1) as same, _client(pods[1].url, headers, 1) as cross:
        for index in range(WARM_UP + count):
            for which, client in enumerate((same, cross)):
                session_id, started = await post_session(client)
                if index >= WARM_UP:
                    posted[which][session_id] = started
                await asyncio.sleep(PACE)  # pacing, so commands do not overlap: not a wait
    machine = _busy_cores(busy)
    wanted = set(posted[0]) | set(posted[1])
    rows = await _command_rows(url, wanted, timeout=60)
    await asyncio.sleep(0.5)  # the agent's log line is written before it sends complete
    received = _executions([agent])
    doorbells = await _doorbells(pods[1].url, headers)
    results = [
        _latency_row(
            "same replica (POST pod-1, agent on pod-1)", _times(posted[0], rows, received), count
        ),
        _latency_row(
            "cross replica (POST pod-2, agent on pod-1)", _times(posted[1], rows, received), count
        ),
    ]
    for row in results:
        row["machine busy cores"] = machine
    return results, doorbells


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children."""
    return sum(family_cpu_ticks(pid) for pid in pids) / CLOCK_TICKS


async def throughput(
    pods: list[ApiProcess],
    agents: list[AgentProcess],
    postgres_pid: int,
    url: str,
    headers: dict[str, str],
    count: int,
    clients: int,
) -> dict[str, str]:
    """``clients`` workers, half per replica, posting back to back until ``count`` created."""
    remaining = iter(range(count))
    posted: dict[str, float] = {}

    async def worker(client: aiohttp.ClientSession) -> None:
        for _ in remaining:
            session_id, started = await post_session(client)
            posted[session_id] = started

    async with (
        _client(pods[0].url, headers, clients) as one,
        _client(pods[1].url, headers, clients) as two,
    ):
        busy = machine_cpu_ticks()
        groups = {
            "API": [pod.pid for pod in pods],
            "PostgreSQL": [postgres_pid],
            "agents": [agent.pid for agent in agents],
        }
        cpu_before = {name: _cpu_seconds(pids) for name, pids in groups.items()}
        began = time.time()
        await asyncio.gather(*(worker(one if n % 2 == 0 else two) for n in range(clients)))
        created = time.time()
    rows = await _command_rows(url, set(posted), timeout=max(120.0, count / 10))
    machine = _busy_cores(busy)
    cpu = {name: _cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
    done = sorted(row.completed_at.timestamp() for row in rows.values() if row.completed_at)
    latencies = _ms([t.completed - t.posted for t in _times(posted, rows, {}) if t.completed])
    by_agent: dict[str, int] = {}
    for row in rows.values():
        by_agent[row.agent_id or "?"] = by_agent.get(row.agent_id or "?", 0) + 1
    span = done[-1] - began
    p50, p99 = _stat(latencies)
    print(f"throughput: commands per agent {by_agent}", flush=True)
    return {
        "run": f"2 replicas, 2 agents, {clients} clients",
        "commands": f"{len(done)}/{count}",
        "created/s": f"{count / (created - began):.0f}",
        "completed/s": f"{len(done) / span:.0f}",
        "completed p50 ms": p50,
        "completed p99 ms": p99,
        "per agent": " / ".join(f"{n}" for _, n in sorted(by_agent.items())),
        "machine busy cores": machine,
        **{
            f"{name} CPU ms/command": f"{seconds / count * 1000:.1f}"
            for name, seconds in cpu.items()
        },
    }


async def main(args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[str, str]]:
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    redis_server = RedisServer(work / "redis")
    try:
        postgres.start()
        redis_server.start()
        url = postgres.create_database("bench")
        pods = replica_processes(
            work, database_url=url, redis_server=redis_server, env=PRODUCTION_ENV
        )
        for pod in pods:
            pod.start()
        agent = AgentProcess(
            work / "agent",
            control_plane_url=pods[0].url,
            agent_id="noop",
            extra_args=NOOP_AGENT_ARGS,
            env={"LOG_LEVEL": "WARNING"},
        )
        agent.start()
        admin = await login(pods[1].url)
        await wait_for_agent(admin, "noop")
        headers = {"Authorization": admin.headers["Authorization"]}

        rows, doorbells = await latency(pods, agent, url, headers, args.sequential)
        for row in rows:
            print(row, flush=True)
        print(f"pod-2 doorbells: {doorbells}", flush=True)
        rows += await redis_floor(redis_server.port, args.floor)
        for row in rows[2:]:
            print(row, flush=True)

        agent.stop()  # its ~2 x (sequential + warm-up) sessions would skew least-loaded choice
        movers = [
            AgentProcess(
                work / f"agent-{n}",
                control_plane_url=pod.url,
                agent_id=f"noop-{n}",
                extra_args=NOOP_AGENT_ARGS,
                env={"LOG_LEVEL": "WARNING"},
            )
            for n, pod in enumerate(pods, start=1)
        ]
        for mover in movers:
            mover.start()
        for mover in movers:
            await wait_for_agent(admin, mover.agent_id)
        await admin.aclose()
        load = await throughput(
            pods, movers, postgres.pid or 0, url, headers, args.commands, args.clients
        )
        print(load, flush=True)
    except Exception:
        print(f"benchmark failed; logs kept in {work}")
        raise
    finally:
        kill_all()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows, load


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--floor", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    options = parser.parse_args()
    latency_rows, load_row = asyncio.run(main(options))
    command = (
        ".venv/bin/python -m bench.multi_replica "
        f"--sequential {options.sequential} --floor {options.floor} "
        f"--commands {options.commands} --clients {options.clients}"
    )
    append_results(
        "Cross-replica command latency: 2 replicas, PostgreSQL + Redis doorbell",
        latency_rows,
        command=command,
    )
    append_results(
        "Throughput with 2 replicas (PostgreSQL + Redis), one no-op agent per replica",
        [load_row],
        command=command,
    )
