"""Printing benchmark tables and appending them to bench/RESULTS.md with machine facts."""

from __future__ import annotations

import datetime
import math
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def table(rows: list[dict[str, str]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row[h] for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, rows: list[dict[str, str]], *, command: str) -> None:
    """Print the table and append it, with date, machine and command, to RESULTS.md."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## {title}\n\n- date: {when}\n- machine: {machine()}\n"
        f"- command: `{command}`\n\n{table(rows)}\n"
    )
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nNewest at the bottom. Each section says how it was measured.\n"
        )
    with RESULTS.open("a") as handle:
        handle.write(text)
