"""Liveness and readiness (no authentication) and Prometheus metrics (administrators)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from streamspace.controlplane.deps import AdminDep, HealthDep
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
async def readyz(health: HealthDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers."""
    ready, checks = await health.readiness()
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ok" if ready else "unavailable", **checks}


@router.get(
    "/metrics",
    # Declared here, not as the route's response class: that would give the JSON errors
    # its text/plain media type in the description.
    responses={
        200: {"description": "Prometheus exposition format", "content": {"text/plain": {}}},
        **errors(401, 403),
    },
)
async def prometheus_metrics(_admin: AdminDep, health: HealthDep) -> Response:
    """Prometheus metrics (an administrator's token; Prometheus itself scrapes METRICS_PORT)."""
    return Response(await health.metrics(), media_type=CONTENT_TYPE_LATEST)
