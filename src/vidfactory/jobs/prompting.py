"""From what a request asks for (a prompt, or a template and its variables; an enhancement) to the
prompt that reaches the model. Reads the tenant's templates; the prompts package does the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.db.models import Template as TemplateRow
from vidfactory.db.session import SessionFactory
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.media.reference import ReferenceImage, ReferenceRefused, read_reference
from vidfactory.prompts import enhance as enhancement
from vidfactory.prompts.library import builtin
from vidfactory.prompts.templates import Template, TemplateImage, render
from vidfactory.settings import Settings
from vidfactory.storage import Storage
from vidfactory.styles.catalog import StyleRef

__all__ = ["PromptRequest", "ResolvedPrompt", "enhance_mode", "find_template", "llm_endpoint", "resolve_prompt",
           "template_from_row", "template_reference", "template_row", "template_rows", "tenant_templates"]


@dataclass(frozen=True)
class PromptRequest:
    """Exactly one of `prompt` and `template`; `variables` only with a template."""

    prompt: str | None = None
    template: str | None = None
    variables: dict[str, str] | None = None
    enhance: bool = False

    def __post_init__(self) -> None:
        assert (self.prompt is None) != (self.template is None), "a prompt or a template, not both"
        assert self.template is not None or self.variables is None, "variables belong to a template"


@dataclass(frozen=True)
class ResolvedPrompt:
    prompt: str  # what reaches the model (before token truncation)
    user_prompt: str  # what the user wrote, or what the template rendered
    template: str | None
    variables: dict[str, str] | None
    enhancement: str | None
    seconds: int | None  # the template's defaults
    size: str | None
    warnings: tuple[str, ...]
    reference: TemplateImage | None = None  # the template's image (not yet read from storage)
    style: StyleRef | None = None  # the template's default style


def template_from_row(row: TemplateRow) -> Template:
    form: dict[str, Any] = row.form
    return Template(name=row.name, body=row.body, language=row.language, description=row.description,
                    industry=form.get("industry", ""), style=form.get("style", ""),
                    keywords=tuple(form.get("keywords", ())), camera=form.get("camera", ""),
                    mood=form.get("mood", ""), seconds=row.seconds, size=row.size,
                    reference_image=row.reference_image, reference=_stored_image(row),
                    defaults=dict(row.defaults), default_style=row.style_id, default_style_scale=row.style_scale)


def _stored_image(row: TemplateRow) -> TemplateImage | None:
    if row.reference_key is None:
        return None
    assert row.reference_sha256 is not None and row.reference_width is not None
    assert row.reference_height is not None and row.reference_content_type is not None
    return TemplateImage(key=row.reference_key, sha256=row.reference_sha256, width=row.reference_width,
                         height=row.reference_height, content_type=row.reference_content_type)


def template_reference(storage: Storage, template: str, image: TemplateImage) -> ReferenceImage:
    """The template's image, read back and checked: the job stores its own copy of these bytes."""
    try:
        reference = read_reference(storage.read(image.key))
    except FileNotFoundError as exc:
        # The template was replaced or deleted between reading its row and its file.
        raise InvalidRequest("template", f"template {template!r} changed while this request read it; send "
                                         "the request again", code="template_changed") from exc
    except ReferenceRefused as exc:
        raise InvalidRequest("template", f"template {template!r}: its stored image is unusable ({exc}); save "
                                         "the template again") from exc
    if reference.sha256 != image.sha256:
        raise InvalidRequest("template", f"template {template!r}: its stored image does not match its "
                                         "SHA-256; save the template again")
    return reference


def find_template(session: Session, tenant_id: str, name: str) -> Template:
    """The tenant's own template of that name, else the built-in one (names never collide: a tenant
    cannot create a template under a built-in name)."""
    row = template_row(session, tenant_id, name)
    template = template_from_row(row) if row is not None else builtin(name)
    if template is None:
        raise InvalidRequest("template", f"no template {name!r}; GET /v1/templates lists them",
                             code="template_not_found")
    return template


def tenant_templates(session: Session, tenant_id: str) -> list[Template]:
    """The tenant's own templates by name (the built-in library is `prompts.library.library`)."""
    return [template_from_row(row) for row in template_rows(session, tenant_id)]


def template_rows(session: Session, tenant_id: str) -> list[TemplateRow]:
    """The tenant's own templates as stored (with when they were saved and whether they pre-generate)."""
    return list(session.scalars(select(TemplateRow).where(TemplateRow.tenant_id == tenant_id)
                                .order_by(TemplateRow.name)))


def template_row(session: Session, tenant_id: str, name: str) -> TemplateRow | None:
    """The tenant's own template of that name as stored; another tenant's is None, as a missing one."""
    return session.scalar(select(TemplateRow).where(TemplateRow.tenant_id == tenant_id, TemplateRow.name == name))


def llm_endpoint(settings: Settings) -> enhancement.LlmEndpoint | None:
    if not settings.enhance_llm_url:
        return None
    return enhancement.LlmEndpoint(url=settings.enhance_llm_url, model=settings.enhance_llm_model,
                                   api_key=settings.enhance_llm_api_key.get_secret_value(),
                                   timeout_s=settings.enhance_llm_timeout_s)


def enhance_mode(settings: Settings) -> str:
    """`enhance_prompt: true` uses the LLM when one is configured, the rules otherwise."""
    return "llm" if settings.enhance_llm_url else "rules"


def resolve_prompt(sessions: SessionFactory, settings: Settings, tenant_id: str, request: PromptRequest,
                   chars_max: int, template: Template | None = None) -> ResolvedPrompt:
    """Render, then enhance. `template` saves the lookup when a batch renders one template many times.
    Raises PromptError (and InvalidRequest for an unknown template); creates nothing."""
    seconds = size = None
    user_prompt = request.prompt
    if request.template is not None:
        if template is None:
            with sessions() as session:
                template = find_template(session, tenant_id, request.template)
        if template.reference_image is not None:
            # Saved as a URL before images were stored; fetching it now would reach wherever it points.
            raise InvalidRequest("template", f"template {template.name!r} has a reference image URL, which "
                                             "is not fetched; save the template again with the image as a "
                                             "data URL", code="unsupported_parameter")
        rendered = render(template, request.variables or {}, chars_max)
        user_prompt, seconds, size = rendered.prompt, rendered.seconds, rendered.size
    assert user_prompt is not None
    prompt, mode, warnings = user_prompt, None, ()
    if request.enhance:
        enhanced = enhancement.enhance(user_prompt, enhance_mode(settings), llm_endpoint(settings))
        prompt, mode, warnings = enhanced.prompt, enhanced.mode, enhanced.warnings
    return ResolvedPrompt(prompt=prompt, user_prompt=user_prompt, template=request.template,
                          variables=None if request.template is None else dict(request.variables or {}),
                          enhancement=mode, seconds=seconds, size=size, warnings=tuple(warnings),
                          reference=None if template is None else template.reference,
                          style=None if template is None or template.default_style is None else
                          StyleRef(template.default_style, template.default_style_scale))
