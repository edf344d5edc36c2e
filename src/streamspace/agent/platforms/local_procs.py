"""Process and X11 plumbing for the local platform: /proc lookups, killing, stale files.

Liveness is decided from ``/proc`` rather than ``os.kill(pid, 0)`` because pids are reused:
a pid only counts as the recorded process while its start time (clock ticks since boot)
matches, and zombies count as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

MARKER = "STREAMSPACE_SESSION_ID"
"""Environment variable every session process carries; it finds descendants that left the
process group (xterm's shell calls ``setsid``)."""

X_SOCKETS = Path("/tmp/.X11-unix")
STOP_GRACE = 5.0
KILL_GRACE = 3.0


def display_taken(display: int) -> bool:
    """Whether an X server holds (or held, and left files behind for) display ``:display``."""
    return Path(f"/tmp/.X{display}-lock").exists() or (X_SOCKETS / f"X{display}").exists()


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (the caller retries if someone takes it first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_ticks(pid: int | None) -> int | None:
    """The process's start time (clock ticks since boot), or None if gone or a zombie."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in (...) may contain spaces
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int | None, ticks: Any) -> bool:
    """Whether ``pid`` is the very process recorded, not a later one that reused the number."""
    return ticks is not None and start_ticks(pid) == ticks


def marked_pids(session_id: str) -> list[int]:
    """Live processes whose environment carries this session's marker."""
    needle = f"\0{MARKER}={session_id}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile, or another user's
                if needle in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))  # a zombie's environ reads empty
    return found


async def kill_session(
    session_id: str,
    *,
    pgid: int | None,
    group_is_ours: bool,
    procs: list[asyncio.subprocess.Process],
) -> bool:
    """SIGTERM, then SIGKILL, the session's group, marked processes and our children.

    ``group_is_ours`` says a recorded member still lives, so ``pgid`` was not reused.
    Returns False if something survived SIGKILL (a process stuck in the kernel).
    """
    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, KILL_GRACE)):
        marked = await asyncio.to_thread(marked_pids, session_id)
        live = [p.pid for p in procs if p.returncode is None]
        if not marked and not live:
            return True
        if group_is_ours and pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in {*marked, *live}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if await _wait_gone(session_id, procs, grace):
            return True
    return False


async def _wait_gone(
    session_id: str, procs: list[asyncio.subprocess.Process], grace: float
) -> bool:
    """Wait up to ``grace`` seconds for our children to be reaped and marked processes gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = [asyncio.ensure_future(p.wait()) for p in procs if p.returncode is None]
    if pending:
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            return False
    while await asyncio.to_thread(marked_pids, session_id):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)  # processes we did not start offer nothing to await
    return True


def remove_stale_x_files(display: int, xvnc_pid: int | None) -> None:
    """After SIGKILL Xvnc leaves its lock and socket; remove them if they are still its own."""
    lock = Path(f"/tmp/.X{display}-lock")
    try:
        owner = int(lock.read_text().strip())
    except (OSError, ValueError):
        return
    if owner == xvnc_pid:
        lock.unlink(missing_ok=True)
        (X_SOCKETS / f"X{display}").unlink(missing_ok=True)


def describe_exit(returncode: int) -> str:
    """``code 1`` or ``signal 9 (SIGKILL)``, from an asyncio returncode."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {-returncode} ({signal.Signals(-returncode).name})"
    except ValueError:  # real-time signals have no name
        return f"signal {-returncode}"
