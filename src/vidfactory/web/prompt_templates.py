"""The Templates page: the built-in library and the tenant's own templates; create and edit (checked as
`POST`/`PUT /v1/templates` check them, through the same handlers), pre-generation when saved, and each
template's default style. Owners and members edit; viewers read."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vidfactory.api.errors import id_pattern
from vidfactory.api.routes import templates as template_routes
from vidfactory.api.schemas import TemplateCreate, TemplateUpdate
from vidfactory.jobs.prompting import template_from_row, template_row, template_rows
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.prompts.library import library
from vidfactory.prompts.templates import name_pattern
from vidfactory.styles import catalog as styles_catalog
from vidfactory.tenancy import console_caller
from vidfactory.web.console import Console
from vidfactory.web.errors import FieldError
from vidfactory.web.forms import opened, posted, refusal, refusals

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
languages = ("en", "zh")
form_fields = ("industry", "style", "keywords", "camera", "mood")
# The API's params as this page's fields: the form's parts are fields of their own here.
field_of = {**{f"form.{name}": name for name in form_fields}, "form": "industry", "style": "default_style",
            "variables": "defaults", "prompt": "body", "template": "body"}
page_fields = ("name", "description", "language", "body", *form_fields, "seconds", "size", "defaults",
               "default_style", "style_scale", "pre_generate")


def _shown(session: Any, tenant_id: str, template: dict[str, Any]) -> dict[str, Any]:
    """The API's template object, with its default style's name (the API gives its id)."""
    style = template["style"]
    if style is not None:
        found = styles_catalog.find(session, tenant_id, style["id"])
        template = {**template, "style": {**style, "name": found.name if found else style["id"]}}
    return template


def _templates(page: Console) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        built_in = [template_routes.template_object(t, "library") for t in sorted(library.values(), key=lambda t: t.name)]
        own = [_shown(session, tenant_id, template_routes.template_object(template_from_row(row), "tenant", row))
               for row in template_rows(session, tenant_id)]
    return built_in, own


@router.get("/templates")
def templates_page(request: Request) -> Response:
    page = opened(request, "templates")
    if not isinstance(page, Console):
        return page
    built_in, own = _templates(page)
    return page.render("templates.html", library=built_in, own=own, can_edit=page.allowed("templates_edit"),
                       can_batch=page.allowed("batches_create"))


def _values(template: dict[str, Any] | None) -> dict[str, str]:
    """The form's fields as the page shows them (keywords by commas, defaults one `name=value` a line)."""
    if template is None:
        return {"language": "en"}
    form = template["form"]
    style = template["style"]
    return {"name": template["name"], "description": template["description"], "language": template["language"],
            "body": template["body"], **{name: form[name] for name in form_fields if name != "keywords"},
            "keywords": ", ".join(form["keywords"]), "seconds": "" if template["seconds"] is None else
            str(template["seconds"]), "size": template["size"] or "",
            "defaults": "\n".join(f"{k}={v}" for k, v in template["defaults"].items()),
            "pre_generate": "on" if template["pre_generate"] else "",
            "default_style": "" if style is None else style.get("name", style["id"]),
            "style_scale": "" if style is None or style["scale"] is None else f"{style['scale']:g}"}


def _form_page(page: Console, values: dict[str, str], *, editing: str | None, source: str = "tenant",
               error: FieldError | None = None, status_code: int = 200, template: dict[str, Any] | None = None,
               saved: dict[str, Any] | None = None) -> Response:
    read_only = source == "library" or not page.allowed("templates_edit")
    return page.render("template_form.html", status_code=status_code, values=values, editing=editing,
                       read_only=read_only, can_batch=page.allowed("batches_create"), source=source, error=error, languages=languages, shown=template,
                       saved=saved)


@router.get("/templates/new")
def new_template(request: Request) -> Response:
    page = opened(request, "templates_edit")
    if not isinstance(page, Console):
        return page
    return _form_page(page, _values(None), editing=None)


def _find(page: Console, name: str) -> dict[str, Any] | None:
    """The library's or the tenant's template as the API shows it; None when it names nothing of theirs."""
    if name_pattern.fullmatch(name) is None:
        return None
    if name in library:  # a tenant cannot take a built-in name
        return template_routes.template_object(library[name], "library")
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        row = template_row(session, tenant_id, name)
        if row is None:
            return None
        return _shown(session, tenant_id, template_routes.template_object(template_from_row(row), "tenant", row))


@router.get("/templates/{name}")
def template_page(request: Request, name: str, saved: Annotated[bool, Query()] = False,
                  video: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """`saved` (and `video`, the pre-generated one) after a save: the page says so."""
    page = opened(request, "templates")
    if not isinstance(page, Console):
        return page
    template = _find(page, name)
    if template is None:
        return page.error(404, "error.not_found")
    outcome = {"video": video if video and id_pattern.fullmatch(video) else None} if saved else None
    return _form_page(page, _values(template), editing=name, source=template["source"], template=template,
                      saved=outcome)


def _lines(text: str) -> dict[str, str] | str:
    """`name=value` lines as a dict; the first line that is not one, as text (the page says which)."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        if not equals:
            return line
        pairs[name.strip()] = value.strip()
    return pairs


def _body(fields: dict[str, str]) -> dict[str, Any]:
    """The API's request body from the form; a value the form cannot shape goes to the schema as typed,
    which refuses it by name (a duration of "soon" is the schema's error about `seconds`)."""
    seconds, scale = fields.get("seconds", "").strip(), fields.get("style_scale", "").strip()
    defaults = _lines(fields.get("defaults", ""))
    if isinstance(defaults, str):
        raise InvalidRequest("defaults", f"the line {defaults[:80]!r} is not name=value")
    return {"description": fields.get("description", "").strip(), "language": fields.get("language", "en"),
            "body": fields.get("body", ""),
            "form": {"industry": fields.get("industry", "").strip(), "style": fields.get("style", "").strip(),
                     "keywords": [k.strip() for k in fields.get("keywords", "").replace("，", ",").split(",")
                                  if k.strip()],
                     "camera": fields.get("camera", "").strip(), "mood": fields.get("mood", "").strip()},
            "seconds": (int(seconds) if seconds.isdigit() else seconds) if seconds else None,
            "size": fields.get("size", "").strip() or None, "defaults": defaults,
            "pre_generate": fields.get("pre_generate") == "on",
            "style": fields.get("default_style", "").strip() or None,
            "style_scale": _number(scale) if scale else None}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # the schema refuses it, naming style_scale


def _save(page: Console, fields: dict[str, str], editing: str | None) -> dict[str, Any]:
    """Through the API's own handlers: the same checks, storage and pre-generation as POST/PUT."""
    ctx = page.ctx
    with ctx.sessions() as session:
        caller = console_caller(session, page.principal.tenant_id)
    body = _body(fields)
    if editing is not None:
        body["reference_image"] = _kept_image(page, editing)
    if editing is None:
        return template_routes.create_template(TemplateCreate.model_validate({**body, "name": fields.get("name", "")}),
                                               ctx, caller)
    return template_routes.replace_template(editing, TemplateUpdate.model_validate(body), ctx, caller)


def _kept_image(page: Console, name: str) -> str | None:
    """The template's stored reference image, sent back as it is: a PUT replaces the whole template, and
    this form does not change the image (its file keeps its SHA-256 name, so nothing is stored again)."""
    with page.ctx.sessions() as session:
        row = template_row(session, page.principal.tenant_id, name)
        key, content_type = (None, None) if row is None else (row.reference_key, row.reference_content_type)
    if key is None:
        return None
    return f"data:{content_type};base64,{base64.b64encode(page.ctx.storage.read(key)).decode()}"


async def _submit(request: Request, editing: str | None) -> Response:
    answer = await posted(request, "templates_edit")
    if isinstance(answer, Response):
        return answer
    page, fields = answer
    if editing is not None and (_find(page, editing) or {}).get("source") != "tenant":
        return page.error(404, "error.not_found")  # the library's templates are read-only; others' are not found
    try:
        saved = await run_in_threadpool(_save, page, fields, editing)
    except refusals as exc:
        error = refusal(page, exc, page_fields, field_of)
        return _form_page(page, fields, editing=editing, error=error, status_code=error.status)
    name = saved["name"]
    pre_generated = saved.get("pre_generated")
    target = f"/templates/{name}?saved=1" + (f"&video={pre_generated['id']}" if pre_generated else "")
    return RedirectResponse(target, status_code=303)


@router.post("/templates/new")
async def create_template(request: Request) -> Response:
    return await _submit(request, None)


@router.post("/templates/{name}")
async def edit_template(request: Request, name: str) -> Response:
    return await _submit(request, name)
