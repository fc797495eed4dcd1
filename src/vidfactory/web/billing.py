"""The Billing page (owners): balance, vouchers, usage by day and by model drawn as server-rendered SVG
bars (no script, no chart library), monthly statements to download, and the price book in force read as
prices. Everything comes from the services the API calls (`billing.ledger`, `statements`, `pricebooks`)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from vidfactory.api.errors import ApiError
from vidfactory.billing import ledger, pricebooks, voucher_codes
from vidfactory.billing.pricebook import PriceBookBody, model_price, quote
from vidfactory.billing.statements import StatementError, statement, statement_file, usage
from vidfactory.db.types import utcnow
from vidfactory.tenancy import find_tenant
from vidfactory.web.console import Console
from vidfactory.web.errors import field_error
from vidfactory.web.forms import opened, posted

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
page_name = "billing"
grants_shown_max = 20
statement_months_max = 12  # the newest months offered; older ones stay one API call away
sample_prompt_tokens = 100  # the price book's table reads as "a prompt of this many tokens costs …"


def _bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's charged tokens and its share of the largest (0–1), which the template draws as a bar."""
    top = max((row["charged_tokens"] for row in rows), default=0)
    return [{"label": row["group"], "tokens": row["charged_tokens"], "jobs": row["jobs"],
             "share": row["charged_tokens"] / top if top else 0.0} for row in rows]


def _days(by_day: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar per day of the range, days without charges included (as zero)."""
    charged = {row["group"]: row for row in by_day["data"]}
    first, end = date.fromisoformat(by_day["from"]), date.fromisoformat(by_day["to"])
    days = [(first + timedelta(days=offset)).isoformat() for offset in range((end - first).days)]
    return _bars([charged.get(day, {"group": day, "charged_tokens": 0, "jobs": 0}) for day in days])


def _months(created_at: datetime, now: datetime) -> list[str]:
    """Statement months, newest first: this one back to the tenant's first, at most statement_months_max."""
    year, month = now.year, now.month
    first = (created_at.year, created_at.month)
    months = []
    while (year, month) >= first and len(months) < statement_months_max:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def _model_prices(book: PriceBookBody, version: int, model_id: str) -> dict[str, Any]:
    """One model's prices as a table: per resolution tier and duration, the factor (or fixed output
    tokens) and what a sample prompt costs, quoted by the same function that prices a request."""
    price = model_price(book, version, model_id)
    table = price.get("ratio_k") or price["table_output_tokens"]
    priced = book.for_model(model_id)
    rows = []
    for tier in book.resolution_tiers:
        side = tier.short_side_max_px
        cells = [{"factor": table[tier.name][str(bucket)],
                  "quote": quote(priced, input_tokens=min(sample_prompt_tokens, book.prompt_tokens_max),
                                 width=side, height=side, seconds=bucket)}
                 for bucket in book.duration_buckets_s]
        rows.append({"tier": tier.name, "cells": cells})
    return {"id": model_id, "source": price["source"], "method": price["method"], "rows": rows}


def _price_book(session: Session, tenant_id: str, model_ids: list[str]) -> dict[str, Any]:
    version, book = pricebooks.for_tenant(session, tenant_id)
    return {"version": version, "book": book, "buckets": book.duration_buckets_s,
            "sample_tokens": min(sample_prompt_tokens, book.prompt_tokens_max),
            "cache_hit_percent": int(book.cache_hit_charge_ratio * 100),
            "models": [_model_prices(book, version, model_id) for model_id in model_ids]}


def _render(page: Console, status_code: int = 200, **shown: Any) -> Response:
    """The whole page; `shown` carries what one answer adds (a redeemed voucher, or the code's error)."""
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        grants = [{"id": grant.id, "amount": grant.amount, "memo": grant.memo, "created_at": grant.created_at,
                   "expires_at": grant.expires_at, "expired": None if expiry is None else expiry.amount}
                  for grant, expiry in ledger.voucher_grants(session, tenant_id, grants_shown_max)]
        by_day = usage(session, tenant_id, start=None, end=None, group_by="day")
        by_model = usage(session, tenant_id, start=None, end=None, group_by="model")
        values = {"balance": ledger.balance(session, tenant_id), "vouchers": ledger.voucher_balance(session, tenant_id),
                  "grants": grants, "days": _days(by_day), "models": _bars(by_model["data"]),
                  "usage_from": by_day["from"], "usage_to": by_day["to"],
                  "usage_total": by_day["total_charged_tokens"],
                  "months": _months(find_tenant(session, tenant_id).created_at, utcnow()),
                  "prices": _price_book(session, tenant_id, [model.id for model in page.ctx.settings.models])}
    return page.render("billing.html", status_code=status_code,
                       **{"message": "", "redeem_error": None, "form": {}, **values, **shown})


@router.get("/billing")
def billing(request: Request) -> Response:
    page = opened(request, page_name)
    return _render(page) if isinstance(page, Console) else page


@router.post("/billing/vouchers/redeem")
async def redeem_code(request: Request) -> Response:
    """A voucher code typed by the owner, redeemed as `POST /v1/vouchers/redeem` does."""
    outcome = await posted(request, page_name)
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    try:
        with page.ctx.sessions.begin() as session:
            grant = voucher_codes.redeem(session, page.principal.tenant_id, form.get("code", ""),
                                         actor=page.principal.actor)
            message = page.t("billing.redeemed", tokens=f"{grant.amount:,}", date=f"{grant.expires_at:%Y-%m-%d}")
    except voucher_codes.CodeNotRedeemable as exc:  # answered as the API answers it, in the page's words
        error = field_error(page.locale, ApiError(400, "voucher_code_invalid", str(exc), param="code"), ("code",))
        return _render(page, error.status, redeem_error=error, form=form)
    return _render(page, message=message)


@router.get("/billing/statements/{month}")
def download_statement(request: Request, month: str, format: Literal["csv", "pdf"] = "csv") -> Response:  # noqa: A002
    """The month's statement as the API serves it (`GET /v1/statements/{month}?format=`), same bytes."""
    page = opened(request, page_name)
    if not isinstance(page, Console):
        return page
    try:
        with page.ctx.sessions.begin() as session:
            body = statement(session, page.principal.tenant_id, month)
    except StatementError:
        return page.error(404, "error.not_found")
    download = statement_file(body, format)
    return Response(download.content, media_type=download.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{download.filename}"',
                             "Cache-Control": "no-store"})
