"""Times local sessions of whatever ``streamspace`` is importable, one per line on stdin.

``bench.docker_start --baseline SRC`` runs this module with ``PYTHONPATH=SRC`` (the ``src``
of an older checkout), so an older LocalPlatform is timed in the same run, round by round,
as the current one. Each input line starts and stops one xterm session; the answer is one
JSON line ``[seconds start → RFB ready, seconds stop]``. Only calls every version has:
``LocalPlatform(data_dir=...)``, ``start(spec)``, ``stop(state)``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from tempfile import mkdtemp

from streamspace.agent.platforms.local import LocalPlatform
from streamspace.protocol import SessionSpec


async def main() -> None:
    work = Path(mkdtemp(prefix="streamspace-bench-baseline-"))
    platform = LocalPlatform(data_dir=work)
    loop = asyncio.get_running_loop()
    try:
        while await loop.run_in_executor(None, sys.stdin.readline):
            spec = SessionSpec(
                session_id=f"bench-{uuid.uuid4().hex[:12]}", user="bench", template="xterm",
                command=["xterm"],
            )  # fmt: skip
            began = time.perf_counter()
            started = await platform.start(spec)
            ready = time.perf_counter() - began
            began = time.perf_counter()
            await platform.stop(started.state)
            print(json.dumps([ready, time.perf_counter() - began]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
