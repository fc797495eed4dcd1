"""/v1/webhook_secret: the tenant's secret that signs deliveries to per-video `webhook_url`s."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from vidfactory.api.deps import CallerDep, ContextDep
from vidfactory.api.render import timestamp
from vidfactory.db.models import TenantWebhookSecret
from vidfactory.notify.events import ensure_job_secret, rotate

router = APIRouter(prefix="/v1/webhook_secret", tags=["webhooks"])


def secret_object(row: TenantWebhookSecret) -> dict[str, Any]:
    return {"object": "webhook_secret", "secret": row.secret,
            "previous_secret_expires_at": timestamp(row.previous_secret_expires_at)}


@router.get("")
def retrieve_secret(ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Created on first use (by this call or by the first video sent with a webhook_url)."""
    with ctx.sessions.begin() as session:
        return secret_object(ensure_job_secret(session, caller.tenant_id))


@router.post("/rotate")
def rotate_secret(ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """A new secret; the old one also signs for `webhook_secret_overlap_s`."""
    with ctx.sessions.begin() as session:
        row = ensure_job_secret(session, caller.tenant_id)
        rotate(row, ctx.settings.webhook_secret_overlap_s)
        return secret_object(row)
