"""The operator's plans (every field of `tenancy.plan_fields`, drawn from the admin API's plan schema with
its limits, edited within them) and price books (the versions, and publishing a new one after previewing
what a sample request costs under it and under the book in force). The same services and schemas as
`/v1/admin/plans` and `/v1/admin/price_books`, audited under the operator's name."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from vidfactory.api.errors import id_pattern
from vidfactory.api.routes.price_books import priced_object, sample_of
from vidfactory.api.schemas import PlanUpdate, PriceBookSample
from vidfactory.billing import pricebooks
from vidfactory.billing.pricebook import PriceBookBody
from vidfactory.tenancy import InvalidPlan, plan_fields, plans_with_tenants, update_plan
from vidfactory.web.console import Console
from vidfactory.web.forms import opened, posted
from vidfactory.web.operators import field_errors, number

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
price_book_chars_max = 64_000  # the proposed book's JSON in the publish form
sample_fields = ("model", "size", "seconds", "input_tokens")


def _field_spec(name: str, value: Any) -> dict[str, Any]:
    """How the form draws one plan field: its kind, its limits and choices, from the API's schema."""
    info = PlanUpdate.model_fields[name]
    bounds = {bound: getattr(rule, bound) for rule in info.metadata for bound in ("ge", "le")
              if getattr(rule, bound, None) is not None}
    if info.annotation is bool:
        kind, choices = "check", ()
    elif get_origin(info.annotation) is Literal:
        kind, choices = "choice", get_args(info.annotation)
    else:
        kind, choices = "number", ()
    return {"name": name, "kind": kind, "choices": choices, "value": value, **bounds}


def _plans(page: Console) -> list[dict[str, Any]]:
    with page.ctx.sessions() as session:
        return [{"id": plan.id, "tenants": tenants, "fields": [_field_spec(name, getattr(plan, name))
                                                              for name in plan_fields]}
                for plan, tenants in plans_with_tenants(session)]


@router.get("/plans")
def plans(request: Request) -> Response:
    page = opened(request, "plans")
    return page if isinstance(page, Response) else page.render("plans.html", plans=_plans(page),
                                                              fields=plan_fields)


def _plan_page(page: Console, plan_id: str, status_code: int = 200, errors: dict[str, str] | None = None,
               values: dict[str, Any] | None = None, message: str = "") -> Response:
    found = [plan for plan in _plans(page) if plan["id"] == plan_id] if id_pattern.fullmatch(plan_id) else []
    if not found:
        return page.error(404, "error.not_found")
    plan = found[0]
    for spec in plan["fields"]:
        spec["value"] = (values or {}).get(spec["name"], spec["value"])
    return page.render("plan.html", status_code=status_code, plan=plan, errors=errors or {}, message=message)


@router.get("/plans/{plan_id}")
def plan(request: Request, plan_id: str) -> Response:
    page = opened(request, "plans")
    if isinstance(page, Response):
        return page
    return _plan_page(page, plan_id, message=page.t("plans.saved") if request.query_params.get("done") else "")


def _posted_changes(form: dict[str, str]) -> dict[str, Any]:
    """Every plan field from the form: a checkbox sent means true; numbers as ints (text stays text)."""
    changes: dict[str, Any] = {}
    for name in plan_fields:
        kind = _field_spec(name, None)["kind"]
        changes[name] = name in form if kind == "check" else number(form.get(name, "")) if kind == "number" \
            else form.get(name, "")
    return changes


@router.post("/plans/{plan_id}")
async def plan_save(request: Request, plan_id: str) -> Response:
    outcome = await posted(request, "plans")
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    changes = _posted_changes(form)
    try:
        checked = PlanUpdate.model_validate(changes).model_dump(exclude_unset=True)
        with page.ctx.sessions.begin() as session:
            if id_pattern.fullmatch(plan_id) is None or update_plan(session, plan_id, checked,
                                                                    actor=page.principal.actor) is None:
                return page.error(404, "error.not_found")
    except ValidationError as exc:
        return _plan_page(page, plan_id, 400, field_errors(page, exc), changes)
    except InvalidPlan as exc:
        return _plan_page(page, plan_id, 400, {exc.param: page.t("plans.active_below_concurrent")}, changes)
    return RedirectResponse(f"/plans/{plan_id}?done=1", status_code=303)


def _price_books(page: Console, status_code: int = 200, body_text: str | None = None,
                 sample: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                 preview: dict[str, Any] | None = None, message: str = "") -> Response:
    with page.ctx.sessions() as session:
        in_force, book = pricebooks.current(session)
        versions = [{"version": row.version, "sha256": row.body_sha256, "in_force": row.version == in_force,
                     "published_at": row.published_at.strftime("%Y-%m-%d %H:%M UTC")}
                    for row in reversed(pricebooks.list_versions(session))]
    defaults = PriceBookSample.model_fields
    shown_sample = sample or {name: "" if defaults[name].is_required() else str(defaults[name].default)
                               for name in sample_fields}
    models = [model.id for model in page.ctx.settings.models]
    shown_sample["model"] = shown_sample["model"] or models[0]
    return page.render("price_books.html", status_code=status_code, versions=versions, in_force=in_force, models=models,
                       body_text=body_text if body_text is not None else json.dumps(
                           book.model_dump(mode="json"), indent=2, ensure_ascii=False),
                       sample=shown_sample, errors=errors or {}, preview=preview, message=message)


@router.get("/price-books")
def price_books(request: Request) -> Response:
    page = opened(request, "price_books")
    if isinstance(page, Response):
        return page
    done = request.query_params.get("published", "")
    return _price_books(page, message=page.t("price_books.published", version=done) if done.isdigit() else "")


def _proposed(page: Console, form: dict[str, str]) -> tuple[PriceBookBody | None, dict[str, str]]:
    """The proposed book from the form's JSON, or the error to show next to it."""
    try:
        return PriceBookBody.model_validate(json.loads(form.get("body", ""))), {}
    except json.JSONDecodeError as exc:
        return None, {"body": page.t("price_books.not_json", line=exc.lineno, column=exc.colno)}
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return None, {"body": page.t("price_books.invalid", where=where, detail=first["msg"])}


@router.post("/price-books")
async def price_book_submit(request: Request) -> Response:
    """`action` preview: the sample priced under both books, nothing published; publish: a new version."""
    outcome = await posted(request, "price_books", chars_max=price_book_chars_max)
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    sample = {name: form.get(name, "") for name in sample_fields}
    body, errors = _proposed(page, form)
    if form.get("action") == "publish" and body is not None:
        try:
            with page.ctx.sessions.begin() as session:
                version = pricebooks.publish(session, body, actor=page.principal.actor)
        except ValueError:
            errors = {"body": page.t("price_books.unknown_error_type")}
        else:
            return RedirectResponse(f"/price-books?published={version}", status_code=303)
    preview = None
    try:
        checked = PriceBookSample.model_validate({name: number(value) if name in ("seconds", "input_tokens")
                                                  else value for name, value in sample.items()})
    except ValidationError as exc:
        errors = {**field_errors(page, exc), **errors}
    else:
        if body is not None and not errors:
            with page.ctx.sessions() as session:
                shown = pricebooks.preview(session, body, sample_of(checked))
            preview = {"version": shown.in_force_version, "in_force": priced_object(shown.in_force),
                       "proposed": priced_object(shown.proposed)}
    return _price_books(page, 400 if errors else 200, form.get("body", ""), sample, errors, preview)
