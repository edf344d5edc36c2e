"""Sessions as local processes: a TigerVNC ``Xvnc`` server plus the template's command.

Both processes share one process group (the Xvnc pid), so one ``killpg`` stops a session;
every session process also carries a marker variable in its environment that finds
descendants which left the group (see ``local_procs``). Bookkeeping lives in
``data_dir/sessions/<id>/state.json`` so a restarted agent can re-adopt or stop its sessions.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from streamspace.agent.platforms.base import Exited, Platform, PlatformError, PlatformState, Started
from streamspace.agent.platforms.local_procs import (
    MARKER,
    alive,
    describe_exit,
    display_taken,
    free_port,
    kill_session,
    remove_stale_x_files,
    start_ticks,
)
from streamspace.agent.platforms.vnc_probe import wait_for_rfb
from streamspace.protocol import RunningSession, SessionSpec, VncEndpoint

XVNC = "Xvnc"
FIRST_DISPLAY = 20  # low numbers belong to real desktops and `vncserver`
LAUNCH_ATTEMPTS = 4  # a display or port taken by another process between check and use
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass
class _Procs:
    """The processes of a session this object started; awaiting them reaps them."""

    xvnc: asyncio.subprocess.Process
    app: asyncio.subprocess.Process | None = None  # None while the launch is under way


class LocalPlatform(Platform):
    """Runs each session as ``Xvnc :N`` plus the template's command on DISPLAY ``:N``."""

    name = "local"

    def __init__(self, *, data_dir: Path, vnc_host: str = "127.0.0.1", start_timeout: float = 20.0):
        self._data_dir = data_dir
        self._vnc_host = vnc_host
        # Xvnc listening on every interface is still reached through loopback by the agent.
        self._probe_host = "127.0.0.1" if vnc_host in ("0.0.0.0", "") else vnc_host
        self._start_timeout = start_timeout
        self._procs: dict[str, _Procs] = {}
        self._reserved: set[int] = set()  # displays being launched: lock files not written yet
        self._reserve_lock = asyncio.Lock()

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> Started:
        existing = self._read_state(spec.session_id)
        if existing and existing.get("status") == "running" and _running(existing):
            return self._started(existing)  # a redelivered command: the session already runs
        if spec.persistent_home:
            home = self._data_dir / "homes" / _component(spec.user) / _component(spec.template)
        else:
            home = self._session_dir(spec.session_id) / "home"
        return await self._launch(spec, home=home, persistent=spec.persistent_home, fresh=True)

    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        if state.get("status") == "running" and _running(state):
            return self._started(state)
        home, persistent = Path(state["home"]), bool(state["persistent_home"])
        return await self._launch(spec, home=home, persistent=persistent, fresh=False)

    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        await self._terminate(state)
        session_dir = self._session_dir(state["session_id"])
        if keep_home:
            self._write_state({**state, "status": "stopped"})
        else:  # a non-persistent home lives inside the session directory
            await asyncio.to_thread(shutil.rmtree, session_dir, ignore_errors=True)

    async def hibernate(self, state: PlatformState) -> PlatformState:
        await self._terminate(state)
        hibernated = {**state, "status": "hibernated"}
        self._write_state(hibernated)
        return hibernated

    async def poll(self, state: PlatformState) -> Exited | None:
        if state.get("status") != "running":
            return Exited(f"session is {state.get('status', 'not running')}")
        procs = self._procs.get(state["session_id"])
        if procs is not None:
            if procs.xvnc.returncode is not None:
                return Exited(f"VNC server exited with {describe_exit(procs.xvnc.returncode)}")
            if procs.app is not None and procs.app.returncode is not None:
                return Exited(f"application exited with {describe_exit(procs.app.returncode)}")
            return None
        # Started by an earlier agent: no exit status, only whether the processes still exist.
        pids, ticks = state.get("pids", {}), state.get("start_ticks", {})
        if not alive(pids.get("xvnc"), ticks.get("xvnc")):
            return Exited("VNC server is no longer running")
        if not alive(pids.get("app"), ticks.get("app")):
            return Exited("application is no longer running")
        return None

    async def list_running(self) -> list[RunningSession]:
        states = await asyncio.to_thread(self._all_states)
        return [
            RunningSession(session_id=s["session_id"], vnc=self._started(s).vnc, state=s)
            for s in states
            if s.get("status") == "running" and _running(s)
        ]

    # --- starting -----------------------------------------------------------------------

    async def _launch(
        self, spec: SessionSpec, *, home: Path, persistent: bool, fresh: bool
    ) -> Started:
        sid = spec.session_id
        env = self._app_env(spec, home)
        argv = list(spec.command)
        if not argv:
            raise PlatformError(f"template {spec.template!r} has no command to run")
        resolved = shutil.which(argv[0], path=env["PATH"])
        if resolved is None:
            raise PlatformError(f"command not found: {argv[0]}")
        if shutil.which(XVNC) is None:
            raise PlatformError("Xvnc not found: install tigervnc-standalone-server")
        session_dir = self._session_dir(sid)
        await asyncio.to_thread(_make_dirs, session_dir, home, Path(env["TMPDIR"]))
        state: PlatformState = {"session_id": sid, "pids": {}}
        try:
            xvnc, display, port = await self._start_xvnc(sid, session_dir)
            state = self._state(
                spec, home=home, persistent=persistent, display=display, port=port, pgid=xvnc.pid
            )
            self._procs[sid] = _Procs(xvnc)  # so cleanup reaps Xvnc if the app fails
            env["DISPLAY"] = f":{display}"
            with _open_log(session_dir) as log:
                app = await asyncio.create_subprocess_exec(
                    resolved, *argv[1:], env=env, cwd=home, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=log, process_group=xvnc.pid,
                )  # fmt: skip
            self._procs[sid] = _Procs(xvnc, app)
            state["pids"]["app"] = app.pid
            state["start_ticks"]["app"] = start_ticks(app.pid)
            self._write_state(state)
        except BaseException as exc:
            await self._terminate(state)
            if fresh:  # a failed wake keeps the hibernated session as it was
                await asyncio.to_thread(shutil.rmtree, session_dir, ignore_errors=True)
            if isinstance(exc, OSError):
                raise PlatformError(f"cannot start session {sid}: {exc}") from exc
            raise
        return self._started(state)

    async def _start_xvnc(
        self, sid: str, session_dir: Path
    ) -> tuple[asyncio.subprocess.Process, int, int]:
        """Start Xvnc on a free display and port; return once it speaks RFB."""
        deadline = asyncio.get_running_loop().time() + self._start_timeout
        reason: str | None = "no attempt made"
        tried: set[int] = set()
        for _ in range(LAUNCH_ATTEMPTS):
            display, port = await self._reserve(skip=tried)
            tried.add(display)
            xvnc: asyncio.subprocess.Process | None = None
            cleanup = {"session_id": sid, "pids": {}, "display": display}
            try:
                xvnc = await self._spawn_xvnc(sid, display, port, session_dir)
                cleanup["pids"] = {"xvnc": xvnc.pid}
                reason = await self._await_rfb(xvnc, port, deadline)
            except BaseException:
                if xvnc is not None:
                    await self._terminate(cleanup, extra=[xvnc])
                raise
            finally:
                self._reserved.discard(display)
            if reason is None:
                return xvnc, display, port
            # Xvnc quits with code 1 when a racing process took the display or the port:
            # try another; a timeout or a signal would only repeat.
            retry = xvnc.returncode is not None and xvnc.returncode > 0
            await self._terminate(cleanup, extra=[xvnc])
            if not retry:
                break
        raise PlatformError(f"VNC server did not start: {reason}", retryable=True)

    async def _reserve(self, *, skip: set[int]) -> tuple[int, int]:
        """Pick a display without lock file or socket, and a port free on ``vnc_host``."""
        async with self._reserve_lock:
            display = FIRST_DISPLAY
            while display in self._reserved or display in skip or display_taken(display):
                display += 1
            self._reserved.add(display)
        return display, free_port(self._vnc_host)

    async def _spawn_xvnc(
        self, sid: str, display: int, port: int, session_dir: Path
    ) -> asyncio.subprocess.Process:
        argv = [XVNC, f":{display}", "-rfbport", str(port), "-interface", self._vnc_host]
        argv += ["-SecurityTypes", "None", "-geometry", "1280x800", "-depth", "24"]
        argv += ["-desktop", sid, "-AlwaysShared", "-nolisten", "tcp"]
        if self._vnc_host in _LOOPBACK:
            argv.append("-localhost")
        env = {"PATH": os.environ.get("PATH", os.defpath), MARKER: sid}
        with _open_log(session_dir) as log:
            # process_group=0: a group of its own, inside the agent's session, so the app
            # may join it (setpgid refuses a group in another session, i.e. after setsid).
            return await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                process_group=0,
            )  # fmt: skip

    async def _await_rfb(
        self, xvnc: asyncio.subprocess.Process, port: int, deadline: float
    ) -> str | None:
        """``None`` once the port answers with an RFB banner, else why it never will."""

        async def gone() -> str | None:
            if xvnc.returncode is None:
                return None
            return f"Xvnc exited with {describe_exit(xvnc.returncode)} (see session.log)"

        return await wait_for_rfb(self._probe_host, port, deadline=deadline, gone=gone)

    # --- stopping -----------------------------------------------------------------------

    async def _terminate(
        self, state: PlatformState, *, extra: list[asyncio.subprocess.Process] | None = None
    ) -> None:
        """Stop every process of the session, reap our own children, drop stale X files."""
        sid = state["session_id"]
        procs = list(extra or [])
        if (own := self._procs.pop(sid, None)) is not None:
            procs += [p for p in (own.xvnc, own.app) if p and all(p is not q for q in procs)]
        pids, ticks = state.get("pids", {}), state.get("start_ticks", {})
        # The group id is only ours while a recorded member lives (pids get reused).
        ours = any(alive(pids.get(k), ticks.get(k)) for k in ("xvnc", "app"))
        if not await kill_session(sid, pgid=state.get("pgid"), group_is_ours=ours, procs=procs):
            raise PlatformError(f"processes of session {sid} survived SIGKILL", retryable=True)
        if state.get("display") is not None:
            remove_stale_x_files(int(state["display"]), pids.get("xvnc"))

    # --- state --------------------------------------------------------------------------

    def _state(
        self, spec: SessionSpec, *, home: Path, persistent: bool, display: int, port: int, pgid: int
    ) -> PlatformState:
        return {
            "session_id": spec.session_id, "status": "running", "pgid": pgid,
            "pids": {"xvnc": pgid}, "start_ticks": {"xvnc": start_ticks(pgid)},
            "display": display, "host": self._probe_host, "port": port, "home": str(home),
            "persistent_home": persistent, "spec": spec.model_dump(mode="json"),
        }  # fmt: skip

    def _started(self, state: PlatformState) -> Started:
        return Started(vnc=VncEndpoint(host=state["host"], port=state["port"]), state=state)

    def _session_dir(self, session_id: str) -> Path:
        return self._data_dir / "sessions" / session_id

    def _write_state(self, state: PlatformState) -> None:
        """Write ``state.json`` atomically: a crash leaves the old or the new file, never half."""
        path = self._session_dir(state["session_id"]) / "state.json"
        if not path.parent.is_dir():
            return  # stopped for good meanwhile: nothing left to keep track of
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    def _read_state(self, session_id: str) -> PlatformState | None:
        path = self._session_dir(session_id) / "state.json"
        try:
            data: PlatformState = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _all_states(self) -> list[PlatformState]:
        root = self._data_dir / "sessions"
        found = (self._read_state(d.name) for d in root.iterdir()) if root.is_dir() else ()
        return [s for s in found if s is not None]

    def _app_env(self, spec: SessionSpec, home: Path) -> dict[str, str]:
        """A small environment: nothing of the agent's secrets leaks into user sessions."""
        env = {k: v for k in ("PATH", "LANG", "LC_ALL", "TZ") if (v := os.environ.get(k))}
        env.setdefault("PATH", os.defpath)
        env.setdefault("LANG", "C.UTF-8")
        env["USER"] = env["LOGNAME"] = os.environ.get("USER") or getpass.getuser()
        env.update(spec.env)
        # Applications' temporary files live (and die) with the session, not in /tmp.
        tmp = self._session_dir(spec.session_id) / "tmp"
        env.update({"HOME": str(home), "TMPDIR": str(tmp), MARKER: spec.session_id})
        return env


def _component(name: str) -> str:
    """A user or template name as one safe path component (no ``/``, never ``.``/``..``)."""
    quoted = quote(name, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def _running(state: PlatformState) -> bool:
    pids, ticks = state.get("pids", {}), state.get("start_ticks", {})
    return all(alive(pids.get(k), ticks.get(k)) for k in ("xvnc", "app"))


def _open_log(session_dir: Path) -> BinaryIO:
    return open(session_dir / "session.log", "ab")


def _make_dirs(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
