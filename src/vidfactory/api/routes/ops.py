"""Operations endpoints for load balancers, orchestrators and Prometheus: liveness, readiness, metrics. No
credentials: readiness says only which dependency probe failed, never where a dependency lives (the
details go to the server log and to `vidfactory doctor`); metrics carry no tenant's name or data, but
keep `/metrics` off the public ingress all the same."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from vidfactory.api.deps import ContextDep
from vidfactory.api.errors import types_by_status
from vidfactory.observability import health, metrics
from vidfactory.observability.fleet import FleetCollector

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


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition format"}})
def prometheus_metrics(ctx: ContextDep) -> Response:
    """Prometheus metrics: this process's requests and cache lookups, and the fleet's queue, jobs, workers,
    holds, webhooks and breakers read from the database (the README lists them)."""
    return Response(metrics.render(FleetCollector(ctx.sessions, ctx.settings)), media_type=CONTENT_TYPE_LATEST)
