"""The Create page: a structured form composed into one prompt, a live quote and screening hint as it
changes (htmx posts the form to /create/quote), and Generate, which submits like `POST /v1/videos`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vidfactory.api.render import video_object
from vidfactory.jobs.submit import VideoRequest, price_now, submit
from vidfactory.tenancy import console_caller
from vidfactory.web.console import Console
from vidfactory.web.errors import FieldError, field_error, service_errors

__all__ = ["compose_prompt", "router"]

router = APIRouter(include_in_schema=False)
industries = ("tech", "food", "fashion", "travel", "education", "finance")
styles = ("tech", "warm", "cool")
sizes = ("64x64", "128x128", "832x480", "480x832", "1280x720")
durations = ("1", "2", "5", "8")
field_chars_max = 300
seed_max = 2**32 - 1
# The form's fields, where an error naming one of them is shown; the API calls the composed text "prompt".
form_fields = ("industry", "style", "keywords", "camera", "mood", "model", "size", "seconds", "negative_prompt",
               "seed")
renamed = {"prompt": "keywords"}


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
    seed: int | None

    @classmethod
    def read(cls, form: dict[str, str], default_model: str) -> CreateForm:
        """What the browser sent, bounded; choices outside the lists fall back to the first one."""
        def choice(name: str, allowed: tuple[str, ...]) -> str:
            return form.get(name) if form.get(name) in allowed else allowed[0]

        seed_text = form.get("seed", "").strip()
        seed = int(seed_text) if seed_text.isdigit() and int(seed_text) <= seed_max else None
        return cls(industry=choice("industry", industries), style=choice("style", styles),
                   keywords=form.get("keywords", "")[:field_chars_max].strip(),
                   camera=form.get("camera", "")[:field_chars_max].strip(),
                   mood=form.get("mood", "")[:field_chars_max].strip(),
                   model=form.get("model") or default_model, size=form.get("size") or sizes[1],
                   seconds=form.get("seconds") or durations[0],
                   negative_prompt=form.get("negative_prompt", "")[:field_chars_max].strip(), seed=seed)


def compose_prompt(form: CreateForm) -> str:
    """One prompt from the form's parts, in the order a video model reads best: subject, setting, look."""
    parts = [form.keywords, f"{form.industry} scene", f"{form.style} style"]
    parts += [f"camera: {form.camera}"] if form.camera else []
    parts += [f"mood: {form.mood}"] if form.mood else []
    return ", ".join(part for part in parts if part)


def _request(form: CreateForm) -> VideoRequest:
    return VideoRequest(prompt=compose_prompt(form), model=form.model, seconds=form.seconds, size=form.size,
                        negative_prompt=form.negative_prompt, seed=form.seed)


def _page(request: Request, role_page: str = "create") -> Console | Response:
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed(role_page):
        return page.error(403, "error.forbidden")
    return page


def _choices(page: Console) -> dict[str, Any]:
    return {"industries": industries, "styles": styles, "sizes": sizes, "durations": durations,
            "models": [model.id for model in page.ctx.settings.models], "fields": form_fields}


def _error(page: Console, exc: BaseException) -> FieldError:
    return field_error(page.locale, exc, form_fields, renamed)


@router.get("/create")
def create_page(request: Request) -> Response:
    page = _page(request)
    if not isinstance(page, Console):
        return page
    form = CreateForm.read({}, page.ctx.settings.models[0].id)
    return page.render("create.html", form=form, quote=None, hint=None, error=None, **_choices(page))


def _assess(page: Console, form: CreateForm) -> dict[str, Any]:
    """The quote and the screening hint: the category and what would happen, never the matched term."""
    ctx, tenant_id = page.ctx, page.principal.tenant_id
    try:
        priced = price_now(ctx.sessions, ctx.settings, ctx.counters, _request(form), tenant_id)
    except service_errors as exc:
        return {"quote": None, "hint": None, "error": _error(page, exc)}
    with ctx.sessions() as session:
        verdict = ctx.screens.verdict(session, tenant_id, priced.prompt)
    hint = None if verdict.action == "pass" else {"action": verdict.action, "category": verdict.category}
    return {"quote": priced.quote, "warnings": priced.warnings, "hint": hint, "error": None}


async def _posted_form(request: Request) -> tuple[Console, CreateForm] | Response:
    """The signed-in page and its form, or the answer that ends the request (sign-in, CSRF refusal)."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    fields = {key: str(value) for key, value in (await request.form()).items() if isinstance(value, str)}
    if not page.csrf_ok(fields):
        return page.error(403, "error.csrf")
    return page, CreateForm.read(fields, page.ctx.settings.models[0].id)


@router.post("/create/quote")
async def create_quote(request: Request) -> Response:
    posted = await _posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    assessed = await run_in_threadpool(_assess, page, form)
    return page.render("partials/quote.html", prompt=compose_prompt(form), fields=form_fields, **assessed)


@router.post("/create")
async def create_submit(request: Request) -> Response:
    posted = await _posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    ctx, tenant_id = page.ctx, page.principal.tenant_id

    def generate() -> dict[str, Any]:
        with ctx.sessions() as session:
            caller = console_caller(session, tenant_id)
        return submit(ctx.sessions, ctx.settings, ctx.counters, caller, _request(form), video_object,
                      screens=ctx.screens).body

    try:
        video = await run_in_threadpool(generate)
    except service_errors as exc:  # refused before anything was held: the form again, the error by its field
        error = _error(page, exc)
        return page.render("create.html", status_code=error.status, form=form, quote=None, hint=None, error=error,
                           **_choices(page))
    return RedirectResponse(f"/videos/{video['id']}", status_code=303)
