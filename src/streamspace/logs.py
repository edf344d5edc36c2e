"""Logging set-up shared by the CLI commands."""

from __future__ import annotations

import logging
import os


def configure(level: str | None = None) -> None:
    """Plain, greppable log lines (operators search for the seed's messages)."""
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # One line per HTTP request drowns the lines operators look for.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
