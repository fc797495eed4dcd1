"""The Styles and Trainings pages: a tenant's LoRA styles (upload a `.safetensors` adapter, download,
delete: 409's words shown when queued or running videos use it) and its style trainings (start one from a
dataset ZIP with the model's defaults shown and overridable within the limits, the list, and a training's
page with live progress and loss from its event stream, its loss curve and its preview clip). Every action
calls the services `/v1/styles` and `/v1/styles/train` call; owners and members act, viewers read; another
tenant's style or training answers 404."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_form, read_form_upload, validated
from vidfactory.api.errors import ApiError, id_pattern
from vidfactory.api.routes.styles import form_overhead_bytes
from vidfactory.api.routes.trainings import to_request
from vidfactory.api.schemas import StyleCreate, TrainingCreate, training_learning_rate_max, training_rank_max
from vidfactory.db.models import Asset, Plan, Style, Tenant
from vidfactory.jobs import queue
from vidfactory.jobs.training import find_training, submit_training, training_object, trainings_page
from vidfactory.styles import catalog
from vidfactory.styles.service import delete_style, describe, upload_style
from vidfactory.tenancy import console_caller
from vidfactory.web.console import Console, ListCursor, csrf_field
from vidfactory.web.errors import FieldError, field_error, service_errors
from vidfactory.web.forms import opened, posted

__all__ = ["loss_points", "router"]

router = APIRouter(include_in_schema=False)
trainings_per_page = 20
style_fields = ("file", "name", "model", "default_scale", "description")
training_fields = ("dataset", "name", "model", "steps", "rank", "learning_rate", "caption", "default_scale", "seed",
                   "description")
optional_numbers = ("steps", "rank", "learning_rate", "seed")  # empty: the model's default
chart_width, chart_height = 320, 96  # the loss curve's drawing, in SVG user units
preview_variants = ("video", "thumbnail")


def _styled_models(page: Console) -> list[str]:
    return [model.id for model in page.ctx.settings.models if catalog.base_of(model) is not None]


def _trainable(page: Console) -> list[dict[str, Any]]:
    """The models a style trains on, with their defaults (what an empty field means)."""
    shown = []
    for model in page.ctx.settings.models:
        preset = model.wan_preset
        if model.is_hosted or preset is None or preset.experts != 1:
            continue
        defaults = preset.training
        shown.append({"id": model.id, "steps": defaults.steps, "rank": defaults.rank,
                      "learning_rate": f"{defaults.learning_rate:g}",
                      "size": f"{defaults.buckets[0][0]}x{defaults.buckets[0][1]}", "frames": defaults.num_frames})
    return shown


def _styles(page: Console) -> list[dict[str, Any]]:
    with page.ctx.sessions() as session:
        rows = session.scalars(select(Style).where(Style.tenant_id == page.principal.tenant_id).order_by(Style.name))
        return [describe(style) for style in rows]


def _styles_page(page: Console, *, error: FieldError | None = None, values: dict[str, str] | None = None,
                 message: str = "", status_code: int = 200) -> Response:
    return page.render("styles.html", status_code=status_code, styles=_styles(page), models=_styled_models(page),
                       can_edit=page.allowed("styles_edit"), error=error, values=values or {}, message=message,
                       scale_max=page.ctx.settings.style_scale_max)


@router.get("/styles")
def styles_page(request: Request, deleted: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    page = opened(request, "styles")
    if not isinstance(page, Console):
        return page
    message = page.t("styles.deleted", name=deleted) if deleted and catalog.name_pattern.fullmatch(deleted) else ""
    return _styles_page(page, message=message)


@router.post("/styles")
async def upload(request: Request) -> Response:
    """As `POST /v1/styles`: the adapter checked whole before anything is stored."""
    page = opened(request, "styles_edit")
    if not isinstance(page, Console):
        return page
    settings = page.ctx.settings
    try:
        sent = await read_form_upload(request, "file", settings.style_upload_bytes_max + form_overhead_bytes)
    except service_errors as exc:  # too large, no file, empty: said by the file field (its token unread)
        return _styles_page(page, error=field_error(page.locale, exc, style_fields), status_code=400)
    fields = {name: value for name, value in sent.fields.items() if name != csrf_field}
    if not page.csrf_ok(sent.fields):
        return page.error(403, "error.csrf")
    tenant_id = page.principal.tenant_id

    def add() -> dict[str, Any]:
        body: StyleCreate = validated(StyleCreate, {k: v for k, v in fields.items() if v != ""})
        return upload_style(page.ctx.sessions, page.ctx.storage, settings, tenant_id, name=body.name,
                            model=body.model, data=sent.data, filename=sent.filename,
                            default_scale=body.default_scale, description=body.description)

    try:
        added = await run_in_threadpool(add)
    except service_errors as exc:
        error = field_error(page.locale, exc, style_fields)
        return _styles_page(page, error=error, values=fields, status_code=error.status)
    return _styles_page(page, message=page.t("styles.added", name=added["name"]), status_code=201)


def _own_style(page: Console, ref: str) -> dict[str, Any] | None:
    if not (catalog.name_pattern.fullmatch(ref) or catalog.id_pattern.fullmatch(ref)):
        return None
    with page.ctx.sessions() as session:
        style = catalog.find(session, page.principal.tenant_id, ref)
        return None if style is None else {"name": style.name, "key": style.storage_key, "sha256": style.sha256}


@router.get("/styles/{style}/download")
def download(request: Request, style: str) -> Response:
    """The adapter as uploaded (or as trained), byte for byte."""
    page = opened(request, "styles")
    if not isinstance(page, Console):
        return page
    found = _own_style(page, style)
    if found is None or found["key"] is None:
        return page.error(404, "error.not_found")
    return Response(page.ctx.storage.read(found["key"]), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{found["name"]}.safetensors"',
        "X-Content-SHA256": found["sha256"]})


@router.post("/styles/{style}/delete")
async def delete(request: Request, style: str) -> Response:
    """As `DELETE /v1/styles/{style}`; 409 (used by queued or running videos, or training) said on the page."""
    answered = await posted(request, "styles_edit")
    if isinstance(answered, Response):
        return answered
    page, _ = answered
    if _own_style(page, style) is None:
        return page.error(404, "error.not_found")
    try:
        deleted = await run_in_threadpool(delete_style, page.ctx.sessions, page.ctx.storage,
                                          page.principal.tenant_id, style)
    except service_errors as exc:
        error = field_error(page.locale, exc)
        return _styles_page(page, error=error, status_code=error.status)
    if deleted is None:
        return page.error(404, "error.not_found")
    return RedirectResponse(f"/styles?deleted={deleted['name']}", status_code=303)


def _training_limits(page: Console) -> dict[str, Any]:
    with page.ctx.sessions() as session:
        plan = session.scalars(select(Plan).join(Tenant, Tenant.plan_id == Plan.id)
                               .where(Tenant.id == page.principal.tenant_id)).one()
        return {"steps_max": plan.training_steps_max, "samples_max": plan.training_samples_max,
                "concurrent": plan.concurrent_trainings, "rank_max": training_rank_max,
                "learning_rate_max": f"{training_learning_rate_max:g}", "scale_max": page.ctx.settings.style_scale_max}


def _trainings_page(page: Console, after: str | None = None, *, error: FieldError | None = None,
                    values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        cursor = None if after is None else find_training(session, tenant_id, after)
        jobs, has_more = trainings_page(session, tenant_id, cursor, trainings_per_page)
        shown = [training_object(session, job) for job in jobs]
    return page.render("trainings.html", status_code=status_code, trainings=shown,
                       next_after=shown[-1]["id"] if has_more else None, can_edit=page.allowed("trainings_edit"),
                       models=_trainable(page), limits=_training_limits(page), error=error, values=values or {})


@router.get("/trainings")
def trainings(request: Request, after: ListCursor) -> Response:
    page = opened(request, "trainings")
    if not isinstance(page, Console):
        return page
    return _trainings_page(page, after)


def _training_body(fields: dict[str, Any]) -> TrainingCreate:
    """The API's schema from the form: an empty number keeps the model's default."""
    sent = {name: value for name, value in fields.items()
            if name in training_fields and not (name in optional_numbers + ("caption",) and value in ("", None))}
    return validated(TrainingCreate, sent)


@router.post("/trainings")
async def start_training(request: Request) -> Response:
    """As `POST /v1/styles/train` with a dataset ZIP: checked, quoted, held and queued, or refused by field."""
    page = opened(request, "trainings_edit")
    if not isinstance(page, Console):
        return page
    ctx = page.ctx
    try:
        fields = await read_form(request, ctx.settings.training_upload_bytes_max, "dataset")
    except service_errors as exc:
        return _trainings_page(page, error=field_error(page.locale, exc, training_fields), status_code=400)
    if not page.csrf_ok({csrf_field: str(fields.pop(csrf_field, ""))}):
        return page.error(403, "error.csrf")
    dataset = fields.pop("dataset", None)
    values = {name: str(value) for name, value in fields.items() if name in training_fields}
    tenant_id = page.principal.tenant_id

    def start() -> dict[str, Any]:
        if not isinstance(dataset, bytes) or not dataset:  # an empty file input sends an empty part
            raise ApiError(400, "missing_file", "send the dataset as a ZIP file", param="dataset")
        body = _training_body(fields)
        with ctx.sessions() as session:
            caller = console_caller(session, tenant_id)
        return submit_training(ctx.sessions, ctx.settings, caller, to_request(ctx, caller, body, dataset),
                               ctx.screens.images, ctx.storage).body

    try:
        started = await run_in_threadpool(start)
    except service_errors as exc:
        error = field_error(page.locale, exc, training_fields)
        return _trainings_page(page, error=error, values=values, status_code=error.status)
    return RedirectResponse(f"/trainings/{started['id']}", status_code=303)


def loss_points(losses: list[float]) -> str:
    """An SVG polyline's points for a loss curve: steps across, loss up, scaled to the drawing."""
    if len(losses) < 2:
        return ""
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    step_x = chart_width / (len(losses) - 1)
    return " ".join(f"{i * step_x:.1f},{chart_height - (loss - low) / span * chart_height:.1f}"
                    for i, loss in enumerate(losses))


def _training(page: Console, training_id: str) -> dict[str, Any] | None:
    """The training as the API shows it, with its style's loss curve once trained; None when it is missing
    or another tenant's (one answer: 404)."""
    if id_pattern.fullmatch(training_id) is None:
        return None
    with page.ctx.sessions() as session:
        job = find_training(session, page.principal.tenant_id, training_id)
        if job is None:
            return None
        shown = training_object(session, job)
        style = session.get(Style, shown["style_id"]) if shown["style_id"] else None
    provenance = (style.training or {}) if style is not None else {}
    curve = provenance.get("loss_curve") or []
    return {**shown, "loss_curve": curve, "loss_points": loss_points(curve),
            "loss_range": (min(curve), max(curve)) if curve else None}


@router.get("/trainings/{training_id}")
def training_page(request: Request, training_id: str) -> Response:
    page = opened(request, "trainings")
    if not isinstance(page, Console):
        return page
    shown = _training(page, training_id)
    if shown is None:
        return page.error(404, "error.not_found")
    return page.render("training.html", training=shown, chart=(chart_width, chart_height),
                       can_edit=page.allowed("trainings_edit"))


@router.get("/trainings/{training_id}/status")
def training_status(request: Request, training_id: str) -> Response:
    """The status panel alone: htmx swaps it in when the training's event stream says it moved."""
    page = opened(request, "trainings")
    if not isinstance(page, Console):
        return page
    shown = _training(page, training_id)
    if shown is None:
        return page.error(404, "error.not_found")
    return page.render("partials/training_status.html", training=shown, chart=(chart_width, chart_height))


@router.get("/trainings/{training_id}/preview")
def training_preview(request: Request, training_id: str, variant: str = "video") -> Response:
    """The preview clip made with the new style (or its poster), as stored."""
    page = opened(request, "trainings")
    if not isinstance(page, Console):
        return page
    shown = _training(page, training_id)
    if shown is None or variant not in preview_variants:
        return page.error(404, "error.not_found")
    with page.ctx.sessions() as session:
        asset = session.scalar(select(Asset).where(Asset.job_id == shown["id"], Asset.variant == variant))
    if asset is None:
        return page.error(404, "error.not_found")
    return Response(page.ctx.storage.read(asset.storage_key), media_type=asset.content_type,
                    headers={"X-Content-SHA256": asset.sha256, "Cache-Control": "private, max-age=3600"})


@router.post("/trainings/{training_id}/cancel")
async def cancel(request: Request, training_id: str) -> Response:
    answered = await posted(request, "trainings_edit")
    if isinstance(answered, Response):
        return answered
    page, _ = answered
    if _training(page, training_id) is None:
        return page.error(404, "error.not_found")
    try:
        with page.ctx.sessions.begin() as session:
            queue.request_cancel(session, find_training(session, page.principal.tenant_id, training_id))
    except queue.StaleJob:
        pass  # it ended meanwhile: its page shows how
    return RedirectResponse(f"/trainings/{training_id}", status_code=303)
