"""The operator's view of the fleet: the workers (device, memory, loaded models, the jobs they run, when
each was last heard from) and the alerts, acknowledged from the page. The same services as
`/v1/admin/workers` and `/v1/admin/alerts`; an acknowledgement is audited under the operator's name."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from vidfactory.api.errors import id_pattern
from vidfactory.db.types import utcnow
from vidfactory.jobs import workers as registry
from vidfactory.notify.alerts import acknowledge_alert, recent_alerts
from vidfactory.web.forms import opened, posted

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
alerts_shown_max = 100
gib_bytes = 1024**3


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@router.get("/workers")
def workers(request: Request) -> Response:
    page = opened(request, "workers")
    if isinstance(page, Response):
        return page
    now, stale_s = utcnow(), page.ctx.settings.worker_stale_s
    with page.ctx.sessions() as session:
        running = registry.current_jobs(session)
        shown = [{"id": w.id, "gpu_name": w.gpu_name, "devices": w.devices,
                  "memory_total_gib": round(w.memory_total_bytes / gib_bytes, 1),
                  "memory_free_gib": round(w.memory_free_bytes / gib_bytes, 1), "models_held": list(w.models_held),
                  "models_served": list(w.models_served), "jobs": running.get(w.id, []),
                  "seen_s_ago": max(0, int((now - w.heartbeat_at).total_seconds())),
                  "live": (now - w.heartbeat_at).total_seconds() <= stale_s, "last_seen": _when(w.heartbeat_at)}
                 for w in registry.list_workers(session)]
    return page.render("workers.html", workers=shown)


@router.get("/alerts")
def alerts(request: Request) -> Response:
    page = opened(request, "alerts")
    if isinstance(page, Response):
        return page
    with page.ctx.sessions() as session:
        shown = [{"id": a.id, "kind": a.kind, "message": a.message, "tenant_id": a.tenant_id, "video_id": a.job_id,
                  "created_at": _when(a.created_at), "acknowledged_at": _when(a.acknowledged_at),
                  "acknowledged_by": a.acknowledged_by} for a in recent_alerts(session, alerts_shown_max)]
    return page.render("alerts.html", alerts=shown, message=page.t("alerts.done") if request.query_params.get("done")
                       else "")


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, alert_id: str) -> Response:
    outcome = await posted(request, "alerts")
    if isinstance(outcome, Response):
        return outcome
    page, _ = outcome
    if id_pattern.fullmatch(alert_id) is None:
        return page.error(404, "error.not_found")
    with page.ctx.sessions.begin() as session:
        if acknowledge_alert(session, alert_id, actor=page.principal.actor) is None:
            return page.error(404, "error.not_found")
    return RedirectResponse("/alerts?done=1", status_code=303)
