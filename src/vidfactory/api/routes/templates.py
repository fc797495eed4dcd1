"""/v1/templates: the tenant's templates (create, list, read, replace, delete) beside the built-in
library (read-only). A template is checked when it is saved: a body that could never render is a 400."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, not_found
from vidfactory.api.render import timestamp
from vidfactory.api.schemas import TemplateCreate, TemplateUpdate
from vidfactory.db.models import Template as TemplateRow
from vidfactory.db.types import utcnow
from vidfactory.jobs.prompting import template_from_row
from vidfactory.prompts.library import library
from vidfactory.prompts.templates import Template, check_template, name_pattern
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
    try:
        with ctx.sessions.begin() as session:
            row = TemplateRow(id=f"tpl_{uuid.uuid4().hex}", tenant_id=caller.tenant_id, name=template.name,
                              **_row_values(template))
            session.add(row)
            session.flush()
            return template_object(template, "tenant", row)
    except IntegrityError as exc:  # the (tenant, name) unique constraint: also two racing creates
        raise ApiError(409, "template_exists", f"template {body.name!r} already exists", param="name") from exc


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
    with ctx.sessions.begin() as session:
        row = _owned(session, caller, name)
        template = _as_template(name, body)
        for key, value in _row_values(template).items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.flush()
        return template_object(template, "tenant", row)


@router.delete("/{name}")
def delete_template(name: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Jobs made from it keep its name and variables; only the template goes."""
    with ctx.sessions.begin() as session:
        session.delete(_owned(session, caller, name))
    return {"object": "template.deleted", "name": name, "deleted": True}
