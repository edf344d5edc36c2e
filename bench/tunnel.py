"""Benchmark: the VNC tunnel next to direct TCP and websockify (bulk bytes and round trips).

Same machine, one run, side by side; a VNC-like TCP source (its own process) to a WebSocket
client (this process, ``websockets``, subprotocol ``binary``, no compression):

(a) direct TCP: the client reads straight from the source socket;
(b) websockify (PyPI) as a single hop: ``websockify 127.0.0.1:P 127.0.0.1:<source>``;
(c) our path, browser and agent on the same replica: one ``streamspace api`` replica, one
    fake agent whose sessions report the source as their VNC port; token from
    ``POST /api/v1/sessions/{id}/connect``, then ``WS {url}``;
(d) our path across two replicas (PostgreSQL + Redis, shared ``INTERNAL_SECRET``): agent on
    pod-1, viewer on pod-2 (pod-2 relays over the internal WebSocket to pod-1);
(e) reference: the API's web server stack alone (uvicorn, same WebSocket implementation and
    settings) as a single hop, ``bench.asgi_hop``: no agent, framework, database or checks,
    the least any tunnel served through that stack can cost on this machine.

The source has two modes, switched by this process between connections: *throughput*
writes ``--mib`` MiB of random bytes as fast as the socket takes them, then closes;
*echo* sends every byte back at once. Throughput is timed from the first byte the client
receives to the last (tunnel set-up is reported apart as "open → first byte"), rounds
interleave the paths, MB/s = 10^6 bytes/s, median of ``--transfers``. Latency: one
connection per path, 16-byte messages, wait for the 16 bytes back, ``--round-trips``
round trips after 50 warm-up ones; "added" is the path's p50/p99 minus direct TCP's.
Relay CPU: user + system time of each relaying process (with its children: websockify
forks one per connection) from the first byte to the last (and until such a child has been
reaped), per MB carried.

    .venv/bin/python -m bench.tunnel [--mib 256] [--transfers 3] [--round-trips 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import mkdtemp
from typing import Protocol

import httpx
import redis.asyncio as aioredis
from tests.helpers import eventually, login, running_session, wait_for_agent
from tests.processes import (
    VENV_BIN,
    AgentProcess,
    ApiProcess,
    kill_all,
    replica_processes,
)
from tests.services import PostgresServer, RedisServer, free_port, make_postgres_dir
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.agents_scale import CLOCK_TICKS, all_stat_fields, family_cpu_ticks
from bench.report import RESULTS, append_results, percentile

MIB = 1024 * 1024
CHUNK = 256 * 1024
"""Source writes and client TCP reads (the agent reads the VNC socket in 256 KiB too)."""
MESSAGE = bytes(range(16))
WARM_UP_TRIPS = 50
WARM_UP_MIB = 8
SECRET = "bench-tunnel-replicas"
API_ENV = {
    "AGENT_AUTO_APPROVE": "true",
    "LOG_LEVEL": "WARNING",
    "HEARTBEAT_INTERVAL": "10",
    "COMMAND_ACK_TIMEOUT": "10",
    "RECONCILE_INTERVAL": "2",
    "COMMAND_POLL_INTERVAL": "2",
    "COMMAND_DEADLINE": "120",
}
"""Production intervals: idle replicas stay quiet while the bytes are measured."""
AGENT_ENV = {"LOG_LEVEL": "WARNING"}


# --- the source (its own process: python -m bench.tunnel --source) -----------------------


async def run_source() -> None:
    """Serve on a free port (printed first), mode lines on stdin, ``ok`` after each."""
    block = memoryview(os.urandom(MIB))
    mode: dict[str, int | str] = {"kind": "echo", "size": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind, size = mode["kind"], int(mode["size"])
        try:
            if kind == "throughput":
                sent = 0
                while sent < size:
                    offset = sent % MIB
                    piece = block[offset : offset + min(CHUNK, size - sent)]
                    writer.write(piece)
                    await writer.drain()
                    sent += len(piece)
            else:
                while data := await reader.read(CHUNK):
                    writer.write(data)
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    print(port, flush=True)
    while line := (await control.readline()).decode().strip():
        words = line.split()
        mode["kind"] = words[0]
        mode["size"] = int(words[1]) if len(words) > 1 else 0
        print("ok", flush=True)
    server.close()  # stdin closed: the benchmark is gone


class Source:
    """The source process, driven over its stdin."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.tunnel",
            "--source",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.port = int(await self._line())

    async def _line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the source process exited")
        return line.decode().strip()

    async def mode(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        if await self._line() != "ok":
            raise RuntimeError(f"source refused mode {line!r}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


# --- the clients --------------------------------------------------------------------------


class Stream(Protocol):
    async def recv(self) -> bytes:
        """The next bytes; ``b""`` once the other side closed."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def recv(self) -> bytes:
        return await self.reader.read(CHUNK)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class WsStream:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self) -> bytes:
        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return b""
        if isinstance(message, str):
            raise RuntimeError(f"text frame on a binary tunnel: {message[:80]!r}")
        return message

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            async with asyncio.timeout(5):
                await self.ws.close()


async def open_ws(url: str) -> WsStream:
    ws = await connect(
        url, subprotocols=[Subprotocol("binary")], compression=None, max_size=None, open_timeout=10
    )
    return WsStream(ws)


def tcp_opener(port: int) -> Callable[[], Awaitable[Stream]]:
    async def opener() -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2 * CHUNK)
        return TcpStream(reader, writer)

    return opener


def ws_opener(url: str) -> Callable[[], Awaitable[Stream]]:
    async def opener() -> Stream:
        return await open_ws(url)

    return opener


def tunnel_opener(
    api: ApiProcess, client: httpx.AsyncClient, session_id: str
) -> Callable[[], Awaitable[Stream]]:
    """A fresh single-use token per connection, as the web UI asks for one."""

    async def opener() -> Stream:
        response = await client.post(f"/api/v1/sessions/{session_id}/connect")
        if response.status_code != 200:
            raise RuntimeError(f"connect: {response.status_code} {response.text}")
        path = response.json()["url"]
        return await open_ws("ws://" + api.url.removeprefix("http://") + path)

    return opener


@dataclass
class Route:
    name: str
    relays: dict[str, int]
    """Processes relaying between client and source (websockify, API replica, agent): pids."""
    open: Callable[[], Awaitable[Stream]]
    rates: list[float] = field(default_factory=list)
    cpu_ticks: Counter[str] = field(default_factory=Counter)
    """Each relay's CPU (clock ticks) over the transfers, first byte to last."""
    megabytes: float = 0.0
    """What those transfers carried in that time."""
    first_byte_ms: list[float] = field(default_factory=list)
    trips_ms: list[float] = field(default_factory=list)


# --- the measurements ---------------------------------------------------------------------


def relay_ticks(route: Route) -> dict[str, int]:
    return {name: family_cpu_ticks(pid) for name, pid in route.relays.items()}


async def settled_relay_ticks(route: Route) -> dict[str, int]:
    """:func:`relay_ticks` once forked handlers (websockify's) have exited and been reaped:
    an exited child's CPU shows nowhere until its parent has reaped it."""
    relays = set(route.relays.values())

    async def reaped() -> bool:
        return not any(int(fields[1]) in relays for _, fields in all_stat_fields())

    await eventually(
        reaped, timeout=5, interval=0.01, message=f"{route.name}: relay handlers reaped"
    )
    return relay_ticks(route)


async def transfer(route: Route, size: int) -> tuple[float, float]:
    """MB/s from first to last byte, and ms from the open connection to its first byte;
    notes the relays' CPU per MB in ``route``."""
    stream = await route.open()
    try:
        opened = time.perf_counter()
        first = await stream.recv()
        ticks = relay_ticks(route)
        began = time.perf_counter()
        received = len(first)
        while received < size:
            data = await stream.recv()
            if not data:
                raise RuntimeError(f"{route.name}: closed after {received} of {size} bytes")
            received += len(data)
        ended = time.perf_counter()
        spent = await settled_relay_ticks(route)
    finally:
        await stream.close()
    megabytes = (size - len(first)) / 1e6
    route.cpu_ticks.update({name: spent[name] - ticks[name] for name in ticks})
    route.megabytes += megabytes
    return megabytes / (ended - began), (began - opened) * 1000


async def round_trips(route: Route, count: int) -> list[float]:
    """Milliseconds per 16-byte round trip, after the warm-up ones."""
    stream = await route.open()
    samples: list[float] = []
    try:
        for index in range(WARM_UP_TRIPS + count):
            started = time.perf_counter()
            await stream.send(MESSAGE)
            back = b""
            while len(back) < len(MESSAGE):
                data = await stream.recv()
                if not data:
                    raise RuntimeError(f"{route.name}: closed during the round trips")
                back += data
            elapsed = time.perf_counter() - started
            if back != MESSAGE:
                raise RuntimeError(f"{route.name}: echo came back as {back!r}")
            if index >= WARM_UP_TRIPS:
                samples.append(elapsed * 1000)
    finally:
        await stream.close()
    return sorted(samples)


async def measure(routes: list[Route], source: Source, args: argparse.Namespace) -> None:
    size = args.mib * MIB
    for route in routes:  # warm-up: connections, code paths, websockify's fork
        await source.mode(f"throughput {WARM_UP_MIB * MIB}")
        await transfer(route, WARM_UP_MIB * MIB)
        route.cpu_ticks.clear()
        route.megabytes = 0.0
    for round_ in range(args.transfers):
        for route in routes:  # interleaved, so drift hits every path alike
            await source.mode(f"throughput {size}")
            rate, first_ms = await transfer(route, size)
            route.rates.append(rate)
            route.first_byte_ms.append(first_ms)
            print(f"round {round_ + 1}: {route.name}: {rate:.0f} MB/s", flush=True)
            await asyncio.sleep(0.3)  # let the closed tunnel's teardown finish
    await source.mode("echo")
    for route in routes:
        route.trips_ms = await round_trips(route, args.round_trips)
        print(
            f"{route.name}: p50 {statistics.median(route.trips_ms):.3f} ms, "
            f"p99 {percentile(route.trips_ms, 99):.3f} ms",
            flush=True,
        )
        await asyncio.sleep(0.3)


def relay_cpu(route: Route) -> dict[str, float]:
    """CPU ms per MB of each relay of ``route`` over all its transfers (a clock tick is
    10 ms: transfers of a few hundred MB in all keep the rounding small)."""
    return {
        name: route.cpu_ticks[name] / CLOCK_TICKS * 1000 / route.megabytes for name in route.relays
    }


def rows_of(routes: list[Route], args: argparse.Namespace) -> list[dict[str, str]]:
    base = routes[0]
    base_p50, base_p99 = statistics.median(base.trips_ms), percentile(base.trips_ms, 99)
    rows = []
    for route in routes:
        p50, p99 = statistics.median(route.trips_ms), percentile(route.trips_ms, 99)
        added = p50 - base_p50
        cpu = relay_cpu(route)
        rows.append(
            {
                "path": route.name,
                "relays": str(len(route.relays)),
                f"MB/s (median of {args.transfers})": f"{statistics.median(route.rates):.0f}",
                "MB/s each": " / ".join(f"{rate:.0f}" for rate in route.rates),
                "relay CPU ms/MB": f"{sum(cpu.values()):.2f}" if cpu else "-",
                "relay CPU ms/MB each": (
                    " + ".join(f"{name} {value:.2f}" for name, value in cpu.items()) or "-"
                ),
                "open → first byte ms": f"{statistics.median(route.first_byte_ms):.2f}",
                "RTT p50 ms": f"{p50:.3f}",
                "RTT p99 ms": f"{p99:.3f}",
                "added p50 ms": "-" if route is base else f"{added:+.3f}",
                "added p99 ms": "-" if route is base else f"{p99 - base_p99:+.3f}",
                "added p50 ms per relay": (
                    "-" if route is base else f"{added / len(route.relays):+.3f}"
                ),
            }
        )
    return rows


def reading(routes: list[Route]) -> str:
    """The paragraph after the table: the targets, met or not, from the figures."""
    direct, websockify, same, cross, stack = routes
    rate = {route.name: statistics.median(route.rates) for route in routes}
    cpu = {route.name: relay_cpu(route) for route in routes}
    base = statistics.median(direct.trips_ms)

    def added(route: Route) -> float:
        return statistics.median(route.trips_ms) - base

    def ratio(route: Route) -> str:
        return f"{rate[route.name] / rate[websockify.name]:.2f}x"

    def cpu_of(route: Route) -> str:
        return " + ".join(f"{value:.2f} ({name})" for name, value in cpu[route.name].items())

    fast = rate[same.name] >= rate[websockify.name]
    per_hop = {route.name: added(route) / len(route.relays) for route in (websockify, same, cross)}
    under = all(value < 1.0 for value in per_hop.values())
    floor = (
        ": no tunnel served through it, let alone one with a second relay on the agent, "
        "can be faster on this machine"
        if rate[stack.name] < rate[websockify.name]
        else ""
    )
    return (
        "\nReading: throughput target ((c) at least as fast as websockify) "
        f"{'met' if fast else 'NOT met'}: (c) {rate[same.name]:.0f} MB/s vs websockify "
        f"{rate[websockify.name]:.0f} MB/s ({ratio(same)}); across replicas (d) "
        f"{rate[cross.name]:.0f} MB/s, direct TCP {rate[direct.name]:.0f} MB/s. The API's web "
        f"server stack alone as one hop, (e), carries {rate[stack.name]:.0f} MB/s "
        f"({ratio(stack)}){floor}. Relay CPU per MB: websockify "
        f"{cpu_of(websockify)} ms, (c) {cpu_of(same)} ms, (e) {cpu_of(stack)} ms. "
        f"Latency target (added p50 under 1 ms per hop) {'met' if under else 'NOT met'}: "
        f"added p50 {added(websockify):.3f} ms for websockify (1 relay), {added(same):.3f} ms "
        f"for (c) (2 relays: replica + agent, {per_hop[same.name]:.3f} ms each), "
        f"{added(cross):.3f} ms for (d) (3 relays: pod-2 + pod-1 + agent, "
        f"{per_hop[cross.name]:.3f} ms each); the Go original budgets 10-20 ms for its extra "
        "hop. Every process (source, client, relays, idle PostgreSQL/Redis) shares this "
        "machine's 2 cores, so each relay's CPU comes out of the same budget as the client's; "
        "the single-stream figures are CPU-bound Python on both ends, not a network limit.\n"
    )


# --- the set-up ---------------------------------------------------------------------------


def start_listener(
    work: Path, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a reference relay listening on ``port``; wait until it accepts connections."""
    if not Path(argv[0]).exists():
        raise RuntimeError(f"{argv[0]} missing: make install")
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: forked handlers die with it
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return proc
        time.sleep(0.05)
    stop_listener(proc)
    raise TimeoutError(f"{name} did not listen within 15 s")


def stop_listener(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_references(work: Path, target_port: int) -> list[tuple[subprocess.Popen[bytes], int]]:
    """websockify, and the API's server stack alone (``bench.asgi_hop``), both to the source."""
    websockify_port, stack_port = free_port(), free_port()
    websockify = start_listener(
        work,
        "websockify",
        [str(VENV_BIN / "websockify"), f"127.0.0.1:{websockify_port}", f"127.0.0.1:{target_port}"],
        websockify_port,
    )
    stack_argv = [str(VENV_BIN / "uvicorn"), "bench.asgi_hop:app", "--port", str(stack_port)]
    stack_argv += ["--log-level", "warning", "--ws-per-message-deflate", "false"]
    stack = start_listener(
        work, "asgi-hop", stack_argv, stack_port, {"HOP_TARGET_PORT": str(target_port)}
    )
    return [(websockify, websockify_port), (stack, stack_port)]


async def main(args: argparse.Namespace) -> list[Route]:
    work = Path(mkdtemp(prefix="streamspace-bench-tunnel-"))
    pg_dir = make_postgres_dir()
    postgres = PostgresServer(pg_dir)
    redis_server = RedisServer(work / "redis")
    source = Source()
    references: list[tuple[subprocess.Popen[bytes], int]] = []
    clients: list[httpx.AsyncClient] = []
    try:
        await source.start()
        references = start_references(work, source.port)
        (websockify, websockify_port), (stack, stack_port) = references
        postgres.start()
        redis_server.start()
        single = ApiProcess(
            work / "single", database_url=postgres.create_database("single"), env=API_ENV
        )
        pair_url = postgres.create_database("pair")
        pods = replica_processes(
            work,
            database_url=pair_url,
            redis_server=redis_server,
            env={**API_ENV, "INTERNAL_SECRET": SECRET},
        )
        for api in (single, *pods):
            api.start()
        agent_args = ["--vnc-port", str(source.port), "--poll-interval", "2"]
        agents = [
            AgentProcess(
                work / agent_id,
                control_plane_url=api.url,
                agent_id=agent_id,
                behaviour="noop",
                extra_args=agent_args,
                env=AGENT_ENV,
            )
            for api, agent_id in ((single, "tunnel-single"), (pods[0], "tunnel-pod-1"))
        ]
        for agent in agents:
            agent.start()
        single_admin = await login(single.url)
        clients.append(single_admin)
        pod2_admin = await login(pods[1].url)
        clients.append(pod2_admin)
        await wait_for_agent(single_admin, "tunnel-single", timeout=30)
        await wait_for_agent(pod2_admin, "tunnel-pod-1", timeout=30)
        redis = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
        try:

            async def advertised() -> str | None:
                value = await redis.get("pod:pod-1:address")
                return str(value) if value else None

            await eventually(advertised, timeout=30, message="pod-1 advertises its address")
        finally:
            await redis.aclose()
        same_session = await running_session(single_admin, timeout=30)
        cross_session = await running_session(pod2_admin, timeout=30)

        routes = [
            Route("(a) direct TCP", {}, tcp_opener(source.port)),
            Route(
                "(b) websockify, 1 hop",
                {"websockify": websockify.pid},
                ws_opener(f"ws://127.0.0.1:{websockify_port}/"),
            ),
            Route(
                "(c) StreamSpace, same replica",
                {"replica": single.pid, "agent": agents[0].pid},
                tunnel_opener(single, single_admin, same_session),
            ),
            Route(
                "(d) StreamSpace, across replicas",
                {"pod-2": pods[1].pid, "pod-1": pods[0].pid, "agent": agents[1].pid},
                tunnel_opener(pods[1], pod2_admin, cross_session),
            ),
            Route(
                "(e) reference: uvicorn alone, 1 hop",
                {"uvicorn": stack.pid},
                ws_opener(f"ws://127.0.0.1:{stack_port}/"),
            ),
        ]
        await measure(routes, source, args)
    except BaseException:
        print(f"benchmark failed; logs kept in {work}", flush=True)
        raise
    finally:
        for client in clients:
            await client.aclose()
        await source.stop()
        for proc, _ in references:
            stop_listener(proc)
        kill_all()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return routes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per throughput transfer")
    parser.add_argument("--transfers", type=int, default=3, help="transfers per path")
    parser.add_argument("--round-trips", type=int, default=500, help="round trips per path")
    parser.add_argument("--source", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.source:
        asyncio.run(run_source())
        sys.exit(0)
    measured = asyncio.run(main(options))
    rows = rows_of(measured, options)
    append_results(
        "VNC tunnel: bulk bytes and round trips, direct TCP vs websockify vs StreamSpace",
        rows,
        command=(
            f".venv/bin/python -m bench.tunnel --mib {options.mib} "
            f"--transfers {options.transfers} --round-trips {options.round_trips}"
        ),
    )
    paragraph = reading(measured)
    print(paragraph)
    with RESULTS.open("a") as handle:
        handle.write(paragraph)
