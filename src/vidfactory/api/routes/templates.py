"""/v1/templates: the tenant's templates (create, list, read, replace, delete) beside the built-in
library (read-only). A template is checked when it is saved: a body that could never render is a 400."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.api.body import VideoInput
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, not_found
from vidfactory.api.render import timestamp, video_object
from vidfactory.api.routes.videos import to_video_request
from vidfactory.api.schemas import TemplateCreate, TemplateUpdate, VideoCreate, prompt_chars_max
from vidfactory.db.models import Template as TemplateRow
from vidfactory.db.types import utcnow
from vidfactory.jobs.prompting import template_from_row
from vidfactory.prompts.errors import PromptError
from vidfactory.prompts.library import library
from vidfactory.jobs.submit import submit
from vidfactory.prompts.templates import Template, check_template, name_pattern, render
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/templates", tags=["templates"])


def template_object(template: Template, source: str, row: TemplateRow | None = None) -> dict[str, Any]:
    return {
        "object": "template",
        "name": template.name,
        "source": source,  # library | tenant
        "description": template.description,
        "language": template.language,
        "body": template.body,
        "form": {"industry": template.industry, "style": template.style, "keywords": list(template.keywords),
                 "camera": template.camera, "mood": template.mood},
        "seconds": template.seconds,
        "size": template.size,
        "reference_image": template.reference_image,
        "defaults": dict(template.defaults),
        "pre_generate": row is not None and row.pre_generate,
        "variables": sorted(check_template(template)),
        "created_at": None if row is None else timestamp(row.created_at),
        "updated_at": None if row is None else timestamp(row.updated_at),
    }


def _as_template(name: str, body: TemplateCreate | TemplateUpdate) -> Template:
    """Checked before it is stored: refuses bad syntax, what the sandbox forbids, stray defaults."""
    template = Template(name=name, body=body.body, language=body.language, description=body.description,
                        industry=body.form.industry, style=body.form.style, keywords=tuple(body.form.keywords),
                        camera=body.form.camera, mood=body.form.mood, seconds=body.seconds, size=body.size,
                        reference_image=body.reference_image, defaults=dict(body.defaults))
    check_template(template)
    return template


def _row_values(template: Template) -> dict[str, Any]:
    return {"description": template.description, "language": template.language, "body": template.body,
            "form": {"industry": template.industry, "style": template.style, "keywords": list(template.keywords),
                     "camera": template.camera, "mood": template.mood},
            "seconds": template.seconds, "size": template.size, "reference_image": template.reference_image,
            "defaults": dict(template.defaults)}


def _defaults_rendered(template: Template) -> tuple[str, int | None, str | None]:
    """What pre-generation would make; a template whose defaults leave a variable open cannot be
    pre-generated (a 400 naming it, before anything is saved)."""
    rendered = render(template, {}, prompt_chars_max)
    return rendered.prompt, rendered.seconds, rendered.size


def _pre_generate(ctx: AppContext, caller: Caller, name: str) -> dict[str, Any]:
    """The template as saved, with its defaults, through the same path as `POST /v1/videos`: quoted,
    held, billed and cached like any job. Raises what a submission raises (402, 429, 400 ...)."""
    sent = VideoInput(body=VideoCreate(template=name), fields={}, reference=None)
    video_request = to_video_request(ctx, caller, sent)
    submitted = submit(ctx.sessions, ctx.settings, ctx.counters, caller, video_request, video_object,
                       screens=ctx.screens)
    return submitted.body


def _owned(session: Session, caller: Caller, name: str) -> TemplateRow:
    """A library template is read-only (409); another tenant's answers exactly like a missing one."""
    if name in library:
        raise ApiError(409, "read_only_template", f"{name!r} is a built-in template; copy it under another name",
                       param="name")
    row = None
    if name_pattern.fullmatch(name) is not None:
        row = session.scalar(select(TemplateRow).where(TemplateRow.tenant_id == caller.tenant_id,
                                                       TemplateRow.name == name))
    if row is None:
        raise not_found("template", name, "name")
    return row


@router.post("", status_code=201)
def create_template(body: TemplateCreate, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    if body.name in library:
        raise ApiError(409, "template_exists", f"{body.name!r} is a built-in template name", param="name")
    template = _as_template(body.name, body)
    if body.pre_generate:
        _defaults_rendered(template)
    try:
        with ctx.sessions.begin() as session:
            row = TemplateRow(id=f"tpl_{uuid.uuid4().hex}", tenant_id=caller.tenant_id, name=template.name,
                              pre_generate=body.pre_generate, **_row_values(template))
            session.add(row)
            session.flush()
            created = template_object(template, "tenant", row)
    except IntegrityError as exc:  # the (tenant, name) unique constraint: also two racing creates
        raise ApiError(409, "template_exists", f"template {body.name!r} already exists", param="name") from exc
    if body.pre_generate:
        try:
            created["pre_generated"] = _pre_generate(ctx, caller, template.name)
        except Exception:
            # Nothing changes when pre-generation is refused (balance, limits, screening): undo the save.
            with ctx.sessions.begin() as session:
                session.delete(_owned(session, caller, template.name))
            raise
    return created


@router.get("")
def list_templates(session: SessionDep, caller: CallerDep,
                   source: Annotated[Literal["all", "library", "tenant"], Query()] = "all") -> dict[str, Any]:
    """The built-in library first (by name), then the tenant's own (by name)."""
    data = []
    if source in ("all", "library"):
        data += [template_object(t, "library") for t in sorted(library.values(), key=lambda t: t.name)]
    if source in ("all", "tenant"):
        rows = session.scalars(select(TemplateRow).where(TemplateRow.tenant_id == caller.tenant_id)
                               .order_by(TemplateRow.name))
        data += [template_object(template_from_row(row), "tenant", row) for row in rows]
    return {"object": "list", "data": data}


@router.get("/{name}")
def retrieve_template(name: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    if name in library:
        return template_object(library[name], "library")
    row = _owned(session, caller, name)
    return template_object(template_from_row(row), "tenant", row)


@router.put("/{name}")
def replace_template(name: str, body: TemplateUpdate, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Pre-generates again only when what the defaults render to changed (or pre-generation was just
    turned on); a refused pre-generation leaves the template as it was."""
    template = _as_template(name, body)
    rendered = _defaults_rendered(template) if body.pre_generate else None
    with ctx.sessions.begin() as session:
        row = _owned(session, caller, name)
        before = {key: getattr(row, key) for key in (*_row_values(template), "pre_generate", "updated_at")}
        previous = template_from_row(row)
        stale = rendered is not None and (not row.pre_generate or _renders_otherwise(previous, rendered))
        for key, value in {**_row_values(template), "pre_generate": body.pre_generate}.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.flush()
        replaced = template_object(template, "tenant", row)
    if stale:
        try:
            replaced["pre_generated"] = _pre_generate(ctx, caller, name)
        except Exception:
            with ctx.sessions.begin() as session:
                row = _owned(session, caller, name)
                for key, value in before.items():
                    setattr(row, key, value)
            raise
    return replaced


def _renders_otherwise(previous: Template, rendered: tuple[str, int | None, str | None]) -> bool:
    try:
        return _defaults_rendered(previous) != rendered
    except PromptError:  # the old template could not be pre-generated at all
        return True


@router.delete("/{name}")
def delete_template(name: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Jobs made from it keep its name and variables; only the template goes."""
    with ctx.sessions.begin() as session:
        session.delete(_owned(session, caller, name))
    return {"object": "template.deleted", "name": name, "deleted": True}
