"""/v1/verify: which video a file is, and whether it was altered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_upload, upload_openapi
from vidfactory.api.deps import ContextDep, ScopeDep
from vidfactory.jobs.verification import verify_file

router = APIRouter(prefix="/v1/verify", tags=["verify"])

upload_field = "file"


@router.post("", openapi_extra=upload_openapi(upload_field))
async def verify(request: Request, ctx: ContextDep, scope: ScopeDep) -> dict[str, Any]:
    """Send a file as multipart field `file`. A tenant's key learns only about that tenant's videos
    (`video_id` is null for anyone else's); the admin token about all."""
    data = await read_upload(request, upload_field, ctx.settings.verify_upload_bytes_max)
    return await run_in_threadpool(_verify, ctx, data, scope)


def _verify(ctx, data: bytes, scope) -> dict[str, Any]:
    with ctx.sessions() as session:
        return verify_file(session, data, scope, anchors_pem=ctx.provenance.anchors_pem,
                           watermark_step=ctx.settings.watermark_step)
