"""Unix accounts of sandboxed local sessions: one uid per control-plane user.

One uid per *user* rather than per session: a persistent home keeps its owner from one
session to the next (a uid per session would mean a recursive ``chown`` of the home at every
start), and a user's own sessions have nothing to hide from each other. Different users never
share a uid. The uids come from a configured range, skip every uid the system already knows
(``/etc/passwd``) and the agent's own, and need no passwd entry: ``setpriv`` switches to the
number. The map is kept in ``<data_dir>/accounts.json`` so a user keeps their uid.
"""

from __future__ import annotations

import json
import os
import pwd
import threading
from pathlib import Path


class AccountsExhausted(RuntimeError):
    """Every uid of the configured range is taken."""


class Accounts:
    """The uid of each control-plane user's sessions."""

    def __init__(self, path: Path, *, base: int, count: int) -> None:
        self._path = path
        self._base, self._count = base, count
        self._lock = threading.Lock()  # uid_for runs in worker threads

    def uid_for(self, user: str) -> int:
        """The user's uid, handing out the next free one the first time."""
        with self._lock:
            known = self._load()
            if user in known:
                return known[user]
            taken = set(known.values())
            for uid in range(self._base, self._base + self._count):
                if uid not in taken and uid != os.geteuid() and not _system_knows(uid):
                    known[user] = uid
                    self._save(known)
                    return uid
        raise AccountsExhausted(
            f"no free uid left in LOCAL_SANDBOX_UID_BASE={self._base} "
            f"+ LOCAL_SANDBOX_UID_COUNT={self._count}"
        )

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _save(self, known: dict[str, int]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2, sort_keys=True))
        os.replace(tmp, self._path)


def _system_knows(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
