"""Operations endpoints for load balancers and orchestrators: liveness and readiness. No credentials: they
say only whether the process answers and which dependency probe failed, never where a dependency lives
(the details go to the server log and to `vidfactory doctor`)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from vidfactory.api.deps import ContextDep
from vidfactory.api.errors import types_by_status
from vidfactory.observability import health

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Alive: the process answers. No dependency is checked (a database outage must not get it restarted)."""
    check = health.alive()
    return {"status": check.status}


@router.get("/readyz", responses={503: {"description": "A probe failed: the error's `param` names it"}})
def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready for traffic: the database reachable and migrated to this code's revision; Redis and storage
    reachable when configured. 503 names the first probe that failed."""
    checks = health.readiness(ctx.settings)
    statuses = {check.name: check.status for check in checks}
    failed = [check for check in checks if not check.ok]
    if not failed:
        return JSONResponse({"status": "ready", "checks": statuses})
    for check in failed:
        log.warning("not ready: %s: %s", check.name, check.detail)
    names = ", ".join(check.name for check in failed)
    return JSONResponse(status_code=503, content={"error": {
        "code": "not_ready", "type": types_by_status[503], "param": failed[0].name,
        "message": f"not ready: {names} failed (the server log and `vidfactory doctor` say why)"},
        "checks": statuses})
