"""Real StreamSpace processes for tests: API replicas and agents, each a subprocess we own.

``ApiProcess`` runs ``streamspace api``; ``AgentProcess`` runs ``streamspace agent`` (the local
platform) or ``python -m streamspace.testing fake-agent`` (a fake platform). Both log to a
file in their directory; ``output()`` returns it for assertions and failure messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from streamspace.testing import finished_executions
from tests.helpers import eventually
from tests.services import RedisServer, free_port

VENV_BIN = Path(sys.executable).parent
FAST_API_ENV = {
    "HEARTBEAT_INTERVAL": "1",
    "COMMAND_POLL_INTERVAL": "0.5",
    "COMMAND_ACK_TIMEOUT": "2",
    "RECONCILE_INTERVAL": "0.2",
    "COMMAND_DEADLINE": "30",
    "LOG_LEVEL": "INFO",
}
"""Short intervals so tests see timeouts in seconds, not minutes."""

_live: set[_Process] = set()


class _Process:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: Mapping[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                start_new_session=True,
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def survivors(self) -> list[int]:
        """Live processes of its session (it was started in one of its own), itself included."""
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and _session_of(entry) == self.pid:
                    found.append(int(entry.name))
        return found

    def signal(self, signum: int) -> None:
        if self.running():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        _live.discard(self)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
        _live.discard(self)


class ApiProcess(_Process):
    """``streamspace api`` on a free port."""

    def __init__(
        self, directory: Path, *, database_url: str, env: Mapping[str, str] = {}, name: str = "api"
    ) -> None:
        super().__init__(directory, name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "DATABASE_URL": database_url,
            "POD_NAME": name,
            "AGENT_BOOTSTRAP_KEY": "bootstrap-secret",
            "STREAMSPACE_ADMIN_PASSWORD": "admin-password",
            **FAST_API_ENV,
            **env,
        }

    def start(self, timeout: float = 30.0) -> None:
        argv = [
            str(VENV_BIN / "streamspace"),
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._spawn(argv, self.env)
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=1) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    raise RuntimeError(f"API exited during start:\n{self.output()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.05)
        raise TimeoutError(f"API not ready in {timeout} s:\n{self.output()[-3000:]}")


class AgentProcess(_Process):
    """An agent dialing ``control_plane_url``; ``behaviour=None`` runs the real ``platform``."""

    def __init__(
        self,
        directory: Path,
        *,
        control_plane_url: str,
        agent_id: str,
        behaviour: str | None = "noop",
        extra_args: list[str] = (),  # type: ignore[assignment]
        env: Mapping[str, str] = {},
        platform: str = "local",
        name: str | None = None,
    ) -> None:
        super().__init__(directory, name or agent_id)
        self.agent_id = agent_id
        self.execution_log = directory / f"{agent_id}.executions.jsonl"
        if behaviour is None:
            self.argv = [str(VENV_BIN / "streamspace"), "agent", "--platform", platform]
        else:
            self.argv = [
                sys.executable,
                "-m",
                "streamspace.testing",
                "fake-agent",
                "--behaviour",
                behaviour,
                "--log",
                str(self.execution_log),
                "--poll-interval",
                "0.2",
                *extra_args,
            ]
        self.env = {
            "CONTROL_PLANE_URL": control_plane_url,
            "AGENT_ID": agent_id,
            "AGENT_BOOTSTRAP_KEY": "bootstrap-secret",
            "AGENT_DATA_DIR": str(directory / "data"),
            **env,
        }

    def start(self) -> None:
        self._spawn(self.argv, self.env)

    async def wait_following(self, timeout: float = 15.0) -> None:
        """Until this replica says another one leads its agent (under leader election)."""

        async def following() -> bool:
            return "another replica leads agent" in self.output()

        await eventually(following, timeout=timeout, message=f"{self.log_path.stem} follows")

    def executions(self, session_id: str | None = None) -> list[str]:
        """Actions the fake platform ran to completion, optionally for one session."""
        if not self.execution_log.exists():
            return []
        return [
            str(line["action"])
            for line in finished_executions(self.execution_log)
            if session_id in (None, line["session_id"])
        ]


def _session_of(proc: Path) -> int:
    """The session id in ``/proc/<pid>/stat`` (the field after state, ppid and pgrp)."""
    stat = (proc / "stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[3])


def leader_env(backend: str, lease: float, redis_url: str) -> dict[str, str]:
    """Environment of an agent replica under leader election (``file`` or ``redis``)."""
    return {
        "LEADER_ELECTION": backend,
        "LEADER_LEASE_SECONDS": str(lease),
        "REDIS_URL": redis_url,
    }


def kill_all() -> None:
    """Kill every process still running (fixture teardown)."""
    for process in list(_live):
        process.kill()


def redis_env(redis_server: RedisServer, pod: str) -> dict[str, str]:
    """Environment of a replica ``pod`` sharing ``redis_server`` (multi-pod mode)."""
    return {
        "AGENTHUB_REDIS_ENABLED": "true",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "POD_NAME": pod,
        "AGENT_AUTO_APPROVE": "true",
    }


def replica_processes(
    directory: Path,
    *,
    database_url: str,
    redis_server: RedisServer,
    env: Mapping[str, str] = {},
    count: int = 2,
) -> list[ApiProcess]:
    """Replicas pod-1..``count`` on one database and one Redis (not started yet)."""
    return [
        ApiProcess(
            directory / pod,
            database_url=database_url,
            env={**redis_env(redis_server, pod), **env},
            name=pod,
        )
        for pod in (f"pod-{n}" for n in range(1, count + 1))
    ]


def create_user(database_url: str, username: str, password: str) -> None:
    """``streamspace users create`` (role user) against ``database_url``."""
    subprocess.run(
        [str(VENV_BIN / "streamspace"), "users", "create", username, "--password", password],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
