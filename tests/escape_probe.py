"""Escape attempts from inside a session, as a stand-alone script (standard library only).

Run as ``python3 -c "$(cat escape_probe.py)" TARGETS_JSON RESULT_PATH``: it tries each attempt
below against the targets it is given, writes ``{attempt: {"ok": bool, "detail": str}}`` as
JSON to RESULT_PATH (``ok``: the attempt got in) and then sleeps, so the session stays up.
The same script run as the agent's own account outside any sandbox is the control: there,
the attempts succeed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_agent_key(t: dict[str, Any]) -> str:
    return f"{len(Path(t['agent_key']).read_bytes())} bytes of the agent key"


def read_database(t: dict[str, Any]) -> str:
    head = Path(t["database"]).read_bytes()[:16]
    if head != b"SQLite format 3\0":
        raise OSError(f"not the database: {head!r}")
    return "read the SQLite header"


def list_victim_home(t: dict[str, Any]) -> str:
    names = os.listdir(t["victim_home"])
    return f"listed {names}; note: {(Path(t['victim_home']) / t['victim_file']).read_text()!r}"


def list_root_home(t: dict[str, Any]) -> str:
    return f"listed /root: {len(os.listdir('/root'))} entries"


def _connect(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _connect_path(path: str) -> socket.socket:
    """Connect to a Unix socket at ``path`` of any length (through its directory's fd)."""
    directory = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        return _connect(socket.AF_UNIX, f"/proc/self/fd/{directory}/{os.path.basename(path)}")
    finally:
        os.close(directory)


def victim_x_socket(t: dict[str, Any]) -> str:
    _connect_path(t["victim_x_socket"]).close()
    return "connected to the victim's X socket"


def victim_x_abstract(t: dict[str, Any]) -> str:
    _connect(socket.AF_UNIX, f"\0/tmp/.X11-unix/X{t['victim_display']}").close()
    return "connected to the abstract X socket"


def victim_vnc(t: dict[str, Any]) -> str:
    with _connect_path(t["victim_vnc"]) as sock:
        banner = sock.recv(12)
    if not banner.startswith(b"RFB "):
        raise OSError(f"no RFB banner: {banner!r}")
    return f"VNC server said {banner!r}"


def victim_processes(t: dict[str, Any]) -> str:
    # Every session process carries the marker (the probe's own command line names the
    # victim's id too, so command lines prove nothing).
    needle = f"\0STREAMSPACE_SESSION_ID={t['victim_session']}\0".encode()
    seen = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in b"\0" + (entry / "environ").read_bytes():
                    seen.append(entry.name)
            except OSError:
                continue
    if not seen:
        raise OSError("no process of the victim's session is visible")
    return f"victim's processes visible: {seen}"


def control_plane_tcp(t: dict[str, Any]) -> str:
    _connect(socket.AF_INET, ("127.0.0.1", t["api_port"])).close()
    return "connected to the control plane over TCP"


ATTEMPTS: dict[str, Callable[[dict[str, Any]], str]] = {
    f.__name__: f
    for f in (
        read_agent_key, read_database, list_victim_home, list_root_home, victim_x_socket,
        victim_x_abstract, victim_vnc, victim_processes, control_plane_tcp,
    )
}  # fmt: skip


def main(targets: dict[str, Any], result_path: str) -> None:
    results: dict[str, dict[str, object]] = {}
    for name, attempt in ATTEMPTS.items():
        try:
            results[name] = {"ok": True, "detail": attempt(targets)}
        except Exception as exc:  # every way of being refused is a refusal
            results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    tmp = result_path + ".tmp"
    Path(tmp).write_text(json.dumps(results, indent=2))
    os.replace(tmp, result_path)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2])
    if len(sys.argv) > 3 and sys.argv[3] == "--stay":
        time.sleep(3600)  # keep the session running; the test stops it
