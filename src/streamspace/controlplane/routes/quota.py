"""The current user's quota and what they hold against it."""

from __future__ import annotations

from fastapi import APIRouter

from streamspace.controlplane.deps import QuotasDep, UserDep
from streamspace.controlplane.routes.responses import AUTHENTICATED
from streamspace.controlplane.routes.schemas import QuotaOut

router = APIRouter(prefix="/api/v1/me", tags=["auth"], responses=AUTHENTICATED)


@router.get("/quota")
async def my_quota(user: UserDep, quotas: QuotasDep) -> QuotaOut:
    """Effective limits (from the user's groups, else the site default) and usage."""
    return QuotaOut.of(await quotas.of(user))
