"""/v1/webhook_deliveries: the tenant's whole delivery log (endpoints and per-video webhook URLs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from vidfactory.api.deps import CallerDep, SessionDep
from vidfactory.api.errors import checked_id
from vidfactory.api.render import delivery_object
from vidfactory.notify import endpoints

router = APIRouter(prefix="/v1/webhook_deliveries", tags=["webhooks"])

page_size_max = 100


@router.get("")
def list_deliveries(
    session: SessionDep, caller: CallerDep,
    video_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20,
) -> dict[str, Any]:
    """Newest first; `video_id` narrows to one video's events."""
    if video_id is not None:
        checked_id("video", video_id, "video_id")
    rows = endpoints.deliveries(session, caller.tenant_id, limit=limit, job_id=video_id, status=status)
    return {"object": "list", "data": [delivery_object(row, event_type) for row, event_type in rows]}
