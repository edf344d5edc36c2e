"""The ``streamspace`` command as a user runs it: ``up``, ``users create``, ``migrate``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import eventually, login, wait_for_state
from tests.processes import VENV_BIN
from tests.services import free_port

STREAMSPACE = str(VENV_BIN / "streamspace")
TIMEOUT = 20.0
MARKER = "STREAMSPACE_SESSION_ID"
_OURS = ("DATABASE_URL", "STREAMSPACE_", "AGENT_", "CONTROL_PLANE_URL", "AGENTHUB_", "REDIS")


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any StreamSpace setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    return {**env, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **extra}


def session_pids(session_id: str) -> list[int]:
    """Live processes whose environment carries the session's marker."""
    needle = f"\0{MARKER}={session_id}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


@dataclass
class Up:
    """One ``streamspace up`` process; stdout and stderr go to files in ``directory``."""

    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.stdout, self.stderr))

    async def healthy(self) -> None:
        async def answers() -> bool:
            assert self.process.poll() is None, f"up exited early:\n{self.output()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
            return False

        await eventually(answers, timeout=TIMEOUT, message="/healthz 200")

    async def interrupt(self) -> int:
        """Ctrl-C; the exit code (the test fails if it takes longer than ``TIMEOUT``)."""
        self.process.send_signal(signal.SIGINT)
        try:
            return await asyncio.to_thread(self.process.wait, TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"up ignored SIGINT:\n{self.output()[-3000:]}") from None


class Launcher:
    """Starts ``up`` processes and kills them (and their sessions) at teardown."""

    def __init__(self) -> None:
        self.started: list[Up] = []
        self.sessions: list[str] = []

    def up(self, data_dir: Path, **env: str) -> Up:
        port = free_port()
        n = len(self.started)
        out, err = data_dir.parent / f"up-{n}.out", data_dir.parent / f"up-{n}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [STREAMSPACE, "up", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=stdout,
                stderr=stderr,
                env=clean_env(**env),
                start_new_session=True,
            )
        started = Up(process, f"http://127.0.0.1:{port}", out, err)
        self.started.append(started)
        return started

    def cleanup(self) -> None:
        for up in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait(10)
        for session_id in self.sessions:
            for pid in session_pids(session_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    launcher = Launcher()
    try:
        yield launcher
    finally:
        launcher.cleanup()


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMSPACE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def sqlite_rows(path: Path, query: str, *params: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(query, params).fetchall()


async def any_agent_online(client: httpx.AsyncClient) -> None:
    async def online() -> bool:
        response = await client.get("/api/v1/agents")
        response.raise_for_status()
        return any(agent["status"] == "online" for agent in response.json())

    await eventually(online, timeout=TIMEOUT, message="the embedded agent online")


# --- up --------------------------------------------------------------------------------


async def test_up_serves_runs_sessions_and_stops_cleanly(
    launcher: Launcher, tmp_path: Path
) -> None:
    data_dir, password = tmp_path / "data", "admin-password-1"
    up = launcher.up(data_dir, STREAMSPACE_ADMIN_PASSWORD=password)
    await up.healthy()
    async with httpx.AsyncClient(base_url=up.url, timeout=10) as anonymous:
        page = await anonymous.get("/")
    assert page.status_code == 200
    assert 'data-testid="login-form"' in page.text

    client = await login(up.url, "admin", password)
    try:
        await any_agent_online(client)
        created = await client.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        launcher.sessions.append(sid)
        try:
            await wait_for_state(client, sid, "running", timeout=TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{up.output()[-3000:]}") from None
        assert session_pids(sid), "a running session has processes"
        # `up` as root sandboxes by itself: Xvnc and the app run as the user's own uid.
        assert "sessions run sandboxed by bubblewrap" in up.output()
        accounts = {
            Path(f"/proc/{pid}").stat().st_uid
            for pid in session_pids(sid)
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("Xvnc", "xterm")
        }
        assert len(accounts) == 1 and os.geteuid() not in accounts, accounts
    finally:
        await client.aclose()

    assert await up.interrupt() == 0, up.output()[-3000:]
    assert session_pids(sid) == [], f"session processes outlived up:\n{up.output()[-3000:]}"
    rows = sqlite_rows(data_dir / "streamspace.db", "SELECT state FROM sessions WHERE id = ?", sid)
    assert rows == [("terminated",)]

    again = launcher.up(data_dir, STREAMSPACE_ADMIN_PASSWORD=password)
    await again.healthy()
    client = await login(again.url, "admin", password)
    await client.aclose()
    assert await again.interrupt() == 0, again.output()[-3000:]


async def test_up_keeps_its_data_directory_and_database_private(
    launcher: Launcher, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # made by hand, readable by everyone
    up = launcher.up(data_dir, STREAMSPACE_ADMIN_PASSWORD="admin-password-1")
    await up.healthy()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "streamspace.db").stat().st_mode) == 0o600
    agent_key = data_dir / "agent" / "agent-key"

    async def key_saved() -> bool:
        return agent_key.exists()

    await eventually(key_saved, timeout=TIMEOUT, message="the local agent's key")
    assert stat.S_IMODE(agent_key.parent.stat().st_mode) == 0o700
    assert await up.interrupt() == 0, up.output()[-3000:]


async def test_up_generates_and_prints_the_admin_password_once(
    launcher: Launcher, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    up = launcher.up(data_dir)
    await up.healthy()

    async def printed() -> str | None:
        shown = set(re.findall(r"password: (\S+)", up.stdout.read_text(errors="replace")))
        assert len(shown) <= 1, f"different passwords printed: {shown}"
        return shown.pop() if shown else None

    password = await eventually(printed, timeout=TIMEOUT, message="password in the banner")
    password_file = data_dir / "initial-admin-password"
    assert password_file.read_text().strip() == password
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    client = await login(up.url, "admin", password)
    await client.aclose()
    assert await up.interrupt() == 0, up.output()[-3000:]

    again = launcher.up(data_dir)
    await again.healthy()
    client = await login(again.url, "admin", password)
    await client.aclose()
    assert await again.interrupt() == 0, again.output()[-3000:]
    assert password not in again.output(), "the generated password is printed only once"


# --- users and migrate -----------------------------------------------------------------


def test_users_create(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    env = clean_env(DATABASE_URL=f"sqlite:///{database}")
    create = ("users", "create", "alice", "--password", "s3cret-pass", "--role", "user")

    first = run(*create, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sqlite_rows(database, "SELECT role FROM users WHERE username = ?", "alice") == [
        ("user",)
    ]

    second = run(*create, env=env)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "already exists" in second.stderr
    assert "Traceback" not in second.stderr

    short = run("users", "create", "bob", "--password", "short", env=env)
    assert short.returncode != 0
    assert "at least 8 characters" in short.stdout + short.stderr
    assert "Traceback" not in short.stderr
    assert sqlite_rows(database, "SELECT 1 FROM users WHERE username = ?", "bob") == []


def test_migrate_upgrade_and_downgrade(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    env = clean_env(DATABASE_URL=f"sqlite:///{database}")
    tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'"

    upgraded = run("migrate", "upgrade", "head", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    names = {row[0] for row in sqlite_rows(database, tables)}
    assert {"users", "agents", "templates", "sessions", "agent_commands"} <= names, names

    downgraded = run("migrate", "downgrade", "base", env=env)
    assert downgraded.returncode == 0, downgraded.stdout + downgraded.stderr
    assert sqlite_rows(database, tables) == []


# --- groups ----------------------------------------------------------------------------


def test_groups_commands(tmp_path: Path) -> None:
    database = tmp_path / "g.db"
    env = clean_env(DATABASE_URL=f"sqlite:///{database}")
    assert run("users", "create", "ann", "--password", "s3cret-pass", env=env).returncode == 0

    created = run("groups", "create", "team", "--max-running", "2", "--max-minutes", "90", env=env)
    assert created.returncode == 0, created.stderr
    assert "team: running 2, hibernated default, minutes 90, templates all" in created.stdout
    added = run("groups", "add-member", "team", "ann", env=env)
    assert added.returncode == 0 and "members: ann" in added.stdout, added.stderr
    changed = run("groups", "set-quota", "team", "--max-running", "default", env=env)
    assert changed.returncode == 0, changed.stderr
    listed = run("groups", "list", env=env)
    assert listed.stdout.strip() == (
        "team: running default, hibernated default, minutes 90, templates all; members: ann"
    )
    assert sqlite_rows(
        database, "SELECT max_running_sessions, max_session_minutes FROM groups"
    ) == [(None, 90)]

    for refused, words in [
        (("groups", "create", "team"), "group 'team' already exists"),
        (("groups", "add-member", "team", "bob"), "user 'bob' not found"),
    ]:
        answer = run(*refused, env=env)
        assert answer.returncode == 1, (refused, answer.stdout)
        assert words in answer.stderr and "Traceback" not in answer.stderr, answer.stderr

    assert run("groups", "delete", "team", env=env).returncode == 0
    assert sqlite_rows(database, "SELECT count(*) FROM groups") == [(0,)]
    assert sqlite_rows(database, "SELECT count(*) FROM group_members") == [(0,)]
