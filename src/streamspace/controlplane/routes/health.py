"""Liveness, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from streamspace.controlplane import metrics
from streamspace.controlplane.deps import ReplicaDep
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import sessions as session_repo

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": dict[str, str], "description": "Not ready: which part is down."}},
)
async def readyz(replica: ReplicaDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers."""
    checks = {"database": "ok"}
    try:
        async with replica.db() as db:
            await db.execute(text("SELECT 1"))
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    redis_up = replica.hub.shared_state_up
    if redis_up is not None:
        # Still ready without Redis: commands then reach agents by database polling.
        checks["redis"] = "ok" if redis_up else "unavailable (degraded: database polling)"
    return {"status": "ok" if response.status_code != 503 else "unavailable", **checks}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(replica: ReplicaDep) -> Response:
    metrics.AGENTS_CONNECTED.labels(replica.hub.replica).set(len(replica.hub.local_connections()))
    try:
        async with replica.db() as db:
            for state, count in (await command_repo.count_by_status(db)).items():
                metrics.COMMANDS.labels(state).set(count)
            for state, count in (await session_repo.count_by_state(db)).items():
                metrics.SESSIONS.labels(state).set(count)
    except Exception:
        pass  # metrics of this replica are still worth serving without the database
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
