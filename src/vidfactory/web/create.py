"""The Create page: a structured form composed into one prompt, a reference picture (previewed in the
browser), a live quote and screening hint as it changes (htmx posts the form, picture left out, to
/create/quote), and Generate, which submits exactly as `POST /v1/videos` does: the API's schema checks
the fields, the API's image gate and checks read the picture, the same request is built (enhancement
included), and `submit` screens the prompt and the picture and holds. A refusal holds nothing and comes
back beside the field it names (web/errors.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import VideoInput, checked_reference, read_form, validated
from vidfactory.api.render import new_video_object
from vidfactory.api.routes.videos import to_video_request
from vidfactory.api.schemas import VideoCreate
from vidfactory.api.uploads import image_gate
from vidfactory.jobs.submit import Priced, VideoRequest, price_now, submit
from vidfactory.media.reference import ReferenceImage, reference_bytes_max
from vidfactory.tenancy import Caller, console_caller
from vidfactory.web.console import Console, csrf_field
from vidfactory.web.errors import FieldError, field_error, service_errors

__all__ = ["compose_prompt", "router"]

router = APIRouter(include_in_schema=False)
industries = ("tech", "food", "fashion", "travel", "education", "finance")
styles = ("tech", "warm", "cool")
sizes = ("64x64", "128x128", "832x480", "480x832", "1280x720")
durations = ("1", "2", "5", "8")
field_chars_max = 300  # camera, mood, negative prompt (the browser's maxlength; the API's schema decides)
keywords_chars_max = 2000  # room for a pasted description; the quote warns past the model's token limit
reference_field = "reference"
# The form's fields, where an error naming one of them is shown; the API's names differ for two.
form_fields = ("industry", "style", "keywords", "camera", "mood", reference_field, "model", "size", "seconds",
               "negative_prompt", "seed", "enhance")
# The quote never sees the picture: its slot keeps what Generate said about it.
quote_fields = tuple(name for name in form_fields if name != reference_field)
renamed = {"prompt": "keywords", "input_reference": reference_field, "enhance_prompt": "enhance"}
whole_number = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class CreateForm:
    industry: str
    style: str
    keywords: str
    camera: str
    mood: str
    model: str
    size: str
    seconds: str
    negative_prompt: str
    seed: str
    enhance: bool

    @classmethod
    def read(cls, form: dict[str, Any], default_model: str) -> CreateForm:
        """What the browser sent, as text (the API's schema judges it); a choice outside its list is the first."""
        def choice(name: str, allowed: tuple[str, ...]) -> str:
            return form[name] if form.get(name) in allowed else allowed[0]

        def text(name: str) -> str:
            return str(form.get(name, "")).strip()

        return cls(industry=choice("industry", industries), style=choice("style", styles),
                   keywords=text("keywords"), camera=text("camera"), mood=text("mood"),
                   model=text("model") or default_model, size=text("size") or sizes[1],
                   seconds=text("seconds") or durations[0], negative_prompt=text("negative_prompt"),
                   seed=text("seed"), enhance=text("enhance") == "on")

    def api_fields(self) -> dict[str, Any]:
        """The body `POST /v1/videos` would get: a seed that is no whole number is sent as written, for the
        schema to refuse by name."""
        fields: dict[str, Any] = {"prompt": compose_prompt(self), "model": self.model, "size": self.size,
                                  "seconds": self.seconds, "negative_prompt": self.negative_prompt,
                                  "enhance_prompt": self.enhance}
        if self.seed:
            fields["seed"] = int(self.seed) if whole_number.fullmatch(self.seed) else self.seed
        return fields


def compose_prompt(form: CreateForm) -> str:
    """One prompt from the form's parts, in the order a video model reads best: subject, setting, look."""
    parts = [form.keywords, f"{form.industry} scene", f"{form.style} style"]
    parts += [f"camera: {form.camera}"] if form.camera else []
    parts += [f"mood: {form.mood}"] if form.mood else []
    return ", ".join(part for part in parts if part)


def _page(request: Request) -> Console | Response:
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed("create"):
        return page.error(403, "error.forbidden")
    return page


def _models(page: Console) -> list[dict[str, Any]]:
    """The models `/v1/models` lists, and whether each takes a picture (image-to-video)."""
    return [{"id": model.id, "takes_image": model.takes_reference_image} for model in page.ctx.settings.models]


def _render(page: Console, form: CreateForm, error: FieldError | None = None):
    return page.render("create.html", status_code=error.status if error else 200, form=form, error=error,
                       industries=industries, styles=styles, sizes=sizes, durations=durations,
                       models=_models(page), fields=form_fields, keywords_chars_max=keywords_chars_max,
                       field_chars_max=field_chars_max, reference_bytes_max=reference_bytes_max)


@router.get("/create")
def create_page(request: Request) -> Response:
    page = _page(request)
    if not isinstance(page, Console):
        return page
    return _render(page, CreateForm.read({}, page.ctx.settings.models[0].id))


def _caller(page: Console) -> Caller:
    with page.ctx.sessions() as session:
        return console_caller(session, page.principal.tenant_id)


def _video_request(page: Console, caller: Caller, form: CreateForm, reference: ReferenceImage | None = None,
                   ) -> VideoRequest:
    """The request `POST /v1/videos` would build from this form: schema, template-free prompt, enhancement."""
    body = validated(VideoCreate, form.api_fields())
    return to_video_request(page.ctx, caller, VideoInput(body=body, fields={}, reference=reference))


def _assess(page: Console, form: CreateForm) -> dict[str, Any]:
    """The quote, the token limit, the enhanced prompt and the screening hint: the category and what would
    happen, never the matched term."""
    ctx, caller = page.ctx, _caller(page)
    try:
        request = _video_request(page, caller, form)
        priced = price_now(ctx.sessions, ctx.settings, ctx.counters, request, caller.tenant_id)
    except service_errors as exc:
        return {"error": field_error(page.locale, exc, form_fields, renamed)}
    with ctx.sessions() as session:
        verdict = ctx.screens.verdict(session, caller.tenant_id, priced.prompt)
    hint = None if verdict.action == "pass" else {"action": verdict.action, "category": verdict.category}
    return {"error": None, "quote": priced.quote, "hint": hint, "video_request": request, "priced": priced,
            "over_limit": _over_limit(priced), "warnings": _other_warnings(priced)}


def _over_limit(priced: Priced) -> dict[str, int] | None:
    limit = priced.book.prompt_tokens_max
    return {"limit": limit, "tokens": priced.prompt_tokens} if priced.prompt_tokens > limit else None


def _other_warnings(priced: Priced) -> list[str]:
    """The services' warnings (English) besides the token limit, which the page words itself."""
    return [warning for warning in priced.warnings if not warning.startswith("prompt truncated to ")]


async def _posted(request: Request) -> tuple[Console, CreateForm, bytes | None] | Response:
    """The signed-in page, its form and the picture sent (None: none), or the answer that ends the request."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    try:
        fields = await read_form(request, page.ctx.settings.upload_bytes_max, reference_field)
    except service_errors as exc:  # too large, unparsable: only said (its token unread, nothing is done)
        return _render(page, CreateForm.read({}, page.ctx.settings.models[0].id),
                       field_error(page.locale, exc, form_fields, renamed))
    picture = fields.pop(reference_field, None)
    if not page.csrf_ok({csrf_field: fields.get(csrf_field, "")}):
        return page.error(403, "error.csrf")
    form = CreateForm.read(fields, page.ctx.settings.models[0].id)
    # An empty file input sends an empty part; a picture sent as text is the API's to refuse.
    return page, form, picture or None


@router.post("/create/quote")
async def create_quote(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, form, _ = posted
    assessed = await run_in_threadpool(_assess, page, form)
    return page.render("partials/quote.html", form=form, fields=quote_fields, **assessed)


def _generate(page: Console, form: CreateForm, picture: bytes | None) -> dict[str, Any]:
    """As `POST /v1/videos`: the picture through the API's gate and checks, then `submit`."""
    ctx, caller = page.ctx, _caller(page)
    reference = None
    if picture is not None:
        body = validated(VideoCreate, form.api_fields())
        reference = checked_reference(picture, body, image_gate(ctx, caller, needs_balance=True))
    request = _video_request(page, caller, form, reference)
    return submit(ctx.sessions, ctx.settings, ctx.counters, caller, request, new_video_object, screens=ctx.screens,
                  storage=ctx.storage, admissions=ctx.admissions).body


@router.post("/create")
async def create_submit(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, form, picture = posted
    try:
        video = await run_in_threadpool(_generate, page, form, picture)
    except service_errors as exc:  # refused before anything was held: the form again, the error by its field
        return _render(page, form, field_error(page.locale, exc, form_fields, renamed))
    return RedirectResponse(f"/videos/{video['id']}", status_code=303)
