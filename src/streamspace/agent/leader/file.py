"""The file lease: an exclusive ``flock`` on a lock file, for replicas on ONE host.

The kernel drops the lock when its holder dies, so a follower takes over as soon as it
next polls. The epoch lives in ``<lock file>.epoch``, incremented under the lock (a missing
file starts at the time in ms, above any epoch handed out before it was lost). ``flock``
is not reliable on network file systems: use the Redis backend across hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

from streamspace.agent.leader.base import Lease, LeaseUnavailable


class FileLease(Lease):
    """Holds the lock through an open descriptor; the lease has no expiry of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.epoch_path = path.with_name(path.name + ".epoch")
        self._fd: int | None = None

    async def acquire(self) -> int | None:
        try:
            return await asyncio.to_thread(self._acquire)
        except OSError as exc:
            raise LeaseUnavailable(f"lock file {self.path}: {exc}") from exc

    async def renew(self) -> bool:
        """Still ours unless the lock file was removed or replaced under us."""
        try:
            return self._fd is not None and self._is_current(self._fd)
        except OSError as exc:
            raise LeaseUnavailable(f"lock file {self.path}: {exc}") from exc

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock

    async def close(self) -> None:
        await self.release()

    def _acquire(self) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        epoch: int | None = None
        try:
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # The holder may have replaced the file between our open and our lock.
                if self._is_current(fd):
                    epoch = self._next_epoch()
        finally:
            if epoch is None:
                os.close(fd)
        if epoch is not None:
            self._fd = fd
        return epoch

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _next_epoch(self) -> int:
        """Read, increment and durably replace the epoch file (we hold the lock)."""
        try:
            epoch = int(self.epoch_path.read_text()) + 1
        except FileNotFoundError:
            epoch = time.time_ns() // 1_000_000 + 1
        staged = self.epoch_path.with_name(self.epoch_path.name + ".tmp")
        with staged.open("w") as handle:
            handle.write(f"{epoch}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, self.epoch_path)
        return epoch
