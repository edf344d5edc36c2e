"""LocalPlatform against real processes: TigerVNC Xvnc and xterm, sandboxed by bubblewrap
(the tests run as root), and without a sandbox where a test says so."""

# Tiny filesystem checks (exists, is_dir) are fine on the test's event loop.

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

import pytest

from streamspace.agent.platforms import local
from streamspace.agent.platforms.base import Exited, PlatformError, PlatformState, Started
from streamspace.agent.platforms.local import LocalPlatform
from streamspace.agent.platforms.local_procs import marked_pids
from streamspace.agent.platforms.local_sandbox import Decision, SandboxUnavailable
from streamspace.agent.platforms.vnc_probe import read_banner
from streamspace.protocol import SessionSpec

RFB = b"RFB 003.008\n"
DEADLINE = 10.0  # seconds a condition may take to come true


def make_spec(
    *, command: list[str] | None = None, persistent: bool = False, user: str = "alice"
) -> SessionSpec:
    return SessionSpec(
        session_id=f"s-{uuid.uuid4().hex[:12]}",
        user=user,
        template="xterm",
        command=command or ["xterm"],
        persistent_home=persistent,
    )


def group_members(pgid: int) -> list[int]:
    """Every process (zombies too) whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                members.append(int(entry.name))
    return members


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Await ``condition`` becoming true, checking every 50 ms, failing after ``DEADLINE``."""
    async with asyncio.timeout(DEADLINE):
        # Process state lives in /proc: there is no event to await, so poll it.
        while not await condition():
            await asyncio.sleep(0.05)


async def assert_gone(state: PlatformState) -> None:
    """No process of the session remains: not in its group, not carrying its marker."""

    async def gone() -> bool:
        return not group_members(state["pgid"]) and not marked_pids(state["session_id"])

    await until(gone)
    assert x_lock_owner(state["display"]) != state["pids"]["xvnc"]


def x_lock_owner(display: int) -> int | None:
    """The pid in the display's lock file (another test run may own the display by now)."""
    try:
        return int(Path(f"/tmp/.X{display}-lock").read_text().strip())
    except (OSError, ValueError):
        return None


class Harness:
    """Creates platforms on one data dir and stops every session at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.platforms: list[LocalPlatform] = []
        self.states: list[PlatformState] = []

    def platform(
        self, *, start_timeout: float = 20.0, sandbox: Literal["auto", "none"] = "auto"
    ) -> LocalPlatform:
        platform = LocalPlatform(
            data_dir=self.data_dir, start_timeout=start_timeout, sandbox=sandbox,
            trusted_user="alice",
        )  # fmt: skip
        self.platforms.append(platform)
        return platform

    async def start(self, platform: LocalPlatform, spec: SessionSpec) -> Started:
        started = await platform.start(spec)
        self.states.append(started.state)
        return started

    async def cleanup(self) -> None:
        # Every platform, since only the one that started a process can reap it.
        for platform in self.platforms:
            for state in self.states:
                await platform.stop(state)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        await h.cleanup()


async def test_start_serves_rfb_and_stop_leaves_nothing(harness: Harness) -> None:
    platform = harness.platform()
    started = await harness.start(platform, make_spec())
    state = started.state
    assert await read_banner(started.vnc, 5.0) == RFB
    assert {"session_id", "pgid", "display", "vnc", "home", "persistent_home"} <= state.keys()
    home = Path(state["home"])
    assert home.is_dir() and home.is_relative_to(harness.data_dir / "sessions")
    # Only the agent may open the RFB socket: it is the session account's, mode 0600, in a
    # directory of the session account inside root's 0700 session directory.
    assert started.vnc.unix is not None and started.vnc.host is None
    rfb = Path(started.vnc.unix)
    assert rfb.stat().st_mode & 0o777 == 0o600
    assert (rfb.parent.parent.stat().st_uid, rfb.parent.parent.stat().st_mode & 0o777) == (0, 0o700)
    assert home.stat().st_uid == state["uid"] != os.geteuid()
    assert await platform.poll(state) is None

    await platform.stop(state)

    await assert_gone(state)
    assert not home.exists()
    assert not (harness.data_dir / "sessions" / state["session_id"]).exists()
    await platform.stop(state)  # idempotent


async def test_concurrent_sessions_get_their_own_socket_and_account(harness: Harness) -> None:
    platform = harness.platform()
    first, second, other = await asyncio.gather(
        harness.start(platform, make_spec()),
        harness.start(platform, make_spec()),
        harness.start(platform, make_spec(user="bob")),
    )
    assert len({first.vnc, second.vnc, other.vnc}) == 3
    # One account per user: alice's sessions share one, bob has his own.
    assert first.state["uid"] == second.state["uid"] != other.state["uid"]
    for started in (first, second, other):
        assert await read_banner(started.vnc, 5.0) == RFB


@pytest.mark.parametrize("persistent", [False, True])
async def test_hibernate_keeps_home_and_wake_serves_it(harness: Harness, persistent: bool) -> None:
    platform = harness.platform()
    spec = make_spec(persistent=persistent)
    started = await harness.start(platform, spec)
    home = Path(started.state["home"])
    (home / "notes.txt").write_text("keep me")

    hibernated = await platform.hibernate(started.state)
    await assert_gone(started.state)
    assert (home / "notes.txt").read_text() == "keep me"
    assert await platform.list_running() == []
    assert await platform.poll(hibernated) is not None

    woken = await platform.wake(spec, hibernated)
    harness.states.append(woken.state)
    assert await read_banner(woken.vnc, 5.0) == RFB
    assert Path(woken.state["home"]) == home
    assert (home / "notes.txt").read_text() == "keep me"

    await platform.stop(woken.state)
    await assert_gone(woken.state)
    assert home.exists() == persistent


async def test_poll_reports_the_application_exit(harness: Harness) -> None:
    platform = harness.platform()
    state = (await harness.start(platform, make_spec())).state
    os.kill(state["pids"]["app"], signal.SIGKILL)

    exited: list[Exited] = []

    async def reported() -> bool:
        result = await platform.poll(state)
        exited.extend([result] if result else [])
        return result is not None

    await until(reported)
    assert exited[0].reason == "application exited with signal 9 (SIGKILL)"


async def test_killed_vnc_server_is_reported_and_its_lock_removed(harness: Harness) -> None:
    platform = harness.platform()
    state = (await harness.start(platform, make_spec())).state
    os.kill(state["pids"]["xvnc"], signal.SIGKILL)

    async def reported() -> bool:
        result = await platform.poll(state)
        return result is not None and result.reason.startswith("VNC server exited with signal 9")

    await until(reported)
    await platform.stop(state)
    await assert_gone(state)  # also: Xvnc's lock file, left by SIGKILL, is removed


async def test_unsandboxed_display_taken_meanwhile_is_retried(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = harness.platform(sandbox="none")
    first = await harness.start(platform, make_spec())
    taken = first.state["display"]
    # Hide the first server's lock file, as if it appeared just after the check.
    really_taken = local.display_taken
    monkeypatch.setattr(
        local, "display_taken", lambda d: d < taken or (d != taken and really_taken(d))
    )

    second = await harness.start(platform, make_spec())

    assert second.state["display"] > taken
    log = harness.data_dir / "sessions" / second.state["session_id"] / "session.log"
    assert "already active for display" in log.read_text()  # the first attempt failed
    for started in (first, second):
        assert await read_banner(started.vnc, 5.0) == RFB


async def test_restarted_agent_adopts_and_stops_sessions(harness: Harness) -> None:
    before = harness.platform()
    started = await harness.start(before, make_spec())

    after = harness.platform()  # a new agent process on the same data dir
    running = await after.list_running()
    assert [r.session_id for r in running] == [started.state["session_id"]]
    assert running[0].vnc == started.vnc
    adopted = running[0].state
    assert await after.poll(adopted) is None

    await after.stop(adopted)
    await assert_gone(adopted)
    assert await after.list_running() == []
    assert not (harness.data_dir / "sessions" / adopted["session_id"]).exists()


async def test_unknown_command_leaves_nothing_behind(harness: Harness) -> None:
    platform = harness.platform()
    spec = make_spec(command=["no-such-command-xyz"])
    with pytest.raises(PlatformError, match="command not found: no-such-command-xyz"):
        await platform.start(spec)
    assert not (harness.data_dir / "sessions" / spec.session_id).exists()
    assert marked_pids(spec.session_id) == []


async def test_start_timeout_cleans_up(harness: Harness) -> None:
    platform = harness.platform(start_timeout=0.001)
    spec = make_spec()
    with pytest.raises(PlatformError, match="VNC server did not start") as caught:
        await platform.start(spec)
    assert caught.value.retryable
    assert not (harness.data_dir / "sessions" / spec.session_id).exists()
    assert marked_pids(spec.session_id) == []


async def test_unsandboxed_agent_runs_the_trusted_user_only(harness: Harness) -> None:
    platform = harness.platform(sandbox="none")
    spec = make_spec(user="bob")
    with pytest.raises(PlatformError) as caught:
        await platform.start(spec)
    assert "cannot sandbox sessions (LOCAL_SANDBOX=none" in str(caught.value)
    assert "only for 'alice'" in str(caught.value) and "user 'bob' is refused" in str(caught.value)
    assert not (harness.data_dir / "sessions" / spec.session_id).exists()

    started = await harness.start(platform, make_spec())  # alice, as the agent's account
    assert await read_banner(started.vnc, 5.0) == RFB
    assert Path(started.state["home"]).stat().st_uid == os.geteuid()


async def test_state_sent_by_the_control_plane_is_not_trusted(harness: Harness) -> None:
    platform = harness.platform()
    started = await harness.start(platform, make_spec())
    forged = {**started.state, "home": "/etc", "pids": {"xvnc": 1, "app": 1}, "pgid": 1}

    for bad in ({}, {"session_id": ""}, {"session_id": "../.."}):
        with pytest.raises(PlatformError, match="names no valid session id"):
            await platform.stop(bad)
    assert await platform.poll(started.state) is None  # nothing was touched

    hibernated = await platform.hibernate(forged)

    assert hibernated["home"] == started.state["home"]
    await assert_gone(started.state)
    assert Path("/etc").stat().st_uid == 0


def test_without_bubblewrap_auto_falls_back_and_bubblewrap_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a machine without bwrap

    auto = LocalPlatform(data_dir=tmp_path / "data")

    assert auto.sandbox == Decision("none", "bwrap is not installed (apt-get install bubblewrap)")
    with pytest.raises(SandboxUnavailable, match="LOCAL_SANDBOX=bubblewrap, but bwrap is not"):
        LocalPlatform(data_dir=tmp_path / "data", sandbox="bubblewrap")


# The app writes what it saw into its home, then stays up (a session whose app exits fails).
SEE = """
import json, os, socket, sys, time
seen = {"hidden_dir": os.listdir(sys.argv[2]), "hidden_file": open(sys.argv[3]).read()}
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    seen["tcp"] = "connected"
except OSError as exc:
    seen["tcp"] = str(exc)
open(os.path.expanduser("~/seen.json.tmp"), "w").write(json.dumps(seen))
os.replace(os.path.expanduser("~/seen.json.tmp"), os.path.expanduser("~/seen.json"))
time.sleep(600)
"""


@pytest.mark.parametrize("network", ["none", "host"])
async def test_template_network_and_hidden_paths(
    tmp_path: Path, network: Literal["none", "host"]
) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    hidden_dir, hidden_file = Path("/usr/share/doc"), Path("/etc/hostname")
    platform = LocalPlatform(data_dir=tmp_path, hide=[hidden_dir, hidden_file])
    command = ["/usr/bin/python3", "-c", SEE, str(port), str(hidden_dir), str(hidden_file)]
    spec = make_spec(command=command).model_copy(update={"network": network})
    started = await platform.start(spec)
    seen_path = Path(started.state["home"]) / "seen.json"

    async def written() -> bool:
        return seen_path.exists()

    try:
        async with listener:
            await until(written)
        seen = json.loads(seen_path.read_text())
    finally:
        await platform.stop(started.state)
    # Covered: an empty directory and an empty file, while the host's have content.
    assert seen["hidden_dir"] == [] and os.listdir(hidden_dir)
    assert seen["hidden_file"] == "" and hidden_file.read_text()
    if network == "host":
        assert seen["tcp"] == "connected"
    else:
        assert "refused" in seen["tcp"] or "unreachable" in seen["tcp"], seen["tcp"]
