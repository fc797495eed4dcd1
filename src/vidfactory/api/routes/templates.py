"""/v1/templates: the tenant's templates (create, list, read, replace, delete) beside the built-in
library (read-only). A template is checked when it is saved: a body that could never render is a 400.

A template's reference image is sent as a data URL when it is saved (checked and screened like
`input_reference`),
stored under the tenant as `<tenant>/templates/<template id>/reference-<sha256>.<ext>` and answered as
its SHA-256, size and format, never its bytes. Each job made from the template stores its own copy, so
replacing or deleting the template never touches a job's first frame."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.api.body import VideoInput, data_url_reference
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, not_found
from vidfactory.api.render import timestamp, video_object
from vidfactory.api.routes.videos import to_video_request
from vidfactory.api.schemas import TemplateCreate, TemplateUpdate, VideoCreate, prompt_chars_max
from vidfactory.db.models import Template as TemplateRow
from vidfactory.db.types import utcnow
from vidfactory.jobs.prompting import template_from_row, template_row, template_rows
from vidfactory.prompts.errors import PromptError
from vidfactory.prompts.library import library
from vidfactory.jobs.submit import submit
from vidfactory.media.reference import ReferenceImage
from vidfactory.prompts.templates import Template, TemplateImage, check_template, name_pattern, render
from vidfactory.storage import Storage, tenant_key
from vidfactory.styles import catalog as styles_catalog
from vidfactory.styles.errors import InvalidStyle
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
        "reference_image": _image_object(template),
        "defaults": dict(template.defaults),
        "pre_generate": row is not None and row.pre_generate,
        "style": None if template.default_style is None else {"id": template.default_style,
                                                               "scale": template.default_style_scale},
        "variables": sorted(check_template(template)),
        "created_at": None if row is None else timestamp(row.created_at),
        "updated_at": None if row is None else timestamp(row.updated_at),
    }


def _image_object(template: Template) -> dict[str, Any] | None:
    """The image's identity, as the video object's input_reference: megabytes of base64 stay stored."""
    if template.reference is not None:
        image = template.reference
        return {"sha256": image.sha256, "width": image.width, "height": image.height,
                "content_type": image.content_type}
    if template.reference_image is not None:  # a URL saved before images were stored (never fetched)
        return {"url": template.reference_image}
    return None


def _sent_image(ctx: AppContext, body: TemplateCreate | TemplateUpdate) -> ReferenceImage | None:
    """Checked and screened before anything is stored (a 400 naming reference_image)."""
    if body.reference_image is None:
        return None
    image = data_url_reference(body.reference_image, "reference_image")
    ctx.screens.images.check(image, "reference_image")
    return image


def _stored_as(tenant_id: str, row_id: str, image: ReferenceImage | None) -> TemplateImage | None:
    """Named by its SHA-256: a request that read the template before a replacement still finds its file
    (until the old one is removed), and never finds other bytes under the name it read."""
    if image is None:
        return None
    key = tenant_key(tenant_id, "templates", row_id, f"reference-{image.sha256}.{image.extension}")
    return TemplateImage(key=key, sha256=image.sha256, width=image.width, height=image.height,
                         content_type=image.content_type)


def _default_style(ctx: AppContext, caller: Caller, body: TemplateCreate | TemplateUpdate) -> str | None:
    """The id of the tenant's style the template names (400 naming `style` when it has none such)."""
    if body.style is None:
        return None
    with ctx.sessions() as session:
        style = styles_catalog.find(session, caller.tenant_id, body.style)
    if style is None:
        raise InvalidStyle("style", f"no style {body.style!r}", code="style_not_found")
    if body.style_scale is not None and body.style_scale > ctx.settings.style_scale_max:
        raise InvalidStyle("style_scale", f"a style's scale must be between 0 and {ctx.settings.style_scale_max:g}")
    return style.id


def _as_template(name: str, body: TemplateCreate | TemplateUpdate,
                 reference: TemplateImage | None, style_id: str | None = None) -> Template:
    """Checked before it is stored: refuses bad syntax, what the sandbox forbids, stray defaults."""
    template = Template(name=name, body=body.body, language=body.language, description=body.description,
                        industry=body.form.industry, style=body.form.style, keywords=tuple(body.form.keywords),
                        camera=body.form.camera, mood=body.form.mood, seconds=body.seconds, size=body.size,
                        reference=reference, defaults=dict(body.defaults), default_style=style_id,
                        default_style_scale=None if style_id is None else body.style_scale)
    check_template(template)
    return template


def _row_values(template: Template) -> dict[str, Any]:
    image = template.reference
    return {"description": template.description, "language": template.language, "body": template.body,
            "form": {"industry": template.industry, "style": template.style, "keywords": list(template.keywords),
                     "camera": template.camera, "mood": template.mood},
            "seconds": template.seconds, "size": template.size, "reference_image": template.reference_image,
            "reference_key": None if image is None else image.key,
            "reference_sha256": None if image is None else image.sha256,
            "reference_width": None if image is None else image.width,
            "reference_height": None if image is None else image.height,
            "reference_content_type": None if image is None else image.content_type,
            "defaults": dict(template.defaults), "style_id": template.default_style,
            "style_scale": template.default_style_scale}


def _forget(storage: Storage, key: str | None, kept: str | None = None) -> None:
    """Removes a template's file that no committed row names (`kept` is the one that still does)."""
    if key is not None and key != kept:
        storage.delete(key)


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
                       screens=ctx.screens, storage=ctx.storage, admissions=ctx.admissions)
    return submitted.body


def _owned(session: Session, caller: Caller, name: str) -> TemplateRow:
    """A library template is read-only (409); another tenant's answers exactly like a missing one."""
    if name in library:
        raise ApiError(409, "read_only_template", f"{name!r} is a built-in template; copy it under another name",
                       param="name")
    row = template_row(session, caller.tenant_id, name) if name_pattern.fullmatch(name) is not None else None
    if row is None:
        raise not_found("template", name, "name")
    return row


@router.post("", status_code=201)
def create_template(body: TemplateCreate, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    if body.name in library:
        raise ApiError(409, "template_exists", f"{body.name!r} is a built-in template name", param="name")
    image = _sent_image(ctx, body)
    row_id = f"tpl_{uuid.uuid4().hex}"
    template = _as_template(body.name, body, _stored_as(caller.tenant_id, row_id, image),
                            _default_style(ctx, caller, body))
    if body.pre_generate:
        _defaults_rendered(template)
    key = None if template.reference is None else template.reference.key
    try:
        with ctx.sessions.begin() as session:
            if image is not None and key is not None:  # the file exists before the row that names it
                ctx.storage.put(key, image.data, content_type=image.content_type)
            row = TemplateRow(id=row_id, tenant_id=caller.tenant_id, name=template.name,
                              pre_generate=body.pre_generate, **_row_values(template))
            session.add(row)
            session.flush()
            created = template_object(template, "tenant", row)
    except IntegrityError as exc:  # the (tenant, name) unique constraint: also two racing creates
        _forget(ctx.storage, key)
        raise ApiError(409, "template_exists", f"template {body.name!r} already exists", param="name") from exc
    except BaseException:
        _forget(ctx.storage, key)
        raise
    if body.pre_generate:
        try:
            created["pre_generated"] = _pre_generate(ctx, caller, template.name)
        except Exception:
            # Nothing changes when pre-generation is refused (balance, limits, screening): undo the save.
            with ctx.sessions.begin() as session:
                session.delete(_owned(session, caller, template.name))
            _forget(ctx.storage, key)
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
        data += [template_object(template_from_row(row), "tenant", row)
                 for row in template_rows(session, caller.tenant_id)]
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
    turned on, or the reference image changed); a refused pre-generation leaves the template as it was.
    A PUT without reference_image removes the template's image (the whole template is replaced)."""
    image = _sent_image(ctx, body)
    with ctx.sessions() as session:  # the row's id names its image file
        row_id = _owned(session, caller, name).id
    template = _as_template(name, body, _stored_as(caller.tenant_id, row_id, image), _default_style(ctx, caller, body))
    rendered = _defaults_rendered(template) if body.pre_generate else None
    new_key = None if template.reference is None else template.reference.key
    try:
        with ctx.sessions.begin() as session:
            row = _owned(session, caller, name)
            assert row.id == row_id, "the template was deleted and created again meanwhile"
            old_key = row.reference_key
            before = {key: getattr(row, key)
                      for key in (*_row_values(template), "pre_generate", "updated_at")}
            previous = template_from_row(row)
            stale = rendered is not None and (not row.pre_generate or _renders_otherwise(previous, rendered)
                                              or old_key != new_key)
            if image is not None and new_key is not None and new_key != old_key:
                ctx.storage.put(new_key, image.data, content_type=image.content_type)
            for key, value in {**_row_values(template), "pre_generate": body.pre_generate}.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.flush()
            replaced = template_object(template, "tenant", row)
    except BaseException:
        _forget(ctx.storage, new_key, kept=_current_key(ctx, caller, name))
        raise
    if stale:
        try:
            replaced["pre_generated"] = _pre_generate(ctx, caller, name)
        except Exception:
            with ctx.sessions.begin() as session:
                row = _owned(session, caller, name)
                for key, value in before.items():
                    setattr(row, key, value)
            _forget(ctx.storage, new_key, kept=old_key)
            raise
    _forget(ctx.storage, old_key, kept=new_key)
    return replaced


def _current_key(ctx: AppContext, caller: Caller, name: str) -> str | None:
    with ctx.sessions() as session:
        row = template_row(session, caller.tenant_id, name)
        return None if row is None else row.reference_key


def _renders_otherwise(previous: Template, rendered: tuple[str, int | None, str | None]) -> bool:
    try:
        return _defaults_rendered(previous) != rendered
    except PromptError:  # the old template could not be pre-generated at all
        return True


@router.delete("/{name}")
def delete_template(name: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Jobs made from it keep its name, variables and their own copy of its image; only the template goes."""
    with ctx.sessions.begin() as session:
        row = _owned(session, caller, name)
        key = row.reference_key
        session.delete(row)
    _forget(ctx.storage, key)
    return {"object": "template.deleted", "name": name, "deleted": True}
