"""Benchmark: thousands of idle agents on ONE replica (memory, CPU, connections kept).

A throwaway PostgreSQL and one ``streamspace api`` replica (in-memory hub, production
intervals: heartbeat 10 s). The agents are registered first: a sample through
``POST /api/v1/agents/register`` (bootstrap key, auto-approve, ``--rest-concurrency``
at once) to measure that path, the rest inserted directly into the database with hashed
keys (``streamspace.controlplane.auth.hashing.digest``), which is much faster. A simulator
process (this module's ``simulate`` subcommand: one asyncio process, ``websockets``
client, the pydantic protocol models) then connects them at ``--rate`` per second (at
most ``--in-flight`` handshakes at once), each agent sending ``hello``, waiting for
``welcome`` and then a ``heartbeat`` every 10 s (phases spread by the ramp). After one
heartbeat interval to settle, the replica's RSS (``VmRSS``) and CPU (``utime + stime``)
are sampled every second for ``--hold`` seconds.

    .venv/bin/python -m bench.agents_scale [--agents 5000] [--rate 200] [--hold 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select
from tests.processes import ApiProcess, kill_all
from tests.services import PostgresServer, make_postgres_dir
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.commands import PRODUCTION_ENV
from bench.report import append_results, percentile
from streamspace.controlplane.auth.hashing import digest, new_secret
from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.models import Agent, utcnow
from streamspace.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Heartbeat,
    HeartbeatPayload,
    Hello,
    HelloPayload,
    PlatformName,
    Welcome,
    encode,
    parse_server_message,
)

SCALE_ENV = {**PRODUCTION_ENV, "LOG_LEVEL": "WARNING"}
"""As measured since the first run: no INFO line per agent connect."""
HEARTBEAT_INTERVAL = 10.0
IDLE_WINDOW = 5.0
"""Seconds the replica's CPU is measured with no agent connected (its own timers)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# =========================================================================================
# The simulator (a separate process: its CPU is not the replica's)
# =========================================================================================


@dataclass
class SimState:
    total: int
    started: float = field(default_factory=time.monotonic)
    attempted: int = 0
    """Agents whose first connection attempt has started."""
    attempts: int = 0
    """Connection attempts, retries included."""
    connected: set[int] = field(default_factory=set)
    ever: set[int] = field(default_factory=set)
    """Agents that received a ``welcome`` at least once."""
    dropped: dict[int, str] = field(default_factory=dict)
    """Agent index -> why its (last) connection ended after a welcome."""
    failures: dict[str, int] = field(default_factory=dict)
    """Why a connection attempt failed before ``welcome`` -> how many times."""
    handshakes: list[float] = field(default_factory=list)
    """Seconds from starting to connect to receiving ``welcome``."""
    heartbeats: int = 0
    frames_in: int = 0
    ramp_seconds: float | None = None
    held: set[int] | None = None
    """Agents connected when the hold window began (SIGUSR1); ``None`` before that."""
    dropped_in_hold: set[int] = field(default_factory=set)

    def drop(self, index: int, why: str) -> None:
        self.dropped[index] = why
        if self.held is not None:
            self.dropped_in_hold.add(index)


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _backoff(attempt: int) -> float:
    """The real agent's reconnect delays: 0.2 s doubling to 10 s, jittered by ±50 %."""
    return min(10.0, 0.2 * 2.0 ** min(attempt, 16)) * random.uniform(0.5, 1.5)


async def _session(index: int, ws: ClientConnection, interval: float, state: SimState) -> None:
    """Heartbeats every ``interval`` seconds until the connection ends (a drop is noted)."""
    beat = encode(Heartbeat(payload=HeartbeatPayload(active_sessions=0, capacity=10)))

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send(beat)  # the envelope id need not be unique for heartbeats
            state.heartbeats += 1

    beating = asyncio.create_task(heartbeats())
    try:
        async for _frame in ws:
            state.frames_in += 1
        state.drop(index, f"closed {ws.close_code}")
    except ConnectionClosed as exc:
        state.drop(index, f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}")
    except Exception as exc:
        state.drop(index, f"{type(exc).__name__}: {exc}")
    finally:
        state.connected.discard(index)
        beating.cancel()


async def _agent(
    index: int, agent_id: str, key: str, url: str, state: SimState, gate: asyncio.Semaphore
) -> None:
    """One agent for the whole run: like the real one, it retries (jittered backoff) when
    connecting fails and reconnects after a drop. The caller holds a ``gate`` slot for the
    first attempt; every attempt releases its slot once ``welcome`` arrived or it failed."""
    hello = encode(
        Hello(
            payload=HelloPayload(
                v=PROTOCOL_VERSION,
                agent_id=agent_id,
                platform=PlatformName.LOCAL,
                version="bench-sim",
                capacity=10,
            )
        )
    )
    headers = {"Authorization": f"Bearer {key}", "X-Agent-ID": agent_id}
    failed_attempts = 0
    holding = True
    while True:
        if not holding:
            await gate.acquire()
        state.attempts += 1
        began = time.monotonic()
        try:
            try:
                ws = await connect(
                    url,
                    additional_headers=headers,
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=60,
                    close_timeout=1,
                )
                await ws.send(hello)
                async with asyncio.timeout(60):
                    welcome = parse_server_message(await ws.recv())
                if not isinstance(welcome, Welcome):
                    raise RuntimeError(f"expected welcome, got {welcome.type}")
            finally:
                gate.release()
                holding = False
        except Exception as exc:  # counted by kind; the agent tries again
            kind = f"{type(exc).__name__}: {str(exc)[:80]}"
            state.failures[kind] = state.failures.get(kind, 0) + 1
            await asyncio.sleep(_backoff(failed_attempts))
            failed_attempts += 1
            continue
        failed_attempts = 0
        state.handshakes.append(time.monotonic() - began)
        state.connected.add(index)
        state.ever.add(index)
        await _session(index, ws, welcome.payload.heartbeat_interval, state)
        await asyncio.sleep(_backoff(0))


async def simulate(args: argparse.Namespace) -> None:
    """Connect the agents listed in ``args.keys``; report on stdout until SIGTERM."""
    limits = raise_nofile()
    agents: list[tuple[str, str]] = json.loads(Path(args.keys).read_text())
    state = SimState(total=len(agents))
    gate = asyncio.Semaphore(args.in_flight)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def hold() -> None:
        state.held = set(state.connected)
        _emit("holding", connected=len(state.held))

    loop.add_signal_handler(signal.SIGUSR1, hold)
    _emit("start", agents=len(agents), nofile=list(limits), pid=os.getpid())

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1)
            _emit(
                "tick",
                t=round(time.monotonic() - state.started, 1),
                attempted=state.attempted,
                connected=len(state.connected),
                dropped=len(state.dropped),
                failed=sum(state.failures.values()),
                heartbeats=state.heartbeats,
            )

    tasks: list[asyncio.Task[None]] = []
    tick = asyncio.create_task(ticker())
    deadline = state.started + args.ramp_timeout
    for index, (agent_id, key) in enumerate(agents):
        if stop.is_set():
            break
        due = state.started + index / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        # Do not run ahead of the server by more than the handshakes in flight.
        await gate.acquire()
        state.attempted += 1
        tasks.append(asyncio.create_task(_agent(index, agent_id, key, args.url, state, gate)))
    # The ramp is over once every agent has been welcomed once (or the deadline passed).
    while not stop.is_set() and len(state.ever) < len(agents) and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    state.ramp_seconds = time.monotonic() - state.started
    _emit(
        "ramp_done",
        seconds=round(state.ramp_seconds, 1),
        connected=len(state.connected),
        welcomed=len(state.ever),
        dropped=len(state.dropped),
        failures=state.failures,
    )
    await stop.wait()
    tick.cancel()
    handshakes = sorted(state.handshakes)
    _emit(
        "summary",
        agents=len(agents),
        attempted=state.attempted,
        attempts=state.attempts,
        ever_connected=len(state.ever),
        connected_now=len(state.connected),
        never_dropped=len(state.connected - set(state.dropped)),
        held=len(state.held or ()),
        stayed=len((state.held or set()) - state.dropped_in_hold),
        dropped_in_hold=len(state.dropped_in_hold),
        dropped=len(state.dropped),
        drop_reasons=_count(state.dropped.values()),
        failures=state.failures,
        heartbeats=state.heartbeats,
        frames_in=state.frames_in,
        ramp_seconds=round(state.ramp_seconds, 1),
        handshake_p50_ms=round(statistics.median(handshakes) * 1000, 1) if handshakes else None,
        handshake_p99_ms=round(percentile(handshakes, 99) * 1000, 1) if handshakes else None,
    )
    # Leave without closing 5,000 sockets one by one: the parent tears the server down.
    sys.stdout.flush()
    os._exit(0)


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


# =========================================================================================
# The orchestrator
# =========================================================================================


@dataclass
class Sample:
    at: float
    rss_kib: int
    cpu_ticks: int


def stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state(0) ppid(1) ...
    utime(11) stime(12) cutime(13) cstime(14) (fields 3.. of stat(5))."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def all_stat_fields() -> Iterator[tuple[int, list[str]]]:
    """``(pid, stat_fields(pid))`` of every process now (those that vanish meanwhile left out)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                yield int(entry.name), stat_fields(entry.name)


def sample(pid: int) -> Sample:
    """VmRSS and utime+stime of one process, now."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = stat_fields(pid)
    return Sample(time.monotonic(), rss, int(fields[11]) + int(fields[12]))


def family_cpu_ticks(pid: int) -> int:
    """utime+stime of a process, its live children and the children it has reaped
    (PostgreSQL: postmaster + backends, which have process groups of their own)."""
    total = 0
    for other, fields in all_stat_fields():
        if other == pid:
            # Its own CPU plus that of children it reaped (e.g. closed backends).
            total += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def log_errors(log_path: Path, top: int = 8) -> list[tuple[int, str]]:
    """The most frequent WARNING/ERROR lines and exception lines of a log, with counts."""
    counts: dict[str, int] = {}
    if not log_path.exists():
        return []
    for line in log_path.read_text(errors="replace").splitlines():
        is_exception = line[:1].isalpha() and ("Error:" in line or "Exception:" in line)
        if " WARNING " in line or " ERROR " in line or is_exception:
            # Drop the timestamp and ids so equal messages count together.
            text = line.split(" ", 2)[-1] if line[:4].isdigit() else line
            key = " ".join(word for word in text.split() if not any(c.isdigit() for c in word))
            counts[key[:160]] = counts.get(key[:160], 0) + 1
    return sorted(((n, key) for key, n in counts.items()), reverse=True)[:top]


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


async def register_rest(
    base_url: str, count: int, concurrency: int
) -> tuple[list[tuple[str, str]], float]:
    """Register ``count`` agents through the API with the bootstrap key; (keys, seconds)."""
    keys: list[tuple[str, str]] = []
    ids = iter(range(count))

    async def worker(client: aiohttp.ClientSession) -> None:
        for n in ids:
            agent_id = f"sim-rest-{n:05d}"
            async with client.post(
                "/api/v1/agents/register",
                json={"agent_id": agent_id, "platform": "local", "capacity": 10},
            ) as response:
                body = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"register {agent_id}: {response.status} {body}")
            keys.append((agent_id, str(body["api_key"])))

    began = time.monotonic()
    async with aiohttp.ClientSession(
        base_url=base_url,
        headers={"Authorization": "Bearer bootstrap-secret"},
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return keys, time.monotonic() - began


async def register_direct(url: str, count: int) -> tuple[list[tuple[str, str]], float]:
    """Insert ``count`` approved agents with hashed keys in one statement; (keys, seconds)."""
    began = time.monotonic()
    keys = [(f"sim-{n:05d}", new_secret("ssa")) for n in range(count)]
    now = utcnow()
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for start in range(0, count, 1000):
                await conn.execute(
                    insert(Agent),
                    [
                        {
                            "agent_id": agent_id,
                            "platform": "local",
                            "status": "offline",
                            "approval": "approved",
                            "api_key_hash": digest(key),
                            "capacity": 10,
                            "active_sessions": 0,
                            "created_at": now,
                        }
                        for agent_id, key in keys[start : start + 1000]
                    ],
                )
    finally:
        await engine.dispose()
    return keys, time.monotonic() - began


async def heartbeat_freshness(url: str) -> dict[str, int]:
    """How many agents are online, and how many have a heartbeat newer than 1.5 intervals."""
    engine = create_engine(url, pool_size=1)
    factory = create_session_factory(engine)
    try:
        async with factory() as db:
            online = await db.scalar(
                select(func.count()).select_from(Agent).where(Agent.status == "online")
            )
            fresh = await db.scalar(
                select(func.count())
                .select_from(Agent)
                .where(
                    Agent.last_heartbeat >= utcnow() - timedelta(seconds=1.5 * HEARTBEAT_INTERVAL)
                )
            )
    finally:
        await engine.dispose()
    return {"online": int(online or 0), "fresh": int(fresh or 0)}


class Simulator:
    """The simulator subprocess and the JSON events it prints."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.last_tick: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log_path.open("ab"),
            start_new_session=True,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.with_suffix(".events").open("a") as log:
            async for line in self.process.stdout:
                log.write(line.decode())
                event = json.loads(line)
                if event["event"] == "tick":
                    self.last_tick = event
                else:
                    self.events.put_nowait(event)
        self.events.put_nowait({"event": "exited"})

    async def expect(self, name: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["event"] == name:
                    return event
                if event["event"] == "exited":
                    raise RuntimeError(f"simulator exited early; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def hold(self) -> None:
        """The hold window begins: the simulator notes who is connected now."""
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

    async def stop(self) -> dict[str, Any]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        summary = await self.expect("summary", 60)
        await asyncio.wait_for(self.process.wait(), 30)
        return summary

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


async def run(args: argparse.Namespace) -> list[dict[str, str]]:
    limits = raise_nofile()
    print(f"RLIMIT_NOFILE (inherited by the API and the simulator): {limits}", flush=True)
    work = Path(mkdtemp(prefix="streamspace-bench-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    simulator: Simulator | None = None
    keep = False
    try:
        postgres.start()
        url = postgres.create_database("bench")
        api = ApiProcess(work / "api", database_url=url, env=SCALE_ENV, name="pod-1")
        api.start()
        rest_count = min(args.rest_sample, args.agents)
        rest_keys, rest_seconds = await register_rest(api.url, rest_count, args.rest_concurrency)
        direct_keys, direct_seconds = await register_direct(url, args.agents - rest_count)
        print(
            f"registered {rest_count} agents through REST in {rest_seconds:.1f} s "
            f"({rest_count / rest_seconds:.0f}/s at {args.rest_concurrency} concurrent), "
            f"{len(direct_keys)} by direct insert in {direct_seconds:.1f} s",
            flush=True,
        )
        keys_path = work / "agents.json"
        keys_path.write_text(json.dumps(rest_keys + direct_keys))

        await asyncio.sleep(2)
        baseline = sample(api.pid)
        await asyncio.sleep(IDLE_WINDOW)
        idle_cores = (sample(api.pid).cpu_ticks - baseline.cpu_ticks) / CLOCK_TICKS / IDLE_WINDOW
        simulator = Simulator(
            [
                sys.executable,
                "-m",
                "bench.agents_scale",
                "simulate",
                "--url",
                api.url.replace("http://", "ws://") + "/api/v1/agents/connect",
                "--keys",
                str(keys_path),
                "--rate",
                str(args.rate),
                "--in-flight",
                str(args.in_flight),
                "--ramp-timeout",
                str(args.ramp_timeout),
            ],
            work / "simulator.log",
        )
        ramp_began = time.monotonic()
        ramp_first = sample(api.pid)
        ramp_pg = family_cpu_ticks(postgres.pid or 0)
        await simulator.start()
        start = await simulator.expect("start", 30)
        print(f"simulator: {start}", flush=True)
        ramp_task = asyncio.create_task(simulator.expect("ramp_done", args.ramp_timeout + 30))
        ramp_peak_rss = 0
        while not ramp_task.done():
            await asyncio.wait([ramp_task], timeout=5)
            ramp_peak_rss = max(ramp_peak_rss, sample(api.pid).rss_kib)
            print(f"ramp: {simulator.last_tick}", flush=True)
        ramp = ramp_task.result()
        ramp_last = sample(api.pid)
        ramp_pg_cpu = (family_cpu_ticks(postgres.pid or 0) - ramp_pg) / CLOCK_TICKS
        ramp_cpu = (ramp_last.cpu_ticks - ramp_first.cpu_ticks) / CLOCK_TICKS
        ramp_wall = time.monotonic() - ramp_began
        print(f"ramp done: {ramp}", flush=True)

        await asyncio.sleep(HEARTBEAT_INTERVAL)  # let the connect burst's backlog settle
        print(f"holding {args.hold} s: {simulator.last_tick}", flush=True)
        simulator.hold()
        samples = [sample(api.pid)]
        beats_first = int(simulator.last_tick.get("heartbeats", 0))
        sim_first = sample(simulator.pid)
        pg_first = family_cpu_ticks(postgres.pid or 0)
        busy_first, total_first = machine_cpu_ticks()
        next_at = samples[0].at
        per_second: list[float] = []
        while samples[-1].at - samples[0].at < args.hold:
            next_at += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            samples.append(sample(api.pid))
            a, b = samples[-2], samples[-1]
            per_second.append((b.cpu_ticks - a.cpu_ticks) / CLOCK_TICKS / (b.at - a.at))
        busy_last, total_last = machine_cpu_ticks()
        pg_cpu = (family_cpu_ticks(postgres.pid or 0) - pg_first) / CLOCK_TICKS
        sim_last = sample(simulator.pid)
        beats = int(simulator.last_tick.get("heartbeats", 0)) - beats_first
        fds = open_fds(api.pid)
        freshness = await heartbeat_freshness(url)
        summary = await simulator.stop()
        simulator = None
        print(f"simulator summary: {json.dumps(summary)}", flush=True)
        print(f"database at the end of the hold: {freshness}; API open fds: {fds}", flush=True)

        window = samples[-1].at - samples[0].at
        api_cores = (samples[-1].cpu_ticks - samples[0].cpu_ticks) / CLOCK_TICKS / window
        sim_cores = (sim_last.cpu_ticks - sim_first.cpu_ticks) / CLOCK_TICKS / window
        machine_busy = (busy_last - busy_first) / (total_last - total_first) * (os.cpu_count() or 1)
        rss_max = max(s.rss_kib for s in samples) / 1024
        # The replica's own timers (idle_cores) aside, its CPU goes to heartbeats.
        beats_per_second = beats / window
        per_beat_ms = (api_cores - idle_cores) / beats_per_second * 1000 if beats else 0.0
        per_second.sort()
        row = {
            "agents": str(args.agents),
            "stayed connected through the hold": f"{summary['stayed']}/{args.agents}",
            "welcomed / drops / failed attempts": (
                f"{summary['ever_connected']} / {summary['dropped']} / "
                f"{sum(summary['failures'].values())}"
            ),
            "ramp s (connects/s)": (
                f"{ramp['seconds']:.0f} ({summary['ever_connected'] / ramp['seconds']:.0f})"
            ),
            "handshake p50/p99 ms": (
                f"{summary['handshake_p50_ms']}/{summary['handshake_p99_ms']}"
            ),
            "API RSS max MiB": f"{rss_max:.0f}",
            "API RSS before MiB": f"{baseline.rss_kib / 1024:.0f}",
            "API CPU cores (avg)": f"{api_cores:.2f}",
            "API CPU idle cores": f"{idle_cores:.2f}",
            "API CPU cores 1-s p50/p99": (
                f"{statistics.median(per_second):.2f}/{percentile(per_second, 99):.2f}"
            ),
            "PostgreSQL cores": f"{pg_cpu / window:.2f}",
            "simulator cores": f"{sim_cores:.2f}",
            "machine busy cores": f"{machine_busy:.2f}",
            "fresh heartbeats": f"{freshness['fresh']}/{args.agents}",
            "online in DB": f"{freshness['online']}/{args.agents}",
            "heartbeats/s sent": f"{beats_per_second:.0f}",
            "API CPU ms per heartbeat": f"{per_beat_ms:.1f}",
        }
        print(
            f"ramp: {ramp_wall:.0f} s, API {ramp_cpu / ramp_wall:.2f} cores, "
            f"PostgreSQL {ramp_pg_cpu / ramp_wall:.2f} cores, API peak RSS "
            f"{ramp_peak_rss / 1024:.0f} MiB",
            flush=True,
        )
        print(json.dumps(row, ensure_ascii=False), flush=True)
        errors = log_errors(api.log_path)
        for count, line in errors:
            print(f"API log: {count:6d} x {line}", flush=True)
        if summary["stayed"] < args.agents:
            keep = True
            print(f"not every agent stayed connected; logs kept in {work}", flush=True)
    except Exception:
        print(f"benchmark failed; logs kept in {work}")
        raise
    finally:
        if simulator is not None:
            simulator.kill()
        kill_all()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("run", help="the benchmark (the default)")
    sim = sub.add_parser("simulate", help="the agent simulator (started by the benchmark)")
    for p in (parser, bench):
        p.add_argument("--agents", type=int, default=5000)
        p.add_argument("--rate", type=float, default=200.0, help="connects per second")
        p.add_argument("--in-flight", type=int, default=100, help="handshakes at once")
        p.add_argument("--hold", type=float, default=60.0, help="seconds measured")
        p.add_argument("--ramp-timeout", type=float, default=600.0)
        p.add_argument("--rest-sample", type=int, default=200, help="registered through REST")
        p.add_argument("--rest-concurrency", type=int, default=20)
    sim.add_argument("--url", required=True)
    sim.add_argument("--keys", required=True)
    sim.add_argument("--rate", type=float, default=200.0)
    sim.add_argument("--in-flight", type=int, default=100)
    sim.add_argument("--ramp-timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.command == "simulate":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(simulate(args))
        return
    rows = asyncio.run(run(args))
    append_results(
        f"{args.agents} idle agents on one replica (heartbeat 10 s, PostgreSQL)",
        rows,
        command=(
            f".venv/bin/python -m bench.agents_scale --agents {args.agents} --rate {args.rate:g} "
            f"--in-flight {args.in_flight} --hold {args.hold:g}"
        ),
    )


if __name__ == "__main__":
    main()
