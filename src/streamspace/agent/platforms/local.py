"""Sessions as local processes: a TigerVNC ``Xvnc`` server plus the template's command.

Xvnc serves RFB on a Unix socket only (``data_dir/sessions/<id>/vnc/rfb.sock``, inside a
directory only root may traverse): no TCP port exists, and the agent's tunnel opens that
socket. Where the machine can, both processes run sandboxed as the user's own unprivileged
account (``local_sandbox``, ``local_accounts``); where it cannot, sessions run as the agent's
account, for the one trusted user only. Every session process carries a marker variable in
its environment that finds descendants which left the process group (see ``local_procs``).
Bookkeeping lives in ``data_dir/sessions/<id>/state.json`` so a restarted agent can re-adopt
or stop its sessions; it is the agent's own record, preferred to any state it is sent.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import quote

from streamspace.agent.platforms import local_sandbox
from streamspace.agent.platforms.base import Exited, Platform, PlatformError, PlatformState, Started
from streamspace.agent.platforms.local_accounts import Accounts, AccountsExhausted
from streamspace.agent.platforms.local_procs import (
    MARKER,
    alive,
    describe_exit,
    display_taken,
    kill_session,
    remove_stale_x_files,
    start_ticks,
)
from streamspace.agent.platforms.local_sandbox import Bubblewrap
from streamspace.agent.platforms.vnc_probe import wait_for_rfb
from streamspace.config import DEFAULT_DATA_DIR, AgentSettings
from streamspace.protocol import RunningSession, SessionSpec, VncEndpoint

log = logging.getLogger(__name__)

XVNC = "Xvnc"
FIRST_DISPLAY = 20  # unsandboxed: low numbers belong to real desktops and `vncserver`
LAUNCH_ATTEMPTS = 4  # unsandboxed: a display taken by another process between check and use
RFB_SOCKET = "rfb.sock"
RFB_PROBE_INTERVAL = 0.01
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # protocol.Identifier


@dataclass
class _Procs:
    """The processes of a session this object started; awaiting them reaps them."""

    xvnc: asyncio.subprocess.Process
    app: asyncio.subprocess.Process | None = None  # None while the launch is under way


class LocalPlatform(Platform):
    """Runs each session as ``Xvnc :N`` plus the template's command on DISPLAY ``:N``."""

    name = "local"

    def __init__(
        self,
        *,
        data_dir: Path,
        start_timeout: float = 20.0,
        sandbox: Literal["auto", "bubblewrap", "none"] = "auto",
        trusted_user: str | None = None,
        uids: tuple[int, int] = (2_000_000_000, 1_000_000),
        hide: Sequence[Path] = (),
    ) -> None:
        """``uids``: first uid and how many to hand out; ``hide``: host paths sessions must
        not see besides ``data_dir`` and the control plane's default data dir."""
        self._data_dir = data_dir
        self._start_timeout = start_timeout
        self._procs: dict[str, _Procs] = {}
        self._reserved: set[int] = set()  # displays being launched: lock files not written yet
        self._reserve_lock = asyncio.Lock()
        self.sandbox = local_sandbox.decide(sandbox)
        self._bwrap = Bubblewrap(
            hidden=[data_dir, DEFAULT_DATA_DIR, *hide], empty_file=data_dir / "empty"
        )
        self._accounts = Accounts(data_dir / "accounts.json", base=uids[0], count=uids[1])
        self._me = getpass.getuser()
        self.trusted_user = trusted_user or self._me
        if self.sandbox.mode == "bubblewrap":
            log.info("local sessions: %s", self.sandbox.reason)
        else:
            log.warning(
                "local sessions are NOT sandboxed: %s. Only user %r may start sessions "
                "(they run as this agent's account, %r).",
                self.sandbox.reason, self.trusted_user, self._me,
            )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: AgentSettings, *, hide: Sequence[Path] = ()) -> LocalPlatform:
        """The platform as the agent's settings configure it."""
        return cls(
            data_dir=settings.agent_data_dir,
            sandbox=settings.local_sandbox,
            trusted_user=settings.local_trusted_user,
            uids=(settings.local_sandbox_uid_base, settings.local_sandbox_uid_count),
            hide=[*settings.local_sandbox_hide, *hide],
        )

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> Started:
        existing = self._read_state(spec.session_id)
        if existing and existing.get("status") == "running" and _running(existing):
            return self._started(existing)  # a redelivered command: the session already runs
        return await self._launch(spec, fresh=True)

    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        state = self._own_state(state)
        if state.get("status") == "running" and _running(state):
            return self._started(state)
        return await self._launch(spec, fresh=False)

    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        state = self._own_state(state)
        await self._terminate(state)
        session_dir = self._session_dir(state["session_id"])
        if keep_home:
            self._write_state({**state, "status": "stopped"})
        else:  # a non-persistent home lives inside the session directory
            await asyncio.to_thread(shutil.rmtree, session_dir, ignore_errors=True)

    async def hibernate(self, state: PlatformState) -> PlatformState:
        state = self._own_state(state)
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

    def _refusal(self, spec: SessionSpec) -> str | None:
        """Why this agent will not run ``spec.user``'s session, or ``None``."""
        if self.sandbox.mode == "bubblewrap" or spec.user == self.trusted_user:
            return None
        return (
            f"this agent cannot sandbox sessions ({self.sandbox.reason}), so it runs "
            f"sessions only for {self.trusted_user!r}, as its own account {self._me!r}; "
            f"user {spec.user!r} is refused (install bubblewrap and run the agent as root, "
            "or set LOCAL_TRUSTED_USER)"
        )

    def _home(self, spec: SessionSpec) -> Path:
        if spec.persistent_home:
            return self._data_dir / "homes" / _component(spec.user) / _component(spec.template)
        return self._session_dir(spec.session_id) / "home"

    async def _launch(self, spec: SessionSpec, *, fresh: bool) -> Started:
        sid = spec.session_id
        if (refused := self._refusal(spec)) is not None:
            raise PlatformError(refused)
        home = self._home(spec)
        sandboxed = self.sandbox.mode == "bubblewrap"
        env = self._app_env(spec, home, sandboxed=sandboxed)
        argv = list(spec.command)
        if not argv:
            raise PlatformError(f"template {spec.template!r} has no command to run")
        resolved = shutil.which(argv[0], path=env["PATH"])
        if resolved is None:
            raise PlatformError(f"command not found: {argv[0]}")
        if shutil.which(XVNC) is None:
            raise PlatformError("Xvnc not found: install tigervnc-standalone-server")
        session_dir = self._session_dir(sid)
        try:
            uid = await asyncio.to_thread(self._accounts.uid_for, spec.user) if sandboxed else None
            await asyncio.to_thread(
                _make_dirs, session_dir, home, uid=uid, empty=self._bwrap.empty_file
            )
        except (OSError, AccountsExhausted) as exc:
            raise PlatformError(f"cannot prepare session {sid}: {exc}") from exc
        state: PlatformState = {"session_id": sid, "pids": {}}
        try:
            xvnc, display = await self._start_xvnc(sid, session_dir, uid)
            state = self._state(spec, home=home, display=display, pgid=xvnc.pid, uid=uid)
            self._procs[sid] = _Procs(xvnc)  # so cleanup reaps Xvnc if the app fails
            env["DISPLAY"] = f":{display}"
            command = [resolved, *argv[1:]]
            cwd = home
            if uid is not None:
                command = self._bwrap.app(
                    uid, x11_dir=session_dir / "x11", home=home, network=spec.network,
                    argv=command,
                )  # fmt: skip
                cwd = session_dir
            with _open_log(session_dir) as log_file:
                app = await asyncio.create_subprocess_exec(
                    *command, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file, stderr=log_file, process_group=xvnc.pid,
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
        self, sid: str, session_dir: Path, uid: int | None
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Start Xvnc on a free display; return once its socket speaks RFB."""
        deadline = asyncio.get_running_loop().time() + self._start_timeout
        reason: str | None = "no attempt made"
        tried: set[int] = set()
        vnc = VncEndpoint(unix=str(session_dir / "vnc" / RFB_SOCKET))
        for _ in range(LAUNCH_ATTEMPTS):
            display = await self._reserve(skip=tried, sandboxed=uid is not None)
            tried.add(display)
            xvnc: asyncio.subprocess.Process | None = None
            cleanup = {"session_id": sid, "pids": {}, "display": display}
            try:
                xvnc = await self._spawn_xvnc(sid, display, session_dir, uid)
                cleanup["pids"] = {"xvnc": xvnc.pid}
                reason = await self._await_rfb(xvnc, vnc, deadline)
            except BaseException:
                if xvnc is not None:
                    await self._terminate(cleanup, extra=[xvnc])
                raise
            finally:
                self._reserved.discard(display)
            if reason is None:
                return xvnc, display
            # Xvnc quits with code 1 when a racing process took the display: try another
            # (sandboxed, each has its own /tmp: no race); a timeout or a signal would repeat.
            retry = uid is None and xvnc.returncode is not None and xvnc.returncode > 0
            await self._terminate(cleanup, extra=[xvnc])
            if not retry:
                break
        raise PlatformError(f"VNC server did not start: {reason}", retryable=True)

    async def _reserve(self, *, skip: set[int], sandboxed: bool) -> int:
        """A display without lock file or socket (sandboxed: always the same, /tmp is private)."""
        if sandboxed:
            return local_sandbox.DISPLAY
        async with self._reserve_lock:
            display = FIRST_DISPLAY
            while display in self._reserved or display in skip or display_taken(display):
                display += 1
            self._reserved.add(display)
        return display

    async def _spawn_xvnc(
        self, sid: str, display: int, session_dir: Path, uid: int | None
    ) -> asyncio.subprocess.Process:
        vnc_dir = session_dir / "vnc"
        # Unsandboxed, a relative socket path (from cwd) keeps a deep data dir within the
        # 108 bytes of a Unix socket address.
        socket_path = f"{local_sandbox.VNC_DIR}/{RFB_SOCKET}" if uid is not None else RFB_SOCKET
        argv = [XVNC, f":{display}", "-rfbport", "-1", "-rfbunixpath", socket_path]
        argv += ["-rfbunixmode", "0600", "-SecurityTypes", "None", "-geometry", "1280x800"]
        argv += ["-depth", "24", "-desktop", sid, "-AlwaysShared"]
        # No TCP, and no abstract X socket (@/tmp/.X11-unix/XN reaches across a private /tmp).
        argv += ["-nolisten", "tcp", "-nolisten", "local"]
        if uid is not None:
            argv = self._bwrap.xvnc(uid, x11_dir=session_dir / "x11", vnc_dir=vnc_dir, argv=argv)
        env = {"PATH": os.environ.get("PATH", os.defpath), MARKER: sid}
        with _open_log(session_dir) as log_file:
            # process_group=0: a group of its own, inside the agent's session, so the app
            # may join it (setpgid refuses a group in another session, i.e. after setsid).
            return await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=vnc_dir, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                stderr=log_file, process_group=0,
            )  # fmt: skip

    async def _await_rfb(
        self, xvnc: asyncio.subprocess.Process, vnc: VncEndpoint, deadline: float
    ) -> str | None:
        """``None`` once the socket answers with an RFB banner, else why it never will."""

        async def gone() -> str | None:
            if xvnc.returncode is None:
                return None
            return f"Xvnc exited with {describe_exit(xvnc.returncode)} (see session.log)"

        # A Unix socket that is not there yet fails at once: probing often costs nothing.
        return await wait_for_rfb(vnc, deadline=deadline, gone=gone, interval=RFB_PROBE_INTERVAL)

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
        self, spec: SessionSpec, *, home: Path, display: int, pgid: int, uid: int | None
    ) -> PlatformState:
        vnc = VncEndpoint(unix=str(self._session_dir(spec.session_id) / "vnc" / RFB_SOCKET))
        return {
            "session_id": spec.session_id, "status": "running", "pgid": pgid,
            "pids": {"xvnc": pgid}, "start_ticks": {"xvnc": start_ticks(pgid)},
            "display": display, "vnc": vnc.model_dump(exclude_none=True), "uid": uid,
            "sandboxed": uid is not None, "home": str(home),
            "persistent_home": spec.persistent_home, "spec": spec.model_dump(mode="json"),
        }  # fmt: skip

    def _started(self, state: PlatformState) -> Started:
        # An agent before the sandbox recorded TCP host and port.
        vnc = state.get("vnc") or {"host": state.get("host"), "port": state.get("port")}
        return Started(vnc=VncEndpoint.model_validate(vnc), state=state)

    def _own_state(self, given: PlatformState) -> PlatformState:
        """This agent's record of the session: the paths and pids in a state it is sent
        (from the control plane) are not trusted. Only the session id is taken from it."""
        sid = given.get("session_id")
        if not isinstance(sid, str) or not _SESSION_ID.fullmatch(sid):
            raise PlatformError(f"the session state names no valid session id: {sid!r}")
        own = self._read_state(sid)
        return own if own is not None else {"session_id": sid, "pids": {}}

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

    def _app_env(self, spec: SessionSpec, home: Path, *, sandboxed: bool) -> dict[str, str]:
        """A small environment: nothing of the agent's secrets leaks into user sessions."""
        env = {k: v for k in ("PATH", "LANG", "LC_ALL", "TZ") if (v := os.environ.get(k))}
        env.setdefault("PATH", os.defpath)
        if sandboxed:  # the agent's PATH may name directories the sandbox does not show
            env["PATH"] = local_sandbox.PATH
        env.setdefault("LANG", "C.UTF-8")
        env["USER"] = env["LOGNAME"] = spec.user if sandboxed else self._me
        env.update(spec.env)
        if sandboxed:  # the sandbox has its own home path and a private /tmp
            env.update({"HOME": local_sandbox.HOME, "TMPDIR": "/tmp", "SHELL": "/bin/sh"})
        else:  # temporary files live (and die) with the session, not in /tmp
            tmp = self._session_dir(spec.session_id) / "tmp"
            env.update({"HOME": str(home), "TMPDIR": str(tmp)})
        env[MARKER] = spec.session_id
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


def _make_dirs(session_dir: Path, home: Path, *, uid: int | None, empty: Path) -> None:
    """The session's directories. Sandboxed, the session directory is root's alone (0700:
    state, log, the RFB socket) and what the session's account must write is its own: the
    home, the X socket directory, the RFB socket directory (Xvnc creates the socket); and
    the empty file that covers hidden files. Unsandboxed, the app's own TMPDIR."""
    session_dir.mkdir(parents=True, exist_ok=True)
    own = [home, session_dir / "x11", session_dir / "vnc"]
    for d in own:
        d.mkdir(parents=True, exist_ok=True)
    if uid is None:
        (session_dir / "tmp").mkdir(exist_ok=True)
        return
    empty.touch(exist_ok=True)
    session_dir.chmod(0o700)
    for d in own:
        if d.stat().st_uid != uid:
            _chown_tree(d, uid)  # a home kept from an unsandboxed agent, or new
        d.chmod(0o700)


def _chown_tree(top: Path, uid: int) -> None:
    os.chown(top, uid, uid, follow_symlinks=False)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(Path(root) / name, uid, uid, follow_symlinks=False)
