"""The Batches page: a template × variables as a grid (one row per video), A/B groups taken by the rows in
turn, the whole batch's quote as the grid changes, submission through the same batches service as
`POST /v1/batches`, its progress polled while it runs, the archive, and the A and B clips side by side
with their thumbs up and down. Owners and members create; viewers read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vidfactory.api.errors import id_pattern
from vidfactory.api.routes.batches import batch_object, batch_spec
from vidfactory.api.routes.templates import template_object
from vidfactory.api.schemas import BatchCreate, prompt_chars_max
from vidfactory.db.types import utcnow
from vidfactory.jobs.batches import (BatchExpired, BatchQuote, archive_bytes, batch_reference, find_batch, quote_batch,
                                    status_counts, submit_batch, tenant_batches)
from vidfactory.jobs.prompting import find_template, tenant_templates
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.prompts.library import library
from vidfactory.prompts.templates import name_pattern
from vidfactory.tenancy import console_caller
from vidfactory.web.console import Console
from vidfactory.web.create import durations, sizes
from vidfactory.web.errors import FieldError
from vidfactory.web.forms import opened, posted, posted_lists, refusal, refusals

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
rows_default = 2
rows_max = 50  # rows of one grid (the batch's own limit, batch_items_max, is checked by the service)
batches_shown_max = 50
progress_every_s = 1  # how often a running batch's page asks for its progress
form_fields = ("template", "grid", "groups", "model", "size", "seconds", "seed")
# The API's params as this page's fields: every variable's cells are the grid.
field_of = {"variables": "grid", "prompt": "grid", "ab_groups": "groups", "mode": "grid", "template": "template"}


@dataclass(frozen=True)
class BatchForm:
    template: str
    variables: tuple[str, ...]  # the template's: the grid's columns
    rows: tuple[dict[str, str], ...]
    groups: str  # labels separated by commas; empty: no A/B groups
    model: str
    size: str  # empty: the template's own
    seconds: str
    seed: str

    def group_labels(self) -> list[str]:
        return [label.strip() for label in self.groups.replace("，", ",").split(",") if label.strip()]

    def group_of(self, row: int) -> str:
        """The group the service gives the row's video: rows take the groups in turn."""
        labels = self.group_labels()
        return labels[row % len(labels)] if labels else ""

    def body(self) -> dict[str, Any]:
        """The API's request: the grid's columns zipped, so each row is one video."""
        seed = self.seed.strip()
        return {"template": self.template, "mode": "zip",
                "variables": {name: [row[name] for row in self.rows] for name in self.variables},
                "ab_groups": self.group_labels() or None, "model": self.model or None, "size": self.size or None,
                "seconds": self.seconds or None, "seed": (int(seed) if seed.isdigit() else seed) if seed else None}


def _template(page: Console, name: str) -> dict[str, Any] | None:
    """The library's or the tenant's template as the API shows it (None: it names nothing of theirs)."""
    if name_pattern.fullmatch(name) is None:
        return None
    with page.ctx.sessions() as session:
        try:
            found = find_template(session, page.principal.tenant_id, name)
        except InvalidRequest:
            return None
    return template_object(found, "library" if name in library else "tenant")


async def _read_form(request: Request, page: Console, fields: dict[str, str]) -> BatchForm | None:
    """The grid as posted: rows with every cell empty are left out; "add_row" adds an empty one."""
    template = _template(page, fields.get("template", ""))
    if template is None:
        return None
    variables = tuple(template["variables"])
    columns = {name: await posted_lists(request, f"cell.{name}") for name in variables}
    count = min(max((len(values) for values in columns.values()), default=0), rows_max)
    rows = [{name: (columns[name][i] if i < len(columns[name]) else "").strip() for name in variables}
            for i in range(count)]
    rows = [row for row in rows if any(row.values())]
    if fields.get("action") == "add_row" and len(rows) < rows_max:
        rows.append(dict.fromkeys(variables, ""))
    return BatchForm(template=template["name"], variables=variables, rows=tuple(rows),
                     groups=fields.get("groups", ""), model=fields.get("model", ""), size=fields.get("size", ""),
                     seconds=fields.get("seconds", ""), seed=fields.get("seed", ""))


def _choices(page: Console) -> dict[str, Any]:
    with page.ctx.sessions() as session:
        own = [t.name for t in tenant_templates(session, page.principal.tenant_id)]
    return {"template_names": own + sorted(library), "sizes": sizes, "durations": durations,
            "models": [model.id for model in page.ctx.settings.models], "fields": form_fields}


def _form_page(page: Console, form: BatchForm | None, template: dict[str, Any] | None = None,
               error: FieldError | None = None, status_code: int = 200) -> Response:
    return page.render("batch_new.html", status_code=status_code, form=form, shown=template, error=error,
                       **_choices(page))


@router.get("/batches")
def batches_page(request: Request) -> Response:
    page = opened(request, "batches")
    if not isinstance(page, Console):
        return page
    with page.ctx.sessions() as session:
        batches = tenant_batches(session, page.principal.tenant_id, batches_shown_max)
        counts = status_counts(session, batches)
        shown = [{"id": b.id, "template": b.template, "created_at": b.created_at, "items_total": b.items_total,
                  "counts": counts[b.id]} for b in batches]
    return page.render("batches.html", batches=shown, can_create=page.allowed("batches_create"))


@router.get("/batches/new")
def new_batch(request: Request, template: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    page = opened(request, "batches_create")
    if not isinstance(page, Console):
        return page
    shown = None if template is None else _template(page, template)
    if shown is None:
        return _form_page(page, None, status_code=200 if template is None else 404)
    variables = tuple(shown["variables"])
    rows = tuple(dict.fromkeys(variables, "") for _ in range(rows_default if variables else 1))
    form = BatchForm(template=shown["name"], variables=variables, rows=rows, groups="A, B", model="",
                     size="", seconds="", seed="")
    return _form_page(page, form, shown)


def _caller(page: Console):
    with page.ctx.sessions() as session:
        return console_caller(session, page.principal.tenant_id)


def _quote(page: Console, form: BatchForm) -> BatchQuote:
    ctx = page.ctx
    spec = batch_spec(BatchCreate.model_validate(form.body()))
    reference = batch_reference(ctx.sessions, ctx.storage, page.principal.tenant_id, form.template)
    return quote_batch(ctx.sessions, ctx.settings, ctx.counters, _caller(page), spec, prompt_chars_max,
                       screens=ctx.screens, reference=reference)


def _submit(page: Console, form: BatchForm) -> dict[str, Any]:
    """As `POST /v1/batches` (not atomic: an item the policy blocks is reported, the rest go ahead)."""
    ctx = page.ctx
    spec = batch_spec(BatchCreate.model_validate(form.body()))
    reference = batch_reference(ctx.sessions, ctx.storage, page.principal.tenant_id, form.template)
    outcome = submit_batch(ctx.sessions, ctx.settings, ctx.counters, _caller(page), spec, prompt_chars_max,
                           batch_object, None, screens=ctx.screens, storage=ctx.storage, reference=reference)
    return outcome.body


async def _posted_form(request: Request) -> tuple[Console, BatchForm, dict[str, Any]] | Response:
    answer = await posted(request, "batches_create")
    if isinstance(answer, Response):
        return answer
    page, fields = answer
    form = await _read_form(request, page, fields)
    if form is None:
        return page.error(404, "error.not_found")
    return page, form, _template(page, form.template)


@router.post("/batches/quote")
async def batch_quote_part(request: Request) -> Response:
    """The quote box alone (htmx posts the grid here as it changes); errors fill the fields' slots."""
    answer = await _posted_form(request)
    if isinstance(answer, Response):
        return answer
    page, form, _ = answer
    if not form.rows and form.variables:
        return page.render("partials/batch_quote.html", quote=None, error=None, form=form, fields=form_fields)
    try:
        quote = await run_in_threadpool(_quote, page, form)
    except refusals as exc:
        return page.render("partials/batch_quote.html", quote=None, error=refusal(page, exc, form_fields, field_of),
                           form=form, fields=form_fields)
    return page.render("partials/batch_quote.html", quote=quote, error=None, form=form, fields=form_fields)


@router.post("/batches")
async def create_batch(request: Request) -> Response:
    answer = await _posted_form(request)
    if isinstance(answer, Response):
        return answer
    page, form, template = answer
    if (await request.form()).get("action") == "add_row":
        return _form_page(page, form, template)
    try:
        created = await run_in_threadpool(_submit, page, form)
    except refusals as exc:
        error = refusal(page, exc, form_fields, field_of)
        return _form_page(page, form, template, error, status_code=error.status)
    return RedirectResponse(f"/batches/{created['id']}", status_code=303)


def _batch(page: Console, batch_id: str) -> dict[str, Any] | None:
    """The batch as the API shows it, or None when it is missing or another tenant's (one answer: 404)."""
    if id_pattern.fullmatch(batch_id) is None:
        return None
    with page.ctx.sessions() as session:
        batch = find_batch(session, page.principal.tenant_id, batch_id)
        return None if batch is None else batch_object(session, batch)


def _progress(batch: dict[str, Any]) -> dict[str, Any]:
    counts = batch["counts"]
    running = counts["queued"] + counts["in_progress"]
    made = len(batch["items"])
    return {"finished": made - running, "made": made, "done": running == 0, "every_s": progress_every_s}


def _opened_batch(request: Request, batch_id: str) -> tuple[Console, dict[str, Any]] | Response:
    page = opened(request, "batches")
    if not isinstance(page, Console):
        return page
    batch = _batch(page, batch_id)
    if batch is None:
        return page.error(404, "error.not_found")
    return page, batch


@router.get("/batches/{batch_id}")
def batch_page(request: Request, batch_id: str) -> Response:
    answer = _opened_batch(request, batch_id)
    if isinstance(answer, Response):
        return answer
    page, batch = answer
    return page.render("batch.html", batch=batch, progress=_progress(batch))


@router.get("/batches/{batch_id}/progress")
def batch_progress(request: Request, batch_id: str) -> Response:
    """The progress panel alone: the page swaps it in every `progress_every_s` until nothing runs."""
    answer = _opened_batch(request, batch_id)
    if isinstance(answer, Response):
        return answer
    page, batch = answer
    return page.render("partials/batch_progress.html", batch=batch, progress=_progress(batch))


@router.get("/batches/{batch_id}/archive")
def batch_archive(request: Request, batch_id: str) -> Response:
    page = opened(request, "batches")
    if not isinstance(page, Console):
        return page
    if id_pattern.fullmatch(batch_id) is None:
        return page.error(404, "error.not_found")
    with page.ctx.sessions() as session:
        batch = find_batch(session, page.principal.tenant_id, batch_id)
        if batch is None:
            return page.error(404, "error.not_found")
        try:
            archive = archive_bytes(session, page.ctx.storage, batch, utcnow())
        except BatchExpired:
            return page.error(410, "batches.expired")
    return Response(archive, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{batch_id}.zip"'})


def _rounds(batch: dict[str, Any]) -> tuple[list[str], list[dict[str, dict[str, Any]]], dict[str, dict[str, int]]]:
    """The groups in order, the items side by side (round r holds item r×groups + g for each group g),
    and each group's thumbs up and down in all."""
    items = [item for item in batch["items"] if item["ab_group"]]
    groups = list(dict.fromkeys(item["ab_group"] for item in sorted(items, key=lambda i: i["item"])))
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    totals = {group: {"up": 0, "down": 0} for group in groups}
    for item in items:
        rounds.setdefault(item["item"] // len(groups), {})[item["ab_group"]] = item
        for rating in ("up", "down"):
            totals[item["ab_group"]][rating] += item["feedback"][rating]
    return groups, [rounds[r] for r in sorted(rounds)], totals


@router.get("/batches/{batch_id}/compare")
def batch_compare(request: Request, batch_id: str) -> Response:
    answer = _opened_batch(request, batch_id)
    if isinstance(answer, Response):
        return answer
    page, batch = answer
    groups, rounds, totals = _rounds(batch)
    return page.render("batch_compare.html", batch=batch, groups=groups, rounds=rounds, totals=totals)

