"""The local platform's session sandbox: bubblewrap command lines and whether they can run.

Each session is two sandboxes, both run as the session's own unprivileged account and
sharing only the X socket directory: one for ``Xvnc`` (it parses the user's X protocol, so
it is no more trusted than the app), one for the template's command. ``bwrap`` starts as
root (it needs no user namespace then, and can bind directories only root may traverse, such
as the agent's data dir); inside, ``setpriv`` switches to the session's uid with no
capabilities, no supplementary groups and ``no_new_privs`` (setuid binaries stay powerless).

A sandbox sees the system directories read-only, a fresh ``/proc`` of its own pid
namespace, a minimal ``/dev``, a private ``/tmp`` and, for the app, only its own home. The
agent's data dir, the control plane's and anything configured are covered with an empty
tmpfs if they happen to lie under a system directory. ``--die-with-parent`` is deliberately
not used: the parent is the agent, and sessions outlive an agent restart (it re-adopts
them). What it would guarantee comes from the pid namespace instead: its init is a root
process the session cannot signal, and when the agent kills it the kernel kills every
process of the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""Shown read-only (symlinks, as on merged-/usr systems, are recreated as symlinks)."""
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
"""The sessions' PATH (unless the template's ``env`` sets one): only directories shown."""
HOME = "/home/user"
"""Where a session sees its home."""
VNC_DIR = "/run/vnc"
"""Where Xvnc's sandbox sees the directory of its RFB socket (the app's never does)."""
DISPLAY = 1
"""Each Xvnc has a private ``/tmp``, so every session can use the same display number."""
TRIAL_TIMEOUT = 10.0

Mode = Literal["bubblewrap", "none"]


class SandboxUnavailable(ValueError):
    """``LOCAL_SANDBOX=bubblewrap`` on a machine that cannot sandbox (the message says why)."""


@dataclass(frozen=True)
class Decision:
    """Which sandbox the local platform uses, and why in words."""

    mode: Mode
    reason: str


def decide(setting: Literal["auto", "bubblewrap", "none"]) -> Decision:
    """The sandbox to use for ``LOCAL_SANDBOX=setting`` on this machine."""
    if setting == "none":
        return Decision("none", "LOCAL_SANDBOX=none turns the session sandbox off")
    problem = _why_not()
    if problem is None:
        return Decision(
            "bubblewrap", "sessions run sandboxed by bubblewrap, each user as their own uid"
        )
    if setting == "bubblewrap":
        raise SandboxUnavailable(f"LOCAL_SANDBOX=bubblewrap, but {problem}")
    return Decision("none", problem)


def _why_not() -> str | None:
    """Why bubblewrap sandboxes cannot run here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "the agent does not run as root, so it cannot run sessions as other Unix accounts"
    for tool, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    trial = ["bwrap", *_system_binds(), "--unshare-pid", "--unshare-ipc", "--unshare-net"]
    trial += ["--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(trial, capture_output=True, timeout=TRIAL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot run here: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return f"bubblewrap cannot create namespaces here: {said}"
    return None


@dataclass(frozen=True)
class Bubblewrap:
    """Builds the two command lines of a sandboxed session."""

    hidden: Sequence[Path]
    """Host paths to cover if they lie under a shown system directory."""
    empty_file: Path
    """An empty regular file that covers hidden files (``/dev/null`` would be a device
    node on a ``nodev`` mount: unreadable instead of empty)."""

    def xvnc(self, uid: int, *, x11_dir: Path, vnc_dir: Path, argv: Sequence[str]) -> list[str]:
        """Xvnc's sandbox: no network at all, the X and RFB socket directories bound in."""
        binds = ["--bind", str(x11_dir), "/tmp/.X11-unix", "--perms", "0755", "--dir", "/run"]
        binds += ["--bind", str(vnc_dir), VNC_DIR, "--unshare-net"]
        return self._wrap(uid, binds, argv)

    def app(
        self, uid: int, *, x11_dir: Path, home: Path, network: str, argv: Sequence[str]
    ) -> list[str]:
        """The app's sandbox: its own home, the X socket directory, network if asked for."""
        binds = ["--bind", str(x11_dir), "/tmp/.X11-unix", "--perms", "0755", "--dir", "/home"]
        binds += ["--bind", str(home), HOME, "--chdir", HOME]
        if network != "host":
            binds.append("--unshare-net")
        return self._wrap(uid, binds, argv)

    def _wrap(self, uid: int, extra: list[str], argv: Sequence[str]) -> list[str]:
        command = ["bwrap", *_system_binds(), *self._covers()]
        command += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        # --new-session: no controlling terminal to push input into (TIOCSTI).
        command += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        command += ["--new-session", *extra, "--"]
        command += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        command += ["--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--", *argv]
        return command

    def _covers(self) -> list[str]:
        shown = [Path(p).resolve() for p in SYSTEM_PATHS if Path(p).exists()]
        covers: list[str] = []
        for path in self.hidden:
            real = path.resolve()
            if not any(real.is_relative_to(s) for s in shown):
                continue  # never bound: nothing to cover
            if real.is_dir():
                covers += ["--tmpfs", str(real)]
            else:
                covers += ["--ro-bind", str(self.empty_file), str(real)]
        return covers


def _system_binds() -> list[str]:
    binds: list[str] = []
    for name in SYSTEM_PATHS:
        path = Path(name)
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            binds += ["--ro-bind", name, name]
    return binds
