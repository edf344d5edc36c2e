"""Liveness and readiness (no authentication) and Prometheus metrics (administrators)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from streamspace.controlplane.deps import AdminDep, ReplicaDep
from streamspace.controlplane.metrics_server import exposition
from streamspace.controlplane.routes.responses import errors

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


@router.get(
    "/metrics",
    # Declared here, not as the route's response class: that would give the JSON errors
    # its text/plain media type in the description.
    responses={
        200: {"description": "Prometheus exposition format", "content": {"text/plain": {}}},
        **errors(401, 403),
    },
)
async def prometheus_metrics(_admin: AdminDep, replica: ReplicaDep) -> Response:
    """Prometheus metrics (an administrator's token; Prometheus itself scrapes METRICS_PORT)."""
    body = await exposition(hub=replica.hub, db=replica.db)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
