"""Which commands this agent has already run, and how they ended.

Delivery from the control plane is at-least-once; this store makes the effect exactly-once.
It survives agent restarts (a SQLite file in the agent's data dir) and keeps only the
newest ``limit`` ids, which is far more than the control plane ever re-delivers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamspace.protocol import Complete, CompletePayload, Failed, FailedPayload

DEFAULT_LIMIT = 10_000
FILE_NAME = "executed-commands.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    outcome TEXT NOT NULL,
    recorded_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Outcome:
    """The final result of one command: completed with ``result``, or failed with ``error``."""

    completed: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False

    @classmethod
    def complete(cls, result: dict[str, Any]) -> Outcome:
        return cls(completed=True, result=result)

    @classmethod
    def fail(cls, error: str, *, retryable: bool = False) -> Outcome:
        return cls(completed=False, error=error[:4000], retryable=retryable)

    def to_message(self, command_id: str) -> Complete | Failed:
        """The frame that reports this outcome to the control plane."""
        if self.completed:
            return Complete(payload=CompletePayload(command_id=command_id, result=self.result))
        return Failed(
            payload=FailedPayload(command_id=command_id, error=self.error, retryable=self.retryable)
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "completed": self.completed,
                "result": self.result,
                "error": self.error,
                "retryable": self.retryable,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        return cls(
            completed=bool(data["completed"]),
            result=dict(data.get("result") or {}),
            error=str(data.get("error", "")),
            retryable=bool(data.get("retryable", False)),
        )


class ExecutedCommands:
    """Persistent map of command id -> :class:`Outcome`, bounded to the newest ``limit`` ids.

    Methods are synchronous and thread-safe, so the runtime can call :meth:`record_many` through
    ``asyncio.to_thread`` (it fsyncs) while reading with :meth:`get` on the event loop.
    """

    def __init__(self, path: Path | str, *, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.path = Path(path)
        self.limit = limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # check_same_thread=False: record() runs in a worker thread; the lock serialises use.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an outcome must be on disk before the agent reports it.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, limit: int = DEFAULT_LIMIT) -> ExecutedCommands:
        """The store at its usual place inside the agent's data dir."""
        return cls(data_dir / FILE_NAME, limit=limit)

    def get(self, command_id: str) -> Outcome | None:
        """The stored outcome of ``command_id``, or ``None`` if it never finished here."""
        with self._lock:
            row = self._db.execute(
                "SELECT outcome FROM executed WHERE command_id = ?", (command_id,)
            ).fetchone()
        return None if row is None else Outcome.from_json(row[0])

    def record(self, command_id: str, outcome: Outcome) -> None:
        """Store the outcome (the first one wins) and drop ids beyond the newest ``limit``."""
        self.record_many([(command_id, outcome)])

    def record_many(self, outcomes: Sequence[tuple[str, Outcome]]) -> None:
        """Store several outcomes with one transaction (one fsync): the first one of each
        id wins; ids beyond the newest ``limit`` are dropped."""
        now = time.time()
        rows = [(command_id, outcome.to_json(), now) for command_id, outcome in outcomes]
        # One transaction: the inserts and the pruning land together or not at all.
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO executed (command_id, outcome, recorded_at)"
                " VALUES (?, ?, ?)",
                rows,
            )
            self._db.execute(
                "DELETE FROM executed WHERE seq <= (SELECT MAX(seq) FROM executed) - ?",
                (self.limit,),
            )

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM executed").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
