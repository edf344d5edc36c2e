"""Throwaway PostgreSQL and Redis servers for tests.

Each server is a child process we own, listening on 127.0.0.1 on a free port, with its data
and log files in a directory of its own. Tests can ``kill()`` (SIGKILL, like a crash) and
``restart()`` (same port, same data) them. An ``atexit`` hook kills whatever is still running.

PostgreSQL refuses to run as root: when we are root, ``initdb`` and ``postgres`` run as the
``postgres`` OS user, so the server's directory (and every parent) must be reachable by that
user. pytest's ``tmp_path`` is not (its root is mode 0700), so use ``make_postgres_dir()``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

import redis

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.05

_live: set[_Server] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()


class ServerError(RuntimeError):
    """A managed server could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (it may be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it is true (-> True) or ``timeout`` seconds pass (-> False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


class _Server:
    """A server process in its own process group, with output appended to ``log_path``."""

    name = "server"

    def __init__(self, base_dir: Path, *, start_timeout: float = START_TIMEOUT) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / f"{self.name}.log"
        self.start_timeout = start_timeout
        self._port: int | None = None
        # True once a start succeeded: from then on the port is fixed (restart reuses it).
        self._port_fixed = False
        self._proc: subprocess.Popen[bytes] | None = None

    # --- public API ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError(f"{self.name} has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> None:
        """Start the server and wait until it answers. A no-op when it is running."""
        if self.running:
            return
        self._prepare()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._port is None:
                self._port = free_port()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            if self._wait_ready(deadline):
                self._port_fixed = True
                return
            self._reap()
            output = _read_from(self.log_path, log_offset)
            if time.monotonic() < deadline and self._retriable(output):
                if not self._port_fixed and self._port_in_use(output):
                    self._port = None  # someone took our free port: pick another one
                else:
                    time.sleep(POLL_INTERVAL * 4)  # previous instance still going away
                continue
            raise ServerError(
                f"{self.name} did not start on port {self._port} "
                f"(log: {self.log_path}):\n{_tail(output)}"
            )

    def stop(self) -> None:
        """Shut down cleanly (escalating to SIGKILL after a timeout)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        self._kill_group()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server and all its processes, like a crash. Data stays for restart()."""
        if self._proc is None:
            return
        self._kill_group()
        self._reap()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self._port} running={self.running}>"

    # --- for subclasses ------------------------------------------------------------------
    _stop_signal = signal.SIGTERM

    def _prepare(self) -> None:
        """One-time setup before the first start (e.g. initdb)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _retriable(self, output: str) -> bool:
        return self._port_in_use(output)

    @staticmethod
    def _port_in_use(output: str) -> bool:
        return "Address already in use" in output

    # --- internals -----------------------------------------------------------------------
    def _spawn(self) -> None:
        log: IO[bytes]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C doesn't reach it
                **self._popen_kwargs(),
            )
        _live.add(self)

    def _wait_ready(self, deadline: float) -> bool:
        proc = self._proc
        assert proc is not None
        while True:
            if proc.poll() is not None:
                return False
            if self._is_ready():
                return True
            if time.monotonic() >= deadline:
                self._kill_group()
                return False
            time.sleep(POLL_INTERVAL)

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # The process group id is the server's pid (start_new_session). Children of a server
        # that already exited (e.g. postgres backends) are killed too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired as exc:
                    raise ServerError(f"{self.name} (pid {proc.pid}) did not exit") from exc
            self._wait_group_gone(proc.pid)
        self._proc = None
        _live.discard(self)

    @staticmethod
    def _wait_group_gone(pgid: int) -> None:
        """Wait until no live (non-zombie) process is left in the group."""

        def gone() -> bool:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except (FileNotFoundError, ProcessLookupError, IndexError):
                    continue
                # fields: state ppid pgrp ...
                if int(fields[2]) == pgid and fields[0] != b"Z":
                    return False
            return True

        if os.path.isdir("/proc"):
            _wait_for(gone, STOP_TIMEOUT)


# --- PostgreSQL --------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def pg_bindir() -> Path:
    """Directory of the PostgreSQL server binaries (initdb, postgres, pg_isready, psql).

    ``$PG_BINDIR`` wins; else the newest ``/usr/lib/postgresql/*/bin`` (Debian); else the
    directory of ``postgres`` on ``$PATH``.
    """
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        digits = re.findall(r"\d+", Path(path).parent.name)
        return tuple(int(d) for d in digits)

    candidates = [
        p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{p}/postgres")
    ]
    if candidates:
        return Path(max(candidates, key=version))
    if found := shutil.which("postgres"):
        return Path(found).parent
    raise ServerError("PostgreSQL server binaries not found (install the postgresql package)")


def _pg_user() -> pwd.struct_passwd | None:
    """The OS user postgres runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerError("running as root but there is no 'postgres' OS user") from exc


def _fast_tmp_parent(min_free: int = 1 << 30) -> str | None:
    """``/dev/shm`` if it is a usable tmpfs with ``min_free`` bytes free, else None.

    CREATE DATABASE takes ~20 ms on tmpfs and ~400 ms on ext4 (even with fsync off), and
    every test using ``pg_url`` creates one. Data on tmpfs still survives kill()/restart().
    """
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if not os.access(shm, os.W_OK | os.X_OK) or st.f_bavail * st.f_frsize < min_free:
        return None
    return shm


def make_postgres_dir(prefix: str = "streamspace-test-pg-") -> Path:
    """A fresh temp directory that the postgres OS user owns and can reach.

    On ``/dev/shm`` when there is room (much faster), else in the system temp dir.
    The caller removes it (``shutil.rmtree``) when done.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_fast_tmp_parent()))
    user = _pg_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster (trust auth, superuser ``postgres``, no fsync)."""

    name = "postgres"
    _stop_signal = signal.SIGINT  # "fast" shutdown

    def __init__(
        self,
        base_dir: Path,
        *,
        start_timeout: float = START_TIMEOUT,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``settings``: extra ``-c key=value`` server settings (override the defaults)."""
        super().__init__(base_dir, start_timeout=start_timeout)
        self.settings = dict(settings or {})
        self.bindir = pg_bindir()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self._user = _pg_user()
        self._check_reachable()

    def url(self, dbname: str = "postgres") -> str:
        """A plain libpq/asyncpg URL, e.g. ``postgresql://postgres@127.0.0.1:PORT/name``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, ``_``) and return its URL."""
        self._check_db_name(name)
        # FILE_COPY (PostgreSQL 15+) is several times faster than WAL_LOG with fsync off.
        strategy = " STRATEGY = FILE_COPY" if self.major_version >= 15 else ""
        self.psql(f'CREATE DATABASE "{name}"{strategy}')
        return self.url(name)

    @property
    def major_version(self) -> int:
        """Major version of the cluster (from ``PG_VERSION``; 0 before initdb)."""
        try:
            return int((self.data_dir / "PG_VERSION").read_text().strip())
        except FileNotFoundError:
            return 0

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        self._check_db_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run one SQL command with psql; return its unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                *("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname),
                *("-c", sql),
            ],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(f"psql {sql!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    # --- _Server hooks -------------------------------------------------------------------
    def _prepare(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        with (self.base_dir / "initdb.log").open("wb") as log:
            result = subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    *("-D", str(self.data_dir), "-A", "trust", "-U", "postgres"),
                    *("--no-sync", "-E", "UTF8", "--locale=C"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=120,
                **self._popen_kwargs(),
            )
        if result.returncode != 0:
            output = (self.base_dir / "initdb.log").read_text(errors="replace")
            raise ServerError(f"initdb failed:\n{_tail(output)}")

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            # synchronous_commit stays ON: with it off, commits still in WAL buffers are lost
            # on kill(), and tests that crash the server expect committed rows to survive.
            # With fsync=off a synchronous commit is only a write() to the OS, so it's cheap.
            "full_page_writes": "off",
            "max_connections": "300",
            **self.settings,
        }
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        cmd += ["-p", str(self.port), "-k", str(self.socket_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"env": self._env(), "cwd": str(self.base_dir)}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    def _is_ready(self) -> bool:
        result = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                *("-q", "-h", "127.0.0.1", "-p", str(self.port)),
                *("-U", "postgres", "-d", "postgres", "-t", "1"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
            check=False,
        )
        return result.returncode == 0

    def _retriable(self, output: str) -> bool:
        # After a kill the old instance's shared memory or lock files may linger briefly.
        return self._port_in_use(output) or any(
            marker in output
            for marker in ("pre-existing shared memory block", "already exists", "in use")
        )

    @staticmethod
    def _port_in_use(output: str) -> bool:
        return "Address already in use" in output or "could not bind" in output

    # --- helpers -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self._user is not None:
            env.update(HOME=str(self.base_dir), USER="postgres", LOGNAME="postgres")
        return env

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _check_reachable(self) -> None:
        """Fail early and clearly if the postgres OS user can't reach ``base_dir``."""
        user = self._user
        if user is None:
            return
        self._chown(self.base_dir)
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
        for parent in self.base_dir.parents:
            st = parent.stat()
            if st.st_uid == user.pw_uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise ServerError(
                    f"the postgres OS user cannot reach {self.base_dir}: {parent} is not "
                    "searchable by it; use tests.services.make_postgres_dir()"
                )

    @staticmethod
    def _check_db_name(name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")


# --- Redis -------------------------------------------------------------------------------


class RedisServer(_Server):
    """A throwaway Redis server without persistence."""

    name = "redis"

    def __init__(
        self,
        base_dir: Path,
        *,
        start_timeout: float = START_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(base_dir, start_timeout=start_timeout)
        self.extra_args = list(extra_args)
        self.redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"

    def url(self, db: int = 1) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self, timeout: float = 1.0) -> bool:
        """True if the server answers PING with PONG."""
        try:
            return self._simple_command("PING", timeout=timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Delete every key in every database."""
        reply = self._simple_command("FLUSHALL")
        if reply != b"+OK":
            raise ServerError(f"FLUSHALL failed: {reply!r}")

    def _simple_command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command; return its one-line reply (e.g. ``b"+PONG"``)."""
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def _command(self) -> list[str]:
        return [
            self.redis_server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base_dir),
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def _popen_kwargs(self) -> dict[str, Any]:
        return {"cwd": str(self.base_dir)}

    def _is_ready(self) -> bool:
        return self.ping()


# --- Redis Sentinel ----------------------------------------------------------------------

Address = tuple[str, int]
# Full resyncs start at once (the default waits 5 s for more replicas to join).
_NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")


def _redis_client(address: Address) -> redis.Redis:
    """A sync client with short timeouts (close it, e.g. ``with _redis_client(a) as c:``)."""
    host, port = address
    return redis.Redis(host, port, socket_timeout=1, socket_connect_timeout=1)


class RedisSentinel(RedisServer):
    """One Sentinel process monitoring ``master_name`` at ``127.0.0.1:master_port``.

    Its config file lives in its own ``base_dir`` (Sentinel rewrites it). The file is written
    fresh until the first successful start; after that restart() keeps Sentinel's own state.
    """

    name = "sentinel"

    def __init__(
        self,
        base_dir: Path,
        *,
        master_name: str,
        master_port: int,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        super().__init__(base_dir, start_timeout=start_timeout)
        self.master_name = master_name
        self.master_port = master_port
        self.config_path = self.base_dir / "sentinel.conf"
        self.redis_sentinel = shutil.which("redis-sentinel")

    def _command(self) -> list[str]:
        if not self._port_fixed or not self.config_path.exists():
            name = self.master_name
            self.config_path.write_text(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.base_dir}\n"
                "daemonize no\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 5000\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        if self.redis_sentinel:
            return [self.redis_sentinel, str(self.config_path)]
        return [self.redis_server, str(self.config_path), "--sentinel"]


class RedisSentinelGroup:
    """A Redis master, one replica and ``sentinels`` Sentinels (quorum 2) watching them.

    Each process has a directory of its own under ``base_dir``. ``kill_master()`` crashes
    the current master; ``wait_for_failover()`` waits until the replica has taken over.
    """

    def __init__(
        self, base_dir: Path, *, master_name: str = "streamspace", sentinels: int = 3
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.master_name = master_name
        self.sentinel_count = sentinels
        self.master = RedisServer(self.base_dir / "master", extra_args=_NO_SYNC_DELAY)
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisSentinel] = []

    @property
    def servers(self) -> list[RedisServer]:
        """The data servers: the initial master, then the replica (if created)."""
        return [self.master, *([self.replica] if self.replica else [])]

    @property
    def sentinel_addresses(self) -> list[Address]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def sentinels_env(self) -> str:
        """E.g. ``"127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"``."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start everything; wait until replication is up and all Sentinels agree."""
        try:
            self.master.start()
            if self.replica is None:
                self.replica = RedisServer(
                    self.base_dir / "replica",
                    extra_args=[
                        *_NO_SYNC_DELAY,
                        *("--replicaof", "127.0.0.1", str(self.master.port)),
                    ],
                )
            self.replica.start()
            if not _wait_for(self._replication_up, timeout):
                raise ServerError("the Redis replica did not connect to the master")
            if not self.sentinels:
                self.sentinels = [
                    RedisSentinel(
                        self.base_dir / f"sentinel{i}",
                        master_name=self.master_name,
                        master_port=self.master.port,
                    )
                    for i in range(self.sentinel_count)
                ]
            for sentinel in self.sentinels:
                sentinel.start()
            if not _wait_for(self._sentinels_ready, timeout):
                raise ServerError(f"Sentinels did not converge (logs under {self.base_dir})")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the Sentinels first (so they don't fail over), then the data servers."""
        for server in [*self.sentinels, *reversed(self.servers)]:
            with contextlib.suppress(Exception):
                server.stop()

    def master_address(self) -> Address:
        """The master's address according to the first Sentinel that answers."""
        for address in self.sentinel_addresses:
            if (found := self._reported_master(address)) is not None:
                return found
        raise ServerError("no Sentinel reports a master")

    def kill_master(self) -> Address:
        """SIGKILL the current master process; return its address."""
        address = self.master_address()
        for server in self.servers:
            if server.running and server.port == address[1]:
                server.kill()
                return address
        raise ServerError(f"the master {address} is not one of our running servers")

    def wait_for_failover(self, old: Address, timeout: float = 30.0) -> Address:
        """Wait until every Sentinel reports the same new master, and it is a master."""
        new: list[Address] = []

        def failed_over() -> bool:
            reported = {self._reported_master(a) for a in self.sentinel_addresses}
            if len(reported) != 1 or (found := reported.pop()) in (None, old):
                return False
            assert found is not None
            try:
                with _redis_client(found) as client:
                    role = client.execute_command("ROLE")
                    if not client.ping() or role[0] not in (b"master", "master"):
                        return False
            except redis.RedisError:
                return False
            new.append(found)
            return True

        if not _wait_for(failed_over, timeout):
            raise ServerError(f"no failover away from {old} within {timeout}s")
        return new[-1]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------
    def _reported_master(self, sentinel: Address) -> Address | None:
        try:
            with _redis_client(sentinel) as client:
                found = client.sentinel_get_master_addr_by_name(self.master_name)
        except redis.RedisError:
            return None
        if not found:
            return None
        host, port = found
        return (host.decode() if isinstance(host, bytes) else host, int(port))

    def _replication_up(self) -> bool:
        assert self.replica is not None
        try:
            with _redis_client(("127.0.0.1", self.master.port)) as client:
                master_info = client.info("replication")
            with _redis_client(("127.0.0.1", self.replica.port)) as client:
                replica_info = client.info("replication")
        except redis.RedisError:
            return False
        return bool(
            master_info.get("connected_slaves") == 1
            and replica_info.get("master_link_status") == "up"
        )

    def _sentinels_ready(self) -> bool:
        expected = ("127.0.0.1", self.master.port)
        for address in self.sentinel_addresses:
            if self._reported_master(address) != expected:
                return False
            try:
                with _redis_client(address) as client:
                    peers = client.sentinel_sentinels(self.master_name)
                    replicas = client.sentinel_slaves(self.master_name)
            except redis.RedisError:
                return False
            if len(peers) != self.sentinel_count - 1 or len(replicas) != 1:
                return False
        return True
