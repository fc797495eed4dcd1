"""/v1/styles: the tenant's styles (LoRA adapters). Create by uploading a `.safetensors` adapter (multipart
field `file`, with `name`, `model`, `default_scale`, `description`), list, retrieve, download the adapter,
delete. Another tenant's style answers exactly like a missing one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import FormUpload, read_form_upload, validated
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import not_found
from vidfactory.api.schemas import StyleCreate
from vidfactory.db.models import Style
from vidfactory.styles import catalog
from vidfactory.styles.service import delete_style, describe, upload_style
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/styles", tags=["styles"])

upload_field = "file"
form_overhead_bytes = 64_000  # the form's text fields and part headers beside the adapter
upload_openapi: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [upload_field, "name"],
    "properties": {upload_field: {"type": "string", "format": "binary",
                                  "description": "the LoRA adapter, a .safetensors file"},
                   **StyleCreate.model_json_schema()["properties"]}}}}}}


@router.post("", status_code=201, openapi_extra=upload_openapi)
async def create_style(request: Request, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    sent = await read_form_upload(request, upload_field, ctx.settings.style_upload_bytes_max + form_overhead_bytes)
    return await run_in_threadpool(_create, ctx, caller, sent)


def _create(ctx: AppContext, caller: Caller, sent: FormUpload) -> dict[str, Any]:
    body: StyleCreate = validated(StyleCreate, sent.fields)
    return upload_style(ctx.sessions, ctx.storage, ctx.settings, caller.tenant_id, name=body.name,
                        model=body.model, data=sent.data, filename=sent.filename,
                        default_scale=body.default_scale, description=body.description)


@router.get("")
def list_styles(session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """By name (a tenant keeps at most `styles_per_tenant_max`: one page)."""
    rows = session.scalars(select(Style).where(Style.tenant_id == caller.tenant_id).order_by(Style.name))
    return {"object": "list", "data": [describe(style) for style in rows]}


def _owned(session, caller: Caller, style: str) -> Style:
    found = catalog.find(session, caller.tenant_id, style)
    if found is None:
        raise not_found("style", style, "style")
    return found


@router.get("/{style}")
def retrieve_style(style: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return describe(_owned(session, caller, style))


@router.get("/{style}/content", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the adapter"}})
def download_style(style: str, ctx: ContextDep, session: SessionDep, caller: CallerDep) -> Response:
    """The adapter as uploaded (or as trained), byte for byte."""
    found = _owned(session, caller, style)
    if found.storage_key is None:  # a style still training has no adapter yet
        raise not_found("adapter of style", style, "style")
    return Response(ctx.storage.read(found.storage_key), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{found.name}.safetensors"',
                             "ETag": f'"{found.sha256}"'})


@router.delete("/{style}")
def remove_style(style: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """409 while queued or running videos use it; templates that named it lose their default style."""
    deleted = delete_style(ctx.sessions, ctx.storage, caller.tenant_id, style)
    if deleted is None:
        raise not_found("style", style, "style")
    return deleted
