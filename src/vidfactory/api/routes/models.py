"""/v1/models: what can be generated, and what each model costs under the caller's price book (its contract
pin, else the newest)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import not_found
from vidfactory.api.render import timestamp
from vidfactory.billing import pricebooks
from vidfactory.billing.pricebook import PriceBookBody, model_price
from vidfactory.db.models import ServedModel
from vidfactory.settings import ModelConfig, Settings
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/models", tags=["models"])


def _created(session: Session, model_ids: list[str]) -> dict[str, int]:
    """When each model was first served here (registered at start-up)."""
    rows = session.execute(select(ServedModel.id, ServedModel.created_at).where(ServedModel.id.in_(model_ids)))
    return {row.id: timestamp(row.created_at) for row in rows}


def _models(session: Session, settings: Settings, caller: Caller, models: list[ModelConfig]) -> list[dict[str, Any]]:
    version, book = pricebooks.for_tenant(session, caller.tenant_id)
    created = _created(session, [m.id for m in models])
    return [model_object(m, settings.aliases_of(m.id), created[m.id], version, book) for m in models]


def model_object(m: ModelConfig, aliases: list[str], created: int, version: int, book: PriceBookBody
                 ) -> dict[str, Any]:
    """`aliases`: other names a request may give it (VIDFACTORY_MODEL_ALIASES, e.g. sora-2)."""
    price_book = {"version": version, "method": book.method, "currency": book.currency,
                  "unit_price": str(book.unit_price), "prompt_tokens_max": book.prompt_tokens_max}
    return {
        "id": m.id, "object": "model", "created": created, "owned_by": "vidfactory", "aliases": aliases,
        "engine": m.engine,
        "default_size": m.default_size, "default_seconds": str(m.default_seconds), "fps": m.fps,
        "sizes": {"min_px": m.size_min_px, "max_px": m.size_max_px, "multiple_px": m.size_multiple_px},
        "seconds": {"min": 1, "max": m.seconds_max}, "price_book": price_book,
        "price": model_price(book, version, m.id),
    }


@router.get("")
def list_models(ctx: ContextDep, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": _models(session, ctx.settings, caller, ctx.settings.models)}


@router.get("/{model_id}")
def retrieve_model(model_id: str, ctx: ContextDep, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """A model by its id or an alias; the answer names the model that serves it."""
    model = ctx.settings.resolve_model(model_id)
    if model is None:
        raise not_found("model", model_id, "model_id")
    return _models(session, ctx.settings, caller, [model])[0]
