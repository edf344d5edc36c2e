"""Serving the Prometheus metrics: the exposition and the optional ``METRICS_PORT`` listener.

The API's ``/metrics`` needs an administrator's token; Prometheus, which has none, scrapes
the separate listener instead (bind it where only the scraper reaches, e.g. a pod port
behind a network policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.hub import AgentHub
from streamspace.db.engine import SessionFactory, reading
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.states import SessionState

log = logging.getLogger(__name__)


async def exposition(*, hub: AgentHub, db: SessionFactory) -> bytes:
    """The current metrics in Prometheus' text format (database gauges refreshed first)."""
    metrics.AGENTS_CONNECTED.labels(hub.replica).set(len(hub.local_connections()))
    try:
        async with reading(db) as session:
            for state, count in (await command_repo.count_by_status(session)).items():
                metrics.COMMANDS.labels(state).set(count)
            counts = await session_repo.count_by_template_and_state(session)
        _show_sessions(counts)
    except Exception as exc:  # this replica's own metrics are still worth serving
        log.warning("metrics: could not read the database gauges: %s", exc)
    return generate_latest()


def _show_sessions(counts: dict[tuple[str, str], int]) -> None:
    """Set the session gauges to ``counts`` (a state or template that has none left reads
    0 or goes, rather than keeping its last value)."""
    by_state: Counter[str] = Counter()
    metrics.SESSIONS_BY_TEMPLATE.clear()
    for (template, state), count in counts.items():
        metrics.SESSIONS_BY_TEMPLATE.labels(template, state).set(count)
        by_state[state] += count
    for state in SessionState:
        metrics.SESSIONS.labels(state).set(by_state[state])


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's owner decides the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_metrics(
    *, hub: AgentHub, db: SessionFactory, settings: ApiSettings, stop: asyncio.Event
) -> None:
    """Serve ``GET /metrics`` (nothing else) on ``METRICS_HOST:METRICS_PORT`` until ``stop``."""
    host, port = settings.metrics_host, settings.metrics_port
    assert port is not None, "serve_metrics() needs METRICS_PORT"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # lifespan is off; no WebSockets are routed here
        found = scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD")
        body = await exposition(hub=hub, db=db) if found else b"not found: try /metrics\n"
        content_type = CONTENT_TYPE_LATEST if found else "text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, lifespan="off", access_log=False
    )
    server = QuietServer(config)
    serving = asyncio.create_task(server.serve(), name="metrics-listener")
    log.info("metrics served without authentication on %s:%d/metrics", host, port)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    server.should_exit = True
    await serving
