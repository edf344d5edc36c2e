"""Logging set-up shared by the CLI commands."""

from __future__ import annotations

import logging
import os
import re

_TOKEN = re.compile(r"([?&]token=)[^&\s\"']+")
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-internal-secret"})
"""Headers whose values are credentials (websockets logs every handshake header at DEBUG)."""


class RedactTokens(logging.Filter):
    """Hide credentials from log lines: VNC connect tokens in logged URLs (uvicorn logs each
    WebSocket's path with its query) and the values of :data:`SECRET_HEADERS` (logged by
    websockets as ``"< %s: %s"`` / ``"> %s: %s"`` pairs, client and server side)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        if len(args) == 2 and str(args[0]).lower() in SECRET_HEADERS:
            record.args = (args[0], "<redacted>")
        elif any(isinstance(arg, str) and "token=" in arg for arg in args):
            record.args = tuple(
                _TOKEN.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg for arg in args
            )
        return True


def configure(level: str | None = None) -> None:
    """Plain, greppable log lines (operators search for the seed's messages), credentials
    redacted from every logger's records."""
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # One line per HTTP request drowns the lines operators look for.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # On the handlers, not a logger: records that propagate from any logger pass them.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
